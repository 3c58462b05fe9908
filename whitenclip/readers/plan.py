"""Planning: the shards behind a command's INPUTs, cut into pieces; reading a piece.

This is the one scanner both engines use. ``--engine local`` (and every command without
``--engine``) reads the pieces in this process, in order (:func:`open_embeddings` gives one
:class:`~whitenclip.readers.rows.EmbeddingFile` per INPUT); ``--engine dask`` ships the same
pieces to its workers, which read them with :func:`iter_piece_rows` / :func:`finite_piece_rows`.

Accepted INPUTs (see :func:`discover_shards`), in a stable order:

* files, by suffix: ``.npy`` (:mod:`~whitenclip.readers.npy`), ``.npz``, ``.safetensors``, ``.pt``/
  ``.pth``, ``.h5``/``.hdf5``, parquet/Arrow (:mod:`~whitenclip.readers.table`), and text vectors for
  any other name (:mod:`~whitenclip.readers.text`); ``-`` is text vectors on standard input
  (local reading only);
* glob patterns (``img_emb/*.npy``), expanded here in natural order (``_2`` before ``_10``);
* directories: a whitenclip store (``meta.json`` + shards), a folder of tables or a
  ``datasets.save_to_disk`` folder, a clip-retrieval embeddings folder (``img_emb/`` or
  ``text_emb/``), or (sharded path) a folder of ``.npy`` / ``.safetensors`` / HDF5 shards.

Planning is linear in the number of shards and units (one header or footer read per file), and
every check that needs no data happens here: dimension agreement, dtype, truncated files (size
smaller than the header promises, naming the first missing row), ids counts.
"""

from __future__ import annotations

import glob
import os
import re
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from whitenclip import config
from whitenclip.config import CHUNK_ROWS
from whitenclip.errors import InputError
from whitenclip.readers.base import (
    Piece,
    Shard,
    existing_file,
    format_named,
    format_of,
    index_ids,
    is_binary_file,
    read_byte_range,
)
from whitenclip.readers.clip_retrieval import FORMAT as CLIP_RETRIEVAL
from whitenclip.readers.clip_retrieval import is_clip_retrieval
from whitenclip.readers.hdf5 import HDF5_SUFFIXES
from whitenclip.readers.items import TABLE_SUFFIXES, is_image_path, is_table_path
from whitenclip.readers.meta import agreed_encoder_meta
from whitenclip.readers.rows import EmbeddingFile, embedding_file, finite_rows, iter_rows, label_ids
from whitenclip.readers.sidecar import records_groups
from whitenclip.readers.store import store_shards
from whitenclip.readers.table import FORMAT as TABLE
from whitenclip.readers.table import table_kind
from whitenclip.readers.text import FORMAT as TEXT
from whitenclip.readers.text import first_line, looks_like_vectors

PIECE_ROWS = config.PIECE_ROWS
"""Rows per piece (one task of the engine), about 1M: 3 GB of float32 rows at d = 768."""

_BY_SUFFIX = {".npy": "npy", ".npz": "npz", ".safetensors": "safetensors", ".pt": "torch", ".pth": "torch",
              **{s: "hdf5" for s in HDF5_SUFFIXES}, **{s: "table" for s in TABLE_SUFFIXES}}

EMBEDDING_SUFFIXES = tuple(_BY_SUFFIX)
"""File name endings read as embeddings (besides store directories, table folders and text vectors)."""


def is_embedding_path(path) -> bool:
    """True when ``path`` names an embeddings file, a store directory or a folder of tables
    (parquet/Arrow, :func:`whitenclip.readers.items.is_table_path`), not raw images/captions."""
    p = Path(path)
    if p.is_dir():
        return (p / "meta.json").is_file() or is_table_path(p)
    return p.suffix.lower() in EMBEDDING_SUFFIXES


