"""Image decoding on the device (``decode="gpu"``): JPEG headers, batched ``decode_jpeg`` (nvjpeg on
CUDA) with EXIF orientation, and which decoder :func:`~whitenclip.encoders.embedding.embed_items` runs
(:func:`resolve_decode`)."""

from __future__ import annotations

import warnings

from whitenclip.encoders.base import Encoder, _one_line
from whitenclip.encoders.preprocess import TensorPreprocess, _empty_cache
from whitenclip.errors import InputError

DECODERS = ("auto", "cpu", "gpu", "pil", "pil-reduced")
"""Image decoders of :func:`embed_items` (``--decode``): see :func:`resolve_decode`."""


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
