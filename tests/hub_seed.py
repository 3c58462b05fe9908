"""Seed a Hugging Face cache so an open_clip pretrained tag loads offline (tests only).

``seed_openclip_hub(home, "ViT-B-32", "timm/vit_base_patch32_clip_224.openai")`` writes random
weights (float16, about 300 MB for ViT-B-32) where open_clip looks for ``ViT-B-32/openai``::

    HOME/hub/models--timm--vit_base_patch32_clip_224.openai/refs/main
    HOME/hub/models--timm--vit_base_patch32_clip_224.openai/snapshots/<rev>/open_clip_model.safetensors

Then ``HF_HOME=HOME HF_HUB_OFFLINE=1 whitenclip fit images/`` loads through the real tag path.
The repo id of a tag is ``open_clip.get_pretrained_cfg(arch, tag)["hf_hub"]`` (without the last part).
"""

from __future__ import annotations

import logging
from pathlib import Path

REVISION = "0123456789abcdef0123456789abcdef01234567"


def _no_random_init_notice(record) -> bool:
    return "No pretrained weights loaded" not in record.getMessage()


def seed_openclip_hub(home, arch: str, repo_id: str, *, seed: int = 0) -> Path:
    """Write random ``arch`` weights as ``repo_id``'s ``open_clip_model.safetensors``; returns the file.

    LayerNorm scales are 1 and every other tensor N(0, 0.05^2), so activations are O(1) and a
    wrong activation function (GELU vs QuickGELU) shows in the embeddings.
    """
    import open_clip
    import torch
    from safetensors.torch import save_file

    logging.getLogger().addFilter(_no_random_init_notice)
    try:
        with torch.device("meta"):  # shapes only: no slow random init
            shapes = {k: v.shape for k, v in open_clip.create_model(arch, device="meta").state_dict().items()}
    finally:
        logging.getLogger().removeFilter(_no_random_init_notice)
    g = torch.Generator().manual_seed(seed)

    def tensor(key, shape):
        is_ln_scale = key.endswith(".weight") and (".ln" in key or key.startswith("ln_"))
        return torch.ones(shape) if is_ln_scale else 0.05 * torch.randn(shape, generator=g)

    repo = Path(home) / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    path = snapshot / "open_clip_model.safetensors"
    save_file({k: tensor(k, s).to(torch.float16) for k, s in shapes.items()}, str(path))
    return path
