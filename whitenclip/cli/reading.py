"""From a command's INPUTs and shared options to what the library reads: sources, rows, a whitener,
encoder and engine options (the one place the CLI turns options into reading choices)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from whitenclip.cli.base import _log, _state
from whitenclip.errors import InputError


def _open_sources(inputs: List[str], encoding=None, *, recorded: Optional[dict] = None):
    """Resolve INPUTs into sources: embedding files / stores / stdin vectors, or raw images and
    captions embedded with ``encoding`` (an :class:`~whitenclip.sources.EncodeOptions`)."""
    from whitenclip.sources import EncodeOptions, open_sources

    encoding = encoding or EncodeOptions()
    encoding.progress = encoding.progress and not _state["quiet"]
    return open_sources(inputs, encoding, recorded=recorded)


def _encode_options(model, modality, normalize, column, strict, device, precision, batch_size, num_workers,
                    allow_partial: bool = False, decode: str = "auto", groups: tuple | None = None,
                    id_column: Optional[str] = None):
    """EncodeOptions of the shared options; ``groups`` = (--group-column, --groups, --no-groups) of the
    commands that read groups (fit, embed: an image column is then the default group column)."""
    from whitenclip.sources import EncodeOptions

    group_column, groups_file, no_groups = groups or (None, None, False)
    _check_group_options(group_column, groups_file, no_groups)
    return EncodeOptions(model=model, modality=modality.value if modality else None, normalize=normalize,
                         column=column, strict=strict, device=device, precision=precision.value,
                         batch_size=batch_size, num_workers=num_workers, allow_partial=allow_partial, decode=decode,
                         group_column=False if no_groups else (group_column or (True if groups else None)),
                         groups_file=None if groups_file is None else str(groups_file), id_column=id_column)


def _check_group_options(group_column, groups_file, no_groups: bool) -> None:
    """Refuse contradictory group options in one line: --no-groups with either of the others, and
    --group-column (ids from a column) with --groups FILE (ids from a file)."""
    if no_groups and (group_column is not None or groups_file is not None):
        raise InputError("--no-groups contradicts --group-column/--groups; give one of them")
    if group_column is not None and groups_file is not None:
        raise InputError(f"--group-column {group_column} and --groups {groups_file} both give the group ids (from a "
                         "column, from a file); give one of them")


def _report_skips(sources) -> None:
    from whitenclip.sources import skip_summary

    summary = skip_summary(sources)
    if summary:
        _log(f"inputs: {summary}")


def _whitener_and_rows(inputs, whitener: Optional[Path], encoding, *, drop_nonfinite: bool = False):
    """The optional whitener and every input row (raw inputs embedded with its encoder)."""
    from whitenclip.sources import read_all_rows

    wh = _load_whitener(whitener) if whitener is not None else None
    sources = _open_sources(inputs, encoding, recorded=_recorded(wh) if wh is not None else None)
    X = read_all_rows(sources, drop_nonfinite=drop_nonfinite)
    _report_skips(sources)
    return wh, X


def _report_skips_of(report) -> None:
    if report.n_skipped:
        _log(f"inputs: {report.summary()}")


def _load_whitener(path: Path):
    from whitenclip.whitening import Whitener

    return Whitener.load(path)


def _parse_shrinkage(value: Optional[str], allow_auto: bool = False):
    from whitenclip.whitening import parse_shrinkage

    parsed = parse_shrinkage(value, allow_auto=allow_auto)
    if isinstance(parsed, float) and not 0.0 <= parsed <= 1.0:  # NaN too: refused before any input is read
        raise InputError(f"--shrinkage must be none, ledoit-wolf, oas or a number in [0, 1]; got {value}")
    return parsed


def _engine(engine: str, workers, scheduler, moments_dir, **kw):
    """EngineOptions of the --engine/--workers/--scheduler/--moments-dir options."""
    from whitenclip.engine import EngineOptions

    return EngineOptions(engine=engine, workers=workers, scheduler=scheduler, moments_dir=moments_dir,
                         debug=_state["debug"], log=_log, **kw)


def _recorded(wh) -> dict:
    """What a whitener records about its inputs' encoder (``ENCODER_META_KEYS``; None if unknown)."""
    from whitenclip.encoders.base import ENCODER_META_KEYS

    return {k: wh.metadata_.get(k) for k in ENCODER_META_KEYS}
