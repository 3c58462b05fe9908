"""Batched, device-aware embedding of raw inputs: image decoding (workers, JPEG on the GPU), batching, chunks."""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from whitenclip import config
from whitenclip.encoders.base import Encoder, _one_line, install_embedding_loop
from whitenclip.errors import InputError, WhitenclipError
from whitenclip.inputs import Inputs, SkipReport, image_error_reason, load_image, non_regular_reason

WORKER_BATCH = 16
"""Images per hand-over from a decode worker (model batches are assembled from these)."""
DECODERS = ("auto", "cpu", "gpu", "pil", "pil-reduced")
"""Image decoders of :func:`embed_items` (``--decode``): see :func:`resolve_decode`."""

MAX_NUM_WORKERS = 64
"""Most decode worker processes ``num_workers`` may ask for (each is a forked Python process)."""


# --------------------------------------------------------------------------- image loading


def split_transform(transform):
    """Split open_clip's preprocessing into a PIL stage and the final ``ToTensor`` + ``Normalize``.

    Returns ``(pil_stage, mean, std)`` when ``transform`` is a torchvision ``Compose`` ending in
    ``ToTensor`` (or open_clip's ``MaybeToTensor``) and ``Normalize``, else None. Workers then
    hand over uint8 pixels (4x less to copy between processes or to the GPU) and the main
    process finishes with :func:`_normalize`, which performs the same float operations in the
    same order as ``ToTensor`` + ``Normalize`` (so the result is identical).
    """
    from torchvision import transforms as T

    steps = getattr(transform, "transforms", None)
    if (not isinstance(transform, T.Compose) or steps is None or len(steps) < 2
            or not isinstance(steps[-2], T.ToTensor) or not isinstance(steps[-1], T.Normalize)
            or steps[-1].inplace):
        return None
    return T.Compose(list(steps[:-2])), tuple(steps[-1].mean), tuple(steps[-1].std)


def resize_target(transform) -> int | None:
    """Largest side the first ``Resize`` of a torchvision ``Compose`` resizes to (None if none)."""
    from torchvision import transforms as T

    for step in getattr(transform, "transforms", []):
        if isinstance(step, T.Resize):
            size = step.size
            return int(size) if isinstance(size, int) else int(max(size))
    return None


def _normalize(u8, mean, std, *, channels_first: bool = False):
    """uint8 (m, H, W, C) (or (m, C, H, W) when ``channels_first``) -> float32 (m, C, H, W):
    ``(x / 255 - mean) / std`` as torchvision's ``ToTensor`` + ``Normalize`` do."""
    import torch

    x = (u8 if channels_first else u8.permute(0, 3, 1, 2)).to(torch.float32).div(255)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return x.sub(m).div(s)


_RESAMPLE_MODES = {"bicubic": "bicubic", "bilinear": "bilinear"}


