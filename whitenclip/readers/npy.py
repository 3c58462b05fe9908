"""``.npy`` files: a 2-D float16/32/64 array read by byte ranges (never unpickled), with its ids,
groups and encoder beside it in ``NAME.ids.json`` when there is one (``whitenclip embed -o
NAME.npy`` writes both; a store shard is the same pair). A Fortran-ordered array is one piece, read
through a memory map."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from whitenclip.errors import InputError
from whitenclip.outputs import npy_ids_path
from whitenclip.readers.base import FLOAT_KINDS, Format, Piece, Shard, check_extent, one_line
from whitenclip.readers.meta import ENCODER_META_KEYS
from whitenclip.readers.sidecar import _shard_doc, read_shard, read_shard_ids, records_groups


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
        raise InputError(f"{name}: not a readable .npy file ({one_line(exc)})") from None
    readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
    if version not in readers:
        raise InputError(f"{name}: unsupported .npy format version {version[0]}.{version[1]}")
    try:
        shape, fortran, dtype = readers[version](fh)
    except Exception as exc:
        raise InputError(f"{name}: not a readable .npy header ({one_line(exc)[:160]})") from None
    if dtype.hasobject:
        raise InputError(f"{name}: holds Python objects (dtype {dtype}); object arrays are never unpickled")
    if any(int(v) < 0 for v in shape):
        raise InputError(f"{name}: .npy header has a negative dimension {tuple(shape)}")
    return tuple(int(v) for v in shape), bool(fortran), dtype


class NpyFormat(Format):
    """A ``.npy`` file (see the module doc); ``ids`` ``("json", PATH)`` names its ids file."""

    name = "npy"

    def shards(self, path, *, ids=None, meta=None, sidecar: bool = True) -> list[Shard]:
        """The one shard of a ``.npy`` file, from its header: 2-D, float16/32/64, not truncated.
        Its ids file (given as ``ids``, else ``NAME.ids.json`` beside it unless not ``sidecar``) is
        checked here too: one id (and group) per row; the encoder it records joins ``meta``."""
        p = Path(path)
        try:
            with open(p, "rb") as fh:
                shape, fortran, dtype = read_npy_header(fh, p)
                offset = fh.tell()
        except OSError as exc:
            raise InputError(f"{p}: not a readable .npy file ({one_line(exc)})") from None
        if len(shape) != 2:
            raise InputError(f"{p}: expected a 2-D array (n_rows, dim), got shape {tuple(shape)}")
        if dtype.name not in FLOAT_KINDS:
            raise InputError(f"{p}: expected float16/32/64 embeddings, got dtype {dtype}")
        if shape[1] == 0:
            raise InputError(f"{p}: rows have zero dimensions")
        meta = dict(meta or {})
        if ids is None and sidecar and npy_ids_path(p).is_file():  # embed -o NAME.npy: ids (and groups) beside it
            side = npy_ids_path(p)
            doc = _shard_doc(side)
            recorded = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
            meta = {**{k: recorded[k] for k in ENCODER_META_KEYS if k in recorded}, **meta}
            ids = ("json", str(side))
        # a Fortran-ordered array's rows are not byte ranges: one whole-file piece, read through a memory map
        kind = "whole" if fortran and shape[0] > 1 and shape[1] > 1 else "raw"
        shard = Shard(str(p), int(shape[0]), int(shape[1]), dtype.str, offset, kind, ids, meta, None, self.name)
        check_extent(shard.path, os.path.getsize(p), offset, shard.n_rows, shard.row_bytes)
        if ids is not None and ids[0] == "json":
            read_shard(Path(ids[1]), shard.n_rows)  # one id (and group) per row, checked at planning
        return [shard]

    def read(self, piece: Piece, chunk_rows: int) -> Iterator[tuple[int, np.ndarray, list | None]]:
        if piece.shard.kind == "raw":
            yield from super().read(piece, chunk_rows)
            return
        arr = np.load(piece.shard.path, mmap_mode="r", allow_pickle=False)
        for lo in range(piece.start, piece.stop, chunk_rows):
            yield lo, np.array(arr[lo:min(lo + chunk_rows, piece.stop)], dtype=np.float64), None

    def ids(self, piece: Piece) -> list[str] | None:
        if piece.shard.ids is None:
            return None
        ids = read_shard_ids(Path(piece.shard.ids[1]), piece.shard.n_rows)[0]
        return ids[piece.start:piece.stop]

    def groups(self, piece: Piece) -> list | None:
        if piece.shard.ids is None or not records_groups(piece.shard.ids[1]):
            return None
        groups = read_shard(Path(piece.shard.ids[1]), piece.shard.n_rows)[1]
        return None if groups is None else groups[piece.start:piece.stop]


FORMAT = NpyFormat()
