"""Embeddings and captions in tables: parquet files, Arrow IPC files and streams, ``datasets.save_to_disk``
folders.

The type of the column read decides what a table holds (:func:`choose_column`): a string column
holds captions, read as a captions CSV would be
(:func:`whitenclip.readers.caption_tables.read_caption_table`: the same items, the same skips,
``--group-column`` and the image-column default), a list<float> column embeddings.
Without ``--column``, a table's only list<float> column is read (as before), else its caption
column (``caption``, ``text``, ``sentence``).

An embedding column is a ``list<float>``, ``large_list<float>`` or ``fixed_size_list<float>``
column (float16/32/64 values): ``--column NAME`` names it; by default it is the only such column
of the table (several: refused, listing them). Row ids come from ``--id-column NAME`` (any type,
written as text), by default the column ``id`` when the table has one, else the row index.

A table is read in *units*, never whole: a parquet row group, or a record batch of an Arrow IPC
file or stream, in chunks of at most ``chunk_rows`` rows (constant memory); a chunk gathers the
rows of consecutive small units, and a file's footer is read once per read, so 20,000 one-row row
groups cost what 20,000 rows do. The planner (:func:`whitenclip.readers.plan.plan_pieces`,
:meth:`TableFormat.cut`) coalesces consecutive units into pieces of about ``--piece-rows`` rows,
so ``--engine dask`` reads a folder of parquet files run of row groups by run of row groups on its
workers.

Captions longer than :data:`whitenclip.config.MAX_CAPTION_CHARS` characters are cut to it, with one
note per file naming the first one's row (:func:`whitenclip.readers.captions.cut_caption`).

Accepted paths (:func:`table_files`):

* ``.parquet``; ``.arrow`` / ``.feather`` / ``.ipc`` (Arrow IPC file or stream format);
* a ``datasets.save_to_disk`` folder (``state.json`` listing its ``data-*.arrow`` files, in
  order); a ``DatasetDict`` folder is refused, naming its splits;
* a folder of ``.parquet`` / ``.arrow`` files (natural order: ``part-2`` before ``part-10``) with
  no images and no sub-folders beside them (an img2dataset folder is images to embed).

Rows that cannot be embeddings are refused naming the file, the unit (row group or record batch)
and the row: a null embedding, a null value inside one, a list whose length differs from the
first row's (ragged). pyarrow is optional (``pip install 'whitenclip[parquet]'``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from whitenclip.errors import InputError
from whitenclip.readers.base import Format, Piece, Shard, index_ids
from whitenclip.readers.items import TABLE_SUFFIXES, is_table_path  # noqa: F401 (the table vocabulary, with items')

PYARROW_HINT = "reading parquet/Arrow tables needs pyarrow: pip install 'whitenclip[parquet]'"


DEFAULT_ID_COLUMN = "id"


def import_pyarrow(path=None):
    """``pyarrow`` (with ``pyarrow.parquet`` and ``pyarrow.ipc`` loaded), or one-line :class:`InputError`."""
    try:
        import pyarrow as pa
        import pyarrow.compute  # noqa: F401
        import pyarrow.ipc  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:
        from whitenclip.errors import reraise_if_out_of_memory

        reraise_if_out_of_memory(exc)  # installed, but not mappable under an address-space limit
        raise InputError(f"{path}: {PYARROW_HINT}" if path is not None else PYARROW_HINT) from None
    return pa


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def table_files(path) -> list[Path]:
    """The table files behind ``path`` in order: itself, a ``save_to_disk`` folder's data files
    (as ``state.json`` lists them), or a folder's ``.parquet`` / ``.arrow`` files."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or directory")
    if not p.is_dir():
        return [p]
    if (p / "dataset_dict.json").is_file():
        splits = sorted(c.name for c in p.iterdir() if c.is_dir())
        raise InputError(f"{p}: a DatasetDict with splits {', '.join(splits) or '(none)'}; name one split's folder "
                         f"(e.g. {p / (splits[0] if splits else 'train')})")
    state = p / "state.json"
    if state.is_file():
        try:
            doc = json.loads(state.read_text(encoding="utf-8"))
            names = [f["filename"] for f in doc["_data_files"]]
        except (OSError, ValueError, UnicodeDecodeError, RecursionError, KeyError, TypeError):
            raise InputError(f"{state}: not a datasets state.json (no '_data_files' list of filenames)") from None
        files, seen = [], set()
        for name in names:
            f = p / str(name)
            if not isinstance(name, str) or Path(name).name != name or not f.is_file():
                raise InputError(f"{state}: data file {name!r} is missing from {p}")
            if name in seen:  # its rows would be read twice
                raise InputError(f"{state}: lists the data file {name!r} twice; its rows would be read twice")
            seen.add(name)
            files.append(f)
        if not files:
            raise InputError(f"{p}: state.json lists no data files")
        return files
    files = sorted((c for c in p.iterdir() if c.suffix.lower() in TABLE_SUFFIXES and c.is_file()),
                   key=lambda c: _natural(c.name))
    if not files:
        raise InputError(f"{p}: no .parquet or .arrow files in this directory")
    return files


