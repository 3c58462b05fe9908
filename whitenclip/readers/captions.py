"""Captions from text: one caption per line, or a CSV/TSV whose header names the caption column.

Captions longer than :data:`whitenclip.config.MAX_CAPTION_CHARS` characters are cut to it, with one
note per file naming the first one's row (:func:`cut_caption`). Groups (captions of one image)
come from ``--group-column`` or, by default, an image column (:func:`default_groups`); ids from
``--id-column``. A parquet/Arrow table's string column is read the same way by
:mod:`whitenclip.readers.caption_tables`; :func:`whitenclip.readers.collect.read_caption_groups` reads either.
"""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

from whitenclip.errors import InputError
from whitenclip.readers.items import (
    CAPTION_COLUMNS,
    IMAGE_COLUMNS,
    InputFormatWarning,
    SkipReport,
    is_image_path,
)


def cut_caption(text: str, where: str, cuts: list) -> str:
    """``text`` cut to :data:`whitenclip.config.MAX_CAPTION_CHARS` characters (before tokenising: a
    tokenizer's memory grows with the caption, the model keeps at most a few hundred tokens);
    ``(where, length)`` of a cut caption is appended to ``cuts`` (see :func:`note_cut_captions`)."""
    from whitenclip.config import MAX_CAPTION_CHARS

    if len(text) <= MAX_CAPTION_CHARS:
        return text
    cuts.append((where, len(text)))
    return text[:MAX_CAPTION_CHARS]


def note_cut_captions(name: str, cuts: list, stacklevel: int = 3) -> None:
    """One :class:`InputFormatWarning` line for the captions of ``name`` that :func:`cut_caption` cut."""
    from whitenclip.config import MAX_CAPTION_CHARS

    if cuts:
        where, n = cuts[0]
        more = f" (and {len(cuts) - 1} more caption(s) of this file)" if len(cuts) > 1 else ""
        warnings.warn(f"{where}: caption of {n} characters cut to its first {MAX_CAPTION_CHARS} before "
                      f"tokenising{more}", InputFormatWarning, stacklevel=stacklevel)


