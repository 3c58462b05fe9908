"""Embedding files and store directories: chunked reading, atomic writing.

Supported inputs (all yield rows of shape (m, d) as float64 chunks with string row ids):

* ``.npy``          2-D float16/32/64 array, read in chunks of rows with plain reads (never unpickled);
  its ids (and groups, encoder) from ``NAME.ids.json`` beside it when there is one, as a store
  shard's (``whitenclip embed -o NAME.npy`` writes both, :func:`write_npy`);
* ``.npz``          array ``embeddings`` (or the only array), optional string array ``ids``;
* ``.safetensors``  tensor ``embeddings``, optional ``ids`` (JSON list) in the header metadata;
* ``.pt``/``.pth``  a 2-D float tensor, or a dict with ``embeddings`` (optional ``ids``), read with
  ``torch.load(weights_only=True)``;
* store directory   ``meta.json`` + ``shard-NNNNN.npy`` + ``shard-NNNNN.ids.json`` (see
  :class:`StoreWriter`), written by ``whitenclip embed``;
* tables            ``.parquet`` / Arrow IPC files and folders (``datasets.save_to_disk``), with an
  embedding column (``--column``) and optional ids (``--id-column``): :mod:`whitenclip.tables`;
* text vectors      one vector per line: whitespace- or comma-separated floats, or a JSON array
  (``-`` is standard input).

Row ids default to the row index (as a string) when a file carries none, or to ``FILE:ROW`` when
a command reads several inputs (:func:`label_ids`). A store whose ``meta.json`` records more
items than its committed shards cover (a killed ``embed``) is refused unless ``allow_partial``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from whitenclip.config import CHUNK_ROWS
from whitenclip.errors import InputError, NonFiniteRowsWarning
from whitenclip.outputs import atomic_write, npy_ids_path  # noqa: F401  (re-exported: stores write through them)
from whitenclip.results import Result
from whitenclip.tables import TABLE_SUFFIXES, TableRows, index_ids, inspect_table, is_table_path, table_files

DEFAULT_CHUNK_ROWS = CHUNK_ROWS
STORE_FORMAT = "whitenclip-store"
STORE_VERSION = 1
_FLOAT_KINDS = ("float16", "float32", "float64")
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.npy$")


# ---------------------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------------------
def write_json_atomic(path, obj) -> None:
    """Write ``obj`` as pretty JSON to ``path`` atomically."""
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.write("\n")


# ---------------------------------------------------------------------------------------
# safetensors and .npy headers: one validated parser each, for the local and the sharded path
# ---------------------------------------------------------------------------------------
SAFETENSORS_HEADER_LIMIT = 100 << 20
"""Largest safetensors JSON header read (bytes); a bigger one is refused, never parsed."""

_ST_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
             "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_ST_NUMPY = {"BOOL": "|b1", "U8": "|u1", "I8": "|i1", "I16": "<i2", "U16": "<u2", "F16": "<f2", "I32": "<i4",
             "U32": "<u4", "F32": "<f4", "I64": "<i8", "U64": "<u8", "F64": "<f8"}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors file: ``dtype`` (safetensors name, e.g. ``F32``), ``shape``,
    and its bytes ``[start, stop)`` as absolute offsets in the file."""

    name: str
    dtype: str
    shape: tuple
    start: int
    stop: int

    @property
    def numpy_dtype(self) -> np.dtype | None:
        return np.dtype(_ST_NUMPY[self.dtype]) if self.dtype in _ST_NUMPY else None


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