@dataclass(frozen=True)
class TableInfo:
    """One table file as the readers see it: ``fmt`` (``parquet``, ``ipc-file`` or ``ipc-stream``),
    the embedding ``column`` and its row ``dim`` and value ``dtype``, the ``id_column`` (or None),
    and ``units``, the rows of each row group / record batch in order."""

    path: str
    fmt: str
    column: str
    id_column: str | None
    dim: int
    dtype: str
    units: tuple

    @property
    def n_rows(self) -> int:
        return int(sum(self.units))

    @property
    def unit_name(self) -> str:
        return "row group" if self.fmt == "parquet" else "record batch"

    @functools.cached_property
    def _starts(self) -> np.ndarray:
        """First row (in the file) of each unit, then the row count: computed once per info."""
        return np.concatenate([[0], np.cumsum(np.asarray(self.units, dtype=np.int64))]).astype(np.int64)

    def unit_starts(self) -> list[int]:
        """First row (in the file) of each unit."""
        return [int(v) for v in self._starts[:-1]]

    def unit_start(self, unit: int) -> int:
        """First row (in the file) of ``unit``."""
        return int(self._starts[unit])

    def locate(self, file_row: int) -> tuple[int, int]:
        """``(unit, row in that unit)`` of a row of the file (O(log units)).

        >>> TableInfo("t.parquet", "parquet", "emb", None, 2, "float32", (3, 0, 2)).locate(4)
        (2, 1)
        """
        unit = int(np.searchsorted(self._starts, file_row, side="right")) - 1
        while unit > 0 and self.units[unit] == 0:  # an empty unit shares its start with the next one
            unit -= 1
        return unit, int(file_row - self._starts[unit])

    def where(self, file_row: int) -> str:
        """``PATH: row group U, row R (row F of the file)``: a row named as the messages name it."""
        unit, row = self.locate(file_row)
        return f"{self.path}: {self.unit_name} {unit}, row {row} (row {file_row} of the file)"


@contextlib.contextmanager
def _arrow_errors(path):
    """A corrupt or foreign file (ArrowInvalid, OSError...) -> one-line InputError naming it."""
    try:
        yield
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: not a readable parquet/Arrow table ({' '.join(str(exc).split())[:200]})") from None


def _ipc_reader(pa, path):
    """``(fmt, reader)`` of an Arrow IPC file (random access) or stream (``save_to_disk``), memory mapped."""
    source = pa.memory_map(str(path), "r")
    try:
        return "ipc-file", pa.ipc.open_file(source)
    except pa.ArrowInvalid:
        source.seek(0)
        return "ipc-stream", pa.ipc.open_stream(source)


def _float_name(pa, t) -> str:
    return {pa.float16(): "float16", pa.float32(): "float32", pa.float64(): "float64"}[t]


