"""The score command: one row of likelihoods and p-values per input row, as text rows or parquet."""

from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from whitenclip import config
from whitenclip.cli.base import _given_options, _handles_errors, _log
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
    IdColumnOpt,
    Modality,
    ModalityOpt,
    ModelOpt,
    MomentsDirOpt,
    NormalizeOpt,
    Precision,
    PrecisionOpt,
    QuietOpt,
    RowFormat,
    SchedulerOpt,
    StrictOpt,
    WorkersOpt,
)
from whitenclip.cli.reading import _encode_options, _engine, _load_whitener, _open_sources, _recorded, _report_skips
from whitenclip.errors import InputError


@contextlib.contextmanager
def _row_sink(output: Optional[Path]) -> Iterator:
    """stdout, or a file written atomically (renamed into place only when all rows are written)."""
    if output is None or str(output) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    from whitenclip.outputs import atomic_write

    with atomic_write(output, "w", errors="surrogateescape") as fh:  # a file name's bytes, as on stdout
        yield fh


@contextlib.contextmanager
def _score_sink(output: Optional[str], columns, fmt: str) -> Iterator:
    """Yield ``add(table)`` writing score tables: one parquet file for ``-o NAME.parquet``, else ``fmt`` rows
    on stdout or a file, the header written with the first rows (a run failing before them writes nothing)."""
    from whitenclip.render import render_rows
    from whitenclip.render.tables import header_line
    from whitenclip.writers import is_parquet_output, parquet_score_writer

    if is_parquet_output(output):
        with parquet_score_writer(output, columns) as add:
            yield add
        return
    header = [header_line(columns, fmt)]
    with _row_sink(output) as fh:
        def add(table) -> None:
            fh.write((header.pop() if header else "") + render_rows(table, fmt, header=False))

        yield add
        if header:
            fh.write(header.pop())


