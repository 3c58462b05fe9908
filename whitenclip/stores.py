"""Embedding files and store directories: chunked reading, atomic writing.

Supported inputs (all yield rows of shape (m, d) as float64 chunks with string row ids):

* ``.npy``          2-D float16/32/64 array, read in chunks of rows with plain reads (never unpickled);
* ``.npz``          array ``embeddings`` (or the only array), optional string array ``ids``;
* ``.safetensors``  tensor ``embeddings``, optional ``ids`` (JSON list) in the header metadata;
* ``.pt``/``.pth``  a 2-D float tensor, or a dict with ``embeddings`` (optional ``ids``), read with
  ``torch.load(weights_only=True)``;
* store directory   ``meta.json`` + ``shard-NNNNN.npy`` + ``shard-NNNNN.ids.json`` (see
  :class:`StoreWriter`), written by ``whitenclip embed``;
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
from whitenclip.outputs import atomic_write  # noqa: F401  (re-exported: stores write through it)

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
# safetensors
# ---------------------------------------------------------------------------------------
def read_safetensors(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read every tensor and the header metadata of a ``.safetensors`` file.

    Raises :class:`InputError` naming the file when it is missing, truncated or not a
    safetensors file at all.
    """
    from safetensors import safe_open

    path = _existing_file(path)
    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except InputError:
        raise
    except Exception as exc:  # safetensors raises SafetensorError / OSError on bad headers
        raise InputError(f"{path}: not a readable .safetensors file ({_one_line(exc)})") from None
    return tensors, meta


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

    def iter_chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[tuple[list[str], np.ndarray]]:
        """Yield ``(ids, X)`` with X of shape (m <= chunk_rows, dim), float64, in file order.

        Each X is a new array the caller may modify (it never aliases the file's data).
        """
        start = 0
        for block, ids in self._blocks:
            block = _load_block(block)
            for lo in range(0, block.shape[0], chunk_rows):
                hi = min(lo + chunk_rows, block.shape[0])
                X = _fresh_float64(block[lo:hi], already_fresh=isinstance(block, NpyRows))
                chunk_ids = list(ids[lo:hi]) if ids is not None else self._default_ids(start + lo, start + hi)
                yield chunk_ids, X
            start += block.shape[0]

    def _default_ids(self, lo: int, hi: int) -> list[str]:
        if self.id_prefix is None:
            return [str(i) for i in range(lo, hi)]
        return [f"{self.id_prefix}:{i}" for i in range(lo, hi)]

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


EMBEDDING_SUFFIXES = (".npy", ".npz", ".safetensors", ".pt", ".pth")
"""File name endings read as embeddings (besides store directories and text vectors)."""


def is_embedding_path(path) -> bool:
    """True when ``path`` names an embeddings file or a store directory (not raw images/captions)."""
    p = Path(path)
    if p.is_dir():
        return (p / "meta.json").is_file()
    return p.suffix.lower() in EMBEDDING_SUFFIXES


def open_embeddings(path, *, allow_partial: bool = False) -> EmbeddingFile:
    """Open an embeddings file or store directory for chunked reading (see module doc).

    A store left incomplete by a killed ``embed`` raises :class:`InputError` unless
    ``allow_partial`` is set.
    """
    if str(path) == "-":
        return read_text_vectors(sys.stdin, "<stdin>")
    p = Path(path)
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
    if str(dtype) not in _FLOAT_KINDS:
        raise InputError(f"{name}: expected float16/32/64 embeddings, got dtype {dtype}")
    n, d = int(shape[0]), int(shape[1])
    if n == 0:
        raise InputError(f"{name}: holds zero rows")
    if d == 0:
        raise InputError(f"{name}: rows have zero dimensions")
    return n, d


