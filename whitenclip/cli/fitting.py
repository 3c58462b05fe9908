"""Commands that write a whitener or its moments: fit, moments, merge-moments (sharded and multi-machine
fits; logic in whitenclip/engine/) and import-wclip (the W-CLIP paper's released matrices)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from whitenclip import config
from whitenclip.cli.base import _handles_errors, _log
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
    GroupsOpt,
    IdColumnOpt,
    Method,
    Modality,
    ModalityOpt,
    ModelOpt,
    MomentsDirOpt,
    NoGroupsOpt,
    NormalizeOpt,
    Precision,
    PrecisionOpt,
    QuietOpt,
    SchedulerOpt,
    StrictOpt,
    WorkersOpt,
)
from whitenclip.cli.reading import (
    _check_group_options,
    _encode_options,
    _engine,
    _open_sources,
    _parse_shrinkage,
    _report_skips,
)
from whitenclip.errors import InputError


# ---------------------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------------------
@_handles_errors
def fit(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Embeddings (.npy/.npz/.safetensors, store dirs, - for stdin vectors) or raw images/captions."),
    output: str = typer.Option(..., "--output", "-o", help="Whitener artifact to write (.safetensors)."),
    method: Method = typer.Option(Method.pca, "--method", help="Form of W: pca (W-CLIP), zca or cholesky."),
    shrinkage: str = typer.Option("auto", "--shrinkage", help="auto (oas when n < 10 d rows, else none; recorded in the artifact), none (the exact sample covariance), ledoit-wolf, oas, or a float in [0, 1]."),
    floor: float = typer.Option(1e-10, "--floor", min=0.0, max=1.0, help="Drop eigenvalues below floor x the largest."),
    rank: Optional[int] = typer.Option(None, "--rank", min=1, max=2 ** 53, help="Keep at most this many directions."),
    drop_nonfinite: bool = typer.Option(False, "--drop-nonfinite", help="Skip rows holding NaN/inf instead of failing."),
    chunk_rows: int = typer.Option(config.CHUNK_ROWS, "--chunk-rows", min=1, help="Rows read per chunk (memory vs speed)."),
    fast_gram: bool = typer.Option(False, "--fast-gram", help="Chunk Gram products in float32: ~2x faster fit, eigenvalues below ~1e-5 x the largest lose accuracy."),
    save_embeddings: Optional[Path] = typer.Option(None, "--save-embeddings", help="Also keep the embeddings of raw inputs in this store directory."),
    calibration: bool = typer.Option(True, "--calibration/--no-calibration", help="Keep a seeded sample of reference rows and store their leave-one-out distances for the distribution-free pvalue_conformal (default: on)."),
    calibration_rows: int = typer.Option(config.CALIBRATION_ROWS, "--calibration-rows", min=2, max=1 << 20, help="Reference rows sampled for calibration (p-value resolution 1/(m+1); whole groups)."),
    group_column: Optional[str] = GroupColumnOpt, groups: Optional[Path] = GroupsOpt, no_groups: bool = NoGroupsOpt,
    allow_partial: bool = AllowPartialOpt,
    model: Optional[str] = ModelOpt, modality: Optional[Modality] = ModalityOpt, normalize: Optional[bool] = NormalizeOpt,
    column: Optional[str] = ColumnOpt, id_column: Optional[str] = IdColumnOpt, strict: bool = StrictOpt, device: str = DeviceOpt,
    precision: Precision = PrecisionOpt, batch_size: Optional[int] = BatchOpt, num_workers: Optional[int] = WorkersOpt, decode: Decode = DecodeOpt,
    _quiet: bool = QuietOpt, _debug: bool = DebugOpt,
    engine: str = EngineOpt, workers: Optional[int] = DaskWorkersOpt, scheduler: Optional[str] = SchedulerOpt,
    moments_dir: Optional[Path] = MomentsDirOpt,
) -> None:
    """Fit a whitening transform on reference embeddings, moments files or raw images/captions (streaming)."""
    from whitenclip.outputs import check_output_dir, check_output_file, check_output_tree
    from whitenclip.sources import EncodedSource, embed_to_store, source_meta
    from whitenclip.whitening import fit_whitener_streaming

    check_output_file(output, inputs=inputs, suffix=".safetensors")
    if save_embeddings is not None:
        check_output_dir(save_embeddings, inputs=inputs)
        check_output_tree(save_embeddings, inputs=[*inputs, groups], option="--save-embeddings")
    shrink = _parse_shrinkage(shrinkage, allow_auto=True)
    _check_group_options(group_column, groups, no_groups)
    eng = _engine(engine, workers, scheduler, moments_dir, chunk_rows=chunk_rows, allow_partial=allow_partial,
                  column=column, id_column=id_column, groups_file=None if groups is None else str(groups),
                  no_groups=no_groups)
    if eng.handles(inputs):  # moments files, shard directories/globs, --engine dask
        from whitenclip.engine import fit_whitener

        if group_column:
            raise InputError("--group-column names a column of a captions CSV; the sharded path reads embeddings: "
                             "give their groups with --groups FILE (one id per row), or record them with `embed`")

        wh, _ = fit_whitener(inputs, eng, method=method.value, shrinkage=shrink, floor=floor, rank=rank,
                             drop_nonfinite=drop_nonfinite, gram="float32" if fast_gram else "float64",
                             calibration=calibration, calibration_rows=calibration_rows)
        wh.save(output)
        _log(f"fitted {method.value} whitener on {wh.n_samples_} rows x {wh.n_features_} dims, rank {wh.rank_}"
             + (f", calibrated on {wh.n_cal_} rows in {wh.calibration_groups_} groups" if wh.calibration_groups_ else "")
             + f" -> {output}")
        _note_few_rows(wh)
        return
    encoding = _encode_options(model, modality, normalize, column, strict, device, precision, batch_size,
                               num_workers, allow_partial, decode=decode.value, groups=(group_column, groups, no_groups),
                               id_column=id_column)
    sources = _open_sources(inputs, encoding)
    raw = [s for s in sources if isinstance(s, EncodedSource)]
    if save_embeddings is not None and not raw:
        raise InputError("--save-embeddings keeps the embeddings of raw images/captions; these inputs are embeddings already")
    if raw and (save_embeddings is not None or shrink == "ledoit-wolf"):  # rows needed twice: embed once, to a store
        sources = embed_to_store(raw, save_embeddings)
    wh, stats = fit_whitener_streaming(
        sources, method=method.value, shrinkage=shrink, floor=floor, rank=rank,
        drop_nonfinite=drop_nonfinite, chunk_rows=chunk_rows, extra_metadata=source_meta(sources),
        gram="float32" if fast_gram else "float64", calibration=calibration, calibration_rows=calibration_rows,
    )
    wh.save(output)
    _report_skips(raw)
    _log(f"fitted {method.value} whitener on {wh.n_samples_} rows x {wh.n_features_} dims, rank {wh.rank_}"
         + (f" (dropped {stats.dropped_nonfinite} non-finite rows)" if stats.dropped_nonfinite else "")
         + (f", calibrated on {wh.n_cal_} rows in {wh.calibration_groups_} groups" if wh.calibration_groups_ else "")
         + f" -> {output}")
    _note_few_rows(wh)


def _note_few_rows(wh) -> None:
    """What ``--shrinkage auto`` chose, in one line; then one note when the fit had n < 5 d rows and no
    shrinkage (text: whitening.few_rows_note). A degenerate calibration was said by the fit's warning."""
    from whitenclip.whitening import few_rows_note

    if wh.shrinkage_rule_ and wh.shrinkage_choice_ is not None:
        _log(f"shrinkage {wh.shrinkage_rule_} (intensity {wh.shrinkage_:.3g}); --shrinkage none keeps the exact "
             "sample covariance")
    elif wh.shrinkage_rule_:
        _log(f"shrinkage {wh.shrinkage_rule_}")
    note = few_rows_note(wh.n_samples_, wh.n_features_, wh.shrinkage_choice_, wh.rank_)
    if note:
        _log(note)


