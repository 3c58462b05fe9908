"""The compare command: a reference set against query sets (distances, a two-sample test, flagged items)."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from whitenclip.cli.base import _handles_errors, _render
from whitenclip.cli.options import (
    AllowPartialOpt,
    BatchOpt,
    ColumnOpt,
    DaskWorkersOpt,
    DebugOpt,
    Decode,
    DecodeOpt,
    DeviceOpt,
    EngineOpt,
    GroupColumnOpt,
    IdColumnOpt,
    Modality,
    ModalityOpt,
    ModelOpt,
    NoGroupsOpt,
    NormalizeOpt,
    Precision,
    PrecisionOpt,
    QuietOpt,
    SchedulerOpt,
    StrictOpt,
    WorkersOpt,
)
from whitenclip.cli.reading import _encode_options, _engine, _open_sources, _report_skips
from whitenclip.errors import InputError


def _compare_side(path: str, encoding, eng, recorded):
    """(rows or moments, ids, groups, encoder meta) of one compare INPUT: moments via the sharded path
    (moments files, shard folders, --engine dask), else every row (raw inputs embedded)."""
    import numpy as np

    from whitenclip.readers.rows import iter_rows
    from whitenclip.sources import source_meta

    if eng.handles([path]):
        from whitenclip.engine import compute_moments

        return compute_moments([path], eng), None, None, recorded
    sources = _open_sources([path], encoding, recorded=recorded)
    ids, parts = [], []
    for chunk_ids, X in iter_rows(sources):
        ids += chunk_ids
        parts.append(X)
    _report_skips(sources)
    if not parts:
        raise InputError(f"{path}: no usable rows")
    groups = [g for src in sources for g in (getattr(src, "groups", None) or [])] or None
    if groups is not None and len(groups) != len(ids):
        groups = None
    return np.concatenate(parts), ids, groups, recorded if recorded is not None else source_meta(sources)


@_handles_errors
def compare(
    ref: str = typer.Argument(..., metavar="REF", help="Reference set: embeddings, a store, a table, moments file, or raw images/captions."),
    queries: List[str] = typer.Argument(..., metavar="QUERY...", help="One or more sets to compare with REF (same kinds of input); several are ranked."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per QUERY, one per line, in the order given."),
    max_rows: int = typer.Option(10_000, "--max-rows", min=10, help="Rows per set (seeded subsample, whole groups) for cmmd, the test and prdc."),
    permutations: int = typer.Option(1000, "--permutations", min=1, max=100_000, help="Permutations of the two-sample test (p resolution 1/(B+1))."),
    nearest_k: int = typer.Option(5, "--nearest-k", min=1, help="k of precision/recall/density/coverage."),
    fdr: float = typer.Option(0.1, "--fdr", min=0.0, max=1.0, help="Flag QUERY rows with Benjamini-Hochberg q <= FDR (conformal p-values under REF)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of subsamples, folds, features and permutations."),
    verdict: bool = typer.Option(True, "--verdict/--no-verdict", help="One-line Gaussianity verdict per set (cheap diagnostics on 2000 rows)."),
    group_column: Optional[str] = GroupColumnOpt, no_groups: bool = NoGroupsOpt,
    allow_partial: bool = AllowPartialOpt,
    model: Optional[str] = ModelOpt, modality: Optional[Modality] = ModalityOpt, normalize: Optional[bool] = NormalizeOpt,
    column: Optional[str] = ColumnOpt, id_column: Optional[str] = IdColumnOpt, strict: bool = StrictOpt, device: str = DeviceOpt,
    precision: Precision = PrecisionOpt, batch_size: Optional[int] = BatchOpt, num_workers: Optional[int] = WorkersOpt, decode: Decode = DecodeOpt,
    _quiet: bool = QuietOpt, _debug: bool = DebugOpt,
    engine: str = EngineOpt, workers: Optional[int] = DaskWorkersOpt, scheduler: Optional[str] = SchedulerOpt,
) -> None:
    """Compare REF with QUERY sets: fd, kl (Gaussian), cmmd and a permutation test (any law), which items differ."""
    from whitenclip.comparison import compare as run_compare

    if not 0.0 < fdr < 1.0:
        raise InputError(f"--fdr must be in (0, 1), got {fdr}")
    eng = _engine(engine, workers, scheduler, None, allow_partial=allow_partial, column=column, id_column=id_column,
                  no_groups=no_groups)
    encoding = _encode_options(model, modality, normalize, column, strict, device, precision, batch_size,
                               num_workers, allow_partial, decode=decode.value,
                               groups=(group_column, None, no_groups), id_column=id_column)
    R, _, ref_groups, recorded = _compare_side(ref, encoding, eng, None)
    sides = [_compare_side(q, encoding, eng, recorded) for q in queries]
    result = run_compare(R, [s[0] for s in sides], names=[ref, *queries], ref_groups=ref_groups,
                         query_groups=[s[2] for s in sides], query_ids=[s[1] for s in sides], max_rows=max_rows,
                         n_permutations=permutations, nearest_k=nearest_k, fdr=fdr, seed=seed, verdict=verdict)
    if as_json:
        from whitenclip.render.compare import json_lines

        sys.stdout.write(json_lines(result))
        sys.stdout.flush()
        return
    _render(result, "table")
