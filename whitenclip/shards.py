"""Sharded embeddings: find the shards, plan pieces from headers, read a piece's byte range.

A *shard* is one file of rows (``.npy``, ``.safetensors``, a store's ``shard-NNNNN.npy``, a
clip-retrieval ``img_emb_N.npy``); a *piece* is a run of at most ``piece_rows`` consecutive rows
of one shard, i.e. one byte range ``[byte_start, byte_stop)`` of one file (a piece never
crosses a file boundary). Planning reads headers only; a piece's task reads just its range.

Accepted INPUTs (see :func:`discover_shards`), in a stable order:

* files: ``.npy`` (2-D, C order, float16/32/64) and ``.safetensors`` (tensor ``embeddings`` or
  the only tensor; optional ``ids`` list in the header metadata); other embeddings files
  (``.npz``, text vectors, Fortran-ordered ``.npy``) become one whole-file piece read by
  :mod:`whitenclip.stores`;
* glob patterns (``img_emb/*.npy``), expanded here in natural order (``_2`` before ``_10``);
* directories: a whitenclip store (``meta.json`` + shards), a clip-retrieval embeddings folder
  (``img_emb/`` or ``text_emb/``, with ``metadata/metadata_N.parquet`` giving row ids when
  pyarrow is installed: ``pip install whitenclip[parquet]``), or a folder of ``.npy`` /
  ``.safetensors`` shards;
* tables (:mod:`whitenclip.tables`): ``.parquet`` / Arrow IPC files, folders of them and
  ``datasets.save_to_disk`` folders, with the embedding column ``column`` (``--column``) and ids
  from ``id_column``; consecutive row groups (parquet) or record batches (Arrow) are coalesced
  into pieces of at most ``piece_rows`` rows (a larger unit is a piece of its own), so a file of
  20,000 one-row row groups is one piece, not 20,000.

Planning is linear in the number of shards and units: one header (footer) read per file, one
pass over its units; a piece's task reads its file's footer once (:func:`whitenclip.tables._read_units`).

Every check that needs no data happens at planning: dimension agreement, dtype, truncated
files (size smaller than the header promises, naming the first missing row).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from whitenclip import config
from whitenclip.config import CHUNK_ROWS
from whitenclip.errors import InputError

PIECE_ROWS = config.PIECE_ROWS
"""Rows per piece (one task of the engine), about 1M: 3 GB of float32 rows at d = 768."""

_FLOATS = ("float16", "float32", "float64")
_ST_DTYPES = {"F16": "float16", "F32": "float32", "F64": "float64"}
_CLIP_EMB = re.compile(r"^(img|text)_emb_(\d+)\.npy$")
_ID_COLUMNS = ("key", "image_path", "url", "caption")


@dataclass(frozen=True)
class Shard:
    """One file of rows, described from its header.

    ``offset`` is the byte where row 0 starts; rows are C-ordered ``dtype`` of ``dim`` values.
    ``kind`` is ``raw`` (byte ranges readable here), ``whole`` (read through
    :func:`whitenclip.stores.open_embeddings`, one piece) or ``table`` (a parquet/Arrow file read
    unit by unit: ``table`` is ``(TableInfo, id_prefix)``, see :mod:`whitenclip.tables`). ``ids``
    says where row ids come from: ``("json", path)``, ``("parquet", path, column)``,
    ``("header", path)`` or None (row index in the file; a table's own id column).
    """

    path: str
    n_rows: int
    dim: int
    dtype: str
    offset: int = 0
    kind: str = "raw"
    ids: tuple | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)
    table: tuple | None = None

    @property
    def row_bytes(self) -> int:
        return self.dim * np.dtype(self.dtype).itemsize


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


# ---------------------------------------------------------------------------------------
# discovery
# ---------------------------------------------------------------------------------------
def natural_key(path: str):
    """Sort key putting ``img_emb_2.npy`` before ``img_emb_10.npy``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def is_glob(text: str) -> bool:
    return any(c in str(text) for c in "*?[") and not Path(text).exists()


def discover_shards(inputs, *, allow_partial: bool = False, column: str | None = None,
                    id_column: str | None = None) -> list[Shard]:
    """The shards behind a command's INPUTs, in order (see module doc); all share one dimension.

    ``column`` / ``id_column`` name a table's embedding and id columns (refused when no INPUT
    is a table).

    Store directories go through :func:`whitenclip.stores.read_store_layout`, the reader the local
    path uses: an incomplete store is refused unless ``allow_partial``, and every shard must have
    the store's ``dim`` and ``dtype``.

    >>> discover_shards([])
    Traceback (most recent call last):
    ...
    whitenclip.errors.InputError: no INPUT given
    """
    inputs = [str(p) for p in inputs]
    if not inputs:
        raise InputError("no INPUT given")
    shards: list[Shard] = []
    cols = (column, id_column)
    for text in inputs:
        if text == "-":
            raise InputError("-: standard input cannot be split into pieces; use --engine local")
        if is_glob(text):
            matches = sorted(glob.glob(text), key=natural_key)
            if not matches:
                raise InputError(f"{text}: pattern matches no file")
            shards += [_file_shard(Path(m), table=cols) for m in matches if Path(m).is_file()]
        elif Path(text).is_dir():
            shards += _directory_shards(Path(text), allow_partial=allow_partial, table=cols)
        else:
            shards.append(_file_shard(Path(text), table=cols))
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


def _file_shard(p: Path, *, ids=None, meta=None, table=(None, None), id_prefix=None) -> Shard:
    from whitenclip.outputs import npy_ids_path
    from whitenclip.tables import TABLE_SUFFIXES

    if not p.exists():
        raise InputError(f"{p}: no such file or directory")
    if not p.is_file():
        raise InputError(f"{p}: not a regular file")
    suffix = p.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        return _table_shard(p, *table, id_prefix=id_prefix)
    if suffix == ".npy":
        if ids is None and npy_ids_path(p).is_file():  # embed -o NAME.npy: ids (and groups) beside it
            ids = ("json", str(npy_ids_path(p)))
        shard = _npy_shard(p, ids=ids, meta=meta)
    elif suffix == ".safetensors":
        shard = _safetensors_shard(p, meta=meta)
    else:
        from whitenclip.stores import open_embeddings

        src = open_embeddings(p)  # .npz / text vectors: one whole-file piece
        return Shard(str(p), src.n_rows, src.dim, src.dtype, 0, "whole", None, {**src.meta, **(meta or {})})
    _check_size(shard)
    return shard


def _npy_shard(p: Path, *, ids=None, meta=None) -> Shard:
    from whitenclip.stores import read_npy_header

    try:
        with open(p, "rb") as fh:
            shape, fortran, dtype = read_npy_header(fh, p)
            offset = fh.tell()
    except OSError as exc:
        raise InputError(f"{p}: not a readable .npy file ({' '.join(str(exc).split())})") from None
    if len(shape) != 2:
        raise InputError(f"{p}: expected a 2-D array (n_rows, dim), got shape {tuple(shape)}")
    if dtype.name not in _FLOATS:
        raise InputError(f"{p}: expected float16/32/64 embeddings, got dtype {dtype}")
    if shape[1] == 0:
        raise InputError(f"{p}: rows have zero dimensions")
    # a Fortran-ordered array's rows are not byte ranges: one whole-file piece, read as the local path does
    kind = "whole" if fortran and shape[0] > 1 and shape[1] > 1 else "raw"
    return Shard(str(p), int(shape[0]), int(shape[1]), dtype.str, offset, kind, ids, dict(meta or {}))


def _safetensors_shard(p: Path, *, meta=None) -> Shard:
    """A safetensors shard from :func:`whitenclip.stores.parse_safetensors_header` (the one
    validated parser): row 0 at the tensor's ``data_offsets`` begin; ids from the metadata."""
    from whitenclip.encoders.base import ENCODER_META_KEYS
    from whitenclip.stores import embedding_tensor, header_ids, parse_safetensors_header

    header, info = parse_safetensors_header(p)
    t = embedding_tensor(p, header, info)
    dtype = _ST_DTYPES.get(t.dtype)
    if dtype is None:
        raise InputError(f"{p}: expected float16/32/64 embeddings, got dtype {t.dtype}")
    if len(t.shape) != 2 or t.shape[1] == 0:
        raise InputError(f"{p}: expected a 2-D array (n_rows, dim), got shape {tuple(t.shape)}")
    ids = ("header", str(p)) if header_ids(p, info, t.shape[0]) is not None else None
    decoded = {}
    for k in ENCODER_META_KEYS:
        if k in info:
            try:
                decoded[k] = json.loads(info[k])
            except (ValueError, RecursionError):
                decoded[k] = info[k]
    return Shard(str(p), int(t.shape[0]), int(t.shape[1]), np.dtype(dtype).newbyteorder("<").str, t.start, "raw", ids,
                 {**decoded, **(meta or {})})


def _table_shard(p: Path, column, id_column, *, id_prefix=None) -> Shard:
    """A parquet/Arrow file from :func:`whitenclip.tables.inspect_table` (the reader the local path
    uses): one piece per row group / record batch."""
    from whitenclip.tables import inspect_table

    info = inspect_table(p, column, id_column)
    return Shard(str(p), info.n_rows, info.dim, np.dtype(info.dtype).newbyteorder("<").str, 0, "table", None, {},
                 (info, id_prefix))


def _check_size(s: Shard) -> None:
    from whitenclip.stores import check_extent

    check_extent(s.path, os.path.getsize(s.path), s.offset, s.n_rows, s.row_bytes)


def _directory_shards(d: Path, *, allow_partial: bool = False, table=(None, None)) -> list[Shard]:
    from whitenclip.tables import is_table_path, table_files

    if (d / "meta.json").is_file():
        return _store_shards(d, allow_partial=allow_partial)
    if is_table_path(d):  # parquet/Arrow files, a save_to_disk folder: rows named FILE:ROW without ids
        shards = [_file_shard(f, table=table, id_prefix=f.name) for f in table_files(d)]
        for s in shards[1:]:
            if s.dtype != shards[0].dtype:
                raise InputError(f"{s.path}: embeddings of {np.dtype(s.dtype).name}, but {shards[0].path} has "
                                 f"{np.dtype(shards[0].dtype).name}")
        return shards
    subdirs = [d / name for name in ("img_emb", "text_emb") if (d / name).is_dir()]
    if len(subdirs) > 1:
        raise InputError(f"{d}: holds both img_emb/ and text_emb/; name the one to read ({subdirs[0]})")
    if subdirs:
        return _clip_retrieval_shards(subdirs[0], d / "metadata")
    if any(_CLIP_EMB.match(p.name) for p in d.iterdir()):
        return _clip_retrieval_shards(d, d.parent / "metadata")
    files = sorted((p for p in d.iterdir() if p.suffix.lower() in (".npy", ".safetensors") and p.is_file()),
                   key=lambda p: natural_key(p.name))
    if not files:
        raise InputError(f"{d}: no .npy or .safetensors shards in this directory")
    return [_file_shard(p) for p in files]


def _store_shards(d: Path, *, allow_partial: bool = False) -> list[Shard]:
    from whitenclip.stores import read_store_layout

    layout = read_store_layout(d, allow_partial=allow_partial)
    info = layout.info  # encoder, modality, normalisation, activation, fingerprint
    out = []
    for _, npy, ids in layout.shards:  # the .npy commits a shard
        shard = _file_shard(npy, ids=("json", str(ids)), meta=info)
        layout.check_shard(npy, (shard.n_rows, shard.dim), shard.dtype, ids)
        out.append(shard)
    return out


def _clip_retrieval_shards(emb_dir: Path, meta_dir: Path) -> list[Shard]:
    found = sorted(((int(m.group(2)), m.group(1), p) for p in emb_dir.iterdir() if (m := _CLIP_EMB.match(p.name))))
    if not found:
        raise InputError(f"{emb_dir}: no img_emb_N.npy / text_emb_N.npy files")
    out = []
    for index, kind, p in found:
        ids = None
        parquet = meta_dir / f"metadata_{index}.parquet"
        if parquet.is_file():
            ids = _parquet_ids(parquet)
        meta = {"modality": "image" if kind == "img" else "text"}
        shard = _file_shard(p, ids=ids, meta=meta)
        if ids is not None and _parquet_rows(parquet) != shard.n_rows:
            raise InputError(f"{parquet}: {_parquet_rows(parquet)} metadata rows for {shard.n_rows} embeddings in {p}")
        out.append(shard)
    return out


def _parquet_ids(path: Path):
    try:
        import pyarrow.parquet as pq
    except ImportError:  # ids are optional: fall back to row indices
        return None
    with _parquet_errors(path):
        names = pq.ParquetFile(path).schema_arrow.names
    col = next((c for c in _ID_COLUMNS if c in names), None)
    return ("parquet", str(path), col) if col else None


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    with _parquet_errors(path):
        return int(pq.ParquetFile(path).metadata.num_rows)


@contextlib.contextmanager
def _parquet_errors(path):
    """A corrupt or foreign metadata parquet (pyarrow's ArrowInvalid, OSError...) -> InputError."""
    try:
        yield
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: not a readable parquet file ({' '.join(str(exc).split())[:200]})") from None


# ---------------------------------------------------------------------------------------
# planning
# ---------------------------------------------------------------------------------------
def plan_pieces(shards, piece_rows: int = PIECE_ROWS) -> list[Piece]:
    """Cut each shard into pieces of at most ``piece_rows`` rows (0-row shards give none).

    >>> s = Shard("a.npy", 5, 2, "<f4", 128)
    >>> [(p.start, p.stop, p.byte_start) for p in plan_pieces([s], 2)]
    [(0, 2, 128), (2, 4, 144), (4, 5, 160)]
    """
    if int(piece_rows) < 1:
        raise InputError(f"piece rows must be >= 1, got {piece_rows}")
    pieces = []
    for s in shards:
        if s.kind == "table":  # runs of whole units coalesced up to piece_rows rows (one pass)
            for lo, hi, u0, u1 in table_runs(s.table[0].units, int(piece_rows)):
                pieces.append(Piece(s, len(pieces), lo, hi, (u0, u1)))
            continue
        step = s.n_rows if s.kind == "whole" else int(piece_rows)
        for lo in range(0, s.n_rows, max(step, 1)):
            pieces.append(Piece(s, len(pieces), lo, min(lo + step, s.n_rows)))
    return pieces


def table_runs(units, piece_rows: int) -> list[tuple[int, int, int, int]]:
    """``(first_row, stop_row, first_unit, stop_unit)`` of each piece of a table whose units hold
    ``units`` rows: consecutive units gathered while their rows fit in ``piece_rows`` (a unit
    larger than that is a piece alone); empty units join their neighbours; no rows, no piece.
    One pass: O(units).

    >>> table_runs([3, 1, 0, 2, 9, 1], 4)
    [(0, 4, 0, 3), (4, 6, 3, 4), (6, 15, 4, 5), (15, 16, 5, 6)]
    """
    runs, row, first_row, first_unit, held = [], 0, 0, 0, 0
    for u, n in enumerate(units):
        n = int(n)
        if held and held + n > piece_rows:
            runs.append((first_row, row, first_unit, u))
            first_row, first_unit, held = row, u, 0
        held += n
        row += n
    if held:
        runs.append((first_row, row, first_unit, len(units)))
    return runs


# ---------------------------------------------------------------------------------------
# reading a piece
# ---------------------------------------------------------------------------------------
def iter_piece_rows(piece: Piece, chunk_rows: int = CHUNK_ROWS, *, digest=None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_row, X)`` chunks of the piece, X float64 of shape (m <= chunk_rows, d).

    Reads only the piece's byte range, ``chunk_rows`` rows at a time (plain reads, no memory
    map); ``digest`` (a hashlib object) is updated with the raw bytes. A short read raises
    :class:`InputError` naming the shard and row.
    """
    s = piece.shard
    if s.kind == "table":
        from whitenclip.tables import iter_table_rows

        for row, X, _ in iter_table_rows(s.table[0], range(*piece.units), chunk_rows):
            if digest is not None:
                digest.update(X.tobytes())
            yield row, X
        return
    if s.kind == "whole":
        from whitenclip.stores import open_embeddings

        row = 0
        for _, X in open_embeddings(s.path).iter_chunks(chunk_rows):
            if digest is not None:
                digest.update(np.ascontiguousarray(X).tobytes())
            yield row, X
            row += X.shape[0]
        return
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


def finite_piece_rows(piece: Piece, chunk_rows: int = CHUNK_ROWS, *, drop_nonfinite: bool = False,
                      digest=None, dropped: list | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Like :func:`iter_piece_rows` but yields ``(first_row, X, kept)`` with every row of X finite.

    A row beyond :data:`~whitenclip.validation.MAX_ABS` = 1e50 in magnitude raises
    :class:`InputError` naming the shard and the row (:func:`~whitenclip.validation.check_magnitude`).
    A NaN/inf row raises :class:`InputError` naming the shard and the row (its index in the
    file), unless ``drop_nonfinite``: then it is skipped and counted in ``dropped[0]``; ``kept``
    is the boolean mask of the chunk's rows kept.
    """
    from whitenclip.stores import finite_rows

    for lo, X in iter_piece_rows(piece, chunk_rows, digest=digest):
        ok = finite_rows(X, str(piece.shard.path), lo, drop_nonfinite=drop_nonfinite)
        if not ok.all():
            if dropped is not None:
                dropped[0] += int((~ok).sum())
            X = X[ok]
        yield lo, X, ok