@dataclass(frozen=True)
class TensorPreprocess:
    """open_clip's image preprocessing on uint8 tensors, on any device (the ``decode="gpu"`` path).

    Equals the PIL pipeline ``Resize(size) -> CenterCrop(crop) -> ToTensor -> Normalize(mean, std)``
    within rounding: PIL resamples separably, horizontal pass first, and rounds to uint8 after
    each pass; :meth:`resize_crop` does the same with ``torch.nn.functional.interpolate``
    (``antialias=True``: PIL's support-scaled kernel, cubic a = -0.5) and rounds between the passes.
    Measured against PIL on the shipped and the 300 Flickr8k photos: at most 2 grey levels apart at
    224 px, 3 at 32 px; 0.05-0.07% of the pixels differ at all (``tests/test_decode.py``).

    Attributes
    ----------
    size : int
        Target of the short side (torchvision ``Resize(int)``); the long side is
        ``int(size * long / short)``, capped by ``max_size`` as torchvision does.
    crop : (int, int)
        Centre crop (height, width); torchvision's offsets ``int(round((H - h) / 2))``.
    mean, std : tuple of float
        Per-channel normalisation after scaling to [0, 1].
    mode : {"bicubic", "bilinear"}
    max_size : int or None
    """

    size: int
    crop: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    mode: str = "bicubic"
    max_size: int | None = None

    @classmethod
    def from_transform(cls, transform) -> TensorPreprocess | None:
        """The tensor equivalent of a torchvision ``Compose`` ``[Resize(int), CenterCrop, (RGB mode), ToTensor,
        Normalize]`` (open_clip's default ``resize_mode="shortest"``), else None."""
        from torchvision import transforms as T

        split = split_transform(transform)
        if split is None:
            return None
        steps = list(split[0].transforms)
        if len(steps) < 2 or not isinstance(steps[0], T.Resize) or not isinstance(steps[1], T.CenterCrop):
            return None
        resize, crop = steps[0], steps[1]
        size = resize.size if isinstance(resize.size, int) else (
            resize.size[0] if isinstance(resize.size, (list, tuple)) and len(resize.size) == 1 else None)
        mode = _RESAMPLE_MODES.get(getattr(resize.interpolation, "value", str(resize.interpolation)))
        if size is None or mode is None or resize.antialias is False:
            return None
        for step in steps[2:]:  # only RGB conversions may follow (images arrive as RGB already)
            if getattr(step, "mode", None) != "RGB" and getattr(step, "__name__", "") != "_convert_to_rgb":
                return None
        ch, cw = (crop.size, crop.size) if isinstance(crop.size, int) else (crop.size[0], crop.size[-1])
        return cls(int(size), (int(ch), int(cw)), split[1], split[2], mode, resize.max_size)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after the resize, as torchvision computes it for ``Resize(int)``."""
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.size, int(self.size * long / short)
        if self.max_size is not None and new_long > self.max_size:
            new_short, new_long = int(self.max_size * new_short / new_long), self.max_size
        return (new_long, new_short) if width <= height else (new_short, new_long)

    def resize_crop(self, images):
        """uint8 images [(3, H_i, W_i), ...] (one device) -> uint8 (m, 3, crop_h, crop_w), in order.

        Images of one size are resampled together (one batched call per size and pass).
        """
        import torch
        from torch.nn import functional as F
        from torchvision.transforms.v2 import functional as TF

        if not images:
            raise ValueError("resize_crop needs at least one image")
        groups: dict[tuple[int, int], list[int]] = {}
        for k, im in enumerate(images):
            groups.setdefault(tuple(im.shape[-2:]), []).append(k)
        out = torch.empty((len(images), 3, *self.crop), dtype=torch.uint8, device=images[0].device)
        for (h, w), ks in groups.items():
            x = torch.stack([images[k] for k in ks]).to(torch.float32)
            nh, nw = self.output_size(h, w)
            if nw != w:  # horizontal pass first, rounded to uint8 levels, as PIL does
                x = F.interpolate(x, size=(h, nw), mode=self.mode, antialias=True, align_corners=False)
                x = x.round_().clamp_(0, 255)
            if nh != h:
                x = F.interpolate(x, size=(nh, nw), mode=self.mode, antialias=True, align_corners=False)
                x = x.round_().clamp_(0, 255)
            out[ks] = TF.center_crop(x, list(self.crop)).to(torch.uint8)
        return out

    def normalize(self, u8):
        """uint8 (m, 3, h, w) -> float32 (m, 3, h, w), ``(x / 255 - mean) / std``."""
        return _normalize(u8, self.mean, self.std, channels_first=True)

    def __call__(self, images):
        """uint8 images [(3, H_i, W_i), ...] -> the model's float32 input (m, 3, crop_h, crop_w)."""
        return self.normalize(self.resize_crop(images))


# PIL Image.Transpose methods of ImageOps.exif_transpose, as tensor ops on (..., H, W)
def _exif_orient(img, orientation: int):
    """Apply EXIF ``orientation`` (1-8) to a (C, H, W) tensor exactly as ``ImageOps.exif_transpose``."""
    import torch

    if orientation == 2:    # FLIP_LEFT_RIGHT
        return img.flip(-1)
    if orientation == 3:    # ROTATE_180
        return img.flip(-2, -1)
    if orientation == 4:    # FLIP_TOP_BOTTOM
        return img.flip(-2)
    if orientation == 5:    # TRANSPOSE
        return img.transpose(-2, -1)
    if orientation == 6:    # ROTATE_270 (clockwise quarter turn)
        return torch.rot90(img, -1, dims=(-2, -1))
    if orientation == 7:    # TRANSVERSE
        return img.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:    # ROTATE_90
        return torch.rot90(img, 1, dims=(-2, -1))
    return img


_JPEG_MODES = ("RGB", "L")
"""PIL modes of JPEGs the tensor decoder turns into the same RGB pixels as PIL (not CMYK/YCCK)."""


