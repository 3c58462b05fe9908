"""Discovering raw inputs (image files, captions) and skipping bad items with a report.

An input set is a list of *items* of one modality:

- ``"image"``: an item is a path string; it is the embedding's id.
- ``"text"``: an item is a caption (surrounding whitespace stripped); it is the embedding's id.

Sources, in the order given:

- an image directory, searched recursively for ``IMAGE_EXTENSIONS`` files (hidden files and
  folders skipped), in sorted (deterministic) order;
- image files listed explicitly;
- a captions file: one caption per line (UTF-8), or a CSV/TSV (``.csv``/``.tsv``, or any file
  when ``column`` is given) whose header names the caption column;
- a parquet/Arrow table (file, folder of them, ``datasets.save_to_disk`` folder) whose caption
  column is a string column, read like the same table as CSV (:func:`whitenclip.tables.read_caption_table`;
  :func:`whitenclip.sources.collect_inputs` gathers all of these);
- ``"-"``: standard input, read as captions (or, with ``modality="image"``, as one image path
  per line, e.g. ``find photos -name '*.jpg' | whitenclip embed - --modality image``).

Bad items are skipped with an :class:`InputSkipWarning` that names them (``file:line`` for
captions, the path for images) and counted in a :class:`SkipReport`; with ``strict=True`` the
first bad item raises :class:`~whitenclip.errors.InputError` instead. Images are only decoded
when they are embedded (:func:`whitenclip.encoders.embed_items`), so corrupt or truncated images
are found and counted there, in the same report. An input set with no usable item left raises
:class:`~whitenclip.errors.InputError`.
"""

from __future__ import annotations

import csv
import os
import re
import stat
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from whitenclip.errors import InputError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
"""File name endings (lower-cased) treated as images."""

CAPTION_COLUMNS = ("caption", "text", "sentence")
"""CSV header names used for the caption column when ``column`` is not given."""

IMAGE_COLUMNS = ("image", "image_id", "image_path", "filename", "file_name", "img")
"""CSV header names (case-insensitive) whose column groups the captions by image when groups are
asked for without naming a column (``--group-column``): captions of one image are not independent
(see :func:`whitenclip.whitening.calibration_distances`)."""

MODALITIES = ("image", "text")

STDIN = "-"


class InputSkipWarning(UserWarning):
    """An input item (image or caption line) was unusable and was skipped."""


class InputFormatWarning(UserWarning):
    """How an input was read was decided from its content (e.g. a CSV header in a .txt file)."""


@dataclass
class SkipReport:
    """Skipped items: a count per reason and the one-line message of each skip.

    Attributes
    ----------
    counts : Counter
        ``{reason: count}``, reasons such as ``"corrupt image"``, ``"truncated image"``,
        ``"non-UTF-8 line"``, ``"empty caption"``, ``"missing file"``.
    messages : list of str
        ``"<where>: skipped (<reason>[: detail])"`` for every skipped item, in order.
    strict : bool
        When True, :meth:`add` raises :class:`InputError` instead of recording.
    """

    counts: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)
    strict: bool = False

    @property
    def n_skipped(self) -> int:
        """Total number of skipped items."""
        return sum(self.counts.values())

    def add(self, where: str, reason: str, detail: str | None = None) -> None:
        """Record that the item at ``where`` was skipped for ``reason`` (warns; raises if strict)."""
        what = f"{reason}: {detail}" if detail else reason
        if self.strict:
            raise InputError(f"{where}: {what} (strict mode: fix or remove it)")
        msg = f"{where}: skipped ({what})"
        self.counts[reason] += 1
        self.messages.append(msg)
        warnings.warn(msg, InputSkipWarning, stacklevel=2)

    def summary(self) -> str:
        """One line, e.g. ``"3 skipped: 2 corrupt image, 1 empty caption"`` (``""`` when none)."""
        if not self.counts:
            return ""
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items()))
        return f"{self.n_skipped} skipped: {parts}"

    def as_dict(self) -> dict:
        """``{"n_skipped": int, "by_reason": {reason: count}}`` for JSON output."""
        return {"n_skipped": self.n_skipped, "by_reason": dict(sorted(self.counts.items()))}


