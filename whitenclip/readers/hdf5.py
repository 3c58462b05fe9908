"""HDF5 files (``.h5``, ``.hdf5``), as ML feature dumps write them: the 2-D float16/32/64 dataset
``embeddings`` (or the file's only 2-D dataset at its root) and an optional 1-D ``ids`` dataset
(strings or integers, one per row), read through ``h5py`` (``pip install 'whitenclip[hdf5]'``).

Planning reads the file's metadata only (shapes, dtypes, the ids' length); a piece is a run of
rows, read ``chunk_rows`` at a time by slicing the dataset (h5py decompresses chunked,
compressed datasets itself), so ``--engine dask`` reads one file on several workers.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np

from whitenclip.errors import InputError
from whitenclip.readers.base import Format, Piece, Shard, check_matrix, existing_file, one_line

HDF5_SUFFIXES = (".h5", ".hdf5")
H5PY_HINT = "reading HDF5 files needs h5py: pip install 'whitenclip[hdf5]'"


def _h5py(path):
    try:
        import h5py
    except ImportError as exc:
        from whitenclip.errors import reraise_if_out_of_memory

        reraise_if_out_of_memory(exc)
        raise InputError(f"{path}: {H5PY_HINT}") from None
    return h5py


@contextlib.contextmanager
def _opened(path):
    """The file opened read-only; anything h5py raises (not HDF5, truncated, a bad link) becomes
    one-line :class:`InputError` naming the file."""
    h5py = _h5py(path)
    try:
        with h5py.File(path, "r") as f:
            yield f
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({one_line(exc)[:200]})") from None


def _embeddings(f, path):
    """The dataset of embeddings: ``embeddings``, or the root's only 2-D dataset."""
    import h5py

    datasets = {k: v for k, v in f.items() if isinstance(v, h5py.Dataset)}
    if "embeddings" in datasets:
        return datasets["embeddings"]
    matrices = [k for k, v in datasets.items() if k != "ids" and len(v.shape) == 2]
    if len(matrices) != 1:
        raise InputError(f"{path}: an HDF5 file must hold a 2-D dataset named 'embeddings' "
                         f"(found {sorted(datasets) or 'no dataset at its root'})")
    return datasets[matrices[0]]


def _ids_text(values, path) -> list[str]:
    out = []
    for row, v in enumerate(values):
        if isinstance(v, bytes):
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"{path}: id of row {row} is not UTF-8 text") from None
        elif isinstance(v, (float, np.floating, np.bool_)):
            raise InputError(f"{path}: id of row {row} is {v!r}; ids must be strings or integers")
        out.append(str(v))
    return out


class Hdf5Format(Format):
    """An HDF5 file (see the module doc): one shard, pieces of ``piece_rows`` rows (``kind="rows"``);
    ``locator`` is the dataset's name, ``ids`` ``("dataset", "ids")`` when the file holds ids."""

    name = "hdf5"

    def shards(self, path) -> list[Shard]:
        p = existing_file(path)
        with _opened(p) as f:
            ds = _embeddings(f, p)
            shape, dtype = tuple(int(v) for v in ds.shape), ds.dtype
            check_matrix(str(p), shape, dtype)
            ids = None
            if "ids" in f:
                id_ds = f["ids"]
                if not hasattr(id_ds, "shape") or len(id_ds.shape) != 1 or id_ds.shape[0] != shape[0]:
                    raise InputError(f"{p}: 'ids' of shape {getattr(id_ds, 'shape', None)} for {shape[0]} rows "
                                     f"(expected a list of {shape[0]})")
                if id_ds.dtype.kind not in "SUOiu":
                    raise InputError(f"{p}: 'ids' hold {id_ds.dtype}; ids must be strings or integers")
                ids = ("dataset", "ids")
            name = ds.name
        return [Shard(str(p), shape[0], shape[1], dtype.newbyteorder("<").str, 0, "rows", ids, {}, name, self.name)]

    def read(self, piece: Piece, chunk_rows: int) -> Iterator[tuple[int, np.ndarray, list | None]]:
        s = piece.shard
        with _opened(s.path) as f:
            ds = f[s.locator]
            if tuple(ds.shape) != (s.n_rows, s.dim):
                raise InputError(f"{s.path}: dataset {s.locator} changed shape since it was planned")
            for lo in range(piece.start, piece.stop, chunk_rows):
                hi = min(lo + chunk_rows, piece.stop)
                yield lo, np.asarray(ds[lo:hi], dtype=np.float64), None

    def ids(self, piece: Piece) -> list[str] | None:
        if piece.shard.ids is None:
            return None
        with _opened(piece.shard.path) as f:
            values = f["ids"][piece.start:piece.stop].tolist()
        return _ids_text(values, piece.shard.path)


FORMAT = Hdf5Format()