def table_layout(path, *, units: bool = True) -> tuple:
    """``(fmt, schema, units)`` of one table file from its metadata (see :class:`TableInfo`);
    ``units=False``: the schema alone (units None; an Arrow stream is not walked)."""
    pa = import_pyarrow(path)
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file" if not p.exists() else f"{p}: not a regular file")
    with _arrow_errors(p):
        if p.suffix.lower() == ".parquet":
            pf = pa.parquet.ParquetFile(str(p))
            meta = pf.metadata
            return "parquet", pf.schema_arrow, \
                tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) if units else None
        fmt, reader = _ipc_reader(pa, p)
        if not units:
            return fmt, reader.schema, None
        if fmt == "ipc-file":
            return fmt, reader.schema, tuple(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
        return fmt, reader.schema, tuple(b.num_rows for b in reader)


def _is_float_list(pa, t) -> bool:
    return (pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t)) \
        and pa.types.is_floating(t.value_type)


def _is_text(pa, t) -> bool:
    """A caption column: string, large_string, string_view, or a dictionary of strings."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _shown(pa, t) -> str:
    if pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"{str(t).split('<', 1)[0]}<{t.value_type}>"  # list<int64>, not list<element: int64>
    return str(t)


def _column_name(path, names: list, column, option: str) -> str:
    """A column named by ``option``: its name, or (no column of that name) its 0-based index, as for a CSV."""
    name = str(column)
    if name in names:
        return name
    if name.isdigit() and int(name) < len(names):
        return names[int(name)]
    raise InputError(f"{path}: no column {name!r} (columns: {', '.join(names)}) ({option})")


def choose_column(pa, path, schema, column: str | None) -> tuple[str, str]:
    """``(kind, name)``: which column of a table's schema is read, and as ``"captions"`` or ``"embeddings"``.

    ``--column NAME``: a string column holds captions, a ``list<float>`` column embeddings; any
    other type is refused. Without it: the only ``list<float>`` column (a table of embeddings,
    perhaps with their captions beside them, reads as embeddings as before), else the first of
    :data:`whitenclip.readers.items.CAPTION_COLUMNS` (case-insensitive) among the string columns, else
    the table's only column when it is a string one, as for a CSV. Several candidates: refused,
    naming them.
    """
    from whitenclip.readers.items import CAPTION_COLUMNS

    names = list(schema.names)
    floats = [f.name for f in schema if _is_float_list(pa, f.type)]
    texts = [f.name for f in schema if _is_text(pa, f.type)]
    if column is not None:
        column = _column_name(path, names, column, "--column")
        if column in texts:
            return "captions", column
        if column in floats:
            return "embeddings", column
        raise InputError(f"{path}: column {column!r} holds {_shown(pa, schema.field(column).type)}, not embeddings "
                         f"(list<float>; here: {', '.join(floats) or 'none'}) nor captions (string; here: "
                         f"{', '.join(texts) or 'none'})")
    if len(floats) > 1:
        raise InputError(f"{path}: pass --column NAME to name the embedding column (list<float> columns: "
                         f"several: {', '.join(floats)})")
    if floats:
        return "embeddings", floats[0]
    for cand in CAPTION_COLUMNS:
        found = [n for n in texts if n.strip().lower() == cand]
        if len(found) > 1:
            raise InputError(f"{path}: several caption columns ({', '.join(found)}); pass --column NAME")
        if found:
            return "captions", found[0]
    if len(names) == 1 and texts:
        return "captions", texts[0]
    raise InputError(f"{path}: pass --column NAME: no caption column ({', '.join(CAPTION_COLUMNS)}: string) and no "
                     f"list<float> embedding column (none among {', '.join(names) or '(no columns)'}; "
                     f"string columns: {', '.join(texts) or 'none'})")


def table_kind(path, column: str | None = None) -> str:
    """``"captions"`` or ``"embeddings"``: how the INPUT ``path`` (a table file or folder) is read,
    decided by the type of its first file's column (:func:`choose_column`); metadata only."""
    pa = import_pyarrow(path)
    first = table_files(path)[0]
    return choose_column(pa, first, table_layout(first, units=False)[1], column)[0]


