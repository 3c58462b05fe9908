"""Raw inputs as items: the vocabulary every reader of images and captions shares.

An input set is a list of *items* of one modality:

- ``"image"``: an item is a path string; it is the embedding's id.
- ``"text"``: an item is a caption (surrounding whitespace stripped); it is the embedding's id.

Bad items are skipped with an :class:`InputSkipWarning` that names them (``file:line`` for
captions, the path for images) and counted in a :class:`SkipReport`; with ``strict=True`` the
first bad item raises :class:`~whitenclip.errors.InputError` instead. How each kind of input is
read: :mod:`whitenclip.readers.images`, :mod:`whitenclip.readers.captions`,
:mod:`whitenclip.readers.caption_tables`; all of them gathered by :func:`whitenclip.readers.collect.collect_inputs`.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Sequence
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
    None when no input named groups (see :func:`whitenclip.readers.collect.collect_inputs`)."""
    ids: list | None = None
    """Row id of each item (aligned with ``items``) read from an id column (``--id-column``), or None:
    each item is its own id. Ids may repeat (5 captions of one image); rows stay distinct."""

    def __len__(self) -> int:
        return len(self.items)

    @property
    def strict(self) -> bool:
        return self.skips.strict


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
    :mod:`whitenclip.readers.table`); read by :mod:`whitenclip.readers.table`, a layer above this one."""
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