def piece_ids(piece: Piece) -> list[str]:
    """Row ids of the piece: from the store's ids file, the safetensors header, the clip-retrieval
    parquet column, or the row index in the file."""
    src = piece.shard.ids
    if piece.shard.kind == "table":
        from whitenclip.tables import table_unit_ids

        info, prefix = piece.shard.table
        return table_unit_ids(info, range(*piece.units), id_prefix=prefix)
    if src is None:
        if piece.shard.kind == "whole":
            from whitenclip.stores import open_embeddings

            return [i for ids, _ in open_embeddings(piece.shard.path).iter_chunks() for i in ids]
        return [str(i) for i in range(piece.start, piece.stop)]
    if src[0] == "json":
        from whitenclip.stores import read_shard_ids

        ids = read_shard_ids(Path(src[1]))[0]
    elif src[0] == "header":
        from whitenclip.stores import header_ids, parse_safetensors_header

        ids = header_ids(src[1], parse_safetensors_header(src[1])[1], piece.shard.n_rows)
    else:
        import pyarrow.parquet as pq

        with _parquet_errors(src[1]):
            table = pq.read_table(src[1], columns=[src[2]])
            return [str(v) for v in table.column(0).slice(piece.start, piece.n_rows).to_pylist()]
    if len(ids) != piece.shard.n_rows:
        raise InputError(f"{src[1]}: {len(ids)} ids for {piece.shard.n_rows} rows of {piece.shard.path}")
    return [str(v) for v in ids[piece.start:piece.stop]]