def pick_columns(pa, path, schema, column: str | None, id_column: str | None) -> tuple:
    """``(column, id_column, dim or None, dtype)`` of a table's schema (see module doc)."""
    names = list(schema.names)
    kinds = {}
    for f in schema:
        t = f.type
        if _is_float_list(pa, t):
            kinds[f.name] = (t.list_size if pa.types.is_fixed_size_list(t) else None, _float_name(pa, t.value_type))
    if column is None:
        if len(kinds) != 1:
            found = f"several: {', '.join(kinds)}" if kinds else f"none among {', '.join(names) or '(no columns)'}"
            raise InputError(f"{path}: pass --column NAME to name the embedding column (list<float> columns: {found})")
        column = next(iter(kinds))
    else:  # a name, or a 0-based index as for every column option (_column_name)
        column = _column_name(path, names, column, "--column")
    if column not in kinds:
        t = schema.field(column).type
        why = (" (captions: embeddings are read here; embed the captions first with `whitenclip embed` and "
               "give the store)" if _is_text(pa, t) else "")
        raise InputError(f"{path}: column {column!r} holds {_shown(pa, t)}, not embeddings (a list<float> or "
                         f"fixed_size_list<float> column; here: {', '.join(kinds) or 'none'}){why}")
    if id_column is None:
        id_column = DEFAULT_ID_COLUMN if DEFAULT_ID_COLUMN in names and DEFAULT_ID_COLUMN != column else None
    elif id_column not in names:
        if not (str(id_column).isdigit() and int(id_column) < len(names)):  # a 0-based index, as for --column
            raise InputError(f"{path}: no id column {id_column!r} (columns: {', '.join(names)})")
        id_column = names[int(id_column)]
    dim, dtype = kinds[column]
    return column, id_column, dim, dtype


def inspect_table(path, column: str | None = None, id_column: str | None = None) -> TableInfo:
    """Schema, embedding column, dimension and units of one table file (metadata, plus the first
    row when the column is a variable-length list: its length is the dimension)."""
    pa = import_pyarrow(path)
    p = Path(path)
    fmt, schema, units = table_layout(p)
    column, id_column, dim, dtype = pick_columns(pa, p, schema, column, id_column)
    info = TableInfo(str(p), fmt, column, id_column, dim or 0, dtype, units)
    if dim is None:  # list<float>: the first row's length is the dimension
        for _, arr, _ in _unit_arrays(info, None, 1, with_ids=False):
            if len(arr):
                first = arr[0]
                if not first.is_valid:
                    raise InputError(f"{p}: {info.unit_name} 0, row 0: embedding is null")
                dim = len(first)
                break
        info = TableInfo(str(p), fmt, column, id_column, int(dim or 0), dtype, units)
    if info.dim == 0 and info.n_rows:
        raise InputError(f"{p}: column {column!r}: rows have zero dimensions")
    return info


def _runs(units) -> list[list[int]]:
    """Ascending ``units`` as runs of consecutive ones: ``[0, 1, 2, 5, 6]`` -> ``[[0, 1, 2], [5, 6]]``."""
    runs: list[list[int]] = []
    for u in units:
        if runs and u == runs[-1][-1] + 1:
            runs[-1].append(u)
        else:
            runs.append([u])
    return runs