def jpeg_header(data: bytes) -> tuple[str | None, int]:
    """``(why_not, orientation)``: None and the EXIF orientation when ``data`` is a JPEG that
    :func:`decode_jpegs` decodes to PIL's pixels; else a reason such as ``"not a JPEG (PNG)"``,
    ``"CMYK JPEG"`` or ``"no JPEG end marker"``.

    Reads the header only (PIL, no pixel decoding). Raises what ``PIL.Image.open`` raises for
    data that is no image at all.
    """
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        if im.format != "JPEG":
            return f"not a JPEG ({im.format})", 1
        if im.mode not in _JPEG_MODES:
            return f"{im.mode} JPEG", 1
        if not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
            # no end-of-image marker: likely truncated, which nvjpeg may decode as grey without a
            # word; PIL decides (decoded if whole after all, else skipped as a truncated image)
            return "no JPEG end marker", 1
        try:
            orientation = int(im.getexif().get(0x0112, 1) or 1)
        except Exception:  # noqa: BLE001 - a malformed EXIF block: PIL's exif_transpose would ignore it too
            orientation = 1
    return None, orientation


def decode_jpegs(datas, device) -> list:
    """Decode JPEG byte tensors with ``torchvision.io.decode_jpeg`` on ``device`` (nvjpeg on CUDA).

    ``datas``: 1-D uint8 CPU tensors. Returns one entry per input, in order: a uint8 (3, H, W)
    RGB tensor on ``device``, or the exception that decoding that item raised. A failing batch
    (torchvision returns nothing when one item fails, or CUDA runs out of memory) is split in
    halves and retried, so one bad file costs O(log m) extra calls and spoils nothing else.
    """
    if not datas:
        return []
    try:
        return _decode_jpeg_call(list(datas), device)
    except Exception as exc:  # noqa: BLE001 - corrupt, truncated, unsupported, OOM: split, else report
        failure = exc
    if len(datas) == 1:
        return [failure]
    del failure
    _empty_cache(device)
    h = len(datas) // 2
    return decode_jpegs(datas[:h], device) + decode_jpegs(datas[h:], device)


def _decode_jpeg_call(datas: list, device) -> list:
    """torchvision's JPEG kernels called directly (``decode_jpeg`` would add a deprecation
    warning per call since torchvision 0.29); the public function where they are missing."""
    import torch
    import torchvision.io
    from torchvision.io import ImageReadMode

    device = torch.device(device)
    rgb = ImageReadMode.RGB
    try:
        op = torch.ops.image.decode_jpegs_cuda if device.type == "cuda" else torch.ops.image.decode_jpeg
    except (AttributeError, RuntimeError):  # pragma: no cover - another torchvision
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return list(torchvision.io.decode_jpeg(datas, mode=rgb, device=device))
    if device.type == "cuda":
        # torchvision allocates the outputs on the caller's stream but nvjpeg writes them on a private
        # stream that does not wait for the caller's: a block freed while the caller's kernels still
        # read it can be overwritten (pytorch/vision#9606). Draining the caller's stream first
        # (here the prefetch thread's side stream, not the model's) orders the two.
        torch.cuda.current_stream(device).synchronize()
        return list(op(datas, rgb.value, device))
    return [op(d, rgb.value, False) for d in datas]


def resize_crop_each(prep: TensorPreprocess, images) -> list:
    """:meth:`TensorPreprocess.resize_crop` on ``images``, split in halves and retried while the
    device runs out of memory. One entry per image, in order: a uint8 (3, crop_h, crop_w) tensor,
    or the out-of-memory error that even that image alone raised (the caller decodes it on the CPU).
    """
    if not images:
        return []
    try:
        return list(prep.resize_crop(images))
    except _oom_error() as exc:
        failure = exc
    if len(images) == 1:
        return [failure]
    del failure
    _empty_cache(images[0].device)
    h = len(images) // 2
    return resize_crop_each(prep, images[:h]) + resize_crop_each(prep, images[h:])


def _empty_cache(device) -> None:
    if getattr(device, "type", str(device)).startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


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