# ---------------------------------------------------------------------------------------
# moments / merge-moments (sharded and multi-machine fits; logic in whitenclip/engine/)
# ---------------------------------------------------------------------------------------
@_handles_errors
def moments(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Embeddings: .npy/.safetensors, shard dirs, quoted globs, stores."),
    output: str = typer.Option(..., "--output", "-o", help="Moments file to write (.moments.safetensors)."),
    drop_nonfinite: bool = typer.Option(False, "--drop-nonfinite", help="Skip rows holding NaN/inf instead of failing."),
    fast_gram: bool = typer.Option(False, "--fast-gram", help="Chunk Gram products in float32."),
    piece_rows: int = typer.Option(config.PIECE_ROWS, "--piece-rows", min=1, help="Rows per piece (one task)."),
    chunk_rows: int = typer.Option(config.CHUNK_ROWS, "--chunk-rows", min=1, help="Rows read per chunk inside a piece."),
    calibration_rows: int = typer.Option(config.CALIBRATION_ROWS, "--calibration-rows", min=0, max=1 << 20, help="Size of the mergeable row sample kept for the conformal calibration of `fit` (0: none)."),
    engine: str = EngineOpt, workers: Optional[int] = DaskWorkersOpt, scheduler: Optional[str] = SchedulerOpt,
    moments_dir: Optional[Path] = MomentsDirOpt, allow_partial: bool = AllowPartialOpt,
    column: Optional[str] = ColumnOpt, id_column: Optional[str] = IdColumnOpt,
    groups: Optional[Path] = GroupsOpt, no_groups: bool = NoGroupsOpt,
    _quiet: bool = QuietOpt, _debug: bool = DebugOpt,
) -> None:
    """Count, mean, centred scatter, power sums and a calibration sample of embeddings, with metadata and input hash."""
    from whitenclip.engine import compute_moments
    from whitenclip.outputs import check_output_file

    check_output_file(output, inputs=inputs, suffix=".safetensors")
    eng = _engine(engine, workers, scheduler, moments_dir, piece_rows=piece_rows, chunk_rows=chunk_rows,
                  allow_partial=allow_partial, column=column, id_column=id_column,
                  groups_file=None if groups is None else str(groups), no_groups=no_groups)
    part = compute_moments(inputs, eng, drop_nonfinite=drop_nonfinite, gram="float32" if fast_gram else "float64",
                           calibration_rows=calibration_rows)
    part.save(output)
    _log(f"moments of {part.n} rows x {part.n_features} dims ({part.stats.get('pieces', 0)} piece(s)"
         + (f", dropped {part.stats['dropped_nonfinite']} non-finite" if part.stats.get("dropped_nonfinite") else "")
         + f") -> {output}")


