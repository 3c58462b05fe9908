"""Where the per-piece work runs: in this process (``local``) or on a Dask cluster (``dask``).

The work is planned by :mod:`whitenclip.shards` into pieces (one byte range of one file each).
Every task reads one piece and returns its :class:`~whitenclip.moments.MomentsPart` (count,
float64 mean, centred scatter, power sums for Ledoit-Wolf, and for ``fit`` a bottom-m reservoir
of rows for the conformal calibration, keyed by shard path and row, or by group id when the
inputs have groups, so that its merge is exact);
consecutive small pieces (tiny shards) are
packed into one task of at most ``piece_rows`` rows (:func:`pack_tasks`), so the task and merge
counts follow the rows, not the layout (a folder of 20,000 one-row files is a handful of tasks);
parts are merged as a binary tree
in task order: level by level, part 2k with part 2k+1 (an odd last part moves up unchanged).
The tree is the same on both engines, so results do not depend on which worker ran what, and
on Dask the merges run on the workers: the driver receives one (d, d) scatter, never one per
piece.

What travels: to a task, a :class:`~whitenclip.shards.Piece` (path, row range, a few hundred
bytes); back from a task, to another task, its part (8 d^2 + O(d) bytes); to the driver, the
final part. ``score`` sends the whitener to each worker once and gets back each piece's scores
(5 numbers and an id per row); ``gaussianity-report`` needs every row on the driver (its
statistics are whole-sample), so there each task returns its piece's rows.

``--moments-dir DIR`` keeps each piece's part as ``DIR/piece-NNNNNN-<key>-<content>.moments.safetensors``
(key: the file's path, row range, header layout and the settings; content: the blake2b hash of the
piece's bytes, taken while reading them). A rerun re-hashes the piece's byte range (no arithmetic:
0.2-0.35x the cost of recomputing it, :func:`piece_content_hash`) and loads the saved part only
when the hashes agree, so a shard rewritten with the same size and mtime (``cp -p``, ``rsync -a``)
is read again. ``DIR`` may not be, or lie inside, an input folder (:func:`check_moments_dir`).

Dask is optional (``pip install whitenclip[dask]``); ``LocalCluster`` is started inside
:func:`dask_client` (processes, one thread and one BLAS thread per worker, no dashboard, logs
silenced unless ``debug``) and always closed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from whitenclip.config import CHUNK_ROWS
from whitenclip.errors import InputError
from whitenclip.moments import MOMENTS_FORMAT, MomentsPart, check_calibration_rows
from whitenclip.shards import (
    PIECE_ROWS,
    Piece,
    discover_shards,
    finite_piece_rows,
    is_glob,
    iter_piece_rows,
    piece_groups,
    piece_ids,
    plan_pieces,
    shard_meta,
    shard_records_groups,
)

ENGINES = ("local", "dask")
FAULT_ENV = "WHITENCLIP_FAULT_KILL_ONCE"
"""Fault injection for tests: when set to a path that does not exist, the first piece task to
see it creates the file and kills its own process (so Dask must retry it)."""


@dataclass
class EngineOptions:
    """How to run: ``engine`` local|dask, ``workers`` (LocalCluster size), ``scheduler`` (address
    of an existing cluster), ``moments_dir`` (keep/resume piece parts), ``piece_rows``,
    ``client`` (an existing ``distributed.Client``, e.g. in tests), ``debug`` (cluster logs)."""

    engine: str = "local"
    workers: int | None = None
    scheduler: str | None = None
    moments_dir: Path | None = None
    piece_rows: int = PIECE_ROWS
    chunk_rows: int = CHUNK_ROWS
    client: Any = None
    debug: bool = False
    log: Callable[[str], None] | None = None
    allow_partial: bool = False  # read incomplete stores (--allow-partial), as the local path does
    column: str | None = None  # embedding column of parquet/Arrow inputs (--column)
    id_column: str | None = None  # their id column (--id-column)
    groups_file: str | None = None  # group ids, one line per input row in plan order (--groups FILE)
    no_groups: bool = False  # ignore the groups a store records (--no-groups)

    def __post_init__(self):
        self.engine = str(getattr(self.engine, "value", self.engine))
        if self.engine not in ENGINES:
            raise InputError(f"--engine must be one of {', '.join(ENGINES)}; got {self.engine!r}")
        if self.engine == "local" and (self.workers is not None or self.scheduler is not None):
            raise InputError("--workers and --scheduler need --engine dask")
        if self.workers is not None and self.workers < 1:
            raise InputError(f"--workers must be >= 1, got {self.workers}")
        if self.scheduler is not None:
            check_scheduler_address(str(self.scheduler))
        if self.no_groups and self.groups_file is not None:
            raise InputError("--no-groups contradicts --groups; give one of them")
        for name in ("piece_rows", "chunk_rows"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")

    def handles(self, inputs) -> bool:
        """True when the sharded path must run: --engine dask, --moments-dir, a moments file, a
        glob pattern or a directory that is not a whitenclip store among the INPUTs."""
        return (self.engine == "dask" or self.moments_dir is not None
                or any(is_moments_file(p) or _needs_sharding(p) for p in map(str, inputs)))

    def say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)


def _needs_sharding(p: str) -> bool:
    """A glob, or a directory of embedding shards (not a store, not a folder of images)."""
    if p == "-":
        return False
    if is_glob(p):
        return True
    d = Path(p)
    if not d.is_dir() or (d / "meta.json").is_file():
        return False
    if (d / "img_emb").is_dir() or (d / "text_emb").is_dir():
        return True
    return any(c.suffix.lower() in (".npy", ".safetensors") and c.is_file() for c in d.iterdir())


def is_moments_file(path) -> bool:
    """True for a ``.safetensors`` file whose header says it holds whitenclip moments (a header the
    one validated parser refuses is not: reading it as embeddings then names the defect)."""
    from whitenclip.stores import parse_safetensors_header

    p = Path(str(path))
    if p.suffix.lower() != ".safetensors" or not p.is_file():
        return False
    try:
        return parse_safetensors_header(p)[1].get("format") == MOMENTS_FORMAT
    except (InputError, OSError):
        return False


# ---------------------------------------------------------------------------------------
# per-piece work (runs on workers; module-level functions so they pickle by reference)
# ---------------------------------------------------------------------------------------
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
    its store records (:func:`~whitenclip.shards.piece_groups`, read here, on the worker).
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


PIECE_SUFFIX = ".moments.safetensors"


def _groups_hash(gids) -> str:
    """blake2b of a piece's group ids (None: no ids): part of its saved name, so a part sampled
    with other groups is not resumed."""
    return hashlib.blake2b(json.dumps(gids).encode(), digest_size=10).hexdigest()


def piece_group_plan(shards, pieces, opts: EngineOptions) -> list | None:
    """What each piece's calibration sample is keyed by, or None when no input has groups (rows).

    ``--groups FILE`` holds one id per input row in plan order (shards in order, rows in order,
    as the local path reads them; :func:`whitenclip.sources.read_groups_file` checks the count):
    each piece gets its slice. Otherwise, unless ``--no-groups``, pieces of store shards that
    record groups get True (the task reads them), the others None (each row its own group)."""
    if opts.groups_file is not None:
        from whitenclip.sources import read_groups_file

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


def piece_key(piece: Piece, *extra) -> str:
    """Where the piece lies (absolute path, row range, header layout) plus ``extra`` settings: the
    first part of its saved name in ``--moments-dir``. Size and mtime are left out on purpose:
    ``cp -p`` and ``rsync -a`` keep them while changing the bytes; the content hash decides."""
    s = piece.shard
    raw = json.dumps([os.path.abspath(s.path), piece.start, piece.stop, s.offset, s.dtype, s.dim, s.kind,
                      *map(str, extra)])
    return hashlib.blake2b(raw.encode(), digest_size=10).hexdigest()


def _piece_digest(piece: Piece):
    """blake2b (128 bits) seeded with the piece's layout, to be fed the piece's raw bytes."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{piece.shard.dtype} {piece.shard.dim} {piece.n_rows}".encode())
    return digest


