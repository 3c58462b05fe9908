"""Commands that describe: info (a whitener, moments file or embeddings) and gaussianity-report (how close
embeddings are to a Gaussian)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import List, Optional

import typer

from whitenclip.cli.base import _handles_errors, _log, _render
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
    SchedulerOpt,
    StrictOpt,
    WorkersOpt,
)
from whitenclip.cli.reading import _encode_options, _engine, _load_whitener, _whitener_and_rows


# ---------------------------------------------------------------------------------------
# info
# ---------------------------------------------------------------------------------------
@_handles_errors
def info(
    whitener: Path = typer.Argument(..., metavar="ARTIFACT", help="Whitener artifact (.safetensors), moments file, store directory or embeddings file (.npy with its .ids.json, .npz, .safetensors, .pt, .h5, table)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    _quiet: bool = QuietOpt, _debug: bool = DebugOpt,
) -> None:
    """Describe an artifact: a whitener (metadata, spectrum, condition number, calibration), a moments file,
    or embeddings (a store: rows, dim, shards, encoder, ids and groups)."""
    from whitenclip.readers.summary import artifact_kind

    kind = artifact_kind(whitener)
    if kind == "moments":
        from whitenclip.moments import summarize_moments

        _render(summarize_moments(whitener), "json" if as_json else "table")
        return
    if kind == "embeddings":
        from whitenclip.readers.summary import describe_embeddings

        _render(describe_embeddings(whitener), "json" if as_json else "table")
        return
    from whitenclip.whitening import DegenerateCalibrationWarning, summarize

    wh = _load_whitener(whitener)
    if wh.calibration_degenerate_:  # stdout has it in calibration.warning; stderr says it in one line
        warnings.warn(f"{whitener}: {wh.calibration_degenerate_}; `score` leaves pvalue_conformal out",
                      DegenerateCalibrationWarning, stacklevel=1)
    _render(summarize(wh, whitener), "json" if as_json else "table")


# ---------------------------------------------------------------------------------------
# gaussianity-report
# ---------------------------------------------------------------------------------------
@_handles_errors
def gaussianity_report_cmd(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Embeddings (.npy/.npz/.safetensors, store dirs, - for stdin vectors) or raw images/captions."),
    whitener: Optional[Path] = typer.Option(None, "--whitener", "-w", help="Whitener artifact (default: fit one on the inputs themselves)."),
    out: Optional[Path] = typer.Option(None, "--output", "-o", help="Write report.json, report.html and figures/ into this directory."),
    out_alias: Optional[Path] = typer.Option(None, "--out", hidden=True),
    as_json: bool = typer.Option(False, "--json", help="Print the whole report as one JSON object on stdout."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of every random choice (subsets, directions, Gaussian references)."),
    trials: int = typer.Option(10, "--trials", min=1, help="Random row subsets for the per-coordinate tests."),
    subset: int = typer.Option(500, "--subset", min=2, help="Rows per subset."),
    projections: int = typer.Option(1000, "--projections", min=1, help="Random unit directions of the centred data."),
    drop_nonfinite: bool = typer.Option(False, "--drop-nonfinite", help="Skip rows holding NaN/inf instead of failing."),
    allow_partial: bool = AllowPartialOpt,
    model: Optional[str] = ModelOpt, modality: Optional[Modality] = ModalityOpt, normalize: Optional[bool] = NormalizeOpt,
    column: Optional[str] = ColumnOpt, id_column: Optional[str] = IdColumnOpt, strict: bool = StrictOpt, device: str = DeviceOpt,
    precision: Precision = PrecisionOpt, batch_size: Optional[int] = BatchOpt, num_workers: Optional[int] = WorkersOpt, decode: Decode = DecodeOpt,
    _quiet: bool = QuietOpt, _debug: bool = DebugOpt,
    engine: str = EngineOpt, workers: Optional[int] = DaskWorkersOpt, scheduler: Optional[str] = SchedulerOpt,
    moments_dir: Optional[Path] = MomentsDirOpt,
) -> None:
    """How close the embeddings are to a Gaussian: per-coordinate AD/DP tests, norms, projections, Mardia, verdict."""
    from whitenclip.diagnostics import gaussianity_report
    from whitenclip.outputs import check_output_dir
    from whitenclip.render import write_html

    out = out if out is not None else out_alias  # --out: the option's name before 0.2
    if out is not None:
        from whitenclip.outputs import check_output_files

        check_output_dir(out, inputs=[*inputs, whitener])
        check_output_files([out / "report.json", out / "report.html"], inputs=[*inputs, whitener])
    eng = _engine(engine, workers, scheduler, moments_dir, allow_partial=allow_partial, column=column,
                  id_column=id_column)
    if eng.handles(inputs):  # rows read piece by piece (shards, --engine dask): the same X, the same report
        from whitenclip.engine import gather_rows

        wh = _load_whitener(whitener) if whitener else None
        X = gather_rows(inputs, eng, drop_nonfinite=drop_nonfinite)
    else:
        encoding = _encode_options(model, modality, normalize, column, strict, device, precision, batch_size,
                                   num_workers, allow_partial, decode=decode.value, id_column=id_column)
        wh, X = _whitener_and_rows(inputs, whitener, encoding, drop_nonfinite=drop_nonfinite)
    if wh is None:
        _log(f"no --whitener: fitting a pca whitener on the {X.shape[0]} input rows themselves")
    report = gaussianity_report(X, wh, trials=trials, subset=subset, projections=projections, seed=seed)
    if report.whitener.held_out is not None:
        _log(f"n={report.n} <= rank+1={report.rank + 1}: whitened figures from a held-out "
             f"{report.whitener.held_out['shrinkage_rule']} whitening (2 folds); "
             f"{len(report.verdict.untested)} part(s) not testable, listed in the report")
    if out is not None:
        written = write_html(report, out)
        _log(f"wrote {written['html']} and {written['json']}")
    _render(report, "json" if as_json else "table")
