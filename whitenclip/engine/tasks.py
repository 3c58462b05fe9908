"""Per-piece work: what a task does with its pieces (moments, scores, rows), the packing of small
pieces into tasks, the merge of two parts, and the fault injection the tests use. These run on
the workers: module-level functions, so they pickle by reference."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from whitenclip.config import CHUNK_ROWS
from whitenclip.engine.parts import PIECE_SUFFIX, _groups_hash, _piece_digest, piece_content_hash, piece_key
from whitenclip.errors import InputError
from whitenclip.moments import MomentsPart
from whitenclip.readers.base import Piece
from whitenclip.readers.plan import (
    finite_piece_rows,
    piece_groups,
    piece_ids,
)

FAULT_ENV = "WHITENCLIP_FAULT_KILL_ONCE"
"""Fault injection for tests: when set to a path that does not exist, the first piece task to
see it creates the file and kills its own process (so Dask must retry it)."""


def piece_moments(piece: Piece, *, meta: dict, drop_nonfinite: bool = False, gram: str = "float64",
                  moments_dir: str | None = None, chunk_rows: int = CHUNK_ROWS,
                  one_thread: bool = False, calibration_rows: int = 0, row_offset: int = 0,
                  groups=None) -> MomentsPart:
    """The :class:`MomentsPart` of one piece (loaded from ``moments_dir`` when already there).

    ``calibration_rows`` > 0 also keeps a :class:`~whitenclip.moments.Reservoir` of the piece's
    rows keyed by their global positions (``row_offset`` + row in the shard), so that the
    reservoirs of all pieces merge into the one uniform sample a whole-data pass would draw.
    ``groups`` makes it a sample of whole groups (keyed by group id, as the local fit's): the
    piece's ids (a list of ``n_rows`` ids or None, a slice of ``--groups FILE``), or True: the ids
    its store records (:func:`~whitenclip.readers.plan.piece_groups`, read here, on the worker).
    """
    from whitenclip.moments import RESERVOIR_EXTRA, Reservoir, coverage_entry, reservoir_to_tensors

    _maybe_fault()
    grouped = calibration_rows > 0 and groups is not None
    gids = _piece_group_ids(piece, groups, calibration_rows)
    stem, stale = None, []
    if moments_dir is not None:
        extra = (drop_nonfinite, gram, calibration_rows, row_offset)
        extra += ("groups", _groups_hash(gids)) if grouped else ()
        stem = f"piece-{piece.index:06d}-{piece_key(piece, *extra)}"
        stale = sorted(Path(moments_dir).glob(f"{stem}-*{PIECE_SUFFIX}"))
        if stale:  # reuse a saved part only when the piece's bytes hash to the name it was saved under
            saved = Path(moments_dir) / f"{stem}-{piece_content_hash(piece, chunk_rows)}{PIECE_SUFFIX}"
            if saved.is_file():
                with contextlib.suppress(InputError):
                    part = MomentsPart.load(saved)
                    part.stats["resumed"] = 1
                    return part
    part = MomentsPart(piece.shard.dim, {**meta, "gram": gram})
    reservoir = Reservoir(calibration_rows, piece.shard.dim) if calibration_rows > 0 else None
    digest, dropped = _piece_digest(piece), [0]
    with _blas_threads(1 if one_thread else None):
        for lo, X, ok in finite_piece_rows(piece, chunk_rows, drop_nonfinite=drop_nonfinite, digest=digest,
                                           dropped=dropped):
            if reservoir is not None:
                _sample_rows(reservoir, piece, gids, lo, X, ok, row_offset)
            part.update(X, gram=gram, origin=(piece.shard.path, lo))
    if reservoir is not None:
        part.extras[RESERVOIR_EXTRA] = reservoir_to_tensors(reservoir)
    part.inputs = [digest.hexdigest()]
    part.coverage = [coverage_entry(piece.shard.path, piece.start, piece.stop)]  # file identity + rows
    part.stats = {"pieces": 1, "resumed": 0, "dropped_nonfinite": dropped[0]}
    if stem is not None:
        saved = Path(moments_dir) / f"{stem}-{digest.hexdigest()}{PIECE_SUFFIX}"
        part.save(saved)
        for old in stale:  # parts of this piece's earlier content
            if old != saved:
                with contextlib.suppress(OSError):
                    old.unlink()
    return part


def _piece_group_ids(piece, groups, calibration_rows: int):
    """A piece's group ids for its calibration sample (``groups`` True: read from the piece), or None
    without groups or calibration; a count that does not match the piece's rows is refused."""
    if calibration_rows <= 0 or groups is None:
        return None
    gids = piece_groups(piece) if groups is True else groups
    if len(gids) != piece.n_rows:
        raise InputError(f"{piece}: {len(gids)} group ids for {piece.n_rows} rows")
    return gids


def _sample_rows(reservoir, piece, gids, lo: int, X, ok, row_offset: int) -> None:
    """Offer a chunk's finite rows ``X`` (``ok``: which of the chunk's rows they are, from row ``lo`` of
    the piece's file) to the calibration ``reservoir``, at their global positions, with their group ids."""
    at = lo - piece.start
    kept = None if gids is None else [v for v, k in zip(gids[at:at + ok.size], ok) if k]
    reservoir.update(X, start=row_offset + lo, groups=kept)


def _piece_moments_at(piece: Piece, row_offset: int, groups=None, **kw) -> MomentsPart:
    return piece_moments(piece, row_offset=row_offset, groups=groups, **kw)


def pack_tasks(pieces, piece_rows: int) -> list[list[int]]:
    """Indices of consecutive pieces gathered into tasks of at most ``piece_rows`` rows (a piece of
    that size or more is a task alone): a folder of many small shards costs one task (and one
    merge) per ``piece_rows`` rows, not one per shard. One pass, O(pieces).

    >>> from whitenclip.readers import Shard, plan_pieces
    >>> pack_tasks(plan_pieces([Shard("a.npy", n, 2, "<f4") for n in (1, 2, 9, 1, 1)], 4), 4)
    [[0, 1], [2], [3], [4, 5, 6]]
    """
    tasks: list[list[int]] = []
    held = 0
    for i, p in enumerate(pieces):
        if tasks and held + p.n_rows <= piece_rows:
            tasks[-1].append(i)
            held += p.n_rows
        else:
            tasks.append([i])
            held = p.n_rows
    return tasks


def task_moments(pieces: list, row_offsets: list, groups: list, *, meta: dict, drop_nonfinite: bool = False,
                 gram: str = "float64", moments_dir: str | None = None, chunk_rows: int = CHUNK_ROWS,
                 one_thread: bool = False, calibration_rows: int = 0) -> MomentsPart:
    """The :class:`MomentsPart` of a task's pieces (:func:`pack_tasks`), as their merge would be:
    one piece is :func:`piece_moments`; several small ones are read into one part, their rows
    gathered into chunks of ``chunk_rows`` (one scatter update per chunk, not one per piece), each
    piece keeping its own content hash, coverage entry and reservoir positions. With
    ``moments_dir`` a task is one piece (the unit saved and resumed)."""
    from whitenclip.moments import RESERVOIR_EXTRA, Reservoir, coverage_entry, reservoir_to_tensors
    from whitenclip.validation import check_magnitude

    kw = dict(meta=meta, drop_nonfinite=drop_nonfinite, gram=gram, chunk_rows=chunk_rows, one_thread=one_thread,
              calibration_rows=calibration_rows)
    if len(pieces) == 1:
        return piece_moments(pieces[0], row_offset=row_offsets[0], groups=groups[0], moments_dir=moments_dir, **kw)
    _maybe_fault()
    dim = pieces[0].shard.dim
    part = MomentsPart(dim, {**meta, "gram": gram})
    reservoir = Reservoir(calibration_rows, dim) if calibration_rows > 0 else None
    held, held_rows, origin, dropped = [], 0, None, [0]

    def flush():
        nonlocal held, held_rows
        if held:
            part.update(np.concatenate(held) if len(held) > 1 else held[0], gram=gram, origin=origin)
        held, held_rows = [], 0

    with _blas_threads(1 if one_thread else None):
        for piece, offset, g in zip(pieces, row_offsets, groups):
            gids = _piece_group_ids(piece, g, calibration_rows)
            digest = _piece_digest(piece)
            for lo, X, ok in finite_piece_rows(piece, chunk_rows, drop_nonfinite=drop_nonfinite, digest=digest,
                                               dropped=dropped):
                if reservoir is not None:
                    _sample_rows(reservoir, piece, gids, lo, X, ok, offset)
                if not X.shape[0]:
                    continue
                check_magnitude(X, str(piece.shard.path), lo)  # named here: a chunk may gather several pieces
                if not held:
                    origin = (piece.shard.path, lo)
                held.append(X)
                held_rows += X.shape[0]
                if held_rows >= chunk_rows:
                    flush()
            part.inputs.append(digest.hexdigest())
            part.coverage.append(coverage_entry(piece.shard.path, piece.start, piece.stop))
        flush()
    if reservoir is not None:
        part.extras[RESERVOIR_EXTRA] = reservoir_to_tensors(reservoir)
    part.stats = {"pieces": len(pieces), "resumed": 0, "dropped_nonfinite": dropped[0]}
    return part


def task_scores(pieces: list, whitener, **kw) -> list:
    """``(shard_path, ScoreTable)`` of each piece of a task, in order (:func:`piece_scores`)."""
    return [(p.shard.path, piece_scores(p, whitener, **kw)) for p in pieces]


def task_rows(pieces: list, **kw) -> np.ndarray:
    """All finite rows of a task's pieces, in order (:func:`piece_rows`)."""
    parts = [piece_rows(p, **kw) for p in pieces]
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def merge_two(a: MomentsPart, b: MomentsPart) -> MomentsPart:
    """Merge of two adjacent parts of the tree (a before b)."""
    return a.merge(b, name="piece")


def piece_scores(piece: Piece, whitener, *, drop_nonfinite: bool = False, chunk_rows: int = CHUNK_ROWS,
                 one_thread: bool = False):
    """:class:`~whitenclip.likelihood.ScoreTable` of the piece's rows scored by ``whitener``, with their ids."""
    import warnings

    from whitenclip.likelihood import ScoreTable, conformal_unavailable, score

    _maybe_fault()
    ids_all = piece_ids(piece)
    ids, tables = [], []
    with _blas_threads(1 if one_thread else None), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lo, X, ok in finite_piece_rows(piece, chunk_rows, drop_nonfinite=drop_nonfinite):
            chunk_ids = ids_all[lo - piece.start:lo - piece.start + ok.size]
            kept = [i for i, k in zip(chunk_ids, ok) if k]
            ids += kept
            if X.shape[0]:
                tables.append(score(whitener, X, kept, name=piece.shard.path))  # names a refused row
    return ScoreTable.concat(tables, ids=ids, calibrated=conformal_unavailable(whitener) is None)


def piece_rows(piece: Piece, *, drop_nonfinite: bool = False, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """All finite rows of the piece, float64 (m, d)."""
    parts = [X for _, X, _ in finite_piece_rows(piece, chunk_rows, drop_nonfinite=drop_nonfinite)]
    return np.concatenate(parts) if parts else np.empty((0, piece.shard.dim))


def _maybe_fault() -> None:
    marker = os.environ.get(FAULT_ENV)
    if marker:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(17)


def _blas_threads(n: int | None):
    if n is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n, user_api="blas")