def piece_content_hash(piece: Piece, chunk_rows: int = CHUNK_ROWS) -> str:
    """The hash :func:`piece_moments` computes while reading the piece, recomputed by reading only
    its byte range (no arithmetic on the rows): what a resumed run pays to trust a saved part.
    Measured (2-core x86_64, load ~9, 1 BLAS thread, 307 MB pieces in the page cache): 0.43 GB/s,
    0.71 s per piece against 3.3-3.5 s to recompute its moments; a resumed piece (hash + load)
    costs 0.21x (d = 384) to 0.34x (d = 768) of recomputing it."""
    digest = _piece_digest(piece)
    s = piece.shard
    if s.kind in ("whole", "table"):  # no byte range: hash the rows as read
        for _ in iter_piece_rows(piece, chunk_rows, digest=digest):
            pass
        return digest.hexdigest()
    remaining = piece.byte_stop - piece.byte_start
    with open(s.path, "rb") as fh:
        fh.seek(piece.byte_start)
        while remaining > 0:
            block = fh.read(min(remaining, 16 << 20))
            if not block:
                raise InputError(f"{s.path}: truncated at row {piece.stop - remaining // s.row_bytes} "
                                 f"(expected {s.n_rows} rows)")
            digest.update(block)
            remaining -= len(block)
    return digest.hexdigest()


