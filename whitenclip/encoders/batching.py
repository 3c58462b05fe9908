"""The loader stage of the image loop: the plan of worker pieces, model batches and chunks
(:func:`_image_plan`), worker pieces assembled into model batches on the device (PIL or device decoding),
a side CUDA stream and a prefetch thread (:func:`_in_background`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from whitenclip.encoders.base import _one_line
from whitenclip.encoders.decoding import _exif_orient, decode_jpegs
from whitenclip.encoders.preprocess import TensorPreprocess, _normalize, resize_crop_each
from whitenclip.encoders.workers import _uint8_hwc
from whitenclip.readers.images import image_error_reason, load_image


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
