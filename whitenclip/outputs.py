"""Writing to a path the user gave, without ever destroying what is there by accident.

Rules (as coreutils ``sort -o`` / ``cp``):

* a regular file or a new path: write a temporary file in the same directory, fsync it and
  rename it over the target, so a run killed at any moment leaves the old file (or nothing),
  never a half-written one;
* a character or block device, a FIFO or a socket (``/dev/null``, ``/dev/stdout``, a named
  pipe): open it and stream into it; never rename over it;
* a symbolic link: write to (atomically replace) what it points to; the link stays a link;
* a directory where a file is expected, a missing parent directory, an unwritable location,
  or the same file as one of the command's inputs: :class:`~whitenclip.errors.InputError`
  (exit 2) naming the path, before any work is done.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator

from whitenclip.errors import InputError

STDOUT = "-"


def is_special(path) -> bool:
    """True when ``path`` (after following symlinks) is a device, FIFO or socket: stream into it."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _target(path) -> Path:
    """Where writing ``path`` lands: symlinks followed (a dangling link names its future target)."""
    return Path(os.path.realpath(os.fspath(path)))


def check_output_file(path, *, inputs: Iterable = (), suffix: str | None = None) -> Path:
    """Validate a file the command will write; returns ``path`` unchanged.

    Parameters
    ----------
    path : path-like
        What the user gave with ``-o``.
    inputs : iterable of path-like
        The command's inputs (files, directories, the whitener): writing onto one is refused.
    suffix : str, optional
        Required ending of a regular file's name (``".safetensors"`` for whiteners).
    """
    p = Path(path)
    target = _target(p)
    special = is_special(target)
    if suffix and not special and not p.name.endswith(suffix):
        raise InputError(f"{p}: this output is written as {suffix}; give a name ending in {suffix}")
    if target.is_dir():
        raise InputError(f"{p}: is a directory; expected a file name")
    if not special:
        _check_parent(p, target)
    _refuse_inputs(p, target, inputs)
    return p


def check_output_dir(path, *, inputs: Iterable = ()) -> Path:
    """Validate a directory the command will create or fill (its parent must exist)."""
    p = Path(path)
    target = _target(p)
    if target.exists() and not target.is_dir():
        raise InputError(f"{p}: exists and is not a directory")
    if not target.exists():
        _check_parent(p, target)
    _refuse_inputs(p, target, inputs)
    return p


def _check_parent(p: Path, target: Path) -> None:
    parent = target.parent
    if not parent.is_dir():
        raise InputError(f"{p}: directory {parent} does not exist (create it first)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{p}: cannot write in {parent} (permission denied)")


def _refuse_inputs(p: Path, target: Path, inputs: Iterable) -> None:
    if not target.exists():
        return
    for inp in inputs:
        if inp is None or str(inp) == "-":
            continue
        with contextlib.suppress(OSError):
            if os.path.samefile(target, inp):
                raise InputError(f"{p}: is also an input ({inp}); refusing to overwrite it")


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb") -> Iterator[IO]:
    """Open ``path`` for writing with the rules of this module (see the module docstring).

    Regular files: a temporary file beside the (symlink-resolved) target, renamed over it on
    success and removed on failure. Devices, FIFOs and sockets: opened and written directly.
    The parent directory must exist (it is never created here).
    """
    target = _target(path)
    if is_special(target):
        with open(target, mode) as fh:
            yield fh
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except FileNotFoundError:
        raise InputError(f"{path}: directory {target.parent} does not exist") from None
    except PermissionError:
        raise InputError(f"{path}: cannot write in {target.parent} (permission denied)") from None
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
