"""Writing embeddings and scores: store directories (resumable, atomic shards), one ``.npy`` with
its ids beside it, parquet score tables. The layouts are the ones :mod:`whitenclip.readers`
reads (:mod:`~whitenclip.readers.store`, :mod:`~whitenclip.readers.npy`)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np

from whitenclip.errors import InputError
from whitenclip.outputs import atomic_write, npy_ids_path
from whitenclip.readers.store import STORE_FORMAT, STORE_VERSION, _read_store_meta, _shard_paths
from whitenclip.readers.table import import_pyarrow


def write_json_atomic(path, obj) -> None:
    """Write ``obj`` as pretty JSON to ``path`` atomically."""
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.write("\n")


_META_KEYS_THAT_MUST_MATCH = ("encoder", "modality", "normalized", "activation", "encoder_fingerprint", "dim", "dtype",
                              "items_hash")


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
        from whitenclip.readers.meta import split_encoder_meta

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


def is_parquet_output(output) -> bool:
    """True when ``-o`` names a ``.parquet`` file: rows are then written as parquet."""
    return output is not None and str(output) != "-" and str(output).lower().endswith(".parquet")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@contextlib.contextmanager
def parquet_score_writer(path, columns):
    """Write :class:`~whitenclip.likelihood.ScoreTable` s to ``path`` as one parquet file, atomically
    (:func:`whitenclip.outputs.atomic_write`): ``id`` (string) then ``columns`` (float64). Yields a
    function taking a table; a run failing midway leaves the old file (or none)."""
    from whitenclip.outputs import atomic_write

    pa = import_pyarrow(path)
    schema = pa.schema([("id", pa.string()), *((c, pa.float64()) for c in columns)])
    with atomic_write(path, "wb") as fh:
        writer = pa.parquet.ParquetWriter(fh, schema)

        def add(table) -> None:
            if table.n_rows:
                ids = table.row_ids()
                try:
                    id_array = pa.array(ids, pa.string())
                except UnicodeEncodeError:  # a file name's bytes that are not UTF-8 (os.fsdecode's surrogates)
                    bad = next(i for i in ids if not _is_utf8(i))
                    raise InputError(f"{path}: id {bad!r} is not valid UTF-8 and parquet strings must be; "
                                     "write TSV or JSONL instead (they keep the name's bytes)") from None
                data = {"id": id_array,
                        **{c: pa.array(np.asarray(table[c], dtype=np.float64)) for c in columns}}
                writer.write_table(pa.table(data, schema=schema))
        try:
            yield add
        finally:
            writer.close()
