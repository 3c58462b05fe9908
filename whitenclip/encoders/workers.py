"""What the decode worker processes (``torch.utils.data.DataLoader``) run: datasets that read and decode
images (a bad one becomes a skip marker, never an exception), their collate functions, and how many workers."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from whitenclip.encoders.decoding import jpeg_header
from whitenclip.readers.images import image_error_reason, load_image, non_regular_reason

WORKER_BATCH = 16
"""Images per hand-over from a decode worker (model batches are assembled from these)."""

MAX_NUM_WORKERS = 64
"""Most decode worker processes ``num_workers`` may ask for (each is a forked Python process)."""


def _check_regular(path) -> None:
    """Raise OSError when ``path`` exists but is not a regular file (after symlinks): reading a
    FIFO or a character device named ``x.jpg`` would block forever or never end. A missing or
    unreadable path is left to the reader's own error."""
    if isinstance(path, (str, os.PathLike)):
        why = non_regular_reason(path)
        if why is not None and why[0] == "corrupt image":
            raise OSError(why[1])


class _ImageDataset:
    """Map-style dataset: index -> (index, pixels or None, (reason, detail) or None).

    ``pixels`` is uint8 (H, W, C) when ``to_uint8`` (then ``transform`` is the PIL stage of
    :func:`split_transform`), else the transform's tensor (3, H, W). Runs in DataLoader worker
    processes; a bad image yields a skip marker instead of raising.
    """

    def __init__(self, paths: Sequence[str], transform, offset: int, to_uint8: bool = False,
                 reduce_to: int | None = None):
        self.paths = paths
        self.transform = transform
        self.offset = offset
        self.to_uint8 = to_uint8
        self.reduce_to = reduce_to

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            _check_regular(self.paths[i])
            pixels = self.transform(load_image(self.paths[i], reduce_to=self.reduce_to))
            if self.to_uint8:
                pixels = _uint8_hwc(pixels)
        except Exception as exc:  # noqa: BLE001 - corrupt/truncated/missing: report, never kill the worker
            return self.offset + i, None, image_error_reason(exc)
        return self.offset + i, pixels, None


def _uint8_hwc(im):
    """PIL image -> uint8 tensor (H, W, 3)."""
    import torch

    arr = np.asarray(im.convert("RGB") if im.mode != "RGB" else im, dtype=np.uint8)
    return torch.from_numpy(arr.copy())


def _collate_images(batch):
    """-> (indices of good images, stacked pixels or None, [(index, (reason, detail)), ...])."""
    import torch

    good = [(i, px) for i, px, err in batch if err is None]
    bad = [(i, err) for i, _, err in batch if err is not None]
    pixels = torch.stack([px for _, px in good]) if good else None
    return [i for i, _ in good], pixels, bad


class _BytesDataset:
    """``decode="gpu"`` workers: index -> (index, kind, payload, note).

    kind ``"jpeg"``: payload ``(bytes as 1-D uint8 tensor, EXIF orientation)`` for the device
    decoder; ``"cpu"``: payload uint8 (H, W, 3) pixels of the PIL stage (a non-JPEG or CMYK
    file decoded here instead; note says why); ``"bad"``: note is ``(reason, detail)``.
    """

    def __init__(self, paths: Sequence[str], pil_stage, offset: int):
        self.paths = paths
        self.pil_stage = pil_stage
        self.offset = offset

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import io

        import torch

        idx = self.offset + i
        try:
            _check_regular(self.paths[i])
            with open(self.paths[i], "rb") as fh:
                data = fh.read()
            why, orientation = jpeg_header(data)
            if why is None:
                return idx, "jpeg", (torch.frombuffer(bytearray(data), dtype=torch.uint8), orientation), None
            return idx, "cpu", _uint8_hwc(self.pil_stage(load_image(io.BytesIO(data)))), why
        except Exception as exc:  # noqa: BLE001 - corrupt/truncated/missing: report, never kill the worker
            return idx, "bad", None, image_error_reason(exc)


def _collate_list(batch):
    return batch


def default_num_workers() -> int:
    """Decode workers: one per CPU core available to this process, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS/Windows
        n = os.cpu_count() or 1
    return max(1, min(8, n))
