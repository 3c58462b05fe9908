"""A toy whitenclip encoder plugin, registered through the ``whitenclip.encoders`` entry point.

``whitenclip_toy-0.1.dist-info/entry_points.txt`` beside this package declares
``toy = whitenclip_toy:ToyEncoder``; putting ``tests/plugins`` on ``sys.path`` (or PYTHONPATH)
installs it as far as ``importlib.metadata`` is concerned. Spec: ``toy`` or ``toy:SCALE``.

Features (d = 4), times SCALE:
    text  ``[len(s), words, count of "a"/"A", 1 if s ends with "."]``
    image ``[mean R, mean G, mean B, mean over channels]`` of the 4x4-resized image in [0, 1]
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from whitenclip.encoders import Encoder, EncoderSpec
from whitenclip.errors import InputError

LOADS = []
"""Specs this class was instantiated with (lets a test see the plugin really ran)."""


def text_features(s: str) -> list[float]:
    return [len(s), len(s.split()), s.lower().count("a"), float(s.endswith("."))]


class ToyEncoder(Encoder):
    modalities = ("image", "text")
    cpu_batch_size: ClassVar[dict[str, int]] = {"image": 3, "text": 2}

    @classmethod
    def parse(cls, arg, spec):
        try:
            scale = float(arg) if arg else 1.0
        except ValueError:
            raise InputError(f"encoder spec {spec!r}: toy:SCALE needs a number") from None
        return EncoderSpec(cls.name, arch=None if scale == 1.0 else repr(scale))

    def __init__(self, spec, *, normalize, device, precision):
        super().__init__(spec, normalize=normalize, device=device, precision=precision)
        from torchvision import transforms as T

        self.scale = float(spec.arch) if spec.arch else 1.0
        self.dim = 4
        self.image_transform = T.Compose([T.Resize((4, 4)), T.ToTensor(), T.Normalize((0, 0, 0), (1, 1, 1))])
        LOADS.append(str(spec))

    def embed_batch(self, batch, modality):
        if modality == "text":
            return self.scale * np.array([text_features(s) for s in batch], dtype=np.float64)
        rgb = batch.mean(dim=(2, 3))
        return self.scale * np.concatenate([rgb.numpy(), rgb.mean(1, keepdims=True).numpy()], axis=1)
