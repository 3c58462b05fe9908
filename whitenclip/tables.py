"""Embeddings and captions in tables: parquet files, Arrow IPC files and streams, ``datasets.save_to_disk`` folders.

The type of the column read decides what a table holds (:func:`choose_column`): a string column
holds captions, read as a captions CSV would be (:func:`read_caption_table`: the same items, the
same skips, ``--group-column`` and the image-column default), a list<float> column embeddings.
Without ``--column``, a table's only list<float> column is read (as before), else its caption
column (``caption``, ``text``, ``sentence``).

An embedding column is a ``list<float>``, ``large_list<float>`` or ``fixed_size_list<float>``
column (float16/32/64 values): ``--column NAME`` names it; by default it is the only such column
of the table (several: refused, listing them). Row ids come from ``--id-column NAME`` (any type,
written as text), by default the column ``id`` when the table has one, else the row index.

A table is read in *units*, never whole: a parquet row group, or a record batch of an Arrow IPC
file or stream, in chunks of at most ``chunk_rows`` rows (constant memory); a chunk gathers the
rows of consecutive small units, and a file's footer is read once per read, so 20,000 one-row row
groups cost what 20,000 rows do. The sharded planner (:mod:`whitenclip.shards`) coalesces
consecutive units into pieces of about ``--piece-rows`` rows, so ``--engine dask`` reads a folder
of parquet files run of row groups by run of row groups on its workers.

Captions longer than :data:`whitenclip.config.MAX_CAPTION_CHARS` characters are cut to it, with one
note per file naming the first one's row (:func:`whitenclip.inputs.cut_caption`).

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
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from whitenclip.errors import InputError
from whitenclip.inputs import TABLE_SUFFIXES, is_table_path  # noqa: F401 (defined in inputs, the lower layer)

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


# ---------------------------------------------------------------------------------------
# one table file: schema, column choice, units
# ---------------------------------------------------------------------------------------
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
    :data:`whitenclip.inputs.CAPTION_COLUMNS` (case-insensitive) among the string columns, else
    the table's only column when it is a string one, as for a CSV. Several candidates: refused,
    naming them.
    """
    from whitenclip.inputs import CAPTION_COLUMNS

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


# ---------------------------------------------------------------------------------------
# reading rows
# ---------------------------------------------------------------------------------------
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


def index_ids(lo: int, hi: int, id_prefix: str | None = None) -> list[str]:
    """Ids of rows ``lo..hi-1`` that have none of their own: ``f"{id_prefix}:{row}"``, or ``str(row)``.

    >>> index_ids(2, 4), index_ids(0, 2, "a.npy")
    (['2', '3'], ['a.npy:0', 'a.npy:1'])
    """
    if id_prefix is None:
        return [str(i) for i in range(lo, hi)]
    return [f"{id_prefix}:{i}" for i in range(lo, hi)]


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


class TableRows:
    """A block of :class:`whitenclip.stores.EmbeddingFile`: all rows of one table file, read unit
    by unit in chunks; :meth:`chunks` yields ``(first_row, X, ids)`` (the table's own ids)."""

    def __init__(self, info: TableInfo, id_prefix: str | None = None):
        self.info, self.id_prefix = info, id_prefix
        self.shape = (info.n_rows, info.dim)

    def chunks(self, chunk_rows: int):
        return iter_table_rows(self.info, None, chunk_rows, id_prefix=self.id_prefix)


# ---------------------------------------------------------------------------------------
# captions
# ---------------------------------------------------------------------------------------
def _group_spec(pa, field):
    """How a column gives group ids: its name (string or integer values), ``(name, "path")`` for an
    image struct with a string ``path`` (a ``datasets`` Image column), or None (unusable)."""
    t = field.type
    if _is_text(pa, t) or pa.types.is_integer(t):
        return field.name
    if pa.types.is_struct(t) and t.get_field_index("path") >= 0 and _is_text(pa, t.field("path").type):
        return (field.name, "path")
    return None


def _group_column(pa, path, schema, group_column, stacklevel: int = 5):
    """The group column of a caption table (:func:`_group_spec`), by the rules of
    :func:`whitenclip.inputs.pick_group_column`: a name or 0-based index; True: the first of
    :data:`~whitenclip.inputs.IMAGE_COLUMNS` (case-insensitive), said by the caller once its values
    are read (:func:`whitenclip.inputs.default_groups`), or refused here in an InputFormatWarning."""
    from whitenclip.inputs import IMAGE_COLUMNS, InputFormatWarning

    if group_column is None or group_column is False:
        return None
    names = list(schema.names)
    if group_column is True:
        lowered = [n.strip().lower() for n in names]
        found = next((names[lowered.index(c)] for c in IMAGE_COLUMNS if c in lowered), None)
        if found is None:
            return None
        spec = _group_spec(pa, schema.field(found))
        if spec is None:
            warnings.warn(f"{path}: its {found!r} column holds {_shown(pa, schema.field(found).type)}, not image "
                          "ids: captions are not grouped (pass --group-column NAME)", InputFormatWarning,
                          stacklevel=stacklevel)
        return spec  # a usable column is said (or refused) once its values are read: inputs.default_groups
    name = _column_name(path, names, group_column, "--group-column")
    spec = _group_spec(pa, schema.field(name))
    if spec is None:
        raise InputError(f"{path}: --group-column {name!r} holds {_shown(pa, schema.field(name).type)}; group ids "
                         "come from a string or integer column (or an image struct with a path)")
    return spec