def decoded_lines(data: bytes, name: str, report: SkipReport) -> Iterator[tuple[int, str]]:
    """``(line_number, text)`` for each UTF-8 line of ``data``; other lines are skipped."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # final newline
    for i, raw in enumerate(lines, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            report.add(f"{name}:{i}", "non-UTF-8 line", f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1}")
            continue
        yield i, text.rstrip("\r")


def pick_column(header: list[str], column: str | int | None, name: str) -> int:
    if column is None:
        lowered = [h.strip().lower() for h in header]
        for cand in CAPTION_COLUMNS:
            if cand in lowered:
                return lowered.index(cand)
        if len(header) == 1:
            return 0
        raise InputError(f"{name}: no caption column among {header}; pass --column NAME")
    if isinstance(column, int) or (isinstance(column, str) and column.isdigit()):
        idx = int(column)
        if idx >= len(header):
            raise InputError(f"{name}: column {idx} out of range ({len(header)} columns)")
        return idx
    if column not in header:
        raise InputError(f"{name}: no column {column!r} in header {header}")
    return header.index(column)


def parse_captions(
    data: bytes,
    name: str,
    *,
    column: str | int | None = None,
    csv_format: bool | None = None,
    report: SkipReport | None = None,
) -> list[str]:
    """Captions from the bytes of a captions file (:func:`parse_caption_groups` without the groups)."""
    return parse_caption_groups(data, name, column=column, csv_format=csv_format, report=report)[0]


def parse_caption_groups(
    data: bytes,
    name: str,
    *,
    column: str | int | None = None,
    csv_format: bool | None = None,
    report: SkipReport | None = None,
    group_column: str | bool | None = None,
    id_column: str | int | None = None,
    ids: list | None = None,
) -> tuple[list[str], list | None]:
    """Captions from the bytes of a captions file, and the group id of each.

    Parameters
    ----------
    data : bytes
        File content (UTF-8; a BOM is ignored).
    name : str
        File name used in messages (``name:line``).
    column : str or int, optional
        CSV column holding the captions: a header name or a 0-based index. Default: the first
        of :data:`CAPTION_COLUMNS` in the header, or the only column.
    csv_format : bool, optional
        Parse as CSV (with a header row). Default: True when ``name`` ends in ``.csv``/``.tsv``
        or ``column`` is given, else one caption per line.
    report : SkipReport, optional
        Receives non-UTF-8 lines and empty captions (a fresh one is used when omitted).
    group_column : str, True or None
        A CSV column naming each caption's group (e.g. its image): a header name or 0-based index;
        True: the first of :data:`IMAGE_COLUMNS` in the header, if any (with an
        :class:`InputFormatWarning` saying so), unless it holds one distinct value or only empty
        cells (:func:`default_groups`: no groups then, with a note); None/False: no groups. An
        empty cell makes the caption its own group (None).
    id_column : str or int, optional
        A CSV column giving each caption's row id (``--id-column``): a header name or 0-based
        index. The id of each kept caption is appended to ``ids`` (a list the caller passes),
        as written (stripped), duplicates kept; an empty id is refused naming its line.

    Returns
    -------
    (captions, groups) : the captions, stripped of surrounding whitespace, in file order, and
    their group ids (a list aligned with them), or None when no groups were read.
    """
    report = report if report is not None else SkipReport()
    suffix = Path(name).suffix.lower()
    delimiter = "\t" if suffix == ".tsv" else ","
    if csv_format is None:
        csv_format = suffix in (".csv", ".tsv") or column is not None
        if not csv_format:
            sniffed = sniff_header(data, name)
            if sniffed is not None:
                csv_format, delimiter = True, sniffed
    captions: list[str] = []
    cuts: list = []
    lines = decoded_lines(data, name, report)
    if not csv_format:
        if isinstance(group_column, (str, int)) and not isinstance(group_column, bool):
            raise InputError(f"{name}: --group-column {group_column} needs a CSV/TSV captions file with a header")
        if id_column is not None:
            raise InputError(f"{name}: --id-column {id_column} needs a CSV/TSV captions file with a header "
                             "(or a parquet/Arrow table)")
        for lineno, text in lines:
            text = text.strip()
            if not text:
                report.add(f"{name}:{lineno}", "empty caption")
                continue
            captions.append(cut_caption(text, f"{name}:{lineno}", cuts))
        note_cut_captions(name, cuts)
        return captions, None

    current = [0]

    def tracked() -> Iterator[str]:
        for lineno, text in lines:
            current[0] = lineno
            yield text

    reader = csv.reader(tracked(), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return captions, None
    except csv.Error as exc:
        raise InputError(f"{name}:{current[0]}: bad CSV header ({exc})") from None
    idx = pick_column(header, column, name)
    gidx = pick_group_column(header, group_column, name)
    iidx = None if id_column is None else pick_id_column(header, id_column, name)
    groups: list | None = [] if gidx is not None else None
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            report.add(f"{name}:{current[0]}", "bad CSV row", str(exc))
            continue
        if not row:
            continue  # blank line between records
        text = row[idx].strip() if idx < len(row) else ""
        if not text:
            report.add(f"{name}:{current[0]}", "empty caption")
            continue
        if iidx is not None:
            row_id = row[iidx].strip() if iidx < len(row) else ""
            if not row_id:
                raise InputError(f"{name}:{current[0]}: empty id (--id-column {id_column})")
            ids.append(row_id)
        captions.append(cut_caption(text, f"{name}:{current[0]}", cuts))
        if groups is not None:
            groups.append((row[gidx].strip() if gidx < len(row) else "") or None)
    note_cut_captions(name, cuts)
    if group_column is True and groups is not None:  # the default image column: said, or refused when it cannot group
        groups = default_groups(groups, name, header[gidx].strip(), stacklevel=3)
    return captions, groups


def default_groups(groups: list, name: str, column: str, *, stacklevel: int = 2) -> list | None:
    """The group ids read from a captions file's *default* image column (``group_column=True``), said
    in one :class:`InputFormatWarning`, or None when that column cannot group: when it holds one
    distinct value, or only empty cells, grouping by it would make one giant group (or none), and
    leave-one-group-out calibration degenerate; the captions are then independent rows, with a
    one-line note saying so (``--group-column NAME`` groups by it all the same).

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     default_groups(["a.jpg", "a.jpg"], "c.csv", "image"), str(w[0].message)[:57]
    (None, "c.csv: its 'image' column holds one value ('a.jpg') for 2")
    """
    values = {g for g in groups if g is not None}
    if len(values) <= 1:
        what = f"one value ({next(iter(values))!r})" if values else "only empty cells"
        warnings.warn(f"{name}: its {column!r} column holds {what} for {len(groups)} captions: not used to group "
                      "them (every caption its own group; --group-column NAME groups by it all the same)",
                      InputFormatWarning, stacklevel=stacklevel + 1)
        return None
    warnings.warn(f"{name}: grouping captions by its {column!r} column (captions of one image are calibrated "
                  "together; --no-groups treats every row as independent)", InputFormatWarning,
                  stacklevel=stacklevel + 1)
    return groups


def pick_group_column(header: list[str], group_column: str | int | bool | None, name: str) -> int | None:
    """Index of the group column in a CSV ``header`` (see :func:`parse_caption_groups`), or None."""
    if group_column is None or group_column is False:
        return None
    if group_column is True:
        lowered = [h.strip().lower() for h in header]
        found = next((c for c in IMAGE_COLUMNS if c in lowered), None)
        if found is None:
            return None
        return lowered.index(found)  # said (or refused) once its values are read: default_groups
    return header_index(header, group_column, name, "--group-column")


def pick_id_column(header: list[str], id_column: str | int, name: str) -> int:
    """Index of the ``--id-column`` in a CSV ``header``: a header name or 0-based index."""
    return header_index(header, id_column, name, "--id-column")


def header_index(header: list[str], column: str | int, name: str, option: str) -> int:
    """Index of ``column`` (a header name, or a 0-based index) in the CSV ``header`` of file ``name``;
    a refusal names the file and ``option``."""
    if isinstance(column, int) or str(column).isdigit():
        if int(column) >= len(header):
            raise InputError(f"{name}: {option} {column} out of range ({len(header)} columns)")
        return int(column)
    if column not in header:
        raise InputError(f"{name}: no column {column!r} in header {header} ({option})")
    return header.index(column)


_HEADER_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_ .-]{0,31}$")


def sniff_header(data: bytes, name: str) -> str | None:
    """The delimiter when a plain captions file starts with a CSV/TSV header, else None.

    A first line such as ``image,caption`` (Flickr8k's ``captions.txt``) whose fields include one
    of :data:`CAPTION_COLUMNS` is a header: the file is read as CSV, with a warning saying so. A
    first line of two or more identifier-like fields followed by rows that start with an image
    file name is a header too, but without a caption column: :class:`InputError` asks for
    ``--column``. Anything else is one caption per line.
    """
    lines = data[:65536].decode("utf-8", "replace").lstrip("\ufeff").splitlines()
    if not lines:
        return None
    first = lines[0].strip()
    delimiter = "\t" if "\t" in first else ","
    fields = [f.strip() for f in next(csv.reader([first], delimiter=delimiter))] if first else []
    if len(fields) < 2 or not all(_HEADER_FIELD.match(f) for f in fields):
        return None
    known = [f for f in fields if f.lower() in CAPTION_COLUMNS]
    kind = "TSV" if delimiter == "\t" else "CSV"
    if known:
        warnings.warn(f"{name}: first line {first!r} is a {kind} header; reading captions from its "
                      f"{known[0]!r} column (pass --column to choose another)", InputFormatWarning, stacklevel=3)
        return delimiter
    second = next((ln for ln in lines[1:] if ln.strip()), "")
    lead = second.split(delimiter, 1)[0].strip()
    if is_image_path(lead):
        raise InputError(f"{name}: first line {first!r} looks like a {kind} header with no caption column "
                         f"({', '.join(CAPTION_COLUMNS)}); pass --column NAME")
    return None
