"""Exceptions and warnings shared by the whole package.

The CLI maps :class:`InputError` to exit code 2 (usage / bad input) and any other
:class:`WhitenclipError` to exit code 1 (runtime failure). Messages are one line and
name the file (and row) they are about.
"""

from __future__ import annotations


class WhitenclipError(Exception):
    """Base class of every error whitenclip raises on purpose (one-line message)."""


class InputError(WhitenclipError, ValueError):
    """The user's input is unusable: missing file, wrong shape, non-finite row, foreign artifact."""


class NotFittedError(WhitenclipError, ValueError):
    """A method needing fitted attributes was called before ``fit``."""


class RankDeficiencyWarning(UserWarning):
    """Directions of (near) zero variance were dropped; the kept rank is smaller than d."""


class NonFiniteRowsWarning(UserWarning):
    """Rows holding NaN or inf were skipped (only when the user asked to drop them)."""
