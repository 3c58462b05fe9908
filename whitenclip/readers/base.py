"""The reading interface: a *format* plans *shards* from headers and reads *pieces* in chunks.

A :class:`Shard` is one file (or one array in a file) of rows, described from its header alone;
a :class:`Piece` is a run of consecutive rows of one shard, the unit one task reads (the local
engine reads the pieces in this process, in order; the Dask engine ships the same pieces to its
workers). A :class:`Format` (one module of :mod:`whitenclip.readers` each) implements:

* ``shards(path, **options) -> list[Shard]``: planning, every check that needs no data (shape,
  dtype, dimension, truncation against the header's promise, ids count);
* ``read(piece, chunk_rows) -> Iterator[(first_row, X, ids or None)]``: the piece's rows in
  chunks, X a fresh float64 array of shape (m <= chunk_rows, dim), ``first_row`` the row in the
  shard, ``ids`` when the chunk brings its own (a table's id column);
* ``ids(piece) -> list[str] | None`` and ``groups(piece) -> list | None``: row ids and group ids
  the shard records (None: row index / no groups);
* ``cut(shard, piece_rows) -> [(start, stop, units)]``: how a shard is cut into pieces (byte
  ranges of ``piece_rows`` rows by default; one piece for a format that cannot seek).

Formats are looked up by name (:func:`format_of`), so a pickled piece finds its reader in a worker.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from whitenclip.errors import InputError

FLOAT_KINDS = ("float16", "float32", "float64")


@dataclass(frozen=True)
class Shard:
    """One file (or one array of a file) of rows, described from its header.

    ``offset`` is the byte where row 0 starts; rows are C-ordered ``dtype`` of ``dim`` values.
    ``kind`` is ``raw`` (byte ranges readable anywhere), ``whole`` (one piece, read by its format)
    or ``table`` (runs of units: row groups / record batches). ``format`` names the reader
    (:func:`format_of`); ``locator`` is that reader's own (a table's ``(TableInfo, id_prefix)``, an
    ``.npz`` member, an HDF5 dataset, the parsed rows of standard input). ``ids`` says where row ids
    come from: ``("json", path)`` (a store shard, ``NAME.ids.json``), ``("header", path)``
    (safetensors metadata), ``("parquet", path, column)`` (clip-retrieval metadata), a format's own
    (``("column", name)``, ``("member", "ids")``, ``("dataset", "ids")``, ``("recorded",)``), or None
    (the row index in the file).
    """

    path: str
    n_rows: int
    dim: int
    dtype: str
    offset: int = 0
    kind: str = "raw"
    ids: tuple | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)
    locator: object = field(default=None, compare=False, hash=False, repr=False)
    format: str = "npy"

    @property
    def row_bytes(self) -> int:
        return self.dim * np.dtype(self.dtype).itemsize

    @property
    def table(self):
        """``(TableInfo, id_prefix)`` of a table shard (its locator)."""
        return self.locator if self.kind == "table" else None


@dataclass(frozen=True)
class Piece:
    """Rows ``[start, stop)`` of one shard (bytes ``[byte_start, byte_stop)``); ``index`` is the
    piece's place in the whole plan (the merge order). A table's piece is the run of whole units
    ``units = (first, stop)`` (row groups / record batches) holding those rows."""

    shard: Shard
    index: int
    start: int
    stop: int
    units: tuple = ()

    @property
    def n_rows(self) -> int:
        return self.stop - self.start

    @property
    def byte_start(self) -> int:
        return self.shard.offset + self.start * self.shard.row_bytes

    @property
    def byte_stop(self) -> int:
        return self.shard.offset + self.stop * self.shard.row_bytes

    def __str__(self) -> str:
        return f"{self.shard.path}[{self.start}:{self.stop}]"


class Format:
    """A file format of embeddings (see the module doc). Subclasses set ``name`` (their module's
    name in :mod:`whitenclip.readers`) and implement :meth:`shards`; the default :meth:`read` reads
    a ``raw`` shard's byte ranges; :meth:`ids` and :meth:`groups` say None (row index, no groups)."""

    name = ""

    def shards(self, path, **options) -> list[Shard]:  # pragma: no cover - abstract
        raise NotImplementedError

    def cut(self, shard: Shard, piece_rows: int) -> list[tuple[int, int, tuple]]:
        """``(start, stop, units)`` of each piece of ``shard``: runs of ``piece_rows`` rows, or the
        whole shard when it cannot be read from the middle (``kind == "whole"``)."""
        step = shard.n_rows if shard.kind == "whole" else int(piece_rows)
        return [(lo, min(lo + step, shard.n_rows), ()) for lo in range(0, shard.n_rows, max(step, 1))]

    def read(self, piece: Piece, chunk_rows: int) -> Iterator[tuple[int, np.ndarray, list | None]]:
        yield from ((lo, X, None) for lo, X in read_byte_range(piece, chunk_rows))

    def ids(self, piece: Piece) -> list[str] | None:
        return None

    def groups(self, piece: Piece) -> list | None:
        return None