def _in_background(iterable, depth: int):
    """Iterate ``iterable`` in a daemon thread, at most ``depth`` items ahead (a bounded queue).

    Exceptions reach the consumer at the point they occurred; closing the generator stops the thread.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run():
        try:
            for item in iterable:
                if not put((True, item)):
                    return
            put((True, done))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put((False, exc))

    thread = threading.Thread(target=run, name="whitenclip-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)
        close = getattr(iterable, "close", None)
        if close is not None and not thread.is_alive():
            close()


# --------------------------------------------------------------------------- progress


def _progress(enabled: bool, total: int, label: str):
    """Yield ``advance(n)`` when enabled: a rich bar on stderr with items/s and ETA on a terminal, else
    plain lines (count, rate, ETA) at a steady cadence (:mod:`whitenclip.progress`)."""
    from whitenclip.progress import progress, rich_bar

    return progress(enabled, total, label, bar_factory=rich_bar)


# --------------------------------------------------------------------------- embedding


def embed_items(
    encoder: Encoder,
    items: Sequence[str] | Inputs,
    *,
    modality: str | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    progress: bool = False,
    start_item: int = 0,
    chunk_size: int | None = None,
    skips: SkipReport | None = None,
    strict: bool | None = None,
    decode: str = "auto",
) -> Iterator[tuple[list[str], np.ndarray, int]]:
    """Embed ``items`` in order, yielding chunks ``(ids, X, items_end)``.

    Parameters
    ----------
    encoder : Encoder
    items : sequence of str or Inputs
        Image paths or captions. An :class:`~whitenclip.inputs.Inputs` brings its modality,
        strictness and skip report.
    modality : {"image", "text"}, optional
        Required when ``items`` is a plain sequence.
    batch_size : int, optional
        Items per forward pass; default :meth:`Encoder.default_batch_size` (on CPU: 64 images,
        64 texts for minilm, 128 for open_clip; on CUDA: 256 images, 512 texts).
    num_workers : int, optional
        Image decode/preprocess worker processes (``torch.utils.data.DataLoader``); default
        :func:`default_num_workers`, and 0 (in-process) for inputs of at most two batches.
        Workers hand over batches of :data:`WORKER_BATCH` uint8 images; the main process
        assembles model batches and finishes ``ToTensor`` + ``Normalize`` on the device
        (:func:`split_transform`). On a CPU-only machine the workers share the cores with the
        model: they pay off for small models, and ``num_workers=0`` can be faster for large ones
        (see benchmarks/README.md).
    progress : bool, default False
        Show a rich progress bar on stderr (only when stderr is a terminal).
    start_item : int, default 0
        Skip the first ``start_item`` items (resume: a store's ``resume_item``).
    chunk_size : int, optional
        Input items per yielded chunk (a store shard), exactly: every chunk but the last accounts
        for ``chunk_size`` items (a model batch never straddles two chunks; a chunk's last batch
        may be smaller). Default :data:`whitenclip.config.SHARD_ITEMS` of the modality.
    skips : SkipReport, optional
        Receives images that cannot be decoded (default: the Inputs' report, else a new one).
    strict : bool, optional
        Raise :class:`InputError` on the first bad image (default: the Inputs' setting, else False).
    decode : {"auto", "cpu", "gpu", "pil", "pil-reduced"}, default "auto"
        How images are decoded (:func:`resolve_decode`; ``auto`` is ``gpu`` on CUDA, else ``cpu``).
        ``"cpu"`` (= ``"pil"``): PIL decodes at full size in the workers (the model's reference
        preprocessing, bit for bit). ``"pil-reduced"`` lets JPEGs decode at 1/2-1/8 scale while
        staying at least the model's resize size (:func:`~whitenclip.inputs.load_image`
        ``reduce_to``): several times faster for photos much larger than the model input, with
        slightly different pixels. ``"gpu"``: workers only read the files; JPEGs of a model
        batch are decoded together on the encoder's device (:func:`decode_jpegs`, nvjpeg on
        CUDA), EXIF-oriented, then resized, cropped and normalised there as tensors
        (:class:`TensorPreprocess`: PIL's pixels within 3 grey levels). Other formats, CMYK
        JPEGs and files the device decoder rejects are decoded with PIL instead, each named in a
        :class:`DecodeFallbackWarning` (the first :data:`MAX_FALLBACK_WARNINGS`, then a count).
        On CUDA a thread prepares the next batch while the model runs, features come back
        through pinned memory without blocking, and a batch that runs out of GPU memory is
        split in halves and retried (:class:`WhitenclipError` naming the image if even one
        does not fit).

    Yields
    ------
    ids : list of str
        The embedded items of the chunk (bad images left out), in input order.
    X : ndarray of shape (len(ids), d), float32
        Their embeddings (L2-normalised when ``encoder.normalize``).
    items_end : int
        Index one past the last input item this chunk accounts for (embedded or skipped);
        the next run resumes with ``start_item=items_end``.

    Raises
    ------
    InputError
        Wrong modality for the encoder; a bad image in strict mode; no image of a run started
        at item 0 could be decoded.
    """
    if isinstance(items, Inputs):
        modality = modality or items.modality
        skips = skips if skips is not None else items.skips
        strict = items.strict if strict is None else strict
        items = items.items
    if modality is None:
        raise ValueError("modality= is required when items is a plain sequence")
    encoder.check_modality(modality)
    if (decode or "auto").strip().lower() not in DECODERS:
        raise InputError(f"unknown decode {decode!r}; use {', '.join(DECODERS)}")
    decode = resolve_decode(decode, encoder) if modality == "image" else "pil"
    skips = skips if skips is not None else SkipReport()
    strict = bool(strict)
    bs = int(batch_size or encoder.default_batch_size(modality))
    if bs < 1:
        raise ValueError("batch_size must be >= 1")
    n = len(items)
    start = int(start_item)
    if not 0 <= start <= n:
        raise InputError(f"start_item {start} is outside 0..{n}")
    chunk = int(chunk_size or config.SHARD_ITEMS[modality])
    if chunk < 1:
        raise ValueError("chunk_size must be >= 1")
    if num_workers is not None and not 0 <= int(num_workers) <= MAX_NUM_WORKERS:
        raise InputError(f"--num-workers {num_workers}: use 0..{MAX_NUM_WORKERS} (decode worker processes; "
                         f"default: one per core, at most 8)")

    # inference_mode wraps each forward pass only (it is thread state; the caller runs between yields)
    with _progress(progress, n - start, f"embedding {modality}s") as bar:
        bar(0)
        if modality == "text":
            yield from _embed_texts(encoder, items, start=start, batch_size=bs, chunk=chunk, bar=bar)
        else:
            yield from _embed_images(encoder, items, start=start, batch_size=bs, chunk=chunk, bar=bar,
                                     num_workers=num_workers, decode=decode, skips=skips, strict=strict)


def _embed_texts(encoder: Encoder, items, *, start: int, batch_size: int, chunk: int, bar):
    """Text branch of :func:`embed_items`: chunks of ``chunk`` captions, each through ``text_batches``."""
    import torch

    for a in range(start, len(items), chunk):
        texts = list(items[a:a + chunk])
        X = np.empty((len(texts), encoder.dim), dtype=np.float32)
        seen = 0
        for rows, batch in encoder.text_batches(texts, batch_size):
            with torch.inference_mode():
                X[rows] = encoder.finish(encoder.embed_batch(batch, "text"))
            seen += len(rows)
            bar(len(rows))
        if seen != len(texts):
            raise WhitenclipError(f"encoder {encoder.spec}: text_batches covered {seen} of {len(texts)} texts")
        yield texts, X, a + len(texts)


def _image_plan(start: int, n: int, chunk: int, batch_size: int, piece: int) -> list[tuple[range, bool, bool]]:
    """Loader pieces for items ``start..n``: ``(dataset indices, ends a model batch, ends a chunk)``.

    Chunks hold exactly ``chunk`` items (the last one the rest), model batches ``batch_size``
    items of a chunk (the chunk's last batch the rest), worker pieces at most ``piece`` items of
    a model batch, so pieces never straddle a batch and batches never straddle a chunk.
    """
    plan = []
    for c in range(start, n, chunk):
        c_end = min(c + chunk, n)
        for b in range(c, c_end, batch_size):
            b_end = min(b + batch_size, c_end)
            for p in range(b, b_end, piece):
                p_end = min(p + piece, b_end)
                plan.append((range(p - start, p_end - start), p_end == b_end, p_end == c_end))
    return plan


def resolve_decode(decode: str | None, encoder: Encoder) -> str:
    """``auto|cpu|gpu`` (and ``pil``, ``pil-reduced``) -> the image decoder :func:`embed_items` runs.

    ``auto``: ``gpu`` when the encoder runs on CUDA and its preprocessing has a tensor equivalent
    (:class:`TensorPreprocess`), else ``pil``. ``cpu`` is ``pil``. ``gpu`` on a CPU device runs the
    same tensor code on the CPU (torchvision's libjpeg-turbo decoder; used by the tests).
    """
    d = (decode or "auto").strip().lower()
    if d not in DECODERS:
        raise InputError(f"unknown decode {decode!r}; use {', '.join(DECODERS)}")
    if d == "cpu":
        return "pil"
    tensor_ok = TensorPreprocess.from_transform(encoder.image_transform) is not None
    if d == "auto":
        return "gpu" if encoder.device.type == "cuda" and tensor_ok and device_decoder_error(encoder.device) is None \
            else "pil"
    if d == "gpu" and not tensor_ok:
        raise InputError(f"--decode gpu: the preprocessing of {encoder.spec} has no tensor equivalent "
                         "(it needs Resize, CenterCrop, ToTensor, Normalize); use --decode cpu")
    if d == "gpu":
        why = device_decoder_error(encoder.device)
        if why is not None:
            raise InputError(f"--decode gpu: torchvision cannot decode JPEGs on {encoder.device} here ({why}); "
                             "use --decode cpu")
    return d


_DECODER_CHECKED: dict[str, str | None] = {}


def device_decoder_error(device) -> str | None:
    """None when :func:`decode_jpegs` works on ``device`` (one 16x16 JPEG decoded once per process
    and device), else the one-line reason (e.g. a torchvision built without nvjpeg)."""
    import io

    import torch
    from PIL import Image

    key = str(device)
    if key not in _DECODER_CHECKED:
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (200, 30, 60)).save(buf, format="JPEG")
        try:
            out = _decode_jpeg_call([torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)], device)
            ok = out[0].shape == (3, 16, 16) and abs(int(out[0][0, 8, 8]) - 200) <= 8
            _DECODER_CHECKED[key] = None if ok else "decoded a test JPEG to the wrong pixels"
        except Exception as exc:  # noqa: BLE001 - not compiled with nvjpeg, driver issues, ...
            _DECODER_CHECKED[key] = _one_line(exc, 160)
    return _DECODER_CHECKED[key]


@dataclass
class _Batch:
    """One model batch handed from the loader stage to the model: input-order item indices."""

    idx: list[int]
    pixels: object  # float32 (m, 3, H, W) on the device, or None when every item was bad
    bad: list  # [(index, (reason, detail)), ...]
    cpu: list  # [(index, why), ...]: decode="gpu" items decoded on the CPU instead
    ends_chunk: bool
    items_end: int
    event: object = None  # CUDA event after which ``pixels`` is ready (made on the side stream)


def _on_side_stream(batches, device):
    """Run the batch stage on its own CUDA stream (decode and preprocessing overlap the model);
    each batch carries the event the model's stream waits for. ``WHITENCLIP_SIDE_STREAM=0``: off."""
    import torch

    if os.environ.get("WHITENCLIP_SIDE_STREAM", "1") == "0":
        yield from batches
        return
    side = torch.cuda.Stream(device)
    with torch.cuda.stream(side):
        for batch in batches:
            batch.event = torch.cuda.Event()
            batch.event.record(side)
            yield batch


def _pil_batches(loader, plan, *, start: int, device, split):
    """decode="pil": workers' uint8 (or float) pieces -> model batches on ``device``."""
    pend_idx: list[int] = []
    pend_px: list = []
    bad_all: list = []
    for (idx, pixels, bad), (piece_idx, ends_batch, ends_chunk) in zip(loader, plan):
        bad_all.extend(bad)
        if pixels is not None:
            pend_idx.extend(idx)
            pend_px.append(pixels)
        if ends_batch:
            px = None
            if pend_px:
                px = _cat(pend_px).to(device, non_blocking=True)
                if split is not None:
                    px = _normalize(px, split[1], split[2])
            yield _Batch(list(pend_idx), px, list(bad_all), [], ends_chunk, start + piece_idx[-1] + 1)
            pend_idx.clear()
            pend_px.clear()
            bad_all.clear()


def _cat(tensors):
    import torch

    return torch.cat(tensors) if len(tensors) > 1 else tensors[0]


def _tensor_batches(loader, plan, *, start: int, device, prep: TensorPreprocess, items, pil_stage):
    """decode="gpu": byte pieces -> JPEGs decoded together on ``device`` -> resize/crop/normalise there.

    Non-JPEG and CMYK files come decoded by the workers' PIL fallback; a JPEG the device decoder
    rejects, or that alone does not fit the device's memory for the resize, is decoded here with
    PIL (load_image + the PIL stage) and listed in ``_Batch.cpu``.
    """
    import torch

    pend: list = []
    for records, (piece_idx, ends_batch, ends_chunk) in zip(loader, plan):
        pend.extend(records)
        if not ends_batch:
            continue
        with torch.inference_mode():
            jpeg = [(i, payload) for i, kind, payload, _ in pend if kind == "jpeg"]
            bad = [(i, note) for i, kind, _, note in pend if kind == "bad"]
            cpu = [(i, note) for i, kind, _, note in pend if kind == "cpu"]
            pixels = {i: payload.permute(2, 0, 1).to(device, non_blocking=True)
                      for i, kind, payload, _ in pend if kind == "cpu"}

            def on_cpu(i: int, why: str) -> None:  # the PIL path decides: --decode cpu's pixels, or a skip
                try:
                    px = _uint8_hwc(pil_stage(load_image(items[i])))
                except Exception as exc:  # noqa: BLE001
                    bad.append((i, image_error_reason(exc)))
                    return
                pixels[i] = px.permute(2, 0, 1).to(device, non_blocking=True)
                cpu.append((i, why))

            decoded = decode_jpegs([data for _, (data, _) in jpeg], device)
            full = []
            for (i, (_, orientation)), img in zip(jpeg, decoded):
                if isinstance(img, BaseException):
                    on_cpu(i, f"device decoder failed: {_one_line(img, 120)}")
                else:
                    full.append((i, _exif_orient(img, orientation)))
            for (i, _), u8 in zip(full, resize_crop_each(prep, [im for _, im in full])):
                if isinstance(u8, BaseException):
                    on_cpu(i, f"device resize out of memory: {_one_line(u8, 120)}")
                else:
                    pixels[i] = u8
            order = sorted(pixels)
            px = prep.normalize(torch.stack([pixels[i] for i in order])) if order else None
        yield _Batch(order, px, sorted(bad), sorted(cpu), ends_chunk, start + piece_idx[-1] + 1)
        pend.clear()


class _Readback:
    """Features of one batch on their way to the host: a pinned, non-blocking copy on CUDA,
    waited for only when the chunk is assembled, so the next batch is queued meanwhile."""

    def __init__(self, encoder: Encoder, feats):
        import torch

        self.encoder = encoder
        self.event = None
        if isinstance(feats, torch.Tensor) and feats.device.type == "cuda":
            f = feats.detach().float()
            if encoder.normalize:
                f = torch.nn.functional.normalize(f, dim=-1)
            self.host = torch.empty(f.shape, dtype=f.dtype, pin_memory=True)
            self.host.copy_(f, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record(torch.cuda.current_stream(f.device))
            self.feats = None
        else:
            self.feats = encoder.finish(feats)

    def get(self) -> np.ndarray:
        if self.event is not None:
            self.event.synchronize()
            out = self.host.numpy()
            if out.ndim != 2 or out.shape[1] != self.encoder.dim:
                raise WhitenclipError(f"encoder {self.encoder.spec} returned features of shape {out.shape}, "
                                      f"expected (m, {self.encoder.dim})")
            return out
        return self.feats


def _oom_error():
    import torch

    return getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError


def _forward_images(encoder: Encoder, px, state: dict, describe) -> list[_Readback]:
    """The model on ``px`` (m, 3, H, W), split in halves and retried while CUDA runs out of memory.

    ``state["limit"]`` remembers the largest size that fitted, so later batches are cut to it at
    once. When even one image does not fit: :class:`WhitenclipError` naming it (``describe(k)``).
    """
    import torch

    m = px.shape[0]
    limit = state.get("limit")
    if limit is not None and m > limit:
        return [r for a in range(0, m, limit)
                for r in _forward_images(encoder, px[a:a + limit], state, lambda k, a=a: describe(a + k))]
    try:
        with torch.inference_mode():
            return [_Readback(encoder, encoder.embed_batch(px, "image"))]
    except _oom_error() as exc:
        message = _one_line(exc, 160)
    _empty_cache(encoder.device)
    if m == 1:
        raise WhitenclipError(f"{describe(0)}: out of memory on {encoder.device} even for 1 image with {encoder.spec} "
                              f"({encoder.precision}; {message}); free GPU memory or use --device cpu")
    h = m // 2
    state["limit"] = h
    logging.getLogger("whitenclip").info("CUDA out of memory at batch %d: retrying in halves", m)
    return (_forward_images(encoder, px[:h], state, describe)
            + _forward_images(encoder, px[h:], state, lambda k: describe(h + k)))


MAX_FALLBACK_WARNINGS = 20
"""Items decoded on the CPU under decode="gpu" that are named one by one; the rest are counted."""


class DecodeFallbackWarning(UserWarning):
    """decode="gpu": an image was decoded on the CPU instead (not a JPEG, CMYK, rejected by nvjpeg)."""


def _embed_images(encoder: Encoder, items, *, start: int, batch_size: int, chunk: int, bar,
                  num_workers: int | None, decode: str, skips: SkipReport, strict: bool):
    """Image branch of :func:`embed_items`: DataLoader workers read/decode pieces, a loader stage
    assembles model batches on the device (a prefetch thread on CUDA and for decode="gpu"), the
    model runs with OOM split/retry; chunks hold exactly ``chunk`` items."""
    import torch

    bs, n = batch_size, len(items)
    rest = list(items[start:])
    workers = default_num_workers() if num_workers is None else int(num_workers)
    if num_workers is None and len(rest) <= 2 * bs:
        workers = 0
    piece = bs if workers == 0 else max(1, min(bs, WORKER_BATCH))
    plan = _image_plan(start, n, chunk, bs, piece)
    if not plan:
        return
    workers = min(workers, len(plan))  # a worker per loader piece at most: more would only fork idle processes
    transform = encoder.image_transform
    if transform is None:
        raise WhitenclipError(f"encoder {encoder.spec} embeds images but defines no image_transform")
    device = encoder.device
    cuda = device.type == "cuda"
    loader_kw = dict(batch_sampler=[idx for idx, _, _ in plan], num_workers=workers, pin_memory=cuda,
                     prefetch_factor=max(2, 2 * bs // piece) if workers > 0 else None)
    if decode == "gpu":
        prep = TensorPreprocess.from_transform(transform)
        pil_stage = split_transform(transform)[0]
        loader = torch.utils.data.DataLoader(_BytesDataset(rest, pil_stage, start), collate_fn=_collate_list,
                                             **loader_kw)
        # iter() here: worker processes fork from the main thread, before the prefetch thread exists
        batches = _tensor_batches(iter(loader), plan, start=start, device=device, prep=prep, items=items,
                                  pil_stage=pil_stage)
    else:
        split = split_transform(transform) if workers > 0 else None
        reduce_to = resize_target(transform) if decode == "pil-reduced" else None
        dataset = (_ImageDataset(rest, split[0], start, to_uint8=True, reduce_to=reduce_to) if split is not None
                   else _ImageDataset(rest, transform, start, reduce_to=reduce_to))
        loader = torch.utils.data.DataLoader(dataset, collate_fn=_collate_images, **loader_kw)
        batches = _pil_batches(iter(loader), plan, start=start, device=device, split=split)
    if cuda:
        batches = _on_side_stream(batches, device)
    if cuda or decode == "gpu":
        batches = _in_background(batches, depth=2)

    ids: list[str] = []
    feats: list[_Readback] = []
    n_rows = 0
    state: dict = {}
    fallbacks: Counter = Counter()
    try:
        for batch in batches:
            for i, (reason, detail) in batch.bad:
                if strict:
                    raise InputError(f"{items[i]}: {reason}: {detail} (strict mode: fix or remove it)")
                skips.add(items[i], reason, detail)
            for i, why in batch.cpu:
                fallbacks[why.split(":")[0]] += 1
                if sum(fallbacks.values()) <= MAX_FALLBACK_WARNINGS:
                    warnings.warn(f"{items[i]}: decoded on the CPU ({why})", DecodeFallbackWarning, stacklevel=4)
            bar(len(batch.bad))
            if batch.pixels is not None:
                if batch.event is not None:  # the model's stream waits for the side stream's batch
                    current = torch.cuda.current_stream(device)
                    current.wait_event(batch.event)
                    batch.pixels.record_stream(current)
                feats.extend(_forward_images(encoder, batch.pixels, state,
                                             lambda k, b=batch: items[b.idx[k]]))
                ids.extend(items[i] for i in batch.idx)
                bar(len(batch.idx))
            if batch.ends_chunk:
                n_rows += len(ids)
                X = np.concatenate([f.get() for f in feats]) if feats else np.empty((0, encoder.dim), np.float32)
                yield ids, X, batch.items_end
                ids, feats = [], []
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
        total = sum(fallbacks.values())
        if total > 1:
            parts = ", ".join(f"{k} {why}" for why, k in sorted(fallbacks.items()))
            warnings.warn(f"decode gpu: {total} image(s) decoded on the CPU instead ({parts})",
                          DecodeFallbackWarning, stacklevel=4)
    if start == 0 and n > 0 and n_rows == 0:
        raise InputError(f"none of the {n} images could be decoded ({skips.summary()})")


def embed(encoder: Encoder, items: Sequence[str] | Inputs, **kwargs) -> tuple[list[str], np.ndarray]:
    """All of :func:`embed_items` at once: ``(ids, X)`` with X float32 (n_embedded, d)."""
    ids: list[str] = []
    rows: list[np.ndarray] = []
    for chunk_ids, X, _ in embed_items(encoder, items, **kwargs):
        ids.extend(chunk_ids)
        rows.append(X)
    return ids, (np.concatenate(rows) if rows else np.empty((0, encoder.dim), np.float32))


install_embedding_loop(embed_items)  # Encoder.encode runs it (base sits below this module)