def _read_units(path, fmt: str, units, columns, chunk_rows: int, starts):
    """Yield ``(file_row, arrays)`` chunks of the given units (ascending), at most ``chunk_rows`` rows
    each, reading only ``columns``: one array per entry, a column name or ``(name, field)`` for a
    field of a struct column (parquet reads that leaf alone). ``starts[u]`` is unit u's first row.

    The file is opened once (one footer read) and read run by run of consecutive units; a chunk
    gathers the rows of consecutive small units (one-row row groups cost a slice, not a chunk each),
    so the work is linear in the rows and the units read, whatever the layout. Callers name a row
    by its unit with :meth:`TableInfo.locate`."""
    pa = import_pyarrow(path)
    specs = [c if isinstance(c, tuple) else (c, None) for c in columns]
    units = sorted(set(int(u) for u in units))

    def pick(batch):
        return [pa.compute.struct_field(batch.column(n), f) if f else batch.column(n) for n, f in specs]

    def batches():  # (file_row, arrays) of each record batch read, in file order
        if fmt == "parquet":
            pf = pa.parquet.ParquetFile(str(path))
            read = list(dict.fromkeys(f"{n}.{f}" if f else n for n, f in specs))
            for run in _runs(units):
                row = int(starts[run[0]])
                for batch in pf.iter_batches(batch_size=chunk_rows, row_groups=run, columns=read):
                    yield row, pick(batch)
                    row += batch.num_rows
            return
        kind, reader = _ipc_reader(pa, path)
        if kind == "ipc-file":
            for u in units:
                yield int(starts[u]), pick(reader.get_batch(u))
            return
        want, last = set(units), units[-1] if units else -1
        for u, batch in enumerate(reader):  # a stream is read in order, once, up to the last unit wanted
            if u > last:
                break
            if u in want:
                yield int(starts[u]), pick(batch)

    def plain(a):  # dictionaries of different batches differ: decoded before they are joined
        return a.dictionary_decode() if pa.types.is_dictionary(a.type) else a

    def concat(parts):
        if len(parts) == 1:
            return parts[0]
        return [pa.concat_arrays([plain(p[k]) for p in parts]) for k in range(len(specs))]

    with _arrow_errors(path):
        held, held_rows, first = [], 0, 0
        for row, arrays in batches():
            n = len(arrays[0]) if arrays else 0
            at = 0
            while at < n:
                if held and first + held_rows != row + at:  # not contiguous with what is held
                    yield first, concat(held)
                    held, held_rows = [], 0
                if not held:
                    first = row + at
                take = min(n - at, chunk_rows - held_rows)
                held.append(arrays if (at == 0 and take == n) else [a.slice(at, take) for a in arrays])
                held_rows += take
                at += take
                if held_rows >= chunk_rows:
                    yield first, concat(held)
                    held, held_rows = [], 0
        if held:
            yield first, concat(held)


def _unit_arrays(info: TableInfo, units, chunk_rows: int, *, with_ids: bool = True):
    """Yield ``(file_row, embedding_array, id_array or None)`` chunks of the given units (all when
    None), in order, at most ``chunk_rows`` rows each (see :func:`_read_units`)."""
    wanted = range(len(info.units)) if units is None else units
    columns = [info.column] + ([info.id_column] if with_ids and info.id_column else [])
    for row, arrays in _read_units(info.path, info.fmt, wanted, columns, chunk_rows, info._starts):
        yield row, arrays[0], arrays[1] if len(arrays) > 1 else None


def _to_matrix(info: TableInfo, arr, file_row: int) -> np.ndarray:
    """Rows of an embedding chunk as a fresh float64 (m, dim) array; nulls and ragged rows refused."""
    pa = import_pyarrow(info.path)
    m = len(arr)

    def where(i: int) -> str:
        return info.where(file_row + i)

    if arr.null_count:
        i = int(np.flatnonzero(~np.asarray(arr.is_valid().to_numpy(zero_copy_only=False)))[0])
        raise InputError(f"{where(i)}: embedding is null")
    if not pa.types.is_fixed_size_list(arr.type):
        lengths = np.diff(np.asarray(arr.offsets.to_numpy(zero_copy_only=False), dtype=np.int64))
        bad = np.flatnonzero(lengths != info.dim)
        if bad.size:
            i = int(bad[0])
            raise InputError(f"{where(i)}: embedding has {int(lengths[i])} values, expected {info.dim} "
                             "like the first row (ragged lists)")
    elif arr.type.list_size != info.dim:
        raise InputError(f"{where(0)}: embeddings have {arr.type.list_size} values, expected {info.dim}")
    values = arr.flatten()
    if values.null_count:
        k = int(np.flatnonzero(~np.asarray(values.is_valid().to_numpy(zero_copy_only=False)))[0])
        raise InputError(f"{where(k // info.dim)}: embedding holds a null value (position {k % info.dim})")
    X = np.array(values.to_numpy(zero_copy_only=False), dtype=np.float64)
    return X.reshape(m, info.dim)