def natural_key(path: str):
    """Sort key putting ``img_emb_2.npy`` before ``img_emb_10.npy``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def is_glob(text: str) -> bool:
    return any(c in str(text) for c in "*?[") and not Path(text).exists()


# ---------------------------------------------------------------------------------------
# shards of one path
# ---------------------------------------------------------------------------------------
def file_shards(p, *, column=None, id_column=None) -> list[Shard]:
    """The shards of one file, by its suffix (text vectors for any other name)."""
    p = existing_file(p)
    name = _BY_SUFFIX.get(p.suffix.lower(), "text")
    fmt = format_named(name)
    if name == "table":
        return fmt.shards(p, column=column, id_column=id_column)
    return fmt.shards(p)


def _directory_shards(d: Path, *, allow_partial: bool = False, column=None, id_column=None) -> list[Shard]:
    if (d / "meta.json").is_file():
        return store_shards(d, allow_partial=allow_partial)
    if is_table_path(d):  # parquet/Arrow files, a save_to_disk folder: rows named FILE:ROW without ids
        return TABLE.shards(d, column=column, id_column=id_column)
    if is_clip_retrieval(d):
        return CLIP_RETRIEVAL.folder(d)
    files = sorted((p for p in d.iterdir() if p.suffix.lower() in (".npy", ".safetensors", *HDF5_SUFFIXES)
                    and p.is_file()), key=lambda p: natural_key(p.name))
    if not files:
        raise InputError(f"{d}: no .npy, .safetensors or HDF5 shards in this directory")
    return [s for p in files for s in file_shards(p)]


def discover_shards(inputs, *, allow_partial: bool = False, column: str | None = None,
                    id_column: str | None = None) -> list[Shard]:
    """The shards behind a command's INPUTs, in order (see module doc); all share one dimension.

    ``column`` / ``id_column`` name a table's embedding and id columns (refused when no INPUT
    is a table). An incomplete store is refused unless ``allow_partial``.

    >>> discover_shards([])
    Traceback (most recent call last):
    ...
    whitenclip.errors.InputError: no INPUT given
    """
    inputs = [str(p) for p in inputs]
    if not inputs:
        raise InputError("no INPUT given")
    shards: list[Shard] = []
    cols = {"column": column, "id_column": id_column}
    for text in inputs:
        if text == "-":
            raise InputError("-: standard input cannot be split into pieces; use --engine local")
        if is_glob(text):
            matches = sorted(glob.glob(text), key=natural_key)
            if not matches:
                raise InputError(f"{text}: pattern matches no file")
            shards += [s for m in matches if Path(m).is_file() for s in file_shards(Path(m), **cols)]
        elif Path(text).is_dir():
            shards += _directory_shards(Path(text), allow_partial=allow_partial, **cols)
        elif not Path(text).exists():
            raise InputError(f"{text}: no such file or directory")
        else:
            shards += file_shards(Path(text), **cols)
    if (column is not None or id_column is not None) and not any(s.kind == "table" for s in shards):
        raise InputError(f"{', '.join(inputs)}: --column/--id-column name columns of parquet/Arrow tables; "
                         "these inputs hold none")
    dim = None
    for s in shards:
        if dim is not None and s.dim != dim:
            raise InputError(f"{s.path}: rows have dimension {s.dim}, but earlier shards have {dim}")
        dim = s.dim
    if not shards:
        raise InputError(f"{', '.join(inputs)}: no shards found")
    return shards


def plan_pieces(shards, piece_rows: int = PIECE_ROWS) -> list[Piece]:
    """Cut each shard into pieces of at most ``piece_rows`` rows (0-row shards give none); a table's
    pieces are runs of whole units, a shard that cannot be read from the middle is one piece.

    >>> s = Shard("a.npy", 5, 2, "<f4", 128)
    >>> [(p.start, p.stop, p.byte_start) for p in plan_pieces([s], 2)]
    [(0, 2, 128), (2, 4, 144), (4, 5, 160)]
    """
    if int(piece_rows) < 1:
        raise InputError(f"piece rows must be >= 1, got {piece_rows}")
    pieces = []
    for s in shards:
        for lo, hi, units in format_of(s).cut(s, int(piece_rows)):
            pieces.append(Piece(s, len(pieces), lo, hi, units))
    return pieces


def shard_meta(shards) -> dict:
    """What all shards record about their encoder (``ENCODER_META_KEYS``: encoder, modality,
    normalisation, activation, fingerprint), refusing disagreement (None where unknown)."""
    return agreed_encoder_meta((s.meta for s in shards), "shards")


# ---------------------------------------------------------------------------------------
# reading a piece (the engine's tasks)
# ---------------------------------------------------------------------------------------
def iter_piece_rows(piece: Piece, chunk_rows: int = CHUNK_ROWS, *, digest=None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_row, X)`` chunks of the piece, X float64 of shape (m <= chunk_rows, d).

    A ``raw`` piece reads only its byte range (``digest``, a hashlib object, is updated with the
    raw bytes); other pieces are read by their format (``digest`` updated with the rows as read).
    """
    if piece.shard.kind == "raw":
        yield from read_byte_range(piece, chunk_rows, digest=digest)
        return
    for lo, X, _ in format_of(piece.shard).read(piece, chunk_rows):
        if digest is not None:
            digest.update(np.ascontiguousarray(X).tobytes())
        yield lo, X