_OTHER_FORMATS = ((b"\x93NUMPY", "a NumPy .npy file"), (b"PK\x03\x04", "a zip archive (.npz, or a torch .pt file)"),
                  (b"PAR1", "a parquet file"), (b"ARROW1", "an Arrow IPC file"), (b"\x80", "a Python pickle"),
                  (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"))
"""Magic bytes of files often given where a .safetensors file is expected (named in the refusal)."""


def parse_safetensors_header(path) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """The validated header of a ``.safetensors`` file: ``(tensors, metadata)``.

    Reads only the 8-byte length and the JSON header. Checks: the length fits the file and
    :data:`SAFETENSORS_HEADER_LIMIT`; the header is a JSON object; ``__metadata__`` maps strings
    to strings; every tensor entry is an object with a string ``dtype``, a ``shape`` of
    non-negative integers and ``data_offsets`` ``[begin, end]`` with ``0 <= begin <= end`` inside
    the file; ``end - begin`` equals ``prod(shape) x itemsize`` for every known dtype; no two
    tensors overlap. Anything else raises :class:`InputError` naming the file.
    """
    p = _existing_file(path)
    size = p.stat().st_size

    def bad(why: str):
        return InputError(f"{p}: not a readable .safetensors file ({why})")

    with open(p, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise bad("shorter than its 8-byte header length")
        n = int.from_bytes(head, "little")
        if n > SAFETENSORS_HEADER_LIMIT or 8 + n > size:
            kind = next((k for magic, k in _OTHER_FORMATS if head.startswith(magic)), None)
            if kind is not None:
                raise InputError(f"{p}: not a .safetensors file: its first bytes are those of {kind}")
        if n > SAFETENSORS_HEADER_LIMIT:
            raise bad(f"header of {n} bytes, more than the {SAFETENSORS_HEADER_LIMIT >> 20} MiB limit")
        if 8 + n > size:
            raise bad(f"header of {n} bytes runs past the end of the {size}-byte file")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad(f"header is not JSON: {_one_line(exc)[:120]}") from None
    if not isinstance(header, dict):
        raise bad(f"header is a JSON {type(header).__name__}, not an object")
    meta = header.pop("__metadata__", None)
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise bad("__metadata__ must map names to strings")
    data_start, data_size = 8 + n, size - 8 - n
    tensors = {}
    for name, t in header.items():
        if not isinstance(t, dict):
            raise bad(f"tensor {name!r} is a JSON {type(t).__name__}, not an object")
        dtype, shape, offs = t.get("dtype"), t.get("shape"), t.get("data_offsets")
        if not isinstance(dtype, str):
            raise bad(f"tensor {name!r} has no string dtype")
        if not isinstance(shape, list) or not all(_is_count(v) for v in shape):
            raise bad(f"tensor {name!r}: shape must be a list of non-negative integers, got {shape!r}"[:200])
        if (not isinstance(offs, list) or len(offs) != 2 or not all(_is_count(v) for v in offs)
                or offs[0] > offs[1]):
            raise bad(f"tensor {name!r}: data_offsets must be [begin, end] with 0 <= begin <= end, got {offs!r}"[:200])
        if offs[1] > data_size:
            raise bad(f"tensor {name!r}: data_offsets {offs} run past the end of the data ({data_size} bytes)")
        if dtype in _ST_SIZES:
            need = _ST_SIZES[dtype] * int(np.prod(shape, dtype=object))
            if offs[1] - offs[0] != need:
                raise bad(f"tensor {name!r}: {dtype} {tuple(shape)} needs {need} bytes, "
                          f"data_offsets give {offs[1] - offs[0]}")
        tensors[name] = TensorEntry(name, dtype, tuple(shape), data_start + offs[0], data_start + offs[1])
    spans = sorted((t.start, t.stop, t.name) for t in tensors.values() if t.stop > t.start)
    for (_, stop, a), (start, _, b) in zip(spans, spans[1:]):
        if start < stop:
            raise bad(f"tensors {a!r} and {b!r} overlap")
    return tensors, meta


def read_safetensors(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read every tensor and the header metadata of a ``.safetensors`` file.

    The header goes through :func:`parse_safetensors_header`; raises :class:`InputError` naming
    the file when it is missing, truncated, not a safetensors file, or holds a dtype numpy lacks.
    """
    entries, meta = parse_safetensors_header(path)
    tensors = {}
    with open(path, "rb") as fh:
        for name, t in entries.items():
            dtype = t.numpy_dtype
            if dtype is None:
                raise InputError(f"{path}: tensor {name!r} has dtype {t.dtype}, which cannot be read here")
            fh.seek(t.start)
            arr = np.fromfile(fh, dtype=dtype, count=(t.stop - t.start) // dtype.itemsize)
            if arr.nbytes != t.stop - t.start:
                raise InputError(f"{path}: tensor {name!r} is truncated")
            tensors[name] = arr.reshape(t.shape)
    return tensors, meta


def read_npy_header(fh, name) -> tuple[tuple, bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of the ``.npy`` header at ``fh``'s position (left just
    after the header). Raises :class:`InputError` naming ``name``: a bad magic string, an
    unsupported version, an unparsable header, a negative dimension or a dtype holding Python
    objects (never unpickled)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
    except ValueError:
        raise InputError(f"{name}: not a .npy file (bad magic string: it does not start with \\x93NUMPY)") from None
    except Exception as exc:
        raise InputError(f"{name}: not a readable .npy file ({_one_line(exc)})") from None
    readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
    if version not in readers:
        raise InputError(f"{name}: unsupported .npy format version {version[0]}.{version[1]}")
    try:
        shape, fortran, dtype = readers[version](fh)
    except Exception as exc:
        raise InputError(f"{name}: not a readable .npy header ({_one_line(exc)[:160]})") from None
    if dtype.hasobject:
        raise InputError(f"{name}: holds Python objects (dtype {dtype}); object arrays are never unpickled")
    if any(int(v) < 0 for v in shape):
        raise InputError(f"{name}: .npy header has a negative dimension {tuple(shape)}")
    return tuple(int(v) for v in shape), bool(fortran), dtype


def check_extent(name, size: int, offset: int, n_rows: int, row_bytes: int) -> None:
    """Refuse data whose header promises more bytes than ``size`` (naming the first missing row)."""
    need = offset + n_rows * row_bytes
    if size < need:
        row = max(0, (size - offset) // row_bytes) if row_bytes else 0
        raise InputError(f"{name}: truncated at row {row}: the header promises {n_rows} rows "
                         f"({need} bytes), the file holds {size} bytes")


# ---------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------
@dataclass
class EmbeddingFile:
    """A source of embedding rows read in chunks.

    Attributes
    ----------
    path : str
        What the user named (``-`` for standard input).
    n_rows, dim : int
        Shape of the embedding matrix (n_rows, dim).
    dtype : str
        Stored dtype (float16, float32 or float64).
    meta : dict
        What the file says about itself (encoder, modality, normalized), when known.
    """

    path: str
    n_rows: int
    dim: int
    dtype: str
    meta: dict = field(default_factory=dict)
    _blocks: list = field(default_factory=list, repr=False)  # [(array-like (m, d), ids or None)]
    id_prefix: str | None = None
    """Rows without ids of their own get ``f"{id_prefix}:{row}"`` (set when a command reads several
    inputs, so ids stay unique and traceable), else ``str(row)``."""
    groups: list | None = None
    """Group id of each row (captions of one image...; None entries: own group), or None: from a
    store that records them, or ``--groups FILE`` (:func:`whitenclip.sources.open_sources`)."""
    progress: bool = False
    """Report long reads on stderr: a plain line (rows, rate, ETA) every ~15 s, none for a short read
    (:class:`whitenclip.progress.LineProgress`; the CLI sets it unless ``--quiet``)."""

    def iter_chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[tuple[list[str], np.ndarray]]:
        """Yield ``(ids, X)`` with X of shape (m <= chunk_rows, dim), float64, in file order.

        Each X is a new array the caller may modify (it never aliases the file's data).
        """
        if not self.progress:
            yield from self._chunks(chunk_rows)
            return
        from whitenclip.progress import progress

        with progress(True, self.n_rows, f"reading {self.path}", unit="rows") as advance:
            for ids, X in self._chunks(chunk_rows):
                advance(X.shape[0])
                yield ids, X

    def _chunks(self, chunk_rows: int) -> Iterator[tuple[list[str], np.ndarray]]:
        start = 0
        for block, ids in self._blocks:
            block = _load_block(block)
            for lo, rows, *own_ids in _block_chunks(block, chunk_rows):  # a table's chunks bring their ids
                hi = lo + rows.shape[0]
                X = _fresh_float64(rows, already_fresh=isinstance(block, (RawRows, TableRows)))
                if own_ids:
                    chunk_ids = own_ids[0]
                elif ids is not None:
                    chunk_ids = list(ids[lo:hi])
                else:
                    chunk_ids = index_ids(start + lo, start + hi, self.id_prefix)
                yield chunk_ids, X
            start += block.shape[0]

    def read_all(self) -> tuple[list[str], np.ndarray]:
        """All rows at once: ``(ids, X)`` with X of shape (n_rows, dim), float64."""
        ids, parts = [], []
        for chunk_ids, X in self.iter_chunks():
            ids.extend(chunk_ids)
            parts.append(X)
        X = np.concatenate(parts) if parts else np.empty((0, self.dim))
        return ids, X


def _fresh_float64(rows, *, already_fresh: bool) -> np.ndarray:
    """Rows as a float64 array the caller owns (never a view into a stored array)."""
    return np.asarray(rows, dtype=np.float64) if already_fresh else np.array(rows, dtype=np.float64)


def _load_block(block):
    return block() if callable(block) else block


def _block_chunks(block, chunk_rows: int):
    """``(first_row, rows)`` of a block: its own sequential reader when it has one, else slices."""
    if hasattr(block, "chunks"):
        yield from block.chunks(chunk_rows)
        return
    for lo in range(0, block.shape[0], chunk_rows):
        yield lo, block[lo:lo + chunk_rows]


EMBEDDING_SUFFIXES = (".npy", ".npz", ".safetensors", ".pt", ".pth", *TABLE_SUFFIXES)
"""File name endings read as embeddings (besides store directories, table folders and text vectors)."""


def is_embedding_path(path) -> bool:
    """True when ``path`` names an embeddings file, a store directory or a folder of tables
    (parquet/Arrow, :func:`whitenclip.tables.is_table_path`), not raw images/captions."""
    p = Path(path)
    if p.is_dir():
        return (p / "meta.json").is_file() or is_table_path(p)
    return p.suffix.lower() in EMBEDDING_SUFFIXES


def _open_table(path, *, column: str | None = None, id_column: str | None = None):
    """An :class:`EmbeddingFile` over a parquet/Arrow table file or folder (:mod:`whitenclip.tables`).

    Every file must have the same dimension and value dtype. Without an id column, rows of a
    folder are named ``FILE:ROW`` (the file's name, the row in that file), rows of one file ``ROW``.
    """
    files = table_files(path)
    folder = Path(path).is_dir()
    blocks, first = [], None
    for f in files:
        info = inspect_table(f, column, id_column)
        if first is not None and (info.dim, info.dtype) != (first.dim, first.dtype):
            raise InputError(f"{f}: embeddings of {info.dim} {info.dtype} values, but {first.path} has "
                             f"{first.dim} {first.dtype}")
        first = first or info
        blocks.append((TableRows(info, f.name if folder else None), None))
    n = sum(b.shape[0] for b, _ in blocks)
    if n == 0:
        raise InputError(f"{path}: table holds zero rows")
    return EmbeddingFile(str(path), n, first.dim, first.dtype, {}, blocks)


def open_embeddings(path, *, allow_partial: bool = False, column: str | None = None,
                    id_column: str | None = None) -> EmbeddingFile:
    """Open an embeddings file, store directory or table for chunked reading (see module doc).

    A store left incomplete by a killed ``embed`` raises :class:`InputError` unless
    ``allow_partial`` is set. ``column`` / ``id_column`` name the embedding and id columns of a
    parquet/Arrow table (:mod:`whitenclip.tables`); other inputs have no columns and
    refuse them.
    """
    if (column is not None or id_column is not None) and not (str(path) != "-" and is_table_path(path)):
        raise InputError(f"{path}: --column/--id-column name columns of a parquet/Arrow table (or a captions CSV); "
                         "this input has none")
    if str(path) == "-":
        return read_text_vectors(sys.stdin, "<stdin>")
    p = Path(path)
    if is_table_path(p):
        return _open_table(p, column=column, id_column=id_column)
    if p.is_dir():
        return _open_store(p, allow_partial=allow_partial)
    p = _existing_file(p)
    suffix = p.suffix.lower()
    if suffix == ".npy":
        return _open_npy(p)
    if suffix == ".npz":
        return _open_npz(p)
    if suffix == ".safetensors":
        return _open_safetensors(p)
    if suffix in (".pt", ".pth"):
        return _open_torch(p)
    with open(p, "r", encoding="utf-8", errors="strict") as fh:
        try:
            return read_text_vectors(fh, str(p))
        except UnicodeDecodeError:
            raise InputError(f"{p}: not UTF-8 text and not a known embeddings format") from None


def _existing_file(p) -> Path:
    p = Path(p)
    if not p.exists():
        raise InputError(f"{p}: no such file or directory")
    if not p.is_file():
        raise InputError(f"{p}: not a regular file")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: file is empty")
    return p


def _check_matrix(name: str, shape, dtype) -> tuple[int, int]:
    if len(shape) != 2:
        raise InputError(f"{name}: expected a 2-D array (n_rows, dim), got shape {tuple(shape)}")
    if (dtype.name if isinstance(dtype, np.dtype) else str(dtype)) not in _FLOAT_KINDS:
        raise InputError(f"{name}: expected float16/32/64 embeddings, got dtype {dtype}")
    n, d = int(shape[0]), int(shape[1])
    if n == 0:
        raise InputError(f"{name}: holds zero rows")
    if d == 0:
        raise InputError(f"{name}: rows have zero dimensions")
    return n, d


class RawRows:
    """Rows of a C-ordered 2-D array stored raw at byte ``offset`` of a file (a ``.npy``'s data, a
    safetensors tensor, an uncompressed ``.npz`` member), read on demand with plain reads.

    ``rows[lo:hi]`` reads just those rows into a fresh array; :meth:`chunks` streams them in
    order through one open file. Unlike a memory map, pages already streamed do not stay in the
    process's resident set, so peak RSS is about one chunk, independent of n.
    """

    def __init__(self, path, offset: int, shape, dtype):
        self.path, self.offset = Path(path), int(offset)
        self.shape, self.dtype = tuple(int(v) for v in shape), np.dtype(dtype)

    @property
    def _row_values(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) if len(self.shape) > 1 else 1

    def _read(self, fh, lo: int, hi: int) -> np.ndarray:
        d = self._row_values
        buf = np.empty(max(hi - lo, 0) * d, dtype=self.dtype)
        got = fh.readinto(memoryview(buf).cast("B")) if buf.nbytes else 0
        if got != buf.nbytes:
            raise InputError(f"{self.path}: file is truncated (rows {lo}..{hi} missing)")
        return buf.reshape(-1, d)

    def __getitem__(self, rows: slice) -> np.ndarray:
        lo, hi, _ = rows.indices(self.shape[0])
        with open(self.path, "rb") as fh:
            fh.seek(self.offset + lo * self._row_values * self.dtype.itemsize)
            return self._read(fh, lo, max(hi, lo))

    def chunks(self, chunk_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            for lo in range(0, self.shape[0], chunk_rows):
                yield lo, self._read(fh, lo, min(lo + chunk_rows, self.shape[0]))


class NpyRows(RawRows):
    """Rows of a ``.npy`` file (header checked by :func:`read_npy_header`, size by :func:`check_extent`)."""

    def __init__(self, path: Path):
        with open(path, "rb") as fh:
            shape, fortran, dtype = read_npy_header(fh, path)
            offset = fh.tell()
        super().__init__(path, offset, shape, dtype)
        self.fortran = fortran
        if shape:
            check_extent(path, os.path.getsize(path), offset, shape[0], self._row_values * dtype.itemsize)


def _npy_rows(p: Path):
    """A row reader for a .npy file: :class:`NpyRows`, or a memory map for a Fortran-ordered array."""
    try:
        rows = NpyRows(p)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{p}: not a readable .npy file ({_one_line(exc)})") from None
    if rows.fortran and len(rows.shape) == 2 and min(rows.shape) > 1:
        return np.load(p, mmap_mode="r", allow_pickle=False)
    return rows


def _open_npy(p: Path) -> EmbeddingFile:
    arr = _npy_rows(p)
    n, d = _check_matrix(str(p), arr.shape, arr.dtype)
    side = npy_ids_path(p)
    if not side.is_file():
        return EmbeddingFile(str(p), n, d, arr.dtype.name, {}, [(arr, None)])
    doc = _shard_doc(side)
    ids, groups = _shard_rows(doc, side, n)
    meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
    from whitenclip.encoders.base import ENCODER_META_KEYS

    out = EmbeddingFile(str(p), n, d, arr.dtype.name, {k: meta[k] for k in ENCODER_META_KEYS if k in meta},
                        [(arr, ids)])
    out.groups = groups
    return out


NPZ_INFLATE_LIMIT = 1 << 30
"""Largest compressed ``.npz`` member inflated (bytes, as declared by the zip entry or its .npy
header): 1 GiB. A bigger one is refused before any inflating (a few MB of zeros can declare
gigabytes); uncompressed members (``np.savez``) have no limit: they are read in place, in chunks."""


class ZipRows:
    """Rows of a compressed (deflated) ``.npz`` member, inflated in order, one chunk at a time."""

    def __init__(self, path: Path, member: str, shape, dtype):
        self.path, self.member = Path(path), member
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)

    def chunks(self, chunk_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        import zipfile
        import zlib

        n, d = self.shape
        label = f"{self.path}: member {self.member!r}"
        try:
            with zipfile.ZipFile(self.path) as zf, zf.open(self.member) as fh:
                read_npy_header(fh, label)
                for lo in range(0, n, chunk_rows):
                    hi = min(lo + chunk_rows, n)
                    data = fh.read((hi - lo) * d * self.dtype.itemsize)
                    if len(data) != (hi - lo) * d * self.dtype.itemsize:
                        raise InputError(f"{label}: truncated at row {lo + len(data) // (d * self.dtype.itemsize)} "
                                         f"(its header promises {n} rows)")
                    yield lo, np.frombuffer(data, dtype=self.dtype).reshape(hi - lo, d)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
            raise InputError(f"{label}: cannot be inflated ({_one_line(exc)})") from None

    def __getitem__(self, rows: slice) -> np.ndarray:
        lo, hi, _ = rows.indices(self.shape[0])
        parts = [X[max(lo - a, 0):hi - a] for a, X in self.chunks(DEFAULT_CHUNK_ROWS) if a < hi and a + len(X) > lo]
        return np.concatenate(parts) if parts else np.empty((0, self.shape[1]), self.dtype)


def _npz_member(p: Path, zf, info, *, whole: bool = False):
    """``(shape, dtype, reader)`` of one ``.npy`` member: :class:`RawRows` in place when stored,
    :class:`ZipRows` when compressed (at most :data:`NPZ_INFLATE_LIMIT` bytes), or with ``whole``
    (or a Fortran-ordered array) a function returning the whole array."""
    import struct
    import zipfile

    label = f"{p}: member {info.filename!r}"
    if info.flag_bits & 0x1:
        raise InputError(f"{label} is encrypted")
    with zf.open(info) as fh:
        shape, fortran, dtype = read_npy_header(fh, label)
        header_len = fh.tell() if info.compress_type == zipfile.ZIP_STORED else None
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    stored = info.compress_type == zipfile.ZIP_STORED
    if not stored and max(nbytes, info.file_size) > NPZ_INFLATE_LIMIT:
        raise InputError(f"{label} would inflate to {max(nbytes, info.file_size) / 2**30:.1f} GiB, more than the "
                         f"{NPZ_INFLATE_LIMIT >> 30} GiB limit for compressed .npz members; save it with np.savez "
                         "(uncompressed, read in place in chunks) or as .npy")
    if stored:
        with open(p, "rb") as fh:
            fh.seek(info.header_offset)
            local = fh.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise InputError(f"{label}: bad zip local header")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        end = min(start + info.compress_size, os.path.getsize(p))
        if shape:
            row_bytes = int(np.prod(shape[1:], dtype=object)) * dtype.itemsize
            check_extent(label, end, start + header_len, shape[0], row_bytes)
    if whole or (fortran and len(shape) == 2 and min(shape) > 1):
        if nbytes > NPZ_INFLATE_LIMIT:
            raise InputError(f"{label}: {nbytes / 2**30:.1f} GiB cannot be read whole (limit "
                             f"{NPZ_INFLATE_LIMIT >> 30} GiB); save it C-ordered")

        def load():
            with zipfile.ZipFile(p) as z, z.open(info.filename) as fh:
                read_npy_header(fh, label)
                data = fh.read(nbytes)
            if len(data) != nbytes:
                raise InputError(f"{label}: truncated ({len(data)} of {nbytes} bytes)")
            return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
        return shape, dtype, load
    if stored:
        return shape, dtype, RawRows(p, start + header_len, shape, dtype)
    return shape, dtype, ZipRows(p, info.filename, shape, dtype)


def _open_npz(p: Path) -> EmbeddingFile:
    """``embeddings`` (or the only array) and optional ``ids`` of a ``.npz``, never unpickled:
    stored members are read in place in chunks, deflated ones inflated chunk by chunk (see
    :data:`NPZ_INFLATE_LIMIT`)."""
    import zipfile

    try:
        with zipfile.ZipFile(p) as zf:
            members = {i.filename[:-4]: i for i in zf.infolist() if i.filename.endswith(".npy")}
            arrays = [k for k in members if k != "ids"]
            key = "embeddings" if "embeddings" in members else (arrays[0] if len(arrays) == 1 else None)
            if key is None:
                raise InputError(f"{p}: .npz must hold an array named 'embeddings' (found {sorted(members)})")
            shape, dtype, rows = _npz_member(p, zf, members[key])
            n, d = _check_matrix(str(p), shape, dtype)
            ids = None
            if "ids" in members:
                id_shape, _, load_ids = _npz_member(p, zf, members["ids"], whole=True)
                if len(id_shape) != 1 or id_shape[0] != n:
                    raise InputError(f"{p}: 'ids' of shape {id_shape} for {n} rows (expected a list of {n})")
                ids = [str(s) for s in load_ids()]
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{p}: not a readable .npz file ({_one_line(exc)})") from None
    return EmbeddingFile(str(p), n, d, dtype.name, {}, [(rows, ids)])


def header_ids(p, meta: dict, n: int) -> list[str] | None:
    """The ``ids`` of a safetensors header's metadata (a JSON list of ``n`` ids), or None."""
    if "ids" not in meta:
        return None
    try:
        ids = json.loads(meta["ids"])
    except (ValueError, TypeError, RecursionError):
        ids = None
    if not isinstance(ids, list):
        raise InputError(f"{p}: metadata 'ids' is not a JSON list")
    _check_ids(p, ids, n)
    return [str(s) for s in ids]


def embedding_tensor(p, tensors: dict, meta: dict):
    """The embeddings entry of a parsed safetensors header: the tensor ``embeddings``, or the only
    tensor; our whitener and moments artifacts are refused by name."""
    if meta.get("format") in ("whitenclip-whitener", "whitenclip-moments"):
        raise InputError(f"{p}: this is a {meta['format'][11:]} artifact, not embeddings")
    key = "embeddings" if "embeddings" in tensors else (next(iter(tensors)) if len(tensors) == 1 else None)
    if key is None:
        raise InputError(f"{p}: .safetensors must hold a tensor named 'embeddings' (found {sorted(tensors)})")
    return tensors[key]


def _open_safetensors(p: Path) -> EmbeddingFile:
    tensors, meta = parse_safetensors_header(p)
    t = embedding_tensor(p, tensors, meta)
    dtype = _st_dtype(t.dtype)
    n, d = _check_matrix(str(p), t.shape, dtype)
    ids = header_ids(p, meta, n)
    meta = {k: v for k, v in meta.items() if k != "ids"}
    return EmbeddingFile(str(p), n, d, dtype, _decode_meta(meta), [(RawRows(p, t.start, (n, d), t.numpy_dtype), ids)])


def torch_load(path):
    """``torch.load(path, map_location="cpu", weights_only=True)`` (never unpickles), without torch's
    "Validating sparse tensor invariants" warning: sparse tensors are refused after loading, so
    the command's one error line is all the user sees."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Validating sparse tensor invariants")
        return torch.load(str(path), map_location="cpu", weights_only=True)


def torch_load_error(exc: BaseException) -> str:
    """What :func:`torch_load` refused, in one short line: the unpickler's own reason when there is
    one (torch's advice to retry with its unsafe unpickler is left out, as are its terminal colour codes).

    >>> torch_load_error(RuntimeError("Weights only load failed. Re-run \\x1b[1munsafely\\x1b[0m. "
    ...     "WeightsUnpickler error: Unsupported global: GLOBAL fractions.Fraction was not an allowed global. More."))
    'Unsupported global: GLOBAL fractions.Fraction was not an allowed global'
    """
    text = " ".join(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(exc)).split())
    _, found, reason = text.partition("WeightsUnpickler error:")
    if found:
        text = reason.strip().split(". ")[0].rstrip(".")
    return (text[:197] + "...") if len(text) > 200 else (text or type(exc).__name__)


def _open_torch(p: Path) -> EmbeddingFile:
    """A ``torch.save``d 2-D float tensor, or a dict holding one under ``embeddings`` (optional
    ``ids``: a list of strings), read with ``torch.load(weights_only=True)`` (never unpickled)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        raise InputError(f"{p}: reading .pt files needs torch") from None
    try:
        obj = torch_load(p)
    except Exception as exc:
        raise InputError(f"{p}: not a readable torch file with weights_only=True ({torch_load_error(exc)}); "
                         "only tensors and dicts of tensors are read, never pickled objects") from None
    ids = None
    if isinstance(obj, dict):
        if "embeddings" not in obj:
            found = sorted(map(str, obj))
            raise InputError(f"{p}: a dict in a .pt file must hold a tensor under 'embeddings' (found {found})")
        ids, obj = obj.get("ids"), obj["embeddings"]
        if ids is not None:
            if not isinstance(ids, (list, tuple)):
                raise InputError(f"{p}: 'ids' must be a list of strings")
    if not isinstance(obj, torch.Tensor):
        raise InputError(f"{p}: expected a 2-D float tensor (or a dict with 'embeddings'), got {type(obj).__name__}")
    if obj.layout != torch.strided:
        raise InputError(f"{p}: holds a sparse tensor ({str(obj.layout).replace('torch.', '')}); "
                         "save a dense one (tensor.to_dense())")
    if not obj.is_floating_point() or obj.dtype == torch.bfloat16:
        raise InputError(f"{p}: expected float16/32/64 embeddings, got dtype {str(obj.dtype).replace('torch.', '')}")
    try:
        arr = obj.detach().cpu().numpy()
    except Exception as exc:
        raise InputError(f"{p}: tensor cannot be read as an array ({_one_line(exc)})") from None
    n, d = _check_matrix(str(p), arr.shape, arr.dtype)
    _check_ids(p, ids, n)
    ids = None if ids is None else [str(i) for i in ids]
    return EmbeddingFile(str(p), n, d, str(arr.dtype), {}, [(arr, ids)])


def _st_dtype(name: str) -> str:
    return {"F16": "float16", "F32": "float32", "F64": "float64"}.get(name, name)


def _decode_meta(meta: dict) -> dict:
    out = {}
    for k, v in meta.items():
        try:
            out[k] = json.loads(v)
        except (ValueError, TypeError):
            out[k] = v
    return out


def _check_ids(p, ids, n: int) -> None:
    """``ids`` (None, or one per row) must be ``n`` strings or integers: a null id (``None``, JSON
    ``null``) or a nested value is refused naming its row rather than becoming the text "None"."""
    if ids is None:
        return
    if len(ids) != n:
        raise InputError(f"{p}: {len(ids)} ids for {n} rows")
    for row, v in enumerate(ids):
        if v is None or isinstance(v, (bool, float, list, tuple, dict)):
            raise InputError(f"{p}: id of row {row} is {v!r}; ids must be strings or integers")


def agreed_encoder_meta(metas, what: str) -> dict:
    """What every one of ``metas`` (dicts) records about its encoder (``ENCODER_META_KEYS``), None
    where none records it; :class:`InputError` when two disagree (``"{what} disagree on KEY"``)."""
    from whitenclip.encoders.base import ENCODER_META_KEYS

    metas = list(metas)
    meta = {}
    for key in ENCODER_META_KEYS:
        values = {json.dumps(m.get(key)) for m in metas if m.get(key) is not None}
        if len(values) > 1:
            raise InputError(f"{what} disagree on {key}: {', '.join(sorted(values))}")
        meta[key] = json.loads(values.pop()) if values else None
    return meta


# ---------------------------------------------------------------------------------------
# text vectors (stdin)
# ---------------------------------------------------------------------------------------
_SPLIT = re.compile(r"[\s,]+")
_NUMBER = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|nan|inf|infinity)", re.ASCII | re.IGNORECASE)
"""A number as written in a text vector: ASCII decimal, optional exponent (``nan``/``inf`` are
numbers too; they are reported later as non-finite rows). Python's ``float`` also takes ``1_000``
and non-ASCII digits: those are not numbers here."""


def parse_vector_line(line: str) -> np.ndarray | None:
    """Parse one text line into a float vector, or None when it is not numeric.

    Accepts whitespace- or comma-separated numbers (:data:`_NUMBER`), or a JSON array of numbers
    (not booleans, strings or nested lists).

    >>> parse_vector_line("1, 2.5e1 -3").tolist()
    [1.0, 25.0, -3.0]
    >>> parse_vector_line("1_000") is None, parse_vector_line("[true, 2]") is None
    (True, True)
    """
    s = line.strip()
    if s.startswith("["):
        try:
            vals = json.loads(s)
        except (ValueError, RecursionError):
            return None
        if not isinstance(vals, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            return None
        try:
            return np.array([float(v) for v in vals], dtype=np.float64)
        except OverflowError:  # an integer too large for a float
            return None
    tokens = [t for t in _SPLIT.split(s) if t]
    if not all(_NUMBER.fullmatch(t) for t in tokens):
        return None
    return np.array([float(t) for t in tokens], dtype=np.float64)


def looks_like_vectors(first_line: str) -> bool:
    """True when a text line is a numeric vector (so a text input holds vectors, not captions)."""
    v = parse_vector_line(first_line)
    return v is not None and v.size > 0


def read_text_vectors(lines, name: str) -> EmbeddingFile:
    """Read one vector per line from an iterable of lines (blank lines ignored).

    Raises :class:`InputError` naming ``name:line`` for a non-numeric line or a line whose
    length differs from the first one.
    """
    rows, dim = [], None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        v = parse_vector_line(line)
        if v is None or v.size == 0:
            raise InputError(f"{name}:{lineno}: not a vector of numbers: {_preview(line)}")
        if dim is None:
            dim = v.size
        elif v.size != dim:
            raise InputError(f"{name}:{lineno}: vector has {v.size} values, expected {dim} like line 1")
        rows.append(v)
    if not rows:
        raise InputError(f"{name}: no vectors (input is empty)")
    X = np.vstack(rows)
    return EmbeddingFile(name, X.shape[0], X.shape[1], "float64", {}, [(X, None)])


def _preview(line: str, width: int = 40) -> str:
    s = line.strip()
    return repr(s if len(s) <= width else s[:width] + "...")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ---------------------------------------------------------------------------------------
# validation of rows
# ---------------------------------------------------------------------------------------
@dataclass
class RowStats:
    """Counts gathered while streaming rows: rows kept and non-finite rows dropped."""

    kept: int = 0
    dropped_nonfinite: int = 0


def finite_rows(X: np.ndarray, name: str, first_row: int, ids=None, *, drop_nonfinite: bool = False) -> np.ndarray:
    """The boolean mask of X's (m, d) finite rows, once they are checked: a row holding NaN or inf
    raises :class:`InputError` naming ``name`` and its row ``first_row + i`` (and its id, given
    ``ids``) unless ``drop_nonfinite``; a finite row beyond :data:`~whitenclip.validation.MAX_ABS`
    raises always (:func:`~whitenclip.validation.check_magnitude`, rows numbered as in X)."""
    from whitenclip.validation import check_magnitude

    ok = np.isfinite(X).all(axis=1)
    if ok.all():
        check_magnitude(X, name, first_row, ids)
        return ok
    if not drop_nonfinite:
        i = int(np.flatnonzero(~ok)[0])
        label = f"row {first_row + i}" + (f" (id {ids[i]!r})" if ids is not None else "")
        raise InputError(f"{name}: {label} holds NaN or inf (use --drop-nonfinite to skip such rows)")
    check_magnitude(np.where(ok[:, None], X, 0.0), name, first_row, ids)  # the rows kept, numbered as in X
    return ok


def finite_chunks(source: EmbeddingFile, *, drop_nonfinite: bool = False, stats: RowStats | None = None,
                  chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[tuple[list[str], np.ndarray]]:
    """Chunks of ``source`` with every row finite and within ``validation.MAX_ABS``.

    A row beyond :data:`~whitenclip.validation.MAX_ABS` = 1e50 in magnitude raises
    :class:`InputError` naming the file and the row (:func:`~whitenclip.validation.check_magnitude`).
    A row holding NaN or inf raises :class:`InputError` naming the file and the first bad row
    (0-based index and id), unless ``drop_nonfinite`` is set: then such rows are skipped,
    counted in ``stats.dropped_nonfinite`` and reported in one warning at the end.
    """
    stats = stats if stats is not None else RowStats()
    offset = 0
    for ids, X in source.iter_chunks(chunk_rows):
        ok = finite_rows(X, str(source.path), offset, ids, drop_nonfinite=drop_nonfinite)
        if not ok.all():
            stats.dropped_nonfinite += int((~ok).sum())
            ids = [s for s, k in zip(ids, ok) if k]
            X = X[ok]
        offset += ok.size
        stats.kept += X.shape[0]
        if X.shape[0]:
            yield ids, X
    if stats.dropped_nonfinite:
        warnings.warn(f"{source.path}: skipped {stats.dropped_nonfinite} row(s) holding NaN or inf",
                      NonFiniteRowsWarning, stacklevel=2)


def iter_rows(sources, *, drop_nonfinite: bool = False, stats: RowStats | None = None,
              chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[tuple[list[str], np.ndarray]]:
    """Finite ``(ids, X)`` chunks from several sources in order; all must share one dimension d."""
    dim = None
    for src in sources:
        if dim is not None and src.dim != dim:
            raise InputError(f"{src.path}: rows have dimension {src.dim}, but earlier inputs have {dim}")
        dim = src.dim
        yield from finite_chunks(src, drop_nonfinite=drop_nonfinite, stats=stats, chunk_rows=chunk_rows)


def label_ids(sources) -> list:
    """Give rows without ids of their own ``FILE:ROW`` ids when there are several sources."""
    sources = list(sources)
    if len(sources) > 1:
        for src in sources:
            if isinstance(src, EmbeddingFile):
                src.id_prefix = src.path
    return sources


def read_embeddings(paths, *, drop_nonfinite: bool = False, allow_partial: bool = False, column: str | None = None,
                    id_column: str | None = None) -> tuple[list[str], np.ndarray]:
    """Read and concatenate all rows of one or more embedding paths (``-`` = stdin).

    Returns ``(ids, X)`` with X of shape (n, d), float64. All inputs must share d. With several
    paths, rows without ids of their own are named ``FILE:ROW``. ``column`` / ``id_column``: the
    embedding and id columns of parquet/Arrow tables (:func:`open_embeddings`).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    sources = label_ids(open_embeddings(p, allow_partial=allow_partial, column=column, id_column=id_column)
                        for p in paths)
    ids, parts = [], []
    for chunk_ids, X in iter_rows(sources, drop_nonfinite=drop_nonfinite):
        ids.extend(chunk_ids)
        parts.append(X)
    if not parts:
        raise InputError(f"{', '.join(map(str, paths))}: no usable rows")
    return ids, np.concatenate(parts)


# ---------------------------------------------------------------------------------------
# store directories
# ---------------------------------------------------------------------------------------
_META_KEYS_THAT_MUST_MATCH = ("encoder", "modality", "normalized", "activation", "encoder_fingerprint", "dim", "dtype",
                              "items_hash")


def _shard_paths(directory: Path) -> list[tuple[int, Path, Path]]:
    """Committed shards of a store, in order: (index, npy, ids json); npy present = committed."""
    out = []
    for p in directory.iterdir():
        m = _SHARD_RE.match(p.name)
        if m:
            ids = p.with_name(p.name[:-4] + ".ids.json")
            if ids.is_file():
                out.append((int(m.group(1)), p, ids))
    return sorted(out)


def _read_store_meta(directory: Path) -> dict:
    """``meta.json`` of a store, validated: ``dim`` a positive integer; ``n_items`` (when present)
    a non-negative integer; ``dtype`` (when present) float16/32/64."""
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise InputError(f"{directory}: not a whitenclip store (no meta.json)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InputError(f"{meta_path}: not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
        raise InputError(f"{meta_path}: not a whitenclip store (format is not {STORE_FORMAT!r})")
    if not _is_count(meta.get("dim")) or meta["dim"] == 0:
        raise InputError(f"{meta_path}: 'dim' must be a positive integer, got {meta.get('dim')!r}"[:200])
    if "n_items" in meta and not _is_count(meta["n_items"]):
        raise InputError(f"{meta_path}: 'n_items' must be a non-negative integer, got {meta['n_items']!r}"[:200])
    if "dtype" in meta and meta["dtype"] not in _FLOAT_KINDS:
        raise InputError(f"{meta_path}: 'dtype' must be one of {', '.join(_FLOAT_KINDS)}, got {meta['dtype']!r}"[:200])
    return meta


def _shard_doc(ids_path: Path) -> dict:
    """A store shard's ``.ids.json``, parsed and checked for its shape (``ids`` a list, ``items_end``
    a non-negative integer)."""
    try:
        doc = json.loads(Path(ids_path).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(f"{ids_path}: unreadable shard ids ({_one_line(exc)[:160]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("ids"), list) or not _is_count(doc.get("items_end", 0)):
        raise InputError(f"{ids_path}: shard ids must be {{\"ids\": [...], \"items_end\": N}} with N a "
                         "non-negative integer")
    return doc


def read_shard_ids(ids_path: Path, n_rows: int | None = None) -> tuple[list[str], int]:
    """``(ids, items_end)`` of a store shard's ``.ids.json``, validated (``n_rows`` ids when given;
    ``items_end`` 0 when the file records none)."""
    doc = _shard_doc(ids_path)
    if n_rows is not None:
        _check_ids(ids_path, doc["ids"], n_rows)
    return [str(v) for v in doc["ids"]], doc.get("items_end", 0)


def read_shard(ids_path: Path, n_rows: int) -> tuple[list[str], list | None]:
    """``(ids, groups)`` of a store shard's ``.ids.json``, the file parsed once: ``n_rows`` ids, and
    the ``groups`` list (one id or null per row), or None when it records none (``embed`` writes
    them when its captions had groups)."""
    return _shard_rows(_shard_doc(ids_path), ids_path, n_rows)


def _shard_rows(doc: dict, ids_path, n_rows: int) -> tuple[list[str], list | None]:
    """``(ids, groups)`` of a parsed shard ids document (:func:`read_shard`)."""
    _check_ids(ids_path, doc["ids"], n_rows)
    groups = doc.get("groups")
    if groups is not None:
        if not isinstance(groups, list) or len(groups) != n_rows:
            raise InputError(f"{ids_path}: 'groups' must be a list of {n_rows} ids (one per row)")
        groups = [None if g is None else str(g) for g in groups]
    return [str(v) for v in doc["ids"]], groups


@dataclass(frozen=True)
class StoreLayout:
    """A store directory as every reader sees it (local :func:`open_embeddings` and the sharded
    :func:`whitenclip.shards.discover_shards`): validated ``meta``, committed ``shards``
    ``(index, npy, ids json)`` in order, and ``items_end``, the input items they cover."""

    directory: Path
    meta: dict
    shards: list
    items_end: int

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def info(self) -> dict:
        """What ``meta.json`` records about the encoder (``ENCODER_META_KEYS``; older stores' combined
        activation and fingerprint split, :func:`~whitenclip.encoders.split_encoder_meta`)."""
        from whitenclip.encoders.base import ENCODER_META_KEYS, split_encoder_meta

        meta = split_encoder_meta(self.meta)
        return {k: meta[k] for k in ENCODER_META_KEYS if k in meta}

    def check_shard(self, npy, shape, dtype, ids_path=None) -> None:
        """Refuse a shard whose dimension (or dtype) differs from what ``meta.json`` records, and,
        given its ``ids_path``, one whose ids (or groups) do not give one per row (the sharded
        reader checks here what the local one checks while reading)."""
        if len(shape) == 2 and shape[1] != self.dim:
            raise InputError(f"{npy}: shard has dimension {shape[1]}, store says {self.dim}")
        name = np.dtype(dtype).name
        if "dtype" in self.meta and name != self.meta["dtype"]:
            raise InputError(f"{npy}: shard holds {name}, store says {self.meta['dtype']}")
        if ids_path is not None:
            read_shard(ids_path, shape[0])


def read_store_layout(directory, *, allow_partial: bool = False) -> StoreLayout:
    """Validated layout of a store directory (see :class:`StoreLayout`).

    A store whose committed shards cover fewer items than ``meta.json``'s ``n_items`` (a killed
    ``embed``) raises :class:`InputError` naming the command that finishes it, unless
    ``allow_partial``; shards covering more items than ``n_items`` are refused always.
    """
    directory = Path(directory)
    meta = _read_store_meta(directory)
    shards = _shard_paths(directory)
    items_end = read_shard_ids(shards[-1][2])[1] if shards else 0
    total = meta.get("n_items")
    if total is not None and items_end > total:
        raise InputError(f"{directory}: shards cover {items_end} items, but meta.json says n_items = {total}")
    if total is not None and items_end < total and not allow_partial:
        rerun = meta.get("command") or f"whitenclip embed ... -o {directory}"
        raise InputError(f"{directory}: store is incomplete: {items_end} of {total} items; rerun `{rerun}` to "
                         "finish it (or pass --allow-partial to use the rows it has)")
    return StoreLayout(directory, meta, shards, items_end)


def _open_store(directory: Path, *, allow_partial: bool = False) -> EmbeddingFile:
    layout = read_store_layout(directory, allow_partial=allow_partial)
    blocks, groups, n = [], [], 0
    for _, npy, ids_path in layout.shards:
        arr = _npy_rows(npy)
        _check_matrix(str(npy), arr.shape, arr.dtype)
        layout.check_shard(npy, arr.shape, arr.dtype)
        ids, shard_groups = read_shard(ids_path, arr.shape[0])
        blocks.append((arr, ids))
        groups.append(shard_groups)
        n += arr.shape[0]
    if n == 0:
        raise InputError(f"{directory}: store holds zero rows")
    dtype = str(layout.meta.get("dtype", "float32"))
    out = EmbeddingFile(str(directory), n, layout.dim, dtype, layout.info, blocks)
    if any(g is not None for g in groups):
        out.groups = [v for g, (arr, _) in zip(groups, blocks) for v in (g if g is not None else [None] * len(arr))]
    return out


class StoreWriter:
    """Append-only writer of a store directory, resumable after a crash.

    Layout::

        meta.json                 {"format": "whitenclip-store", "version": 1, "dim": d,
                                   "dtype": "float32", "encoder": ..., "modality": ..., ...}
        shard-00000.ids.json      {"ids": [...], "items_end": k}
        shard-00000.npy           (m, d) float32 or float16

    Each shard's ids file is written first and its ``.npy`` last, both atomically; the ``.npy``
    is the commit point, so a run killed at any moment leaves only whole shards, and
    :attr:`resume_item` (the ``items_end`` of the last committed shard) says where a rerun of the
    same command starts. Opening an existing store whose meta disagrees (encoder, modality,
    normalisation, dim, dtype) raises :class:`InputError` rather than mixing embeddings.
    """

    def __init__(self, directory, *, dim: int, dtype: str = "float32", meta: dict | None = None):
        if dtype not in ("float16", "float32"):
            raise InputError(f"store dtype must be float16 or float32, got {dtype}")
        self.directory = Path(directory)
        self.dim, self.dtype = int(dim), dtype
        self.meta = {**(meta or {}), "format": STORE_FORMAT, "version": STORE_VERSION, "dim": self.dim, "dtype": dtype}
        if self.directory.exists() and not self.directory.is_dir():
            raise InputError(f"{self.directory}: exists and is not a directory")
        try:
            self.directory.mkdir(exist_ok=True)
        except FileNotFoundError:
            raise InputError(f"{self.directory}: directory {self.directory.parent} does not exist "
                             "(create it first)") from None
        if (self.directory / "meta.json").exists():
            self._check_compatible(_read_store_meta(self.directory))
        else:
            if any(self.directory.iterdir()):
                raise InputError(f"{self.directory}: directory is not empty and is not a whitenclip store")
            write_json_atomic(self.directory / "meta.json", self.meta)
        self._shards = _shard_paths(self.directory)
        self._drop_uncommitted()

    def _check_compatible(self, old: dict) -> None:
        from whitenclip.encoders.base import split_encoder_meta

        old = split_encoder_meta(old)  # a store written before encoder_fingerprint had its own key
        for key in _META_KEYS_THAT_MUST_MATCH:
            if key in old and key in self.meta and old[key] != self.meta[key]:
                raise InputError(f"{self.directory}: existing store has {key}={old[key]!r}, this run has "
                                 f"{self.meta[key]!r}; use another output directory")

    def _drop_uncommitted(self) -> None:
        for p in self.directory.iterdir():
            committed = {ids.name for _, _, ids in self._shards}
            if p.name.endswith(".ids.json") and p.name not in committed:
                p.unlink()
            elif p.name.startswith(".") and p.name.endswith(".tmp"):
                p.unlink()

    @property
    def resume_item(self) -> int:
        """Number of input items already covered by committed shards (0 for a new store)."""
        if not self._shards:
            return 0
        return int(json.loads(self._shards[-1][2].read_text(encoding="utf-8"))["items_end"])

    @property
    def n_rows(self) -> int:
        """Rows in committed shards."""
        return sum(int(np.load(npy, mmap_mode="r", allow_pickle=False).shape[0]) for _, npy, _ in self._shards)

    def write_shard(self, ids: list[str], X: np.ndarray, items_end: int, groups: list | None = None) -> None:
        """Commit one shard of rows X, shape (m, dim), covering input items up to ``items_end``;
        ``groups`` (m group ids or None) are recorded beside the ids."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.dim or X.shape[0] != len(ids):
            raise InputError(f"{self.directory}: shard of shape {X.shape} with {len(ids)} ids "
                             f"does not fit dim {self.dim}")
        index = self._shards[-1][0] + 1 if self._shards else 0
        npy = self.directory / f"shard-{index:05d}.npy"
        ids_path = self.directory / f"shard-{index:05d}.ids.json"
        with atomic_write(ids_path, "w") as fh:
            doc = {"ids": list(map(str, ids)), "items_end": int(items_end)}
            if groups is not None:
                doc["groups"] = [None if g is None else str(g) for g in groups]
            json.dump(doc, fh)
        with atomic_write(npy) as fh:
            np.save(fh, X.astype(self.dtype, copy=False), allow_pickle=False)
        self._shards.append((index, npy, ids_path))


# ---------------------------------------------------------------------------------------
# one .npy file with its ids beside it (embed -o NAME.npy)
# ---------------------------------------------------------------------------------------
def _npy_header(shape: tuple, dtype: np.dtype, length: int | None = None) -> bytes:
    """A version 1.0 ``.npy`` header for a C-ordered array, padded with spaces to ``length`` bytes
    (default: the next multiple of 64), so that a header written for an upper bound on the rows can
    be rewritten in place with the final count."""
    text = repr({"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                 "shape": tuple(int(v) for v in shape)})
    body = text.encode("latin1")
    if length is None:
        length = -(-(10 + len(body) + 1) // 64) * 64
    pad = length - 10 - len(body) - 1
    if pad < 0:
        raise ValueError("npy header does not fit")
    return b"\x93NUMPY\x01\x00" + (length - 10).to_bytes(2, "little") + body + b" " * pad + b"\n"


def write_npy(path, chunks, *, dim: int, dtype: str = "float32", max_rows: int, meta: dict | None = None) -> int:
    """Write rows to ``path`` (one ``.npy``) and their ids to ``NAME.ids.json`` beside it; returns the row count.

    ``chunks`` yields ``(ids, X (m, dim), groups or None)``. Rows stream to a temporary file whose
    header is written for ``max_rows`` rows and rewritten with the final count (memory: one chunk
    plus the ids). The ids file (``{"ids": [...], "items_end": n, "groups": [...], "meta": {...}}``,
    a store shard's layout plus the encoder ``meta``) is written first and the ``.npy`` renamed
    into place last, both atomically (:func:`atomic_write`): a killed run leaves the old pair, or a
    new ids file that no longer matches the old ``.npy`` (refused when read, naming it).
    """
    dt = np.dtype(dtype)
    n, ids, groups, grouped = 0, [], [], False
    with atomic_write(path, "wb") as fh:
        head = _npy_header((max_rows, dim), dt)
        fh.write(head)
        for chunk_ids, X, chunk_groups in chunks:
            X = np.ascontiguousarray(X, dtype=dt)
            if X.ndim != 2 or X.shape[1] != dim or X.shape[0] != len(chunk_ids):
                raise InputError(f"{path}: rows of shape {X.shape} with {len(chunk_ids)} ids do not fit dim {dim}")
            if n + X.shape[0] > max_rows:
                raise InputError(f"{path}: more than the {max_rows} rows expected")
            fh.write(X.tobytes())
            n += X.shape[0]
            ids.extend(map(str, chunk_ids))
            grouped = grouped or chunk_groups is not None
            groups.extend(chunk_groups if chunk_groups is not None else [None] * len(chunk_ids))
        if n == 0:
            raise InputError(f"{path}: no rows to write")
        if n != max_rows:
            fh.seek(0)
            fh.write(_npy_header((n, dim), dt, len(head)))
            fh.seek(0, os.SEEK_END)
            fh.truncate(len(head) + n * dim * dt.itemsize)
        doc = {"ids": ids, "items_end": n}
        if grouped:
            doc["groups"] = [None if g is None else str(g) for g in groups]
        if meta:
            doc["meta"] = meta
        with atomic_write(npy_ids_path(path), "w") as side:
            json.dump(doc, side)
    return n


# ---------------------------------------------------------------------------------------
# what `whitenclip info` says about embeddings
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EmbeddingsSummary(Result):
    """What ``whitenclip info`` shows about embeddings (a store directory, a ``.npy`` with its ids,
    ``.npz``, ``.safetensors``, ``.pt``, a table): ``kind``, ``n_rows`` x ``dim`` of ``dtype``,
    ``shards`` (files or table units read), ``n_items``/``complete`` (stores: the inputs ``meta.json``
    records, and whether the shards cover them all), ``ids`` (where row ids come from: ``recorded``,
    ``column NAME`` or ``row index``), ``n_groups`` (distinct groups recorded, None when none),
    ``encoder`` (what the files record: ``ENCODER_META_KEYS``) and ``command`` (a store's ``embed`` line)."""

    path: str
    kind: str
    n_rows: int
    dim: int
    dtype: str
    shards: int
    ids: str
    n_groups: int | None = None
    n_items: int | None = None
    complete: bool | None = None
    encoder: dict = field(default_factory=dict)
    command: str | None = None


def describe_embeddings(path, *, column: str | None = None, id_column: str | None = None) -> EmbeddingsSummary:
    """:class:`EmbeddingsSummary` of an embeddings path (an incomplete store is described, not refused)."""
    p = Path(path)
    src = open_embeddings(p, allow_partial=True, column=column, id_column=id_column)
    n_items = complete = command = None
    if p.is_dir() and not is_table_path(p):
        kind = "store"
        layout = read_store_layout(p, allow_partial=True)
        n_items = layout.meta.get("n_items")
        complete = None if n_items is None else layout.items_end >= n_items
        command = layout.meta.get("command")
    else:
        kind = "table" if is_table_path(p) else p.suffix.lower().lstrip(".") or "text vectors"
    tables = [b for b, _ in src._blocks if isinstance(b, TableRows)]
    if tables:
        named = tables[0].info.id_column
        ids = f"column {named}" if named else "row index"
    elif any(i is not None for _, i in src._blocks):
        ids = f"recorded ({npy_ids_path(p).name})" if kind == "npy" else "recorded"
    else:
        ids = "row index"
    groups = {g for g in src.groups or () if g is not None}
    encoder = {k: v for k, v in src.meta.items() if v is not None}
    return EmbeddingsSummary(path=str(p), kind=kind, n_rows=src.n_rows, dim=src.dim, dtype=src.dtype,
                             shards=len(src._blocks), ids=ids, n_groups=len(groups) if src.groups else None,
                             n_items=n_items, complete=complete, encoder=encoder, command=command)


def artifact_kind(path) -> str:
    """What ``whitenclip info PATH`` describes: ``"whitener"`` (a ``.safetensors`` whitener artifact, or
    anything else it cannot tell, so the whitener loader's refusal names the problem), ``"moments"``
    (``whitenclip moments`` output) or ``"embeddings"`` (a store or table folder, an embeddings file); a
    file of another kind (a captions CSV...) is refused in one line."""
    p = Path(path)
    if p.is_dir():
        return "embeddings" if is_embedding_path(p) else "whitener"
    if p.suffix.lower() == ".safetensors" and p.is_file():
        try:
            tensors, meta = parse_safetensors_header(p)
        except InputError:
            return "whitener"
        if meta.get("format") == "whitenclip-moments":
            return "moments"
        if meta.get("format") != "whitenclip-whitener" and "embeddings" in tensors:
            return "embeddings"
        return "whitener"
    if p.is_file() and not is_embedding_path(p):
        raise InputError(f"{p}: info describes whiteners and moments files (.safetensors), store directories and "
                         "embeddings files (.npy, .npz, .safetensors, .pt, parquet/Arrow); this is none of them")
    return "embeddings" if is_embedding_path(p) and p.exists() else "whitener"