def format_named(name: str) -> Format:
    """The :class:`Format` of module ``whitenclip.readers.NAME`` (imported on first use, in any process)."""
    return importlib.import_module(f"whitenclip.readers.{name}").FORMAT


def format_of(shard: Shard) -> Format:
    """The :class:`Format` reading ``shard``."""
    return format_named(shard.format)


def read_byte_range(piece: Piece, chunk_rows: int, *, digest=None) -> Iterator[tuple[int, np.ndarray]]:
    """``(first_row, X)`` chunks of a ``raw`` piece: only its byte range, ``chunk_rows`` rows at a
    time, plain reads (no memory map: peak memory is one chunk); ``digest`` (a hashlib object) is
    updated with the raw bytes. A short read raises :class:`InputError` naming the file and row."""
    s = piece.shard
    dtype = np.dtype(s.dtype)
    with open(s.path, "rb") as fh:
        fh.seek(piece.byte_start)
        for lo in range(piece.start, piece.stop, chunk_rows):
            hi = min(lo + chunk_rows, piece.stop)
            buf = np.empty((hi - lo) * s.dim, dtype=dtype)
            got = fh.readinto(memoryview(buf).cast("B"))
            if got != buf.nbytes:
                raise InputError(f"{s.path}: truncated at row {lo + got // s.row_bytes} "
                                 f"(expected {s.n_rows} rows)")
            if digest is not None:
                digest.update(memoryview(buf).cast("B"))
            yield lo, buf.reshape(hi - lo, s.dim).astype(np.float64)


def index_ids(lo: int, hi: int, id_prefix: str | None = None) -> list[str]:
    """Ids of rows ``lo..hi-1`` that have none of their own: ``f"{id_prefix}:{row}"``, or ``str(row)``.

    >>> index_ids(2, 4), index_ids(0, 2, "a.npy")
    (['2', '3'], ['a.npy:0', 'a.npy:1'])
    """
    if id_prefix is None:
        return [str(i) for i in range(lo, hi)]
    return [f"{id_prefix}:{i}" for i in range(lo, hi)]


# ---------------------------------------------------------------------------------------
# checks every format shares
# ---------------------------------------------------------------------------------------
def is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def existing_file(p):
    """``p`` as a Path when it names a non-empty regular file, else one-line :class:`InputError`."""
    from pathlib import Path

    p = Path(p)
    if not p.exists():
        raise InputError(f"{p}: no such file or directory")
    if not p.is_file():
        raise InputError(f"{p}: not a regular file")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: file is empty")
    return p


def check_matrix(name: str, shape, dtype) -> tuple[int, int]:
    """``(n, d)`` of a 2-D float16/32/64 array with rows and dimensions, else :class:`InputError`."""
    if len(shape) != 2:
        raise InputError(f"{name}: expected a 2-D array (n_rows, dim), got shape {tuple(shape)}")
    if (dtype.name if isinstance(dtype, np.dtype) else str(dtype)) not in FLOAT_KINDS:
        raise InputError(f"{name}: expected float16/32/64 embeddings, got dtype {dtype}")
    n, d = int(shape[0]), int(shape[1])
    if n == 0:
        raise InputError(f"{name}: holds zero rows")
    if d == 0:
        raise InputError(f"{name}: rows have zero dimensions")
    return n, d


def check_extent(name, size: int, offset: int, n_rows: int, row_bytes: int) -> None:
    """Refuse data whose header promises more bytes than ``size`` (naming the first missing row)."""
    need = offset + n_rows * row_bytes
    if size < need:
        row = max(0, (size - offset) // row_bytes) if row_bytes else 0
        raise InputError(f"{name}: truncated at row {row}: the header promises {n_rows} rows "
                         f"({need} bytes), the file holds {size} bytes")


def check_ids(p, ids, n: int) -> None:
    """``ids`` (None, or one per row) must be ``n`` strings or integers: a null id (``None``, JSON
    ``null``) or a nested value is refused naming its row rather than becoming the text "None"."""
    if ids is None:
        return
    if len(ids) != n:
        raise InputError(f"{p}: {len(ids)} ids for {n} rows")
    for row, v in enumerate(ids):
        if v is None or isinstance(v, (bool, float, list, tuple, dict)):
            raise InputError(f"{p}: id of row {row} is {v!r}; ids must be strings or integers")


def decode_meta(meta: dict) -> dict:
    """Header metadata values (JSON text where they are JSON) decoded."""
    out = {}
    for k, v in meta.items():
        try:
            out[k] = json.loads(v)
        except (ValueError, TypeError, RecursionError):
            out[k] = v
    return out


def is_binary_file(p, size: int = 8192) -> bool:
    """True when the first ``size`` bytes of file ``p`` hold a NUL byte or invalid UTF-8 (not text)."""
    with open(p, "rb") as fh:
        head = fh.read(size)
    if b"\0" in head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start < len(head) - 3  # a multi-byte character cut at the end is fine
    return False
