"""Text vectors: one vector per line, whitespace- or comma-separated numbers or a JSON array
(``-`` is standard input). Text has no header: a file is parsed whole when planned, and its rows
travel with the shard."""

from __future__ import annotations

import json
import re
from typing import Iterator

import numpy as np

from whitenclip.errors import InputError
from whitenclip.readers.base import Format, Piece, Shard

_SPLIT = re.compile(r"[\s,]+")


_NUMBER = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|nan|inf|infinity)", re.ASCII | re.IGNORECASE)
"""A number as written in a text vector: ASCII decimal, optional exponent (``nan``/``inf`` are
numbers too; they are reported later as non-finite rows). Python's ``float`` also takes ``1_000``
and non-ASCII digits: those are not numbers here."""


def parse_vector_line(line: str) -> np.ndarray | None:
    """Parse one text line into a float vector, or None when it is not numeric.

    Accepts whitespace- or comma-separated numbers (:data:`_NUMBER`), or a JSON array of numbers
    (not booleans, strings or nested lists).

    >>> parse_vector_line("1, 2.5e1 -3").tolist()
    [1.0, 25.0, -3.0]
    >>> parse_vector_line("1_000") is None, parse_vector_line("[true, 2]") is None
    (True, True)
    """
    s = line.strip()
    if s.startswith("["):
        try:
            vals = json.loads(s)
        except (ValueError, RecursionError):
            return None
        if not isinstance(vals, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            return None
        try:
            return np.array([float(v) for v in vals], dtype=np.float64)
        except OverflowError:  # an integer too large for a float
            return None
    tokens = [t for t in _SPLIT.split(s) if t]
    if not all(_NUMBER.fullmatch(t) for t in tokens):
        return None
    return np.array([float(t) for t in tokens], dtype=np.float64)


def looks_like_vectors(first_line: str) -> bool:
    """True when a text line is a numeric vector (so a text input holds vectors, not captions)."""
    v = parse_vector_line(first_line)
    return v is not None and v.size > 0


def parse_text_vectors(lines, name: str) -> np.ndarray:
    """The (n, d) float64 rows of an iterable of lines (blank lines ignored).

    Raises :class:`InputError` naming ``name:line`` for a non-numeric line or a line whose
    length differs from the first one.
    """
    rows, dim = [], None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        v = parse_vector_line(line)
        if v is None or v.size == 0:
            raise InputError(f"{name}:{lineno}: not a vector of numbers: {_preview(line)}")
        if dim is None:
            dim = v.size
        elif v.size != dim:
            raise InputError(f"{name}:{lineno}: vector has {v.size} values, expected {dim} like line 1")
        rows.append(v)
    if not rows:
        raise InputError(f"{name}: no vectors (input is empty)")
    return np.vstack(rows)


def _preview(line: str, width: int = 40) -> str:
    s = line.strip()
    return repr(s if len(s) <= width else s[:width] + "...")


class TextFormat(Format):
    """Text vectors (see the module doc): one whole piece; ``locator`` holds the parsed rows."""

    name = "text"

    def shards(self, path, *, lines=None, name=None) -> list[Shard]:
        """The one shard of a text file of vectors (or of ``lines`` read already, named ``name``)."""
        if lines is None:
            with open(path, "r", encoding="utf-8", errors="strict") as fh:
                try:
                    X = parse_text_vectors(fh, str(path))
                except UnicodeDecodeError:
                    raise InputError(f"{path}: not UTF-8 text and not a known embeddings format") from None
        else:
            X = parse_text_vectors(lines, name or str(path))
        return [Shard(name or str(path), X.shape[0], X.shape[1], X.dtype.str, 0, "whole", None, {}, X, self.name)]

    def read(self, piece: Piece, chunk_rows: int) -> Iterator[tuple[int, np.ndarray, list | None]]:
        X = piece.shard.locator
        for lo in range(piece.start, piece.stop, chunk_rows):
            yield lo, X[lo:min(lo + chunk_rows, piece.stop)].copy(), None


FORMAT = TextFormat()


def first_line(data: bytes) -> str:
    """The first non-empty line of ``data`` (bytes, decoded as UTF-8 with replacement), or ``""``."""
    for line in data.decode("utf-8", "replace").splitlines():
        if line.strip():
            return line
    return ""