def _text_values(pa, arr) -> list:
    """Cells of a string chunk as ``bytes`` (None for null): invalid UTF-8 is then one row's skip."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr.cast(pa.large_binary() if pa.types.is_large_string(arr.type) else pa.binary()).to_pylist()


def _group_values(pa, arr) -> list:
    """Group ids of a chunk: stripped text (an empty one: None) or integers as text; null: None."""
    if pa.types.is_integer(arr.type):
        return [None if v is None else str(v) for v in arr.to_pylist()]
    return [None if v is None else v.decode("utf-8", "replace").strip() or None for v in _text_values(pa, arr)]


def read_caption_table(path, *, column: str | None = None, group_column=None, report=None,
                       chunk_rows: int = 4096, id_column=None,
                       ids: list | None = None) -> tuple[list[str], list | None]:
    """Captions, and the group id of each, from a table file or folder whose caption column is a
    string column (:func:`choose_column`): what :func:`whitenclip.inputs.parse_caption_groups`
    returns for the same table written as CSV.

    Captions are stripped of surrounding whitespace; a null, empty or non-UTF-8 caption is skipped
    into ``report`` (a :class:`~whitenclip.inputs.SkipReport`) naming the file, the row group or
    record batch and the row. ``group_column``: a column name or index, True (the first of
    :data:`whitenclip.inputs.IMAGE_COLUMNS`, if any), None/False (no groups). Only the caption
    and group columns are read, chunk by chunk. ``id_column`` (``--id-column``, a name or index of
    a string or integer column): the id of each kept caption is appended to the list ``ids``
    (values as they are, duplicates kept); a null or empty id is refused naming its row.
    """
    from whitenclip.inputs import SkipReport, cut_caption, note_cut_captions

    pa = import_pyarrow(path)
    report = report if report is not None else SkipReport()
    captions: list[str] = []
    groups: list = []
    grouped, default_column = False, ""
    for f in table_files(path):
        fmt, schema, units = table_layout(f)
        kind, col = choose_column(pa, f, schema, column)
        if kind != "captions":
            raise InputError(f"{f}: column {col!r} holds embeddings, not captions like {path}'s first file; "
                             "pass --column NAME")
        gspec = _group_column(pa, f, schema, group_column)
        if gspec is not None and not grouped:
            default_column = gspec if isinstance(gspec, str) else gspec[0]
        grouped = grouped or gspec is not None
        ispec = None if id_column is None else _id_spec(pa, f, schema, id_column)
        info = TableInfo(str(f), fmt, col, None, 0, "string", units)
        cuts: list = []  # captions longer than config.MAX_CAPTION_CHARS: cut, one note per file
        wanted = [col] + ([gspec] if gspec else []) + ([ispec] if ispec else [])
        for row, arrays in _read_units(f, fmt, range(len(units)), wanted, chunk_rows, info._starts):
            gids = _group_values(pa, arrays[1]) if gspec else None
            row_ids = _group_values(pa, arrays[-1]) if ispec else None
            for i, raw in enumerate(_text_values(pa, arrays[0])):
                text, why = _caption(raw)
                if why is not None:
                    report.add(info.where(row + i), *why)
                    continue
                if row_ids is not None:
                    if row_ids[i] is None:
                        raise InputError(f"{info.where(row + i)}: id is null or empty (--id-column {id_column})")
                    ids.append(row_ids[i])
                captions.append(cut_caption(text, info.where(row + i), cuts))
                groups.append(gids[i] if gids is not None else None)
        note_cut_captions(str(f), cuts)
    if grouped and group_column is True:  # the default image column: said, or not used when it cannot group
        from whitenclip.inputs import default_groups

        return captions, default_groups(groups, str(path), default_column.strip())
    return captions, groups if grouped else None


def _id_spec(pa, path, schema, id_column):
    """The ``--id-column`` of a caption table: a string or integer column (or an image struct's path)."""
    name = _column_name(path, list(schema.names), id_column, "--id-column")
    spec = _group_spec(pa, schema.field(name))
    if spec is None:
        raise InputError(f"{path}: --id-column {name!r} holds {_shown(pa, schema.field(name).type)}; ids come "
                         "from a string or integer column")
    return spec


def _caption(raw: bytes | None) -> tuple:
    """``(caption, None)``, or ``(None, (reason, detail))`` for a cell that is skipped."""
    if raw is None:
        return None, ("empty caption", "null")
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        return None, ("non-UTF-8 caption", f"byte 0x{raw[exc.start]:02x} at position {exc.start + 1}")
    return (text, None) if text else (None, ("empty caption", None))


# ---------------------------------------------------------------------------------------
# writing scores
# ---------------------------------------------------------------------------------------
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
