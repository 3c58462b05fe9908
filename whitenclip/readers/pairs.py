"""Image-caption pairs tables (``mi --pairs``): a CSV/TSV whose header names the image and caption
columns; each usable row is one pair, embedded by one two-tower encoder
(:func:`whitenclip.sources.embed_pairs`)."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from whitenclip.errors import InputError
from whitenclip.readers.base import is_binary_file
from whitenclip.readers.captions import cut_caption, decoded_lines, note_cut_captions, pick_column
from whitenclip.readers.items import SkipReport


@dataclass
class PairSkipReport(SkipReport):
    """A :class:`~whitenclip.readers.items.SkipReport` of a pairs table that also counts the table rows
    dropped: one image that cannot be embedded drops every row naming it.

    ``rows_of_image`` (image path -> rows naming it) is set before the images are embedded; an
    image skipped then counts those rows (``n_pairs_skipped``, :meth:`summary`). ``n_skipped`` and
    ``counts`` stay per item (a row, or an image), as in every other report.
    """

    rows_of_image: dict = field(default_factory=dict)
    skipped_images: dict = field(default_factory=dict)
    """image path -> reason, for the images skipped while embedding."""

    def add(self, where: str, reason: str, detail: str | None = None) -> None:
        super().add(where, reason, detail)
        if where in self.rows_of_image:
            self.skipped_images[where] = reason

    @property
    def n_pairs_skipped(self) -> int:
        """Table rows dropped: rows skipped themselves plus every row of a skipped image."""
        return (self.n_skipped - len(self.skipped_images)
                + sum(self.rows_of_image[img] for img in self.skipped_images))

    def summary(self) -> str:
        """One line, e.g. ``"101 pairs skipped: 1 empty caption, 1 missing file (100 rows)"``."""
        if not self.counts:
            return ""
        rows: Counter = Counter()
        for img, reason in self.skipped_images.items():
            rows[reason] += self.rows_of_image[img]
        parts = ", ".join(f"{n} {reason}" + (f" ({rows[reason]} row{'s' * (rows[reason] != 1)})"
                                             if reason in rows else "")
                          for reason, n in sorted(self.counts.items()))
        n = self.n_pairs_skipped
        return f"{n} pair{'s' * (n != 1)} skipped: {parts}"

    def as_dict(self) -> dict:
        return {**super().as_dict(), "n_pairs_skipped": self.n_pairs_skipped}


_PAIRS_HINT = "--pairs reads a CSV/TSV whose header names the image and caption columns"


def read_pairs_table(path, *, image_col: str, text_col: str, image_root=None, skips=None) -> list[tuple[str, str, str]]:
    """``(id, image_path, caption)`` for each usable row of a CSV (or ``.tsv``) pairs table.

    Image paths are taken as given when they exist, else relative to ``image_root`` (default:
    the table's folder). Rows with an empty image path, an empty caption or a non-UTF-8 line are
    skipped and counted; a binary file (NUL bytes or invalid UTF-8 at its start) is refused.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    skips = skips if skips is not None else SkipReport()
    if is_binary_file(p):
        raise InputError(f"{p}: not a CSV/TSV table (binary file); {_PAIRS_HINT}")
    lines = list(decoded_lines(p.read_bytes(), str(p), skips))
    if not lines:
        raise InputError(f"{p}: file is empty")
    rows = csv.reader([text for _, text in lines], delimiter="\t" if p.suffix.lower() == ".tsv" else ",")
    header = next(rows)
    if not any(h.strip() for h in header):
        raise InputError(f"{p}:{lines[0][0]}: not a CSV/TSV table (empty header line); {_PAIRS_HINT}")
    i_img, i_txt = pick_column(header, image_col, str(p)), pick_column(header, text_col, str(p))
    root = Path(image_root) if image_root is not None else p.parent
    out, cuts = [], []
    for (lineno, _), row in zip(lines[1:], rows):
        if len(row) <= max(i_img, i_txt):
            skips.add(f"{p}:{lineno}", "short row", f"{len(row)} fields")
            continue
        image, caption = row[i_img].strip(), row[i_txt].strip()
        if not image:  # would name the image folder itself
            skips.add(f"{p}:{lineno}", "empty image path")
            continue
        if not caption:
            skips.add(f"{p}:{lineno}", "empty caption")
            continue
        caption = cut_caption(caption, f"{p}:{lineno}", cuts)  # config.MAX_CAPTION_CHARS, before tokenising
        image_path = image if Path(image).is_file() else str(root / image)
        out.append((f"{image} | {caption}", image_path, caption))
    note_cut_captions(str(p), cuts)
    if not out:
        raise InputError(f"{p}: no usable image-caption rows ({skips.summary() or 'table has a header only'})")
    if not any(Path(img).is_file() for _, img, _ in out):
        raise InputError(f"{p}: none of the table's images could be embedded: no image file found under {root} "
                         f"(e.g. {out[0][1]}); pass --image-root FOLDER to say where the images live")
    return out
