"""Image inputs: finding image files in folders, and decoding one image (in the embedding workers).

A directory is searched recursively for :data:`~whitenclip.readers.items.IMAGE_EXTENSIONS` files
(hidden files and folders skipped), in sorted (deterministic) order; images are only decoded when
they are embedded (:func:`whitenclip.encoders.embed_items`), so corrupt or truncated images are
found and counted there (:func:`image_error_reason`), in the input's :class:`SkipReport`.
"""

from __future__ import annotations

import os
import stat
import warnings

from whitenclip.errors import InputError
from whitenclip.readers.items import InputFormatWarning, SkipReport, is_image_path


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