class NpyRows:
    """Rows of a 2-D C-ordered ``.npy`` file read on demand with plain reads (no memory map).

    ``rows[lo:hi]`` reads just those rows into a fresh array. Unlike a memory map, pages already
    streamed do not stay in the process's resident set, so peak RSS is independent of n.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            fmt = np.lib.format
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = read_header(fh)
            self.offset = fh.tell()
        if dtype.hasobject:
            raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
        self.shape, self.dtype, self.fortran = tuple(shape), dtype, fortran

    def __getitem__(self, rows: slice) -> np.ndarray:
        lo, hi, _ = rows.indices(self.shape[0])
        d = self.shape[1]
        with open(self.path, "rb") as fh:
            fh.seek(self.offset + lo * d * self.dtype.itemsize)
            out = np.fromfile(fh, dtype=self.dtype, count=max(hi - lo, 0) * d)
        if out.size != max(hi - lo, 0) * d:
            raise InputError(f"{self.path}: file is truncated (rows {lo}..{hi} missing)")
        return out.reshape(-1, d)


def _npy_rows(p: Path):
    """A row reader for a .npy file: :class:`NpyRows`, or a memory map for Fortran-ordered/odd arrays."""
    rows = NpyRows(p)
    if rows.fortran or len(rows.shape) != 2:
        return np.load(p, mmap_mode="r", allow_pickle=False)
    return rows


def _open_npy(p: Path) -> EmbeddingFile:
    try:
        arr = _npy_rows(p)
    except ValueError as exc:
        raise InputError(f"{p}: refusing to load ({_one_line(exc)}); object arrays are never unpickled") from None
    except Exception as exc:
        raise InputError(f"{p}: not a readable .npy file ({_one_line(exc)})") from None
    n, d = _check_matrix(str(p), arr.shape, arr.dtype)
    return EmbeddingFile(str(p), n, d, str(arr.dtype), {}, [(arr, None)])


def _open_npz(p: Path) -> EmbeddingFile:
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = list(z.keys())
            arrays = [k for k in keys if k != "ids"]
            key = "embeddings" if "embeddings" in keys else (arrays[0] if len(arrays) == 1 else None)
            if key is None:
                raise InputError(f"{p}: .npz must hold an array named 'embeddings' (found {keys})")
            arr = z[key]
            ids = [str(s) for s in z["ids"]] if "ids" in keys else None
    except InputError:
        raise
    except ValueError as exc:
        raise InputError(f"{p}: refusing to load ({_one_line(exc)}); object arrays are never unpickled") from None
    except Exception as exc:
        raise InputError(f"{p}: not a readable .npz file ({_one_line(exc)})") from None
    n, d = _check_matrix(str(p), arr.shape, arr.dtype)
    _check_ids(p, ids, n)
    return EmbeddingFile(str(p), n, d, str(arr.dtype), {}, [(arr, ids)])


def _open_safetensors(p: Path) -> EmbeddingFile:
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="numpy") as fh:
            meta = dict(fh.metadata() or {})
            keys = list(fh.keys())
            key = "embeddings" if "embeddings" in keys else (keys[0] if len(keys) == 1 else None)
            if key is None:
                raise InputError(f"{p}: .safetensors must hold a tensor named 'embeddings' (found {keys})")
            sl = fh.get_slice(key)
            shape, dtype = sl.get_shape(), _st_dtype(sl.get_dtype())
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{p}: not a readable .safetensors file ({_one_line(exc)})") from None
    if meta.get("format") == "whitenclip-whitener":
        raise InputError(f"{p}: this is a whitener artifact, not embeddings")
    n, d = _check_matrix(str(p), shape, dtype)
    ids = None
    if "ids" in meta:
        try:
            ids = [str(s) for s in json.loads(meta.pop("ids"))]
        except (ValueError, TypeError):
            raise InputError(f"{p}: metadata 'ids' is not a JSON list") from None
    _check_ids(p, ids, n)

    def load():
        with safe_open(str(p), framework="numpy") as fh:
            return fh.get_tensor(key)

    return EmbeddingFile(str(p), n, d, dtype, _decode_meta(meta), [(load, ids)])


def _open_torch(p: Path) -> EmbeddingFile:
    """A ``torch.save``d 2-D float tensor, or a dict holding one under ``embeddings`` (optional
    ``ids``: a list of strings), read with ``torch.load(weights_only=True)`` (never unpickled)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        raise InputError(f"{p}: reading .pt files needs torch") from None
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{p}: not a readable torch file with weights_only=True ({_one_line(exc)}); "
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
            ids = [str(i) for i in ids]
    if not isinstance(obj, torch.Tensor):
        raise InputError(f"{p}: expected a 2-D float tensor (or a dict with 'embeddings'), got {type(obj).__name__}")
    if not obj.is_floating_point() or obj.dtype == torch.bfloat16:
        raise InputError(f"{p}: expected float16/32/64 embeddings, got dtype {str(obj.dtype).replace('torch.', '')}")
    arr = obj.detach().cpu().numpy()
    n, d = _check_matrix(str(p), arr.shape, arr.dtype)
    _check_ids(p, ids, n)
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
    if ids is not None and len(ids) != n:
        raise InputError(f"{p}: {len(ids)} ids for {n} rows")


# ---------------------------------------------------------------------------------------
# text vectors (stdin)
# ---------------------------------------------------------------------------------------
_SPLIT = re.compile(r"[\s,]+")


