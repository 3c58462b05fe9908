"""Gathering the items of a command's raw inputs: image folders and files, captions files and
tables, ``-`` (standard input), in the order given (:func:`collect_inputs`).

- an image directory, searched recursively (:func:`whitenclip.readers.images.discover_images`);
- image files listed explicitly;
- a captions file: one caption per line (UTF-8), or a CSV/TSV (``.csv``/``.tsv``, or any file
  when ``column`` is given) whose header names the caption column;
- a parquet/Arrow table (file, folder of them, ``datasets.save_to_disk`` folder) whose caption
  column is a string column (:func:`whitenclip.readers.caption_tables.read_caption_table`);
- ``"-"``: standard input, read as captions (or, with ``modality="image"``, as one image path
  per line, e.g. ``find photos -name '*.jpg' | whitenclip embed - --modality image``).

An input set with no usable item left raises :class:`~whitenclip.errors.InputError`.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from whitenclip.errors import InputError
from whitenclip.readers.caption_tables import read_caption_table
from whitenclip.readers.captions import decoded_lines, parse_caption_groups
from whitenclip.readers.images import discover_images, non_regular_reason
from whitenclip.readers.items import (
    IMAGE_EXTENSIONS,
    MODALITIES,
    STDIN,
    Inputs,
    SkipReport,
    detect_modality,
    is_table_path,
)


def _is_caption_table(path: str) -> bool:
    return path != STDIN and is_table_path(path)


def read_captions(
    path: str | os.PathLike,
    *,
    column: str | int | None = None,
    report: SkipReport | None = None,
    stdin: io.BufferedIOBase | None = None,
) -> list[str]:
    """Captions from a file (``"-"`` = standard input); see :func:`whitenclip.readers.captions.parse_captions`."""
    return read_caption_groups(path, column=column, report=report, stdin=stdin)[0]


def read_caption_groups(
    path: str | os.PathLike,
    *,
    column: str | int | None = None,
    report: SkipReport | None = None,
    stdin: io.BufferedIOBase | None = None,
    group_column: str | bool | None = None,
    id_column: str | int | None = None,
    ids: list | None = None,
) -> tuple[list[str], list | None]:
    """Captions and their group ids from a file (``"-"`` = standard input); see
    :func:`whitenclip.readers.captions.parse_caption_groups` (``id_column``: each kept caption's id is
    appended to ``ids``)."""
    name = str(path)
    kw = {"column": column, "report": report, "group_column": group_column}
    if id_column is not None:
        kw.update(id_column=id_column, ids=ids)
    if _is_caption_table(name):  # parquet/Arrow: its string column, read as the CSV of the same table would be
        return read_caption_table(name, **kw)
    if name == STDIN:
        stream = stdin if stdin is not None else sys.stdin.buffer
        return parse_caption_groups(stream.read(), "<stdin>", **kw)
    try:
        data = Path(name).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{name}: is a directory, not a captions file") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror or exc})") from None
    return parse_caption_groups(data, name, **kw)


def _image_items(paths: Iterable[str], report: SkipReport, stdin) -> list[str]:
    items: list[str] = []
    for p in paths:
        if p == STDIN:
            stream = stdin if stdin is not None else sys.stdin.buffer
            for lineno, line in decoded_lines(stream.read(), "<stdin>", report):
                line = line.strip()
                if line:
                    items.append(line)
        elif os.path.isdir(p):
            skipped = report.n_skipped
            found = discover_images(p, report)
            if not found and report.n_skipped == skipped:
                raise InputError(
                    f"{p}: no image files found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
                )
            items.extend(found)
        elif os.path.isfile(p):
            items.append(p)
        else:
            why = non_regular_reason(p)
            if why is None:  # became a regular file since the check
                items.append(p)
            elif why[0] == "missing file":
                raise InputError(f"{p}: {why[1]}")
            else:  # a symlink loop, a FIFO or device named x.jpg: a bad image, skipped like the others
                report.add(p, *why)
    return items


def collect_inputs(
    paths: Sequence[str | os.PathLike],
    *,
    modality: str | None = None,
    column: str | int | None = None,
    strict: bool = False,
    stdin: io.BufferedIOBase | None = None,
    group_column: str | bool | None = None,
    id_column: str | int | None = None,
) -> Inputs:
    """Gather the items named by ``paths`` (directories, image files, captions files, ``"-"``).

    Parameters
    ----------
    paths : sequence of path-like
        Inputs in order; see :mod:`whitenclip.readers.items` for what each may be.
    modality : {"image", "text"}, optional
        Override :func:`whitenclip.readers.items.detect_modality`.
    column : str or int, optional
        Caption column of CSV inputs and parquet/Arrow tables.
    strict : bool, default False
        Raise :class:`InputError` on the first bad item instead of skipping it.
    stdin : binary stream, optional
        Read instead of ``sys.stdin.buffer`` for ``"-"`` (tests).
    group_column : str, True or None
        Group the captions of CSV inputs and tables by this column (True: an image column of
        :data:`~whitenclip.readers.items.IMAGE_COLUMNS` when the header has one); see
        :func:`~whitenclip.readers.captions.parse_caption_groups`. Items of inputs without groups are their own
        groups; ``Inputs.groups`` is None when no input had any.
    id_column : str or int, optional
        Row ids of captions from CSV inputs and tables (``--id-column``): ``Inputs.ids`` holds the
        column's value for each caption, duplicates kept. Every caption input must have the column;
        images are refused (their path is their id).

    Returns
    -------
    Inputs

    Raises
    ------
    InputError
        Missing path, mixed modalities, a bad item in strict mode, or no usable item left.
    """
    names = [str(p) for p in paths]
    if modality is None:
        modality = detect_modality(names)
    elif modality not in MODALITIES:
        raise InputError(f"unknown modality {modality!r}; use one of {', '.join(MODALITIES)}")
    if names.count(STDIN) > 1:
        raise InputError("standard input ('-') given more than once")
    report = SkipReport(strict=strict)
    ids: list | None = None if id_column is None else []
    if modality == "image":
        if id_column is not None:
            raise InputError(f"{names[0]}: --id-column names the id column of a captions CSV or table; an image's "
                             "id is its path")
        items, groups = _image_items(names, report, stdin), []
    else:
        items, groups = [], []
        for p in names:
            if p != STDIN and os.path.isdir(p) and not _is_caption_table(p):
                raise InputError(f"{p}: is a directory; captions come from a text or CSV file")
            caps, grp = read_caption_groups(p, column=column, report=report, stdin=stdin, group_column=group_column,
                                            id_column=id_column, ids=ids)
            items.extend(caps)
            groups.extend(grp if grp is not None else [None] * len(caps))
    if not items:
        where = ", ".join(names)
        extra = f" ({report.summary()})" if report.n_skipped else ""
        raise InputError(f"{where}: nothing usable to embed{extra}")
    named = any(g is not None for g in groups)  # images have none
    return Inputs(items=items, modality=modality, skips=report, groups=groups if named else None, ids=ids)