def _ids_of(info: TableInfo, ids, file_row: int) -> list[str]:
    values = ids.to_pylist()
    if ids.null_count:
        i = next(k for k, v in enumerate(values) if v is None)
        raise InputError(f"{info.where(file_row + i)}: id column {info.id_column!r} is null")
    return [v if isinstance(v, str) else str(v) for v in values]


def iter_table_rows(info: TableInfo, units=None, chunk_rows: int = 4096, *,
                    id_prefix: str | None = None) -> Iterator[tuple[int, np.ndarray, list[str]]]:
    """Yield ``(file_row, X, ids)`` chunks of the given units (all when None): X float64 (m, dim),
    ``ids`` from the id column, else ``f"{id_prefix}:{row}"`` or ``str(row)`` (row in the file)."""
    for row, emb, ids in _unit_arrays(info, units, chunk_rows):
        X = _to_matrix(info, emb, row)
        chunk_ids = _ids_of(info, ids, row) if ids is not None else index_ids(row, row + len(X), id_prefix)
        yield row, X, chunk_ids


def table_unit_ids(info: TableInfo, units, *, id_prefix: str | None = None,
                   chunk_rows: int = 1 << 16) -> list[str]:
    """Row ids of the given units (ascending), read from the id column alone (see :func:`iter_table_rows`)."""
    units = [units] if isinstance(units, (int, np.integer)) else list(units)
    if info.id_column is None:
        return [i for u in units for i in index_ids(info.unit_start(u), info.unit_start(u) + info.units[u], id_prefix)]
    out: list[str] = []
    for row, arrays in _read_units(info.path, info.fmt, units, [info.id_column], chunk_rows, info._starts):
        out += _ids_of(info, arrays[0], row)
    return out


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


class TableFormat(Format):
    """Parquet / Arrow IPC files (and folders of them, ``save_to_disk`` folders): a shard per file,
    pieces are runs of whole units (row groups / record batches) of about ``piece_rows`` rows, and
    every chunk brings its ids (the id column, else ``FILE:ROW`` in a folder, ``ROW`` alone)."""

    name = "table"

    def shards(self, path, *, column=None, id_column=None) -> list[Shard]:
        """One shard per table file behind ``path`` (:func:`table_files`); every file of a folder
        must have the first one's dimension and value dtype. Rows of a folder without an id column
        are named ``FILE:ROW`` (the file's name, the row in that file)."""
        folder = Path(path).is_dir()
        out = []
        for f in table_files(path):
            info = inspect_table(f, column, id_column)
            if out and (info.dim, info.dtype) != (out[0].dim, out[0].locator[0].dtype):
                first = out[0].locator[0]
                raise InputError(f"{f}: embeddings of {info.dim} {info.dtype} values, but {first.path} has "
                                 f"{first.dim} {first.dtype}")
            prefix = f.name if folder else None
            out.append(Shard(str(f), info.n_rows, info.dim, np.dtype(info.dtype).newbyteorder("<").str, 0, "table",
                             ("column", info.id_column) if info.id_column else None, {}, (info, prefix), self.name))
        return out

    def cut(self, shard: Shard, piece_rows: int) -> list[tuple[int, int, tuple]]:
        return [(lo, hi, (u0, u1)) for lo, hi, u0, u1 in table_runs(shard.locator[0].units, int(piece_rows))]

    def read(self, piece: Piece, chunk_rows: int) -> Iterator[tuple[int, np.ndarray, list | None]]:
        info, prefix = piece.shard.locator
        yield from iter_table_rows(info, range(*piece.units), chunk_rows, id_prefix=prefix)

    def ids(self, piece: Piece) -> list[str]:
        info, prefix = piece.shard.locator
        return table_unit_ids(info, range(*piece.units), id_prefix=prefix)


FORMAT = TableFormat()
