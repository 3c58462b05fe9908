"""whitenclip command line: parse arguments, call the library, render. Nothing else.

Data goes to stdout, logs and progress to stderr. Exit codes: 0 ok, 1 runtime failure,
2 usage or bad input (one-line message naming the file and row; ``--debug`` for a traceback).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import math
import os
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Iterator, List, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from whitenclip.errors import InputError, WhitenclipError

app = typer.Typer(
    name="whitenclip",
    help="Whitening, likelihoods, Gaussianity diagnostics and information estimates for contrastive embeddings.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_console = Console(stderr=True, highlight=False)
_state = {"debug": bool(os.environ.get("WHITENCLIP_DEBUG")), "quiet": False}

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


# ---------------------------------------------------------------------------------------
# shared plumbing
# ---------------------------------------------------------------------------------------
def _fail(message: str, code: int = EXIT_USAGE) -> None:
    """Print ``whitenclip: error: message`` on stderr and exit with ``code``."""
    _console.print(f"whitenclip: error: {message}", markup=False, soft_wrap=True)
    raise typer.Exit(code)


def _log(message: str) -> None:
    """A progress/log line on stderr (silenced by --quiet)."""
    if not _state["quiet"]:
        _console.print(message, markup=False, soft_wrap=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    _console.print(f"whitenclip: warning: {message}", markup=False, soft_wrap=True)


def _handles_errors(func):
    """Run a command with whitenclip's error manners: one line on stderr and a meaningful exit code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = _show_warning
            try:
                return func(*args, **kwargs)
            except (typer.Exit, typer.Abort):
                raise
            except InputError as exc:
                _reraise_in_debug()
                _fail(str(exc), EXIT_USAGE)
            except WhitenclipError as exc:
                _reraise_in_debug()
                _fail(str(exc), EXIT_FAILURE)
            except BrokenPipeError:
                _silence_stdout()
                raise typer.Exit(EXIT_OK)
            except KeyboardInterrupt:
                _fail("interrupted", 130)
            except MemoryError:
                _reraise_in_debug()
                _fail("out of memory (try smaller --chunk-rows or fewer inputs)", EXIT_FAILURE)
            except Exception as exc:  # an unexpected failure still gets one line, never a traceback
                _reraise_in_debug()
                _fail(f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())} "
                      "(rerun with --debug for a traceback)", EXIT_FAILURE)

    return wrapper


def _reraise_in_debug() -> None:
    if _state["debug"]:
        raise


def _silence_stdout() -> None:
    with contextlib.suppress(Exception):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


@app.callback()
def _global_options(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or log lines on stderr."),
) -> None:
    _state["debug"] = debug or _state["debug"]
    _state["quiet"] = quiet


