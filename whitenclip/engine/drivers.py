"""The drivers: plan the pieces of INPUTs, run their tasks on ``opts.engine`` and gather the
result: merged moments (:func:`compute_moments`), a fitted whitener (:func:`fit_whitener`),
scores piece by piece (:func:`iter_scores`), every row (:func:`gather_rows`)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from whitenclip.engine.cluster import dask_client, runs_here, tree_merge
from whitenclip.engine.options import EngineOptions
from whitenclip.engine.parts import check_moments_dir, is_moments_file, merge_moment_files
from whitenclip.engine.tasks import (
    merge_two,
    pack_tasks,
    piece_rows,
    piece_scores,
    task_moments,
    task_rows,
    task_scores,
)
from whitenclip.errors import InputError
from whitenclip.moments import MomentsPart, check_calibration_rows
from whitenclip.readers.plan import (
    discover_shards,
    plan_pieces,
    shard_meta,
    shard_records_groups,
)


def plan(inputs, opts: EngineOptions):
    """Shards and pieces of embedding INPUTs (headers only)."""
    shards = discover_shards(inputs, allow_partial=opts.allow_partial, column=opts.column, id_column=opts.id_column)
    pieces = plan_pieces(shards, opts.piece_rows)
    return shards, pieces


def piece_group_plan(shards, pieces, opts: EngineOptions) -> list | None:
    """What each piece's calibration sample is keyed by, or None when no input has groups (rows).

    ``--groups FILE`` holds one id per input row in plan order (shards in order, rows in order,
    as the local path reads them; :func:`whitenclip.readers.sidecar.read_groups_file` checks the count):
    each piece gets its slice. Otherwise, unless ``--no-groups``, pieces of store shards that
    record groups get True (the task reads them), the others None (each row its own group)."""
    if opts.groups_file is not None:
        from whitenclip.readers.sidecar import read_groups_file

        ids = read_groups_file(opts.groups_file, sum(s.n_rows for s in shards))
        start, at = {}, 0
        for s in shards:
            start[id(s)], at = at, at + s.n_rows
        return [ids[start[id(p.shard)] + p.start:start[id(p.shard)] + p.stop] for p in pieces]
    if opts.no_groups:
        return None
    recorded = {id(s): shard_records_groups(s) for s in shards}
    if not any(recorded.values()):
        return None
    return [True if recorded[id(p.shard)] else None for p in pieces]


def shard_position_base(path) -> int:
    """Reservoir position of a shard's row 0: a 39-bit hash of its absolute path times 2^24, so rows
    of different shards (also in `moments` runs on different machines) get distinct positions and
    independent keys, whatever order or grouping the shards are read in (exact below 16.7M rows a shard)."""
    digest = hashlib.blake2b(os.path.abspath(str(path)).encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "little") >> 25) << 24


def compute_moments(inputs, opts: EngineOptions, *, drop_nonfinite: bool = False, gram: str = "float64",
                    calibration_rows: int = 0) -> MomentsPart:
    """Merged :class:`MomentsPart` of INPUTs: moments files are merged as they are, embeddings are
    planned into pieces whose parts run on ``opts.engine`` and are tree-merged in piece order.
    ``calibration_rows`` > 0 adds a mergeable reservoir of that many rows (conformal calibration)."""
    inputs = [str(p) for p in inputs]
    files = [p for p in inputs if is_moments_file(p)]
    if files and len(files) != len(inputs):
        raise InputError(f"inputs mix moments files ({files[0]}) and embeddings; run `whitenclip moments` on the "
                         "embeddings first")
    if files:
        if opts.groups_file is not None:
            raise InputError(f"{files[0]}: --groups applies to embeddings; moments files carry the calibration "
                             "sample they were written with (give --groups to `whitenclip moments`)")
        return merge_moment_files(files)
    calibration_rows = check_calibration_rows(int(calibration_rows))
    shards, pieces = plan(inputs, opts)
    meta = shard_meta(shards)
    groups = piece_group_plan(shards, pieces, opts)
    if calibration_rows > 0:
        meta["calibration_mode"] = "rows" if groups is None else "groups"
    if not pieces:  # every shard empty (one SLURM task's share may be): an empty part, the identity of merges
        opts.say(f"{', '.join(inputs)}: no rows (every shard is empty): an empty part (n = 0)")
        return MomentsPart.empty(shards[0].dim, {**meta, "gram": gram}, files=[s.path for s in shards],
                                 calibration_rows=calibration_rows)
    mdir = None
    if opts.moments_dir is not None:
        check_moments_dir(opts.moments_dir, inputs, shards)
        Path(opts.moments_dir).mkdir(parents=True, exist_ok=True)
        mdir = str(Path(opts.moments_dir).resolve())
    groups = groups or [None] * len(pieces)
    kw = dict(meta=meta, drop_nonfinite=drop_nonfinite, gram=gram, moments_dir=mdir, chunk_rows=opts.chunk_rows,
              calibration_rows=int(calibration_rows))
    bases = {s.path: shard_position_base(s.path) for s in shards}  # one hash per shard, not per piece
    offsets = [bases[p.shard.path] for p in pieces]
    tasks = [[i] for i in range(len(pieces))] if mdir is not None else pack_tasks(pieces, opts.piece_rows)
    args = [([pieces[i] for i in t], [offsets[i] for i in t], [groups[i] for i in t]) for t in tasks]
    opts.say(f"{len(shards)} shard(s), {sum(s.n_rows for s in shards)} rows x {shards[0].dim}: "
             f"{len(pieces)} piece(s) of at most {opts.piece_rows} rows on the {opts.engine} engine"
             + (f" in {len(tasks)} task(s)" if len(tasks) != len(pieces) else ""))
    if runs_here(opts, tasks):
        part = tree_merge([task_moments(*a, **kw) for a in args], merge_two)
    else:
        with dask_client(opts) as client:
            futures = client.map(task_moments, *zip(*args), pure=False, one_thread=True, **kw)
            part = tree_merge(futures, lambda a, b: client.submit(merge_two, a, b, pure=False)).result()
    if part.stats.get("resumed"):
        opts.say(f"resumed {part.stats['resumed']} of {len(pieces)} piece(s) from {opts.moments_dir}")
    return part


def fit_whitener(inputs, opts: EngineOptions, *, method: str = "pca", shrinkage=None, floor: float = 1e-10,
                 rank: int | None = None, drop_nonfinite: bool = False, gram: str = "float64",
                 calibration: bool = True, calibration_rows: int | None = None):
    """Fit a :class:`~whitenclip.whitening.Whitener` from the merged moments of INPUTs (embeddings or
    moments files). Ledoit-Wolf uses the merged power sum q = sum ||x - mean||^4 (exact, one pass);
    parts saved without power sums refuse it. With ``calibration``, the merged reservoir of the
    pieces (or of the moments files, when they carry one) gives the conformal calibration
    distances: leave-one-group-out when the sample was drawn by group (``--groups FILE``, a store
    that records groups, or parts written so: ``part.calibration_mode == "groups"``), as the local
    fit computes them. Returns ``(whitener, part)``."""
    from whitenclip.moments import RESERVOIR_EXTRA, reservoir_from_tensors
    from whitenclip.whitening import DEFAULT_CALIBRATION_ROWS, Whitener

    m = int(calibration_rows or DEFAULT_CALIBRATION_ROWS) if calibration else 0
    proto = Whitener(method=method, shrinkage=shrinkage, floor=floor, rank=rank, calibration=calibration,
                     calibration_rows=m or DEFAULT_CALIBRATION_ROWS)
    proto._check_params()
    part = compute_moments(inputs, opts, drop_nonfinite=drop_nonfinite, gram=gram, calibration_rows=m)
    if part.n < 2:
        raise InputError(f"need at least 2 rows to fit a whitener, got {part.n}")
    sum4 = part.sum_sqnorm4
    if shrinkage == "ledoit-wolf" and sum4 is None:
        raise InputError("ledoit-wolf shrinkage needs the moments' power sums; these moments files were written "
                         "without them (recompute them with `whitenclip moments`)")
    sample = part.extras.get(RESERVOIR_EXTRA) if calibration else None
    if calibration and sample is None:
        opts.say("no calibration sample in these moments (written without one, or merged with parts that had "
                 "none): the whitener has no pvalue_conformal")
    res = None if sample is None else reservoir_from_tensors(sample)
    grouped = res is not None and part.calibration_mode == "groups" and res.grouped  # as the local fit: some id given
    wh = proto.fit_moments(part.moments, sum_sqnorm4=sum4, calibration_sample=None if res is None else res.rows,
                           calibration_groups=res.keys if grouped else None,
                           calibration_positions=None if res is None else res.positions)
    wh.metadata_.update({k: v for k, v in part.meta.items() if v is not None and k not in ("gram", "calibration_mode")})
    wh.metadata_.update({"gram_dtype": part.meta.get("gram", "float64"), "inputs_hash": part.input_hash,
                         "engine": opts.engine, "pieces": int(part.stats.get("pieces", 0))})
    return wh, part


def iter_scores(inputs, opts: EngineOptions, whitener, *, drop_nonfinite: bool = False):
    """``(shard_path, ScoreTable)`` per piece, in input order, scored on ``opts.engine``."""
    shards, pieces = plan(inputs, opts)
    for s in shards:
        if s.dim != whitener.n_features_:
            raise InputError(f"{s.path}: rows have dimension {s.dim}, the whitener expects {whitener.n_features_}")
    kw = dict(drop_nonfinite=drop_nonfinite, chunk_rows=opts.chunk_rows)
    tasks = [[pieces[i] for i in t] for t in pack_tasks(pieces, opts.piece_rows)]
    if runs_here(opts, tasks):
        for p in pieces:
            yield p.shard.path, piece_scores(p, whitener, **kw)
        return
    with dask_client(opts) as client:
        [wh] = client.scatter([whitener], broadcast=True)
        futures = client.map(task_scores, tasks, [wh] * len(tasks), pure=False, one_thread=True, **kw)
        for f in futures:
            tables = f.result()
            f.release()
            yield from tables


def gather_rows(inputs, opts: EngineOptions, *, drop_nonfinite: bool = False) -> np.ndarray:
    """Every row of INPUTs in input order, (n, d) float64, read piece by piece on ``opts.engine``
    (for whole-sample statistics such as the Gaussianity report: equal to reading them locally)."""
    _, pieces = plan(inputs, opts)
    kw = dict(drop_nonfinite=drop_nonfinite, chunk_rows=opts.chunk_rows)
    tasks = [[pieces[i] for i in t] for t in pack_tasks(pieces, opts.piece_rows)]
    if runs_here(opts, tasks):
        parts = [piece_rows(p, **kw) for p in pieces]
    else:
        with dask_client(opts) as client:
            parts = client.gather(client.map(task_rows, tasks, pure=False, **kw))
    parts = [X for X in parts if X.shape[0]]
    if not parts:
        raise InputError(f"{', '.join(map(str, inputs))}: no usable rows")
    return np.concatenate(parts)