def finite_piece_rows(piece: Piece, chunk_rows: int = CHUNK_ROWS, *, drop_nonfinite: bool = False,
                      digest=None, dropped: list | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Like :func:`iter_piece_rows` but yields ``(first_row, X, kept)`` with every row of X finite.

    A row beyond :data:`~whitenclip.validation.MAX_ABS` = 1e50 in magnitude raises
    :class:`InputError` naming the shard and the row (:func:`~whitenclip.validation.check_magnitude`).
    A NaN/inf row raises :class:`InputError` naming the shard and the row (its index in the
    file), unless ``drop_nonfinite``: then it is skipped and counted in ``dropped[0]``; ``kept``
    is the boolean mask of the chunk's rows kept.
    """
    for lo, X in iter_piece_rows(piece, chunk_rows, digest=digest):
        ok = finite_rows(X, str(piece.shard.path), lo, drop_nonfinite=drop_nonfinite)
        if not ok.all():
            if dropped is not None:
                dropped[0] += int((~ok).sum())
            X = X[ok]
        yield lo, X, ok


def piece_ids(piece: Piece) -> list[str]:
    """Row ids of the piece: those its shard records (ids file, header, id column, metadata
    parquet...), else the row index in the file."""
    ids = format_of(piece.shard).ids(piece)
    return ids if ids is not None else index_ids(piece.start, piece.stop)


def piece_groups(piece: Piece) -> list | None:
    """Group ids of the piece's rows as its store records them (an id, or None: the row is its own
    group), or None when the shard records no groups."""
    return format_of(piece.shard).groups(piece)


def shard_records_groups(shard: Shard) -> bool:
    """True when ``shard`` is a store shard whose ``.ids.json`` records group ids (``embed`` writes
    them when it was given groups; :func:`whitenclip.readers.sidecar.records_groups`); the groups
    themselves are parsed by the task that reads the piece (:func:`piece_groups`)."""
    src = shard.ids
    return src is not None and src[0] == "json" and records_groups(src[1])


# ---------------------------------------------------------------------------------------
# local reading of whole paths
# ---------------------------------------------------------------------------------------
def read_text_vectors(lines, name: str) -> EmbeddingFile:
    """Text vectors from an iterable of lines (standard input), as an :class:`EmbeddingFile`
    (:func:`whitenclip.readers.text.parse_text_vectors`)."""
    return embedding_file(name, TEXT.shards(name, lines=lines, name=name))


def open_embeddings(path, *, allow_partial: bool = False, column: str | None = None,
                    id_column: str | None = None) -> EmbeddingFile:
    """Open an embeddings file, store directory or table for chunked reading (see module doc).

    A store left incomplete by a killed ``embed`` raises :class:`InputError` unless
    ``allow_partial`` is set. ``column`` / ``id_column`` name the embedding and id columns of a
    parquet/Arrow table (:mod:`whitenclip.readers.table`); other inputs have no columns and
    refuse them.
    """
    if (column is not None or id_column is not None) and not (str(path) != "-" and is_table_path(path)):
        raise InputError(f"{path}: --column/--id-column name columns of a parquet/Arrow table (or a captions CSV); "
                         "this input has none")
    if str(path) == "-":
        return read_text_vectors(sys.stdin, "<stdin>")
    p = Path(path)
    if is_table_path(p):
        return embedding_file(str(path), TABLE.shards(p, column=column, id_column=id_column), what="table ")
    if p.is_dir():
        return embedding_file(str(path), store_shards(p, allow_partial=allow_partial), what="store ")
    return embedding_file(str(path), file_shards(p))


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
# what a path holds
# ---------------------------------------------------------------------------------------
_TEXT_SUFFIXES = ("", ".txt", ".tsv", ".csv", ".vec", ".vectors")


_BINARY_HINT = ("embeddings are read from .npy, .npz, .safetensors, .pt/.pth, .h5/.hdf5, parquet/Arrow tables "
                "(.parquet, .arrow, .feather, .ipc), whitenclip store directories and text vectors; captions from "
                "UTF-8 text or CSV; images by their extension")


def holds_embeddings(path: str, as_text: bool = False, column: str | None = None) -> bool:
    """An embeddings file/store, a parquet/Arrow table whose column (``column``, else the default
    one) is a list<float> one (a string column: captions, :func:`whitenclip.readers.table.table_kind`), or a
    text file whose first non-empty line is a vector of numbers.

    A file of another extension that is binary (NUL bytes or invalid UTF-8 in its first 8 KiB)
    is refused: it is neither embeddings we can read nor captions.
    """
    if is_table_path(path):
        return table_kind(path, column) == "embeddings"
    if is_embedding_path(path):
        return True
    p = Path(path)
    if not p.is_file():
        return False
    suffix = p.suffix.lower()
    if suffix not in _TEXT_SUFFIXES and not is_image_path(p) and is_binary_file(p):
        raise InputError(f"{p}: binary file of unknown format ({_BINARY_HINT})")
    if as_text or suffix not in _TEXT_SUFFIXES:
        return False
    with open(p, "rb") as fh:
        return looks_like_vectors(first_line(fh.read(1 << 20)))