def _print_json(obj) -> None:
    """One JSON object on stdout (NaN/inf never appear: they become null)."""
    sys.stdout.write(json.dumps(_json_safe(obj), indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# ---------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------
def _open_sources(inputs: List[str]):
    """Open every INPUT as an embeddings source (files, store directories, ``-`` for stdin)."""
    from whitenclip.stores import open_embeddings

    if not inputs:
        raise InputError("no INPUT given (use - to read vectors from stdin)")
    return [open_embeddings(p) for p in inputs]


def _source_meta(sources) -> dict:
    """Encoder / modality / normalisation that all sources agree on (None where unknown)."""
    meta = {}
    for key in ("encoder", "modality", "normalized"):
        values = {json.dumps(s.meta.get(key)) for s in sources if s.meta.get(key) is not None}
        if len(values) > 1:
            raise InputError(f"inputs disagree on {key}: {', '.join(sorted(values))}")
        meta[key] = json.loads(values.pop()) if values else None
    return meta


def _load_whitener(path: Path):
    from whitenclip.whitening import Whitener

    return Whitener.load(path)


def _parse_shrinkage(value: Optional[str]):
    if value is None or value.lower() in ("none", "no", "0"):
        return None
    if value.lower() in ("ledoit-wolf", "lw", "oas"):
        return "ledoit-wolf" if value.lower() in ("ledoit-wolf", "lw") else "oas"
    try:
        return float(value)
    except ValueError:
        raise InputError(f"--shrinkage must be none, ledoit-wolf, oas or a number in [0, 1]; got {value!r}") from None


class Method(str, Enum):
    pca = "pca"
    zca = "zca"
    cholesky = "cholesky"


class RowFormat(str, Enum):
    tsv = "tsv"
    csv = "csv"
    jsonl = "jsonl"


# ---------------------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------------------
@app.command()
@_handles_errors
def fit(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Embeddings (.npy/.npz/.safetensors, store dirs) or - for stdin vectors."),
    output: Path = typer.Option(..., "--output", "-o", help="Whitener artifact to write (.safetensors)."),
    method: Method = typer.Option(Method.pca, "--method", help="Form of W: pca (W-CLIP), zca or cholesky."),
    shrinkage: Optional[str] = typer.Option(None, "--shrinkage", help="none, ledoit-wolf, oas, or a float in [0, 1]."),
    floor: float = typer.Option(1e-10, "--floor", help="Drop eigenvalues below floor x the largest."),
    rank: Optional[int] = typer.Option(None, "--rank", help="Keep at most this many directions."),
    drop_nonfinite: bool = typer.Option(False, "--drop-nonfinite", help="Skip rows holding NaN/inf instead of failing."),
    chunk_rows: int = typer.Option(16384, "--chunk-rows", help="Rows read per chunk (memory vs speed)."),
) -> None:
    """Fit a whitening transform on reference embeddings (streaming; files larger than RAM are fine)."""
    from whitenclip.whitening import fit_whitener_streaming

    sources = _open_sources(inputs)
    wh, stats = fit_whitener_streaming(
        sources, method=method.value, shrinkage=_parse_shrinkage(shrinkage), floor=floor, rank=rank,
        drop_nonfinite=drop_nonfinite, chunk_rows=chunk_rows, extra_metadata=_source_meta(sources),
    )
    wh.save(output)
    _log(f"fitted {method.value} whitener on {wh.n_samples_} rows x {wh.n_features_} dims, rank {wh.rank_}"
         + (f" (dropped {stats.dropped_nonfinite} non-finite rows)" if stats.dropped_nonfinite else "")
         + f" -> {output}")


# ---------------------------------------------------------------------------------------
# score
# ---------------------------------------------------------------------------------------
def _escape_tsv(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _format_rows(ids: list, cols: dict, fmt: str) -> str:
    """Rows ``id, loglik, logpdf, sqnorm, pvalue`` of one chunk as TSV / CSV / JSONL text."""
    from whitenclip.likelihood import COLUMNS

    values = [cols[c].tolist() for c in COLUMNS]
    if fmt == "jsonl":
        return "".join(json.dumps({"id": i, **{c: _json_safe(v[k]) for c, v in zip(COLUMNS, values)}}) + "\n"
                       for k, i in enumerate(ids))
    if fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([i, *(repr(v[k]) for v in values)] for k, i in enumerate(ids))
        return buf.getvalue()
    return "".join(f"{_escape_tsv(i)}\t{a!r}\t{b!r}\t{c!r}\t{d!r}\n" for i, a, b, c, d in zip(ids, *values))


def _header(fmt: str) -> str:
    from whitenclip.likelihood import COLUMNS

    if fmt == "jsonl":
        return ""
    return ("\t" if fmt == "tsv" else ",").join(("id", *COLUMNS)) + "\n"


@contextlib.contextmanager
def _row_sink(output: Optional[Path]) -> Iterator:
    """stdout, or a file written atomically (renamed into place only when all rows are written)."""
    if output is None or str(output) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    from whitenclip.stores import atomic_write

    with atomic_write(output, "w") as fh:
        yield fh


@app.command()
@_handles_errors
def score(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Embeddings to score, or - for stdin vectors."),
    whitener: Path = typer.Option(..., "--whitener", "-w", help="Whitener artifact from `whitenclip fit`."),
    fmt: RowFormat = typer.Option(RowFormat.tsv, "--format", "-f", help="Row format on stdout."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write rows to this file (atomically) instead of stdout."),
    drop_nonfinite: bool = typer.Option(False, "--drop-nonfinite", help="Skip rows holding NaN/inf instead of failing."),
    chunk_rows: int = typer.Option(16384, "--chunk-rows", help="Rows scored per chunk."),
) -> None:
    """Score each row: id, loglik (W-CLIP), logpdf, sqnorm, pvalue (Hotelling predictive)."""
    from whitenclip.likelihood import CalibrationWarning, score as score_rows
    from whitenclip.stores import RowStats, iter_rows

    wh = _load_whitener(whitener)
    sources = _open_sources(inputs)
    for src in sources:
        if src.dim != wh.n_features_:
            raise InputError(f"{src.path}: rows have dimension {src.dim}, whitener {whitener} expects {wh.n_features_}")
    stats = RowStats()
    with _row_sink(output) as sink:
        sink.write(_header(fmt.value))
        with warnings.catch_warnings():
            warnings.simplefilter("once", CalibrationWarning)
            for ids, X in iter_rows(sources, drop_nonfinite=drop_nonfinite, stats=stats, chunk_rows=chunk_rows):
                sink.write(_format_rows(ids, score_rows(wh, X), fmt.value))
    _log(f"scored {stats.kept} rows" + (f", skipped {stats.dropped_nonfinite} non-finite" if stats.dropped_nonfinite else ""))


# ---------------------------------------------------------------------------------------
# info
# ---------------------------------------------------------------------------------------
@app.command()
@_handles_errors
def info(
    whitener: Path = typer.Argument(..., metavar="WHITENER", help="Whitener artifact (.safetensors)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Show a whitener's metadata, spectrum summary and condition number."""
    from whitenclip.whitening import spectrum_summary

    wh = _load_whitener(whitener)
    meta = wh.artifact_metadata()
    meta.pop("eigenvalues", None)
    summary = {"path": str(whitener), **meta, "spectrum": spectrum_summary(wh)}
    if as_json:
        _print_json(summary)
        return
    table = Table(title=f"whitener {whitener}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key in ("method", "shrinkage", "shrinkage_intensity", "n", "d", "rank", "floor", "dropped", "log_det",
                "encoder", "modality", "normalized", "created_at", "input_hash"):
        table.add_row(key, _short(summary.get(key)))
    for key, value in summary["spectrum"].items():
        table.add_row(f"spectrum.{key}", _short(value))
    Console().print(table)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_short(v)}" for k, v in value.items()) or "-"
    return "-" if value is None else str(value)


# ---------------------------------------------------------------------------------------
# import-wclip
# ---------------------------------------------------------------------------------------
@app.command("import-wclip")
@_handles_errors
def import_wclip_cmd(
    mean: Path = typer.Option(..., "--mean", help="The paper's mean_*.pt (loaded with weights_only=True)."),
    matrix: Path = typer.Option(..., "--matrix", help="The paper's w_mat_*.pt whitening matrix W."),
    output: Path = typer.Option(..., "--output", "-o", help="Whitener artifact to write (.safetensors)."),
    n_samples: Optional[int] = typer.Option(None, "--n-samples", help="Rows W was fitted on (enables the calibrated p-value)."),
    modality: Optional[str] = typer.Option(None, "--modality", help="image or text (recorded in the artifact)."),
) -> None:
    """Convert the W-CLIP paper's released mean and whitening matrix into a whitener artifact."""
    from whitenclip.whitening import import_wclip

    wh = import_wclip(mean, matrix, n_samples=n_samples, modality=modality)
    wh.save(output)
    c = wh.metadata_["conditioning"]
    _log(f"imported W ({wh.n_features_}x{wh.n_features_}): covariance eigenvalues {c['lambda_min']:.3g}..{c['lambda_max']:.3g} "
         f"({c['decades']:.1f} decades) -> {output}")


# --- encoder commands go here ---

# --- diagnostics commands go here ---

# --- information commands go here ---


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