@dataclass
class Inputs:
    """A list of items of one modality, with the report of what was skipped finding them.

    Attributes
    ----------
    items : list of str
        Image paths (``modality="image"``) or captions (``modality="text"``), in input order.
        Each item is also the id of its embedding.
    modality : {"image", "text"}
    skips : SkipReport
        Items skipped so far; image decoding failures are added while embedding.
    """

    items: list[str]
    modality: str
    skips: SkipReport = field(default_factory=SkipReport)
    groups: list | None = None
    """Group id of each item (aligned with ``items``; None entries: the item is its own group), or
    None when no input named groups (see :func:`whitenclip.sources.collect_inputs`)."""
    ids: list | None = None
    """Row id of each item (aligned with ``items``) read from an id column (``--id-column``), or None:
    each item is its own id. Ids may repeat (5 captions of one image); rows stay distinct."""

    def __len__(self) -> int:
        return len(self.items)

    @property
    def strict(self) -> bool:
        return self.skips.strict


# --------------------------------------------------------------------------- modality


def is_image_path(path: str | os.PathLike) -> bool:
    """True when ``path`` ends with one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def detect_modality(paths: Sequence[str | os.PathLike]) -> str:
    """Modality of the inputs: ``"image"`` or ``"text"``.

    A directory or a file with an image extension is ``"image"``; ``"-"`` (stdin) and any
    other file (``.txt``, ``.csv``, ...) are ``"text"``. Mixed inputs raise
    :class:`InputError` (pass ``modality=`` to override detection).
    """
    if not paths:
        raise InputError("no input given")
    kinds = {}
    for p in paths:
        s = str(p)
        if s == STDIN or _is_table(s):
            kinds.setdefault("text", s)
        elif os.path.isdir(s) or is_image_path(s):
            kinds.setdefault("image", s)
        else:
            kinds.setdefault("text", s)
    if len(kinds) > 1:
        raise InputError(
            f"inputs mix images ({kinds['image']}) and captions ({kinds['text']}); "
            "embed them separately or pass --modality"
        )
    return next(iter(kinds))


TABLE_SUFFIXES = (".parquet", ".arrow", ".feather", ".ipc")
"""File name endings read as tables."""


def is_table_path(path) -> bool:
    """True when ``path`` is a table file (by its suffix) or a folder of tables (accepted paths:
    :mod:`whitenclip.tables`); read by :mod:`whitenclip.tables`, a layer above this one."""
    p = Path(path)
    if p.is_dir():
        if (p / "meta.json").is_file():
            return False  # a whitenclip store
        if (p / "state.json").is_file() or (p / "dataset_dict.json").is_file():
            return True
        try:  # table files, and no images or sub-folders (img2dataset output is images beside parquet)
            children = [c for c in p.iterdir() if not c.name.startswith((".", "_"))]
            return (any(c.suffix.lower() in TABLE_SUFFIXES and c.is_file() for c in children)
                    and not any(c.is_dir() or is_image_path(c) for c in children))
        except OSError:
            return False
    return p.suffix.lower() in TABLE_SUFFIXES


def _is_table(path: str) -> bool:
    return path != STDIN and is_table_path(path)


# --------------------------------------------------------------------------- images


def discover_images(directory: str | os.PathLike, report: SkipReport | None = None) -> list[str]:
    """Image files under ``directory`` (recursive), sorted by path; hidden entries skipped.

    Returns the paths as strings joined onto ``directory`` as given (relative stays relative).
    An entry named like an image that is not a regular file (a FIFO or device named ``x.jpg``,
    a symlink loop or a dangling link) is left out, and recorded in ``report`` when one is given
    (:func:`non_regular_reason`). Symlinked folders are not followed (as :func:`os.walk`).
    """
    found: list[str] = []
    _walk_images(str(directory), found, report, top=True)
    return found


def _walk_images(dirpath: str, found: list[str], report: SkipReport | None, top: bool = False) -> None:
    # os.walk's order (this folder's files, then each subfolder), keeping each entry's file type
    # from scandir: a FIFO is told apart without opening it, and regular files cost no stat call
    try:
        with os.scandir(dirpath) as it:
            entries = list(it)
    except OSError as exc:
        if top:
            raise InputError(f"{dirpath}: cannot read the folder ({_os_error_text(exc)})") from None
        return  # as os.walk: an unreadable subfolder is passed over
    dirs, files = [], []
    for entry in entries:
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        (dirs if is_dir else files).append(entry)
    for entry in sorted(files, key=lambda e: e.name):
        if entry.name.startswith(".") or not is_image_path(entry.name):
            continue
        path = os.path.join(dirpath, entry.name)
        try:
            regular = entry.is_file()
        except OSError:
            regular = False
        if regular:
            found.append(path)
            continue
        why = non_regular_reason(path)
        if why is None:  # became a regular file since the scan
            found.append(path)
        elif report is not None:
            report.add(path, *why)
    for entry in sorted(dirs, key=lambda e: e.name):
        if entry.name.startswith(".") or entry.is_symlink():
            continue
        _walk_images(os.path.join(dirpath, entry.name), found, report)


def non_regular_reason(path: str | os.PathLike) -> tuple[str, str] | None:
    """``(reason, detail)`` when ``path`` is not a regular file once symlinks are followed, else None.

    A FIFO, device or socket is ``("corrupt image", "not a regular file (a FIFO)")`` (the words the
    encoder's workers use for one found while reading); a path that cannot be looked up is
    ``("missing file", ...)`` or ``("unreadable file", <the OS error's text>)``, e.g. ``"too many
    levels of symbolic links"`` for a symlink loop.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        dangling = " (dangling symbolic link)" if os.path.islink(path) else ""
        return "missing file", f"no such file or directory{dangling}"
    except OSError as exc:
        return "unreadable file", _os_error_text(exc)
    if stat.S_ISREG(mode):
        return None
    kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket"
            if stat.S_ISSOCK(mode) else "not a file")
    return "corrupt image", f"not a regular file ({kind})"


def _os_error_text(exc: OSError) -> str:
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def load_image(path: str | os.PathLike, *, reduce_to: int | None = None):
    """Open and fully decode an image: EXIF orientation applied, converted to RGB.

    ``reduce_to``: let a JPEG decode at 1/2, 1/4 or 1/8 scale (PIL ``Image.draft``) as long as
    both sides stay >= ``reduce_to`` pixels. Much faster for large photos, but the pixels differ
    slightly from a full decode followed by resizing.

    Returns
    -------
    PIL.Image.Image in mode ``"RGB"`` (first frame of an animation).

    Raises
    ------
    PIL.UnidentifiedImageError, OSError
        Not an image, corrupt, or truncated (``"image file is truncated"``); callers turn
        these into skips with :func:`image_error_reason`.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        limit = Image.MAX_IMAGE_PIXELS
        if limit and im.width * im.height > limit:  # PIL's own warning (the CLI hides it) names no file
            warnings.warn(f"{path}: {im.width}x{im.height} pixels, more than PIL's decompression-bomb limit of "
                          f"{limit} (decoding it needs about {im.width * im.height * 3 >> 20} MiB)",
                          InputFormatWarning, stacklevel=2)
        if reduce_to and im.format == "JPEG":
            im.draft(None, (int(reduce_to), int(reduce_to)))
        im.load()  # decode now: a truncated file raises here, not later
        im = ImageOps.exif_transpose(im)
        if im.mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")
        return im.convert("RGB")


def image_error_reason(exc: BaseException) -> tuple[str, str]:
    """``(reason, detail)`` for an exception raised by :func:`load_image`."""
    from PIL import UnidentifiedImageError

    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, FileNotFoundError):  # the path is named by the skip line already
        return "missing file", _os_error_text(exc)
    if isinstance(exc, UnidentifiedImageError):
        return "corrupt image", "not a readable image"
    if "truncated" in text.lower():
        return "truncated image", text
    return "corrupt image", text


# --------------------------------------------------------------------------- captions


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
