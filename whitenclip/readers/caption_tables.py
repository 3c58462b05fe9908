"""Captions in tables: the string column of a parquet/Arrow table or ``save_to_disk`` folder,
read as the CSV of the same table would be (:func:`read_caption_table`: the same items, the same
skips, ``--group-column`` and the image-column default, ``--id-column``)."""

from __future__ import annotations

import warnings

from whitenclip.errors import InputError
from whitenclip.readers.table import (
    TableInfo,
    _column_name,
    _is_text,
    _read_units,
    _shown,
    choose_column,
    import_pyarrow,
    table_files,
    table_layout,
)


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
    :func:`whitenclip.readers.captions.pick_group_column`: a name or 0-based index; True: the first of
    :data:`~whitenclip.readers.items.IMAGE_COLUMNS` (case-insensitive), said by the caller once its values
    are read (:func:`whitenclip.readers.captions.default_groups`), or refused here in an InputFormatWarning."""
    from whitenclip.readers.items import IMAGE_COLUMNS, InputFormatWarning

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
    string column (:func:`choose_column`): what :func:`whitenclip.readers.captions.parse_caption_groups`
    returns for the same table written as CSV.

    Captions are stripped of surrounding whitespace; a null, empty or non-UTF-8 caption is skipped
    into ``report`` (a :class:`~whitenclip.readers.items.SkipReport`) naming the file, the row group or
    record batch and the row. ``group_column``: a column name or index, True (the first of
    :data:`whitenclip.readers.items.IMAGE_COLUMNS`, if any), None/False (no groups). Only the caption
    and group columns are read, chunk by chunk. ``id_column`` (``--id-column``, a name or index of
    a string or integer column): the id of each kept caption is appended to the list ``ids``
    (values as they are, duplicates kept); a null or empty id is refused naming its row.
    """
    from whitenclip.readers.captions import cut_caption, note_cut_captions
    from whitenclip.readers.items import SkipReport

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
        from whitenclip.readers.captions import default_groups

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