def shard_records_groups(shard: Shard) -> bool:
    """True when ``shard`` is a store shard whose ``.ids.json`` records group ids (``embed`` writes
    them when it was given groups). Reads the file's bytes only, looking for the key ``"groups": [``
    (an id can never be followed by ``: [``, and a quote inside an id is escaped); the ids
    themselves are parsed by the task that reads the piece (:func:`piece_groups`)."""
    src = shard.ids
    if src is None or src[0] != "json":
        return False
    try:
        text = Path(src[1]).read_bytes()
    except OSError:
        return False
    return b'"groups": [' in text or b'"groups":[' in text


def piece_groups(piece: Piece) -> list | None:
    """Group ids of the piece's rows as its store records them (an id, or None: the row is its own
    group), or None when the shard records no groups (:func:`whitenclip.stores.read_shard`)."""
    src = piece.shard.ids
    if src is None or src[0] != "json":
        return None
    from whitenclip.stores import read_shard

    groups = read_shard(Path(src[1]), piece.shard.n_rows)[1]
    return None if groups is None else groups[piece.start:piece.stop]


def shard_meta(shards) -> dict:
    """What all shards record about their encoder (``ENCODER_META_KEYS``: encoder, modality,
    normalisation, activation, fingerprint), refusing disagreement (None where unknown)."""
    from whitenclip.stores import agreed_encoder_meta

    return agreed_encoder_meta((s.meta for s in shards), "shards")
