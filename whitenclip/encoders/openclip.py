"""``openclip:`` -- open_clip CLIP models (images and texts)."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

from whitenclip.encoders.base import (
    ActivationWarning,
    Encoder,
    EncoderSpec,
    _one_line,
    _quiet_loading,
    autocast,
    model_fingerprint,
    register_encoder,
    short_text,
)
from whitenclip.encoders.hub import _hub_cached, _require_network, check_repo_id
from whitenclip.errors import InputError, WhitenclipError, reraise_if_out_of_memory

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


def _hub_weight_names(filename: str | None) -> list[str]:
    """Files open_clip tries for a hub checkpoint, in its order (safetensors first)."""
    name = filename or "open_clip_pytorch_model.bin"
    if name == "open_clip_pytorch_model.bin":
        return ["open_clip_model.safetensors", name]
    if name.endswith((".bin", ".pth")):
        return [name[:-4] + ".safetensors", name]
    return [name]


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
        _require_network(spec, f"hub repo {repo_id}", constants.ENDPOINT, _HINT)
    else:
        url = cfg.get("url", "")
        cached = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        if not os.path.isfile(cached):
            _require_network(spec, os.path.basename(url), url, _HINT)
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
    _require_network(spec, f"hub repo {repo}", constants.ENDPOINT, _HINT)
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
            check_repo_id(rest[len("hf-hub:"):], spec)
            return EncoderSpec("openclip", arch=rest, pretrained="hf-hub")
        if "@" in rest:
            arch, path = rest.split("@", 1)
            if not arch or not path:
                raise InputError(f"encoder spec {short_text(spec)!r}: expected openclip:ARCH@PATH")
            return EncoderSpec("openclip", arch=arch, path=os.path.abspath(os.path.expanduser(path)))
        if "/" in rest:
            arch, tag = rest.split("/", 1)
            if arch and tag:
                return EncoderSpec("openclip", arch=arch, pretrained=None if tag.lower() == "none" else tag)
        raise InputError(
            f"encoder spec {short_text(spec)!r}: expected openclip:ARCH/PRETRAINED (e.g. openclip:ViT-B-32/openai), "
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
            raise InputError(
                f"cannot load {self.spec}: unknown open_clip architecture {arch!r} "
                f"(see open_clip.list_models()); {_HINT}"
            )
        model_name, pretrained, extra = arch, None, {}
        if spec.path is not None:
            if os.path.isdir(spec.path):
                raise InputError(f"cannot load {self.spec}: checkpoint {spec.path} is a directory; give the "
                                 f"weights file in it; {_HINT}")
            if not os.path.isfile(spec.path):
                raise InputError(f"cannot load {self.spec}: checkpoint {spec.path} not found; {_HINT}")
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
                raise InputError(
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
            reraise_if_out_of_memory(exc)  # under an address-space limit: not a bad checkpoint
            detail = _one_line(exc)
            if spec.path is not None or (spec.pretrained is not None and not hub):
                what = f"bad checkpoint {pretrained} for {arch} ({detail})"
            elif hub:
                what = f"could not fetch the hub model ({detail})"
            else:
                what = detail
            raise (WhitenclipError if hub else InputError)(f"cannot load {self.spec}: {what}; {_HINT}") from None
        if spec.path is not None:  # a local checkpoint: the spec alone does not pin the weights
            self.fingerprint = model_fingerprint(model, arch)
        self.model = model.to(device).eval()
        self.image_transform = preprocess
        quick = any(type(m).__name__ == "QuickGELU" for m in self.model.modules())
        self.activation = "quick_gelu" if quick else "gelu"
        try:  # the tokenizer (a hub model's own) and the dimension probe: their failures are the model's
            with _quiet_loading():
                self.tokenizer = open_clip.get_tokenizer(model_name)
            with torch.inference_mode():
                self.dim = int(self.model.encode_text(self.tokenizer(["a"]).to(device)).shape[-1])
        except Exception as exc:  # noqa: BLE001
            reraise_if_out_of_memory(exc)
            raise InputError(f"cannot load {self.spec}: its tokenizer or text tower fails on the probe caption "
                             f"'a': {_one_line(exc)}; {_HINT}") from None

    def embed_batch(self, batch, modality: str):
        with autocast(self.device, self.precision):
            if modality == "text":
                return self.model.encode_text(self.tokenizer(batch).to(self.device, non_blocking=True))
            return self.model.encode_image(batch)
