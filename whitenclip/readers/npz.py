"""``.npz`` archives: the array ``embeddings`` (or the only array) and an optional string array
``ids``, never unpickled. A stored member (``np.savez``) is a byte range of the archive, read in
place like a ``.npy``; a deflated member (``np.savez_compressed``) is inflated in order, chunk by
chunk (one piece), up to :data:`NPZ_INFLATE_LIMIT`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from whitenclip.errors import InputError
from whitenclip.readers.base import Format, Piece, Shard, check_extent, check_matrix, one_line
from whitenclip.readers.npy import read_npy_header

NPZ_INFLATE_LIMIT = 1 << 30
"""Largest compressed ``.npz`` member inflated (bytes, as declared by the zip entry or its .npy
header): 1 GiB. A bigger one is refused before any inflating (a few MB of zeros can declare
gigabytes); uncompressed members (``np.savez``) have no limit: they are read in place, in chunks."""


def _member(p: Path, zf, info, *, whole: bool = False):
    """``(shape, dtype, fortran, data_start)`` of one ``.npy`` member, checked: not encrypted; a
    compressed one at most :data:`NPZ_INFLATE_LIMIT` bytes (or ``whole``: a whole read that fits);
    a stored one's rows inside the archive (``data_start`` is where its row 0 starts, None when
    the member is compressed)."""
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
    start = None
    if stored:
        with open(p, "rb") as fh:
            fh.seek(info.header_offset)
            local = fh.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise InputError(f"{label}: bad zip local header")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        end = min(start + info.compress_size, os.path.getsize(p))
        start += header_len
        if shape:
            row_bytes = int(np.prod(shape[1:], dtype=object)) * dtype.itemsize
            check_extent(label, end, start, shape[0], row_bytes)
    if (whole or (fortran and len(shape) == 2 and min(shape) > 1)) and nbytes > NPZ_INFLATE_LIMIT:
        raise InputError(f"{label}: {nbytes / 2**30:.1f} GiB cannot be read whole (limit "
                         f"{NPZ_INFLATE_LIMIT >> 30} GiB); save it C-ordered")
    return shape, dtype, fortran, start


def _load_member(p, member: str, shape, dtype, fortran: bool) -> np.ndarray:
    """A member read whole (ids; a Fortran-ordered array)."""
    import zipfile

    label = f"{p}: member {member!r}"
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    with zipfile.ZipFile(p) as z, z.open(member) as fh:
        read_npy_header(fh, label)
        data = fh.read(nbytes)
    if len(data) != nbytes:
        raise InputError(f"{label}: truncated ({len(data)} of {nbytes} bytes)")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _inflated_rows(p, member: str, n: int, d: int, dtype, chunk_rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """Rows of a compressed member, inflated in order, one chunk at a time."""
    import zipfile
    import zlib

    label = f"{p}: member {member!r}"
    try:
        with zipfile.ZipFile(p) as zf, zf.open(member) as fh:
            read_npy_header(fh, label)
            for lo in range(0, n, chunk_rows):
                hi = min(lo + chunk_rows, n)
                data = fh.read((hi - lo) * d * dtype.itemsize)
                if len(data) != (hi - lo) * d * dtype.itemsize:
                    raise InputError(f"{label}: truncated at row {lo + len(data) // (d * dtype.itemsize)} "
                                     f"(its header promises {n} rows)")
                yield lo, np.frombuffer(data, dtype=dtype).reshape(hi - lo, d)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
        raise InputError(f"{label}: cannot be inflated ({one_line(exc)})") from None


class NpzFormat(Format):
    """An ``.npz`` archive (see the module doc). ``locator`` is ``(member, fortran)``; ``ids``
    ``("member", "ids.npy")`` when the archive holds ids."""

    name = "npz"

    def shards(self, path) -> list[Shard]:
        """The one shard of an ``.npz``: its embeddings member's header and place, and the ``ids``
        member's length (one per row) when there is one."""
        import zipfile

        p = Path(path)
        try:
            with zipfile.ZipFile(p) as zf:
                members = {i.filename[:-4]: i for i in zf.infolist() if i.filename.endswith(".npy")}
                arrays = [k for k in members if k != "ids"]
                key = "embeddings" if "embeddings" in members else (arrays[0] if len(arrays) == 1 else None)
                if key is None:
                    raise InputError(f"{p}: .npz must hold an array named 'embeddings' (found {sorted(members)})")
                shape, dtype, fortran, start = _member(p, zf, members[key])
                n, d = check_matrix(str(p), shape, dtype)
                ids = None
                if "ids" in members:
                    id_shape, _, _, _ = _member(p, zf, members["ids"], whole=True)
                    if len(id_shape) != 1 or id_shape[0] != n:
                        raise InputError(f"{p}: 'ids' of shape {id_shape} for {n} rows (expected a list of {n})")
                    ids = ("member", members["ids"].filename)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{p}: not a readable .npz file ({one_line(exc)})") from None
        fortran = fortran and min(n, d) > 1
        kind = "raw" if start is not None and not fortran else "whole"
        return [Shard(str(p), n, d, dtype.str, start or 0, kind, ids, {}, (members[key].filename, fortran), self.name)]

    def read(self, piece: Piece, chunk_rows: int) -> Iterator[tuple[int, np.ndarray, list | None]]:
        s = piece.shard
        if s.kind == "raw":
            yield from super().read(piece, chunk_rows)
            return
        member, fortran = s.locator
        if fortran:
            arr = _load_member(s.path, member, (s.n_rows, s.dim), np.dtype(s.dtype), True)
            chunks = ((lo, arr[lo:lo + chunk_rows]) for lo in range(0, s.n_rows, chunk_rows))
        else:
            chunks = _inflated_rows(s.path, member, s.n_rows, s.dim, np.dtype(s.dtype), chunk_rows)
        for lo, X in chunks:
            hi = lo + X.shape[0]
            if hi > piece.start and lo < piece.stop:
                a, b = max(lo, piece.start), min(hi, piece.stop)
                yield a, np.array(X[a - lo:b - lo], dtype=np.float64), None

    def ids(self, piece: Piece) -> list[str] | None:
        import zipfile

        if piece.shard.ids is None:
            return None
        member = piece.shard.ids[1]
        with zipfile.ZipFile(piece.shard.path) as zf:
            shape, dtype, fortran, _ = _member(Path(piece.shard.path), zf, zf.getinfo(member), whole=True)
        ids = _load_member(piece.shard.path, member, shape, dtype, fortran)
        return [str(s) for s in ids[piece.start:piece.stop]]


FORMAT = NpzFormat()