def _piece_moments_at(piece: Piece, row_offset: int, groups=None, **kw) -> MomentsPart:
    return piece_moments(piece, row_offset=row_offset, groups=groups, **kw)


def pack_tasks(pieces, piece_rows: int) -> list[list[int]]:
    """Indices of consecutive pieces gathered into tasks of at most ``piece_rows`` rows (a piece of
    that size or more is a task alone): a folder of many small shards costs one task (and one
    merge) per ``piece_rows`` rows, not one per shard. One pass, O(pieces).

    >>> from whitenclip.shards import Shard, plan_pieces
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


def shard_position_base(path) -> int:
    """Reservoir position of a shard's row 0: a 39-bit hash of its absolute path times 2^24, so rows
    of different shards (also in `moments` runs on different machines) get distinct positions and
    independent keys, whatever order or grouping the shards are read in (exact below 16.7M rows a shard)."""
    digest = hashlib.blake2b(os.path.abspath(str(path)).encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "little") >> 25) << 24


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


# ---------------------------------------------------------------------------------------
# running: local or dask
# ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def dask_client(opts: EngineOptions) -> Iterator:
    """A ``distributed.Client``: the one in ``opts.client``, one connected to ``opts.scheduler``,
    or a fresh ``LocalCluster`` (processes, 1 thread per worker) closed on exit."""
    if opts.client is not None:
        yield opts.client
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError("--engine dask needs Dask: pip install 'whitenclip[dask]'") from None
    level = logging.INFO if opts.debug else logging.CRITICAL
    for name in ("distributed", "bokeh", "tornado"):
        logging.getLogger(name).setLevel(level)
    if opts.scheduler:
        check_scheduler_address(opts.scheduler)
        try:
            client = Client(opts.scheduler, timeout="30s")
        except (OSError, ValueError, TypeError) as exc:
            raise InputError(f"--scheduler {opts.scheduler}: cannot connect ({' '.join(str(exc).split())})") from None
        with contextlib.closing(client):
            yield client
        return
    workers = opts.workers or max(1, min(os.cpu_count() or 1, 8))
    blas1 = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=level, env=blas1)
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


SCHEDULER_SCHEMES = ("tcp", "tls", "inproc", "ucx", "ws", "wss")


def check_scheduler_address(address: str) -> None:
    """Refuse (exit 2, one line) a ``--scheduler`` that no Dask client could connect to:
    ``SCHEME://HOST:PORT`` with a scheme Dask knows, or ``HOST:PORT`` (tcp).

    >>> check_scheduler_address("tcp://10.0.0.1:8786")
    >>> check_scheduler_address("foo://x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    whitenclip.errors.InputError: --scheduler foo://x: unknown scheme 'foo' (expected tcp://HOST:PORT; ...)
    """
    scheme, _, rest = address.rpartition("://")
    scheme = scheme or "tcp"
    if scheme not in SCHEDULER_SCHEMES:
        raise InputError(f"--scheduler {address}: unknown scheme {scheme!r} (expected tcp://HOST:PORT; known: "
                         f"{', '.join(SCHEDULER_SCHEMES)})")
    host, _, port = rest.rpartition(":")
    if scheme != "inproc" and not (host and port.isdigit() and 0 < int(port) < 65536):
        raise InputError(f"--scheduler {address}: expected {scheme}://HOST:PORT")


def runs_here(opts: EngineOptions, tasks) -> bool:
    """True when the tasks run in this process: ``--engine local``, or ``--engine dask`` with a
    single task and no cluster given (starting a LocalCluster for one task is pure overhead; the
    result is the same, as the merge tree is)."""
    if opts.engine == "local":
        return True
    if len(tasks) <= 1 and opts.client is None and not opts.scheduler:
        opts.say(f"one {'piece' if not tasks or len(tasks[0]) == 1 else 'task'}: running it in this process "
                 "(no LocalCluster needed)")
        return True
    return False


def tree_merge(items: list, merge: Callable) -> Any:
    """Pairwise merge in order, level by level: ((0,1),(2,3)),... an odd last item moves up."""
    while len(items) > 1:
        nxt = [merge(items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)]
        if len(items) % 2:
            nxt.append(items[-1])
        items = nxt
    return items[0]


def plan(inputs, opts: EngineOptions):
    """Shards and pieces of embedding INPUTs (headers only)."""
    shards = discover_shards(inputs, allow_partial=opts.allow_partial, column=opts.column, id_column=opts.id_column)
    pieces = plan_pieces(shards, opts.piece_rows)
    return shards, pieces


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


def check_moments_dir(moments_dir, inputs, shards=()) -> None:
    """Refuse a ``--moments-dir`` that is a file, that is or lies inside an input folder, or that
    is the folder holding an input shard: its parts would be read as inputs by later runs."""
    target = Path(os.path.realpath(moments_dir))
    if target.exists() and not target.is_dir():
        raise InputError(f"--moments-dir {moments_dir}: exists and is not a directory")
    why = None
    for given in (p for p in map(str, inputs) if p != "-" and Path(p).is_dir()):
        folder = Path(os.path.realpath(given))
        if folder == target or folder in target.parents:
            why = f"{'is' if folder == target else 'lies inside'} the input folder {given}"
            break
    for shard in shards if why is None else ():
        if Path(os.path.realpath(shard.path)).parent == target:
            why = f"holds the input shard {shard.path}"
            break
    if why:
        raise InputError(f"--moments-dir {moments_dir}: {why}; its parts would be read as inputs by later runs "
                         "(choose a folder outside the inputs)")


def merge_moment_files(paths) -> MomentsPart:
    """Exact merge of moments files in the order given; refuses (naming the file) parts of another
    dimension, encoder, modality, normalisation or Gram precision, and a part given twice."""
    paths = [str(p) for p in paths]
    if not paths:
        raise InputError("no moments files given")
    out = None
    for p in paths:
        if not is_moments_file(p):
            raise InputError(f"{p}: not a whitenclip moments file")
        part = MomentsPart.load(p)
        out = part if out is None else out.merge(part, name=p)
    return out


# ---------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------
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


def entropy_from_moments(part: MomentsPart, *, base: str = "e", whitener=None, floor: float = 1e-12,
                         confidence: float = 0.95):
    """Gaussian entropy from moments alone (what needs no rows): plug-in, bias-corrected, exact
    Gaussian std and interval (the row-group jackknife and k-NN check need rows: absent here).

    Over the kept rank r of the ddof=1 covariance Sigma (of ``whitener``-coordinates
    C = W^T Sigma W when given, then + log|det W^-1| back to input units):
    H_plugin = 0.5 (r log(2 pi e) + sum log lambda), H = H_plugin - 0.5 log_det_bias(r, n),
    std = 0.5 sqrt(log_det_variance(r, n)), ci = H -/+ z std. Same keys as
    ``GaussianEntropy.summary()`` plus ``ci_method`` and ``source``.
    """
    from scipy import special

    from whitenclip.information import EntropyResult, log_det_bias, log_det_variance
    from whitenclip.whitening import eigh_descending

    unit = {"e": 1.0, "2": math.log(2.0)}.get(str(base))
    if unit is None:
        raise InputError(f"base must be e or 2, got {base!r}")
    n = part.n
    if n < 3:
        raise InputError(f"entropy needs at least 3 rows, got {n}")
    cov = part.moments.covariance(ddof=1)
    offset = 0.0
    if whitener is not None:
        if whitener.n_features_ != part.n_features:
            raise InputError(f"entropy: moments have {part.n_features} dims, the whitener {whitener.n_features_}")
        W = np.asarray(whitener.W_, dtype=np.float64)
        cov, offset = W.T @ cov @ W, float(whitener.log_det_)
    lam, _ = eigh_descending(cov)
    if not lam[0] > 0:
        raise InputError("entropy: all directions have zero variance")
    r = min(int((lam > floor * lam[0]).sum()), n - 1)
    lam = lam[:r]
    log_det = float(np.log(lam).sum()) - 2.0 * offset
    plugin = 0.5 * (r * math.log(2.0 * math.pi * math.e) + log_det)
    corrected = plugin - 0.5 * log_det_bias(r, n)
    std = 0.5 * math.sqrt(log_det_variance(r, n)) / unit
    z = float(special.ndtri(0.5 + 0.5 * confidence))
    H = corrected / unit
    return EntropyResult(entropy=H, entropy_plugin=plugin / unit, ci=(H - z * std, H + z * std), std=std,
                         base=str(base), rank=r, n=n, knn=None, confidence=confidence, ci_method="gaussian",
                         whitened=whitener is not None)


def entropy_summary(inputs, opts: EngineOptions, *, base: str = "e", whitener=None):
    """:func:`entropy_from_moments` of INPUTs' merged moments (moments files or embeddings)."""
    part = compute_moments(inputs, opts)
    return entropy_from_moments(part, base=base, whitener=whitener)


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


def shard_output_names(paths, suffix: str) -> list[str]:
    """Names of the per-shard files of ``-o DIR/``, unique per shard: ``<stem>.<suffix>`` when the
    stems differ, else each shard's path relative to the shards' common folder with its suffix
    replaced (``A/shard-00000.tsv``, ``B/shard-00000.tsv``). A shard given twice, or two shards
    whose names still clash (``a.npy`` and ``a.safetensors`` side by side), are refused.

    >>> shard_output_names(["e/img_emb_0.npy", "e/img_emb_1.npy"], "tsv")
    ['img_emb_0.tsv', 'img_emb_1.tsv']
    >>> shard_output_names(["/s/A/shard-00000.npy", "/s/B/shard-00000.npy"], "tsv")
    ['A/shard-00000.tsv', 'B/shard-00000.tsv']
    """
    paths = [str(p) for p in paths]
    first: dict[str, str] = {}
    for p in paths:
        seen = first.setdefault(os.path.realpath(p), p)
        if seen is not p:
            raise InputError(f"{p}: given twice; its per-shard output file would be written twice "
                             "(give each input once, or write one file with -o FILE)")
    names = [f"{Path(p).stem}.{suffix}" for p in paths]
    if len(set(names)) < len(names):
        absolute = [os.path.abspath(p) for p in paths]
        root = os.path.commonpath([os.path.dirname(a) for a in absolute])
        names = [Path(os.path.relpath(a, root)).with_suffix(f".{suffix}").as_posix() for a in absolute]
    clash: dict[str, str] = {}
    for p, name in zip(paths, names):
        if name in clash:
            raise InputError(f"{p}: its per-shard output {name} clashes with that of {clash[name]}; "
                             "rename one, or write one file with -o FILE")
        clash[name] = p
    return names


def write_scores(inputs, opts: EngineOptions, whitener, *, output, format_rows: Callable, header: str,
                 suffix: str, drop_nonfinite: bool = False, stdout=None, protected=()) -> int:
    """Score INPUTs and write rows in input order: to ``stdout``, to one file (atomically), or, when
    ``output`` is a directory (exists, or ends with ``/``: then created), one file per shard
    ``DIR/<name>.<suffix>`` (names from :func:`shard_output_names`, unique per shard).
    Before any work, every file to be written is checked against every input and shard and
    against ``protected`` (e.g. the whitener; :func:`whitenclip.outputs.check_output_files`).
    ``format_rows(table)`` renders a :class:`~whitenclip.likelihood.ScoreTable` (the caller's
    renderer: the engine writes no format of its own). The header is written with the first
    rows (or at the end when there are none), so a run failing before its first row writes
    nothing. Returns the number of rows written."""

    from whitenclip.outputs import check_output_dir, check_output_files, wants_directory
    from whitenclip.stores import atomic_write

    out_dir = output is not None and str(output) != "-" and wants_directory(output)
    rows = 0
    if not out_dir:
        with contextlib.ExitStack() as stack:
            if output is None or str(output) == "-":
                sink = stdout or sys.stdout
            else:
                sink = stack.enter_context(atomic_write(output, "w"))
            for _, table in iter_scores(inputs, opts, whitener, drop_nonfinite=drop_nonfinite):
                text = format_rows(table)
                if text:
                    sink.write(header + text if header else text)
                    header = ""
                rows += table.n_rows
            if header:
                sink.write(header)
        return rows
    shards = plan(inputs, opts)[0]
    files = [Path(output) / name for name in shard_output_names([s.path for s in shards], suffix)]
    check_output_dir(output, inputs=[*inputs, *protected])
    check_output_files(files, inputs=[*inputs, *protected, *(s.path for s in shards)])
    where = dict(zip((s.path for s in shards), files))
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
    current, stack = None, contextlib.ExitStack()
    try:
        for path, table in iter_scores(inputs, opts, whitener, drop_nonfinite=drop_nonfinite):
            if path != current:
                stack.close()
                stack = contextlib.ExitStack()
                sink = stack.enter_context(atomic_write(where[path], "w"))
                sink.write(header)
                current = path
            sink.write(format_rows(table))
            rows += table.n_rows
    except BaseException:
        stack.__exit__(*sys.exc_info())
        raise
    stack.close()
    for shard in shards:
        if shard.n_rows == 0:  # an empty shard still gets its (header-only) file
            with atomic_write(where[shard.path], "w") as fh:
                fh.write(header)
    return rows


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
