"""Encoder base: spec parsing, the registry and entry points, devices and precision, :class:`Encoder`, loading."""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from whitenclip.errors import InputError, WhitenclipError
from whitenclip.readers.meta import ENCODER_META_KEYS, split_encoder_meta  # noqa: F401 (what files record)

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
ENTRY_POINT_GROUP = "whitenclip.encoders"
"""Entry-point group through which installed distributions register encoder classes."""


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
        raise InputError(f"unknown encoder spec {short_text(spec or kind)!r}; use openclip:ARCH/PRETRAINED, "
                         f"openclip:ARCH@PATH, minilm, or another registered kind ({known})")
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


def short_text(text: str, limit: int = 120) -> str:
    """``text`` cut to ``limit`` characters with ``...`` (a spec or name quoted in a one-line message).

    >>> short_text("a" * 200, 10)
    'aaaaaaaaaa...'
    """
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_UNSAFE_ADVICE = re.compile(r"weights_only\W*(?:set to\W*|=\W*)False", re.IGNORECASE)


def _one_line(exc: BaseException, limit: int = 240) -> str:
    """First line of an exception's message, shortened at a word boundary (never mid-word).

    torch's refusal to unpickle (``torch.load(weights_only=True)``) is given as the unpickler's own
    reason: its advice to retry with the unsafe full unpickler (arbitrary code execution) is never
    repeated, nor are terminal colour codes.

    >>> _one_line(RuntimeError("Weights only load failed. Re-running `torch.load` with `weights_only` set to "
    ...     "`False` will likely succeed. WeightsUnpickler error: Unsupported global: GLOBAL os.system. More."))
    'pickled Python objects are never loaded (Unsupported global: GLOBAL os.system)'
    """
    raw = _ANSI.sub("", str(exc))
    if "Weights only load failed" in raw or _UNSAFE_ADVICE.search(raw):
        _, found, reason = " ".join(raw.split()).partition("WeightsUnpickler error:")
        reason = reason.strip().split(". ")[0].rstrip(".") if found else ""
        return "pickled Python objects are never loaded" + (f" ({reason[:160]})" if reason else "")
    text = raw.strip().splitlines()[0].strip() if raw.strip() else type(exc).__name__
    if len(text) <= limit:
        return text
    cut = text[:limit]
    return cut[:cut.rfind(" ")].rstrip(" ,;:") + " ..." if " " in cut else cut + " ..."


# --------------------------------------------------------------------------- devices