def parse_vector_line(line: str) -> np.ndarray | None:
    """Parse one text line into a float vector, or None when it is not numeric.

    Accepts whitespace- or comma-separated floats, or a JSON array of numbers.
    """
    s = line.strip()
    if s.startswith("["):
        try:
            vals = json.loads(s)
            arr = np.asarray(vals, dtype=np.float64)
        except (ValueError, TypeError):
            return None
        return arr if arr.ndim == 1 else None
    try:
        return np.array([float(t) for t in _SPLIT.split(s) if t], dtype=np.float64)
    except ValueError:
        return None


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


def finite_chunks(source: EmbeddingFile, *, drop_nonfinite: bool = False, stats: RowStats | None = None,
                  chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[tuple[list[str], np.ndarray]]:
    """Chunks of ``source`` with every row finite.

    A row holding NaN or inf raises :class:`InputError` naming the file and the first bad row
    (0-based index and id), unless ``drop_nonfinite`` is set: then such rows are skipped,
    counted in ``stats.dropped_nonfinite`` and reported in one warning at the end.
    """
    stats = stats if stats is not None else RowStats()
    offset = 0
    for ids, X in source.iter_chunks(chunk_rows):
        ok = np.isfinite(X).all(axis=1)
        if not ok.all():
            if not drop_nonfinite:
                i = int(np.flatnonzero(~ok)[0])
                raise InputError(f"{source.path}: row {offset + i} (id {ids[i]!r}) holds NaN or inf "
                                 "(use --drop-nonfinite to skip such rows)")
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


def read_embeddings(paths, *, drop_nonfinite: bool = False,
                    allow_partial: bool = False) -> tuple[list[str], np.ndarray]:
    """Read and concatenate all rows of one or more embedding paths (``-`` = stdin).

    Returns ``(ids, X)`` with X of shape (n, d), float64. All inputs must share d. With several
    paths, rows without ids of their own are named ``FILE:ROW``.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    sources = label_ids(open_embeddings(p, allow_partial=allow_partial) for p in paths)
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
_META_KEYS_THAT_MUST_MATCH = ("encoder", "modality", "normalized", "activation", "dim", "dtype", "items_hash")


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
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise InputError(f"{directory}: not a whitenclip store (no meta.json)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"{meta_path}: not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
        raise InputError(f"{meta_path}: not a whitenclip store (format is not {STORE_FORMAT!r})")
    return meta


def _open_store(directory: Path, *, allow_partial: bool = False) -> EmbeddingFile:
    meta = _read_store_meta(directory)
    blocks, n, dim, dtype = [], 0, int(meta.get("dim", 0)), str(meta.get("dtype", "float32"))
    items_end = 0
    for _, npy, ids_path in _shard_paths(directory):
        try:
            arr = _npy_rows(npy)
            shard = json.loads(ids_path.read_text(encoding="utf-8"))
            ids, items_end = shard["ids"], int(shard.get("items_end", items_end))
        except Exception as exc:
            raise InputError(f"{npy}: unreadable shard ({_one_line(exc)})") from None
        _check_matrix(str(npy), arr.shape, arr.dtype)
        if arr.shape[1] != dim:
            raise InputError(f"{npy}: shard has dimension {arr.shape[1]}, store says {dim}")
        _check_ids(npy, ids, arr.shape[0])
        blocks.append((arr, [str(s) for s in ids]))
        n += arr.shape[0]
    total = meta.get("n_items")
    if total is not None and items_end < int(total) and not allow_partial:
        rerun = meta.get("command") or f"whitenclip embed ... -o {directory}"
        raise InputError(f"{directory}: store is incomplete: {items_end} of {total} items; rerun `{rerun}` to "
                         "finish it (or pass --allow-partial to use the rows it has)")
    if n == 0:
        raise InputError(f"{directory}: store holds zero rows")
    info = {k: meta[k] for k in ("encoder", "modality", "normalized", "activation") if k in meta}
    return EmbeddingFile(str(directory), n, dim, dtype, info, blocks)


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

    def write_shard(self, ids: list[str], X: np.ndarray, items_end: int) -> None:
        """Commit one shard of rows X, shape (m, dim), covering input items up to ``items_end``."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.dim or X.shape[0] != len(ids):
            raise InputError(f"{self.directory}: shard of shape {X.shape} with {len(ids)} ids "
                             f"does not fit dim {self.dim}")
        index = self._shards[-1][0] + 1 if self._shards else 0
        npy = self.directory / f"shard-{index:05d}.npy"
        ids_path = self.directory / f"shard-{index:05d}.ids.json"
        with atomic_write(ids_path, "w") as fh:
            json.dump({"ids": list(map(str, ids)), "items_end": int(items_end)}, fh)
        with atomic_write(npy) as fh:
            np.save(fh, X.astype(self.dtype, copy=False), allow_pickle=False)
        self._shards.append((index, npy, ids_path))