@_handles_errors
def merge_moments_cmd(
    parts: List[Path] = typer.Argument(..., metavar="PART...", help="Moments files from `whitenclip moments`."),
    output: str = typer.Option(..., "--output", "-o", help="Merged moments file to write."),
    _quiet: bool = QuietOpt, _debug: bool = DebugOpt,
) -> None:
    """Exact merge of moments files (refuses other dimension/encoder/modality/normalisation and parts given twice)."""
    from whitenclip.engine import merge_moment_files
    from whitenclip.outputs import check_output_file

    check_output_file(output, inputs=parts, suffix=".safetensors")
    part = merge_moment_files(parts)
    part.save(output)
    _log(f"merged {len(parts)} part(s): {part.n} rows x {part.n_features} dims -> {output}")


# ---------------------------------------------------------------------------------------
# import-wclip
# ---------------------------------------------------------------------------------------
@_handles_errors
def import_wclip_cmd(
    mean: Path = typer.Option(..., "--mean", help="The paper's mean_*.pt (loaded with weights_only=True)."),
    matrix: Path = typer.Option(..., "--matrix", help="The paper's w_mat_*.pt whitening matrix W."),
    output: str = typer.Option(..., "--output", "-o", help="Whitener artifact to write (.safetensors)."),
    n_samples: Optional[int] = typer.Option(None, "--n-samples", min=2, help="Rows W was fitted on (enables the calibrated p-value)."),
    modality: Optional[str] = typer.Option(None, "--modality", help="image or text (recorded in the artifact)."),
    _quiet: bool = QuietOpt, _debug: bool = DebugOpt,
) -> None:
    """Convert the W-CLIP paper's released mean and whitening matrix into a whitener artifact."""
    from whitenclip.outputs import check_output_file
    from whitenclip.whitening import import_wclip

    check_output_file(output, inputs=[mean, matrix], suffix=".safetensors")
    wh = import_wclip(mean, matrix, n_samples=n_samples, modality=modality)
    wh.save(output)
    c = wh.metadata_["conditioning"]
    _log(f"imported W ({wh.n_features_}x{wh.n_features_}): covariance eigenvalues {c['lambda_min']:.3g}..{c['lambda_max']:.3g} "
         f"({c['decades']:.1f} decades) -> {output}")
