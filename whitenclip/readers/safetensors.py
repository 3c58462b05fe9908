"""``.safetensors`` files: the tensor ``embeddings`` (or the only tensor), read by byte ranges, with
optional ``ids`` (a JSON list) and encoder fields in the header metadata. The one validated header
parser (:func:`parse_safetensors_header`) also reads whitenclip's own artifacts (whiteners, moments)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whitenclip.errors import InputError
from whitenclip.readers.base import Format, Piece, Shard, check_ids, decode_meta, existing_file, is_count, one_line

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
    p = existing_file(path)
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
        raise bad(f"header is not JSON: {one_line(exc)[:120]}") from None
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
        if not isinstance(shape, list) or not all(is_count(v) for v in shape):
            raise bad(f"tensor {name!r}: shape must be a list of non-negative integers, got {shape!r}"[:200])
        if (not isinstance(offs, list) or len(offs) != 2 or not all(is_count(v) for v in offs)
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
    check_ids(p, ids, n)
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


def _st_dtype(name: str) -> str:
    return {"F16": "float16", "F32": "float32", "F64": "float64"}.get(name, name)


class SafetensorsFormat(Format):
    """A ``.safetensors`` file of embeddings (see the module doc); ``ids`` ``("header", PATH)``."""

    name = "safetensors"

    def shards(self, path, *, meta=None) -> list[Shard]:
        """The one shard of a ``.safetensors`` file: row 0 at the tensor's ``data_offsets`` begin;
        ids (checked: one per row) and the other metadata fields (decoded from JSON) from the header."""
        p = Path(path)
        header, info = parse_safetensors_header(p)
        t = embedding_tensor(p, header, info)
        dtype = _st_dtype(t.dtype)
        if dtype not in ("float16", "float32", "float64"):
            raise InputError(f"{p}: expected float16/32/64 embeddings, got dtype {t.dtype}")
        if len(t.shape) != 2 or t.shape[1] == 0:
            raise InputError(f"{p}: expected a 2-D array (n_rows, dim), got shape {tuple(t.shape)}")
        ids = ("header", str(p)) if header_ids(p, info, t.shape[0]) is not None else None
        decoded = decode_meta({k: v for k, v in info.items() if k != "ids"})
        return [Shard(str(p), int(t.shape[0]), int(t.shape[1]), np.dtype(dtype).newbyteorder("<").str, t.start, "raw",
                      ids, {**decoded, **(meta or {})}, None, self.name)]

    def ids(self, piece: Piece) -> list[str] | None:
        if piece.shard.ids is None:
            return None
        ids = header_ids(piece.shard.path, parse_safetensors_header(piece.shard.path)[1], piece.shard.n_rows)
        return ids[piece.start:piece.stop]


FORMAT = SafetensorsFormat()