def resolve_device(device: str = "auto"):
    """``"auto"`` -> ``cuda`` when available else ``cpu``; checks ``cuda[:N]`` exists.

    Returns a ``torch.device``; raises :class:`InputError` (exit 2) for an unusable device.
    """
    import torch

    d = (device or "auto").strip().lower()
    if d == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(d)
    except (RuntimeError, ValueError):
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} requested but no CUDA GPU is available; use --device cpu")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise InputError(f"device {device!r} does not exist ({n} CUDA device(s)); use cuda:0..cuda:{n - 1}")
    elif dev.type != "cpu":
        raise InputError(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    return dev


def resolve_precision(precision: str, device) -> str:
    """``"auto"`` -> ``"fp16"`` on CUDA, ``"fp32"`` on CPU; validates the others."""
    p = (precision or "auto").lower()
    if p not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
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


def model_fingerprint(module, *configs) -> str:
    """12 hex digits identifying a torch model: its configs (JSON) and the first 16 values of every parameter.

    Recorded as ``encoder_fingerprint`` (:attr:`Encoder.fingerprint`) by backends whose spec alone
    does not pin the weights (``hf:DIR``, ``st:DIR``), so a whitener is refused for raw inputs
    embedded by a different model at that name (:func:`check_activation`).
    Device-independent: parameters are read as loaded, before any autocast.
    """
    import hashlib
    import json

    import torch

    h = hashlib.sha256(json.dumps(configs, sort_keys=True, default=str).encode())
    for name, p in module.named_parameters():
        h.update(f"{name}{tuple(p.shape)}".encode())
        h.update(p.detach().flatten()[:16].to("cpu", torch.float32).numpy().tobytes())
    return h.hexdigest()[:12]


def clean_config(config: dict) -> dict:
    """A transformers config dict without bookkeeping (paths, versions, dtypes) that does not change outputs."""
    skip = {"transformers_version", "torch_dtype", "dtype", "architectures", "name_or_path"}
    if not isinstance(config, dict):
        return {}
    return {k: clean_config(v) if isinstance(v, dict) else v for k, v in config.items()
            if not str(k).startswith("_") and k not in skip}


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
    fingerprint : str or None
        Identity of the loaded weights, configs and preprocessing (:func:`model_fingerprint`), for
        specs that do not pin them (a local folder, a hub name); recorded by :meth:`meta` as
        ``encoder_fingerprint``.
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
    fingerprint: str | None = None
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
        """``{"encoder", "modality", "normalized", "dim"}`` (+ ``"activation"``, ``"encoder_fingerprint"``
        when known) to record."""
        if modality is None:
            if len(self.modalities) != 1:
                raise ValueError(f"{self.spec} embeds {' and '.join(self.modalities)}; pass modality=")
            modality = self.modalities[0]
        self.check_modality(modality)
        out = {"encoder": self.spec, "modality": modality, "normalized": self.normalize, "dim": self.dim}
        if self.activation is not None:
            out["activation"] = self.activation
        if self.fingerprint is not None:
            out["encoder_fingerprint"] = self.fingerprint
        return out

    def check_modality(self, modality: str) -> None:
        """Raise :class:`InputError` when this encoder cannot embed ``modality``."""
        if modality not in self.modalities:
            raise InputError(
                f"encoder {self.spec} embeds {' and '.join(self.modalities)} only, not {modality}; "
                + ("use an openclip:... or hf:... model for images" if modality == "image" else "pick another --model")
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
        embed_items = _EMBEDDING_LOOP[0]  # whitenclip.encoders.embedding.embed_items, installed on package load
        rows = [X for _, X, _ in embed_items(self, list(items), modality=modality, batch_size=batch_size,
                                             num_workers=0, progress=False, strict=True)]
        return np.concatenate(rows) if rows else np.empty((0, self.dim), np.float32)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(spec={self.spec!r}, dim={self.dim}, normalize={self.normalize}, "
                f"device={str(self.device)!r}, precision={self.precision!r})")


_EMBEDDING_LOOP: list = [None]
"""The batched embedding loop :meth:`Encoder.encode` runs: :func:`whitenclip.encoders.embedding.embed_items`,
which that module installs with :func:`install_embedding_loop` when it loads (``import whitenclip.encoders``
loads it before any encoder exists). This module sits below it and never imports it."""


def install_embedding_loop(embed_items) -> None:
    """Make ``embed_items`` the loop behind :meth:`Encoder.encode` (called by :mod:`whitenclip.encoders.embedding`)."""
    _EMBEDDING_LOOP[0] = embed_items


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
    """Load the encoder recorded in an artifact's metadata (``encoder``, ``normalized``, ``activation``,
    ``encoder_fingerprint``).

    Raises :class:`InputError` when the recorded activation or fingerprint differs from the loaded
    model's (the artifact's embeddings came from a different network).
    """
    if not meta.get("encoder"):
        raise InputError("the artifact records no encoder; embed the inputs yourself and pass embedding files")
    enc = load_encoder(meta["encoder"], normalize=bool(meta.get("normalized", False)),
                       device=device, precision=precision)
    check_activation(enc, meta)
    return enc


def check_activation(encoder: Encoder, recorded: dict, label: str = "the artifact") -> None:
    """Raise :class:`InputError` when the recorded ``encoder_fingerprint`` or ``activation`` differs from
    the loaded ``encoder``'s (:attr:`Encoder.fingerprint`, :attr:`Encoder.activation`).

    Metadata without them (older artifacts, plugins that record none) passes; the older form that
    held the fingerprint inside ``activation`` is read too (:func:`split_encoder_meta`).
    """
    recorded = split_encoder_meta(recorded)
    want, have = recorded.get("encoder_fingerprint"), getattr(encoder, "fingerprint", None)  # duck-typed plugins
    if want and have and want != have:
        raise InputError(f"{label} was embedded by {encoder.spec} with model fingerprint {want}, but the model "
                         f"loaded from there now has fingerprint {have} (other weights, config or preprocessing); "
                         "refit with this model, or restore the model it was fitted with")
    want = recorded.get("activation")
    if want and getattr(encoder, "activation", None) and want != encoder.activation:
        raise InputError(f"{label} was embedded by {encoder.spec} with {want} activation, but it loads with "
                         f"{encoder.activation} here; refit with this installation")
