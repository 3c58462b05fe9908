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


_OUT_OF_MEMORY_TEXT = ("failed to map segment", "cannot allocate memory", "can't allocate memory", "unable to mmap",
                       "out of memory", "not enough memory", "std::bad_alloc")


def is_out_of_memory(exc: BaseException) -> bool:
    """True when ``exc`` says the process ran out of memory or address space, whatever its type: a
    MemoryError, ENOMEM, an ImportError of a shared library that could not be mapped under an
    address-space limit (``prlimit --as``: "libtorch_cpu.so: failed to map segment"), torch's
    "DefaultCPUAllocator: can't allocate memory", safetensors' "unable to mmap".

    >>> is_out_of_memory(ImportError("libtorch_cpu.so: failed to map segment from shared object"))
    True
    >>> is_out_of_memory(ImportError("No module named 'pyarrow'"))
    False
    """
    import errno

    if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno == errno.ENOMEM):
        return True
    text = str(exc).lower()
    return any(t in text for t in _OUT_OF_MEMORY_TEXT)


def reraise_if_out_of_memory(exc: BaseException) -> None:
    """Raise :class:`MemoryError` (the CLI's out-of-memory line) when :func:`is_out_of_memory` says so:
    for ``except Exception`` wrappers that would otherwise blame the file or the installation."""
    if is_out_of_memory(exc):
        raise MemoryError(str(exc)) from None
