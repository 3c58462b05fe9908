"""The information commands: entropy (of one set of embeddings) and mi (between paired ones)."""

from __future__ import annotations

import warnings
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from whitenclip.cli.base import _handles_errors, _log, _render, _state
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
from whitenclip.cli.reading import (
    _encode_options,
    _engine,
    _load_whitener,
    _open_sources,
    _parse_shrinkage,
    _report_skips,
    _report_skips_of,
    _whitener_and_rows,
)
from whitenclip.errors import InputError


class Base(str, Enum):
    e = "e"
    two = "2"


def _ci_options(bootstrap: Optional[int], seed: int) -> dict:
    """--bootstrap B replaces the default group-jackknife interval by B bootstrap resamples."""
    if bootstrap is not None and bootstrap < 2:
        raise InputError(f"--bootstrap needs at least 2 resamples for an interval, got {bootstrap}; "
                         "200 or more are sensible (1000+ for a 99% interval)")
    return {"ci": "jackknife" if bootstrap is None else "bootstrap", "n_boot": bootstrap or 200, "random_state": seed}


@_handles_errors
def entropy(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Embeddings (.npy/.npz/.safetensors, store dirs, - for stdin vectors) or raw images/captions."),
    whitener: Optional[Path] = typer.Option(None, "--whitener", "-w", help="Measure in this whitener's kept subspace (entropy stays in input units)."),
    base: Base = typer.Option(Base.e, "--base", help="Units: e (nats) or 2 (bits)."),
    bootstrap: Optional[int] = typer.Option(None, "--bootstrap", help="CI from B bootstrap resamples (default: group jackknife; the bootstrap needs rank << n)."),
    knn_dims: int = typer.Option(16, "--knn-dims", min=0, help="Leading principal components for the k-NN cross-check, fitted on one half of the rows and taken on the other (its figures are over these components only; skipped with the reason below 10 rows per component; 0: off)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed for row groups, resamples and subsamples."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    allow_partial: bool = AllowPartialOpt,
    model: Optional[str] = ModelOpt, modality: Optional[Modality] = ModalityOpt, normalize: Optional[bool] = NormalizeOpt,
    column: Optional[str] = ColumnOpt, id_column: Optional[str] = IdColumnOpt, strict: bool = StrictOpt, device: str = DeviceOpt,
    precision: Precision = PrecisionOpt, batch_size: Optional[int] = BatchOpt, num_workers: Optional[int] = WorkersOpt, decode: Decode = DecodeOpt,
    _quiet: bool = QuietOpt, _debug: bool = DebugOpt,
    engine: str = EngineOpt, workers: Optional[int] = DaskWorkersOpt, scheduler: Optional[str] = SchedulerOpt,
    moments_dir: Optional[Path] = MomentsDirOpt,
) -> None:
    """Differential entropy of the Gaussian fitted to embeddings: bias-corrected, with CI and a k-NN check."""
    from whitenclip.information import GaussianEntropy

    eng = _engine(engine, workers, scheduler, moments_dir, allow_partial=allow_partial, column=column,
                  id_column=id_column)
    if eng.handles(inputs):  # moments files, shards, --engine dask: Gaussian entropy from moments alone
        from whitenclip.engine import entropy_summary

        result = entropy_summary(inputs, eng, base=base.value, whitener=_load_whitener(whitener) if whitener else None)
    else:
        encoding = _encode_options(model, modality, normalize, column, strict, device, precision, batch_size,
                                   num_workers, allow_partial, decode=decode.value, id_column=id_column)
        wh, X = _whitener_and_rows(inputs, whitener, encoding)
        est = GaussianEntropy(base=base.value, knn_dims=knn_dims, whitener=wh, **_ci_options(bootstrap, seed))
        result = est.fit(X).result()
    _render(result, "json" if as_json else "table")


class PairBy(str, Enum):
    id = "id"
    row = "row"


def _side_error(exc: InputError, option: str) -> InputError:
    """A reader's refusal naming --column, renamed to the side's own option (--x-column, --y-column)."""
    return InputError(str(exc).replace("--column/", f"{option}/").replace("--column", option))


def _mi_sides(x_side, y_side, id_column, model, encoding: dict) -> list:
    """``[(ids, rows, ids kind)]`` of mi's X and Y (each ``(path, column)``): embeddings read as they are,
    raw images/captions embedded with ``model`` (default: the modality's, minilm for captions)."""
    import numpy as np

    from whitenclip.information import ids_kind
    from whitenclip.readers.plan import holds_embeddings
    from whitenclip.readers.rows import iter_rows

    sides = [(path, column, option) for (path, column), option in ((x_side, "--x-column"), (y_side, "--y-column"))]
    raw = []
    for path, column, option in sides:
        try:
            raw.append(path == "-" or not holds_embeddings(path, column=column))
        except InputError as exc:
            raise _side_error(exc, option) from None
    if model and not any(raw):
        raise InputError("--model applies to raw images or captions; X and Y are embeddings already")
    out = []
    for (path, column, option), is_raw in zip(sides, raw):
        options = _encode_options(model if is_raw else None, None, column=column,
                                  id_column=None if is_raw and not all(raw) else id_column, **encoding)
        try:
            sources = _open_sources([path], options)
            ids, parts = [], []
            for chunk_ids, rows in iter_rows(sources):
                ids.extend(chunk_ids)
                parts.append(rows)
        except InputError as exc:
            raise _side_error(exc, option) from None
        if not parts:
            raise InputError(f"{path}: no usable rows")
        _report_skips(sources)
        out.append((ids, np.concatenate(parts), ids_kind(sources[0])))
    return out


@_handles_errors
def mi(
    x: Optional[str] = typer.Argument(None, metavar="[X]", help="One side of each pair, e.g. images: embeddings (.npy/.npz/.safetensors, store dir, table) or raw images/captions (embedded with --model; captions default to minilm)."),
    y: Optional[str] = typer.Argument(None, metavar="[Y]", help="The other side (X again with --x-column/--y-column: two columns of one table); paired with X by id or by row (see above, --pair-by)."),
    x_column: Optional[str] = typer.Option(None, "--x-column", help="Embedding column (list<float>) of X when it is a parquet/Arrow table (default: its only one), or its caption column when X is a captions CSV."),
    y_column: Optional[str] = typer.Option(None, "--y-column", help="Embedding column of Y when it is a table (e.g. text_emb beside --x-column image_emb), or its caption column."),
    id_column: Optional[str] = IdColumnOpt,
    pair_by: Optional[PairBy] = typer.Option(None, "--pair-by", help="Pair rows by id (refused when a side has no ids; a caption store's ids are its captions) or by row (row i with row i); default: by id when both sides carry real ids, else by row."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="CSV of image-caption pairs to embed with --model (instead of X Y)."),
    image_col: str = typer.Option("image", "--image-col", help="Image column of --pairs."),
    text_col: str = typer.Option("caption", "--text-col", help="Caption column of --pairs."),
    image_root: Optional[Path] = typer.Option(None, "--image-root", help="Folder that --pairs image paths are relative to (default: the CSV's folder)."),
    shrinkage: Optional[str] = typer.Option(None, "--shrinkage", help="none, ledoit-wolf, oas, or a float in [0, 1] (no bias correction then)."),
    base: Base = typer.Option(Base.e, "--base", help="Units: e (nats) or 2 (bits)."),
    bootstrap: Optional[int] = typer.Option(None, "--bootstrap", help="CI from B bootstrap resamples (default: group jackknife; the bootstrap needs rank << n)."),
    ksg_dims: int = typer.Option(2, "--ksg-dims", min=0, help="Top canonical pairs for the KSG cross-check, run on held-out canonical variates with a permutation null (0: off)."),
    pointwise: bool = typer.Option(False, "--pointwise", help="Write TSV id<TAB>pmi (pointwise MI of each pair) on stdout: held-out values when the cross-fitted estimate is the headline."),
    groups: Optional[Path] = typer.Option(None, "--groups", help="File of group ids, one line per pair: pairs of one group (one image, clip or source) share a cross-fitting fold."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed for row groups, resamples and subsamples."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    allow_partial: bool = AllowPartialOpt,
    model: Optional[str] = ModelOpt, normalize: Optional[bool] = NormalizeOpt, strict: bool = StrictOpt,
    device: str = DeviceOpt, precision: Precision = PrecisionOpt, batch_size: Optional[int] = BatchOpt,
    num_workers: Optional[int] = WorkersOpt, decode: Decode = DecodeOpt,
    _quiet: bool = QuietOpt, _debug: bool = DebugOpt,
) -> None:
    """Mutual information between paired embeddings (or raw images/captions), from canonical correlations (Gaussian), with CI.

    Pairing: by id when both X and Y carry real ids (id columns, integer ones included; .npz/.safetensors
    ids; image paths); by row (row i with row i) when either side has no ids or its ids are its own
    captions (caption stores, captions files); --pair-by id|row chooses explicitly.
    """
    from whitenclip.information import GaussianMI, pair_rows
    from whitenclip.sources import embed_pairs

    if pointwise and as_json:
        raise InputError("--pointwise and --json both write stdout; choose one")
    shrink, ci_options = _parse_shrinkage(shrinkage), _ci_options(bootstrap, seed)  # bad values: before any work
    if pairs is not None:
        if x is not None or y is not None:
            raise InputError("give either X Y embeddings or --pairs TABLE, not both")
        if x_column or y_column or id_column or pair_by is not None:
            raise InputError("--x-column/--y-column/--id-column/--pair-by apply to X Y inputs; --pairs "
                             "takes --image-col and --text-col (each of its rows is a pair)")
        encoding = _encode_options(model, None, normalize, None, strict, device, precision, batch_size, num_workers, decode=decode.value)
        encoding.progress = not _state["quiet"]
        paired = embed_pairs(pairs, encoding, image_col=image_col, text_col=text_col, image_root=image_root)
        ids, X, Y = paired.ids, paired.X, paired.Y
        _report_skips_of(paired.skips)
    elif x is None or y is None:
        raise InputError("mi needs two inputs X Y (embeddings, or raw images/captions embedded with --model), "
                         "or --pairs TABLE")
    else:
        encoding = dict(normalize=normalize, strict=strict, device=device, precision=precision, batch_size=batch_size,
                        num_workers=num_workers, allow_partial=allow_partial, decode=decode.value)
        (ids, X, kind_x), (ids_y, Y, kind_y) = _mi_sides((x, x_column), (y, y_column), id_column, model, encoding)
        ids, X, Y, how = pair_rows(ids, X, ids_y, Y, x, y, kinds=(kind_x, kind_y),
                                   pair_by=None if pair_by is None else pair_by.value)
    if X.shape[0] != Y.shape[0]:
        raise InputError(f"{x} has {X.shape[0]} rows but {y} has {Y.shape[0]}; mi needs paired rows (row i with row i)")
    if groups is not None:
        from whitenclip.readers.sidecar import read_groups_file

        groups = read_groups_file(groups, X.shape[0])
    if pairs is None and how == "id":  # after the last refusal: an error stays the only line on stderr
        _log(f"mi: {x} and {y} list the same ids in another order; rows paired by id")
    elif pairs is None and pair_by is None and "captions" in (kind_x, kind_y) and "none" not in (kind_x, kind_y):
        _log(f"mi: {x if kind_x == 'captions' else y}'s ids are its captions: rows paired by position, row i with "
             "row i (--pair-by id pairs them by id)")
    names = (x, y) if pairs is None else (f"{pairs} (images)", f"{pairs} (captions)")
    with warnings.catch_warnings():
        if pointwise:  # its refusal of a deterministic relation is then the one line
            warnings.filterwarnings("ignore", message="mi: deterministic relation")
        est = GaussianMI(base=base.value, shrinkage=shrink, ksg_dims=ksg_dims, **ci_options).fit(X, Y, groups=groups,
                                                                                               names=names)
    result = est.result()
    if pointwise:
        from whitenclip.render.information import pointwise_summary

        _render(est.pointwise_result(X, Y, ids), "tsv")
        _log(pointwise_summary(result))
        return
    _render(result, "json" if as_json else "table")