@_handles_errors
def score(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Embeddings, raw images/captions (embedded with the whitener's encoder), or - for stdin."),
    whitener: Path = typer.Option(..., "--whitener", "-w", help="Whitener artifact from `whitenclip fit`."),
    fmt: RowFormat = typer.Option(RowFormat.tsv, "--format", "-f", help="Row format on stdout."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Write rows to this file (atomically) instead of stdout; a name ending in .parquet writes parquet (needs pyarrow); with the sharded path, DIR/ (trailing slash or an existing folder) writes one file per shard."),
    drop_nonfinite: bool = typer.Option(False, "--drop-nonfinite", help="Skip rows holding NaN/inf instead of failing."),
    chunk_rows: int = typer.Option(config.CHUNK_ROWS, "--chunk-rows", min=1, help="Rows scored per chunk."),
    fdr: Optional[float] = typer.Option(None, "--fdr", help="Add a qvalue column (Benjamini-Hochberg over all rows' pvalue_conformal) and log how many rows have q <= FDR (rows are written at the end)."),
    allow_partial: bool = AllowPartialOpt,
    model: Optional[str] = ModelOpt, modality: Optional[Modality] = ModalityOpt, normalize: Optional[bool] = NormalizeOpt,
    column: Optional[str] = ColumnOpt, id_column: Optional[str] = IdColumnOpt, strict: bool = StrictOpt, device: str = DeviceOpt,
    precision: Precision = PrecisionOpt, batch_size: Optional[int] = BatchOpt, num_workers: Optional[int] = WorkersOpt, decode: Decode = DecodeOpt,
    _quiet: bool = QuietOpt, _debug: bool = DebugOpt,
    engine: str = EngineOpt, workers: Optional[int] = DaskWorkersOpt, scheduler: Optional[str] = SchedulerOpt,
    moments_dir: Optional[Path] = MomentsDirOpt,
) -> None:
    """Score each row: id, loglik (W-CLIP), logpdf, sqnorm, pvalue (Hotelling, Gaussian), pvalue_conformal (any law)."""
    from whitenclip.likelihood import (
        QVALUE_COLUMN,
        CalibrationWarning,
        ScoreTable,
        conformal_unavailable,
        score_columns,
        with_qvalues,
    )
    from whitenclip.likelihood import score as score_rows
    from whitenclip.outputs import check_output_dir, check_output_file, wants_directory
    from whitenclip.readers.rows import RowStats, iter_rows
    from whitenclip.render import render_rows
    from whitenclip.render.tables import header_line
    from whitenclip.writers import is_parquet_output

    if is_parquet_output(output) and "--format" in _given_options(()):
        raise InputError(f"{output}: a .parquet output is written as parquet; --format {fmt.value} names a text "
                         "format: drop --format, or give another file name")
    eng = _engine(engine, workers, scheduler, moments_dir, chunk_rows=chunk_rows, allow_partial=allow_partial,
                  column=column, id_column=id_column)
    sharded = eng.handles(inputs)
    if output is not None and str(output) != "-":
        if sharded and wants_directory(output):  # one output file per shard: each checked by write_scores
            check_output_dir(output, inputs=[*inputs, whitener])
        else:
            check_output_file(output, inputs=[*inputs, whitener])
    if fdr is not None and not 0.0 < fdr < 1.0:
        raise InputError(f"--fdr must be in (0, 1), got {fdr}")
    if fdr is not None and sharded:
        raise InputError("--fdr needs every row's p-value at once; the sharded path writes rows piece by piece")
    wh = _load_whitener(whitener)
    unavailable = conformal_unavailable(wh)
    if fdr is not None and unavailable:
        raise InputError(f"{whitener}: --fdr needs pvalue_conformal: "
                         + ("this whitener has no calibration distances" if wh.calibration_ is None else unavailable))
    if wh.calibration_ is None:
        _log(f"{whitener}: {unavailable}")
    elif unavailable:  # degenerate: said even with --quiet (never a silent column of 1.0)
        from whitenclip.whitening import DegenerateCalibrationWarning

        warnings.warn(f"{whitener}: {unavailable}", DegenerateCalibrationWarning, stacklevel=1)
    if sharded:  # rows in input order; -o NAME.parquet: one file; -o DIR (an existing directory): one file per shard
        from whitenclip.engine import iter_scores, write_scores

        if is_parquet_output(output):
            n_rows = 0
            with _score_sink(output, score_columns(wh), fmt.value) as add:
                for _, table in iter_scores(inputs, eng, wh, drop_nonfinite=drop_nonfinite):
                    add(table)
                    n_rows += table.n_rows
        else:
            n_rows = write_scores(inputs, eng, wh, output=output, header=header_line(score_columns(wh), fmt.value),
                                  suffix=fmt.value, format_rows=lambda table: render_rows(table, fmt.value, header=False),
                                  drop_nonfinite=drop_nonfinite, protected=[whitener])
        _log(f"scored {n_rows} rows")
        return
    encoding = _encode_options(model, modality, normalize, column, strict, device, precision, batch_size,
                               num_workers, allow_partial, decode=decode.value, id_column=id_column)
    sources = _open_sources(inputs, encoding, recorded=_recorded(wh))
    for src in sources:
        if src.dim != wh.n_features_:
            raise InputError(f"{src.path}: rows have dimension {src.dim}, whitener {whitener} expects {wh.n_features_}")
    stats = RowStats()
    columns = (*score_columns(wh), QVALUE_COLUMN) if fdr is not None else score_columns(wh)
    with _score_sink(output, columns, fmt.value) as add, warnings.catch_warnings():
        warnings.simplefilter("once", CalibrationWarning)
        held = []  # --fdr: q-values need every row's p-value
        for ids, X in iter_rows(sources, drop_nonfinite=drop_nonfinite, stats=stats, chunk_rows=chunk_rows):
            table = score_rows(wh, X, ids, name=inputs[0] if len(inputs) == 1 else "INPUT")
            if fdr is None:
                add(table)
            else:
                held.append(table)
        if fdr is not None:
            table = with_qvalues(ScoreTable.concat(held, ids=[i for t in held for i in t.row_ids()], calibrated=True))
            add(table)
            _log(f"{int((table.qvalue <= fdr).sum())} of {table.n_rows} rows have qvalue <= {fdr:g} "
                 "(Benjamini-Hochberg on pvalue_conformal)")
    _report_skips(sources)
    _log(f"scored {stats.kept} rows" + (f", skipped {stats.dropped_nonfinite} non-finite" if stats.dropped_nonfinite else ""))
