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
  (exit 2) naming the path, before any work is done;
* a trailing slash (``-o newdir/``) always names a directory: a command that writes one file
  refuses it, a command that writes a directory creates it (its parent must exist);
* a command writing several files under ``-o DIR/`` checks every one of them
  (:func:`check_output_files`) against every input, by name and with ``os.path.samefile``,
  and against each other, before any work;
* a command writing a directory of its own (``embed -o store/``, ``--save-embeddings DIR``,
  ``simulate -o DIR``) refuses one that is, lies inside, or contains an input
  (:func:`check_output_tree`), before any work.
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


def names_directory(path) -> bool:
    """True when the path the user typed ends with a slash: it names a directory.

    Pass the string as typed (``pathlib.Path`` drops a trailing slash).

    >>> names_directory("scores/"), names_directory("scores"), names_directory("-")
    (True, False, False)
    """
    text = os.fspath(path)
    return text.endswith(os.sep) or bool(os.altsep and text.endswith(os.altsep))


def wants_directory(path) -> bool:
    """True when ``path`` names a directory: it ends with a slash or is an existing directory."""
    return names_directory(path) or Path(path).is_dir()


def check_output_file(path, *, inputs: Iterable = (), suffix: str | None = None) -> Path:
    """Validate a file the command will write; returns ``Path(path)``.

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
    if names_directory(path) and not target.is_dir():
        raise InputError(f"{path}: a trailing slash names a directory, but this command writes one file; "
                         "give a file name")
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


def check_output_files(paths, *, inputs: Iterable = ()) -> list[Path]:
    """Validate every file a command will write (e.g. one per shard under ``-o DIR/``), before any
    work: none may be an existing directory, none may be one of ``inputs`` (the same name after
    resolving ``..`` and symlinks, or :func:`os.path.samefile`), and no two may be the same file.
    Returns the paths as :class:`~pathlib.Path`.

    >>> check_output_files(["out/a.tsv", "out/./a.tsv"])
    Traceback (most recent call last):
    ...
    whitenclip.errors.InputError: out/./a.tsv: would be written twice (also as out/a.tsv); output names must be unique
    """
    inputs = [str(i) for i in inputs if i is not None and str(i) != "-"]
    names = {os.path.abspath(i): i for i in inputs}
    names.update({os.path.realpath(i): i for i in inputs})
    seen: dict[str, str] = {}
    out = []
    for path in map(str, paths):
        p, target = Path(path), _target(path)
        key = str(target)
        if key in seen:
            raise InputError(f"{path}: would be written twice (also as {seen[key]}); output names must be unique")
        seen[key] = path
        hit = names.get(os.path.abspath(path)) or names.get(key)
        if hit is not None:
            raise InputError(f"{path}: is also an input ({hit}); refusing to overwrite it")
        if target.is_dir():
            raise InputError(f"{path}: is a directory; expected a file name")
        above = next((a for a in target.parents if a.exists()), None)
        if above is not None and not above.is_dir():
            raise InputError(f"{path}: {above} exists and is not a directory")
        _refuse_inputs(p, target, inputs)
        out.append(p)
    return out


def check_output_tree(path, *, inputs: Iterable = (), option: str = "-o", what: str = "the input") -> None:
    """Refuse a directory output (a store, a page folder) that is, lies inside, or contains one of
    ``inputs`` (files or folders, called ``what`` in the message; compared after resolving ``..``
    and symlinks): its files could overwrite an input, or be read as inputs by a later run.
    Checked before any work.

    >>> check_output_tree("data/store", inputs=["data/store/../captions.txt"])
    >>> check_output_tree("data", inputs=["data/captions.txt"])
    Traceback (most recent call last):
    ...
    whitenclip.errors.InputError: -o data: contains the input data/captions.txt; choose a folder outside the inputs
    """
    names = (os.path.abspath(path), os.path.realpath(path))
    for inp in inputs:
        if inp is None or str(inp) == "-":
            continue
        for out in map(Path, names):
            for src in map(Path, (os.path.abspath(inp), os.path.realpath(inp))):
                why = ("is" if src == out else "lies inside" if src in out.parents
                       else "contains" if out in src.parents else None)
                if why:
                    raise InputError(f"{option} {path}: {why} {what} {inp}; choose a folder outside "
                                     f"{'the inputs' if what == 'the input' else 'it'}")


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
def atomic_write(path, mode: str = "wb", errors: str | None = None) -> Iterator[IO]:
    """Open ``path`` for writing with the rules of this module (see the module docstring);
    ``errors``: the text encoding's error handler (text modes only; UTF-8 is the encoding).

    Regular files: a temporary file beside the (symlink-resolved) target, renamed over it on
    success and removed on failure. Devices, FIFOs and sockets: opened and written directly.
    The parent directory must exist (it is never created here).
    """
    target = _target(path)
    text = {} if "b" in mode else {"encoding": "utf-8", "errors": errors}
    if is_special(target):
        with open(target, mode, **text) as fh:
            yield fh
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except FileNotFoundError:
        if target.parent.is_dir():  # e.g. /proc, /sys: a directory that takes no new files
            raise InputError(f"{path}: cannot create a file in {target.parent}") from None
        raise InputError(f"{path}: directory {target.parent} does not exist") from None
    except PermissionError:
        raise InputError(f"{path}: cannot write in {target.parent} (permission denied)") from None
    try:
        with os.fdopen(fd, mode, **text) as fh:
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


def npy_ids_path(path) -> Path:
    """Where the ids of ``NAME.npy`` are kept: ``NAME.ids.json`` beside it (a store shard's layout).

    >>> str(npy_ids_path("out/x.npy"))
    'out/x.ids.json'
    """
    p = Path(path)
    return p.with_name((p.name[:-4] if p.name.lower().endswith(".npy") else p.name) + ".ids.json")


EMBED_FILE_SUFFIXES = (".npz", ".safetensors", ".pt", ".pth", ".parquet", ".arrow", ".feather", ".csv", ".tsv",
                       ".txt", ".json", ".jsonl", ".h5", ".hdf5")
"""Names ``embed -o`` refuses: files it does not write (it writes a store directory or one ``.npy``)."""


def check_embed_output(path, *, inputs: Iterable = ()):
    """Validate ``embed -o``: a name ending in ``.npy`` is one file (returns where its ids go,
    ``NAME.ids.json``), anything else a store directory (returns None); a name ending in another
    file suffix (:data:`EMBED_FILE_SUFFIXES`) is refused, never made a folder of that name.

    >>> check_embed_output("out.npz")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    whitenclip.errors.InputError: -o out.npz: embed writes a store directory or one NAME.npy file ...; .npz is neither
    """
    text = os.fspath(path)
    name = text.rstrip("/" + (os.altsep or "")).lower()
    if name.endswith(".npy"):
        if names_directory(text) or Path(text).is_dir():
            raise InputError(f"-o {text}: a name ending in .npy is written as one file, but this names a directory; "
                             "give another name for a store directory")
        if is_special(_target(text)):
            raise InputError(f"-o {text}: .npy output is written to a regular file (its ids go beside it)")
        ids = npy_ids_path(text)
        check_output_file(text, inputs=inputs, suffix=".npy")
        check_output_files([text, ids], inputs=inputs)
        return ids
    suffix = Path(name).suffix
    if suffix in EMBED_FILE_SUFFIXES and not Path(text).is_dir():
        raise InputError(f"-o {text}: embed writes a store directory or one NAME.npy file (ids in NAME.ids.json); "
                         f"{suffix} is neither")
    check_output_dir(text, inputs=inputs)
    check_output_tree(text, inputs=inputs)
    return None
