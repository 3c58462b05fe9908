"""Batched, device-aware embedding of raw inputs: image decoding (workers, JPEG on the GPU), batching, chunks.

This module holds the loop (:func:`embed_items`, :func:`embed`) and the model stage; its parts live in
:mod:`~whitenclip.encoders.preprocess` (tensor preprocessing), :mod:`~whitenclip.encoders.decoding`
(device JPEG decoding, the decoder choice), :mod:`~whitenclip.encoders.workers` (decode worker datasets)
and :mod:`~whitenclip.encoders.batching` (model batches from worker pieces), re-exported here.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np

from whitenclip import config
from whitenclip.encoders.base import Encoder, _one_line, install_embedding_loop
from whitenclip.encoders.batching import (
    _image_plan,
    _in_background,
    _on_side_stream,
    _pil_batches,
    _tensor_batches,
)
from whitenclip.encoders.decoding import (
    _DECODER_CHECKED,
    DECODERS,
    _decode_jpeg_call,
    _exif_orient,
    decode_jpegs,
    device_decoder_error,
    jpeg_header,
    resolve_decode,
)
from whitenclip.encoders.preprocess import (
    TensorPreprocess,
    _empty_cache,
    _normalize,
    _oom_error,
    resize_crop_each,
    resize_target,
    split_transform,
)
from whitenclip.encoders.workers import (
    MAX_NUM_WORKERS,
    WORKER_BATCH,
    _BytesDataset,
    _collate_images,
    _collate_list,
    _ImageDataset,
    default_num_workers,
)
from whitenclip.errors import InputError, WhitenclipError
from whitenclip.readers.items import Inputs, SkipReport

__all__ = [
    "DECODERS", "MAX_FALLBACK_WARNINGS", "MAX_NUM_WORKERS", "WORKER_BATCH", "DecodeFallbackWarning",
    "TensorPreprocess", "decode_jpegs", "default_num_workers", "device_decoder_error", "embed", "embed_items",
    "jpeg_header", "resize_crop_each", "resize_target", "resolve_decode", "split_transform",
    # private helpers whitenclip.encoders and the tests import from here
    "_BytesDataset", "_DECODER_CHECKED", "_decode_jpeg_call", "_exif_orient", "_forward_images", "_image_plan",
    "_in_background", "_normalize",
]


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
        Image paths or captions. An :class:`~whitenclip.readers.items.Inputs` brings its modality,
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
        staying at least the model's resize size (:func:`~whitenclip.readers.images.load_image`
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
