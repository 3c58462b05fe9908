"""``hf:NAME_OR_PATH`` -- Hugging Face ``transformers`` vision-language models (CLIP, SigLIP, ALIGN, ...).

Images: ``model.get_image_features(**processor(images=...))`` (``pixel_values``, and for SigLIP2
its ``pixel_attention_mask`` and ``spatial_shapes``); texts:
``model.get_text_features(**tokenizer(texts))`` with the model's own tokenizer, truncated at its
maximum length (a :class:`TruncationWarning` says how many captions were cut). transformers 5
returns a ``BaseModelOutputWithPooling`` whose ``pooler_output`` is the projected, unnormalised
feature; older versions return the tensor itself: both are handled.
"""

from __future__ import annotations

import os
import warnings
from typing import ClassVar

import numpy as np

from whitenclip.encoders.base import (
    Encoder,
    EncoderSpec,
    _one_line,
    autocast,
    clean_config,
    model_fingerprint,
    register_encoder,
)
from whitenclip.encoders.hub import hub_location, name_or_path, quiet_transformers
from whitenclip.errors import InputError, WhitenclipError, reraise_if_out_of_memory

_HINT = ("offline choices: a local model folder hf:/path/to/model (save_pretrained output of the model, "
         "its tokenizer and image processor), openclip:ARCH@/path/to/weights.safetensors or the text model 'minilm'")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_METHODS = ("get_image_features", "get_text_features")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.", "spiece.model", "tokenizer.model",
                    "sentencepiece.bpe.model")


class TruncationWarning(UserWarning):
    """Captions longer than the text model's maximum length were truncated."""


def _features(out):
    """Tensor features from ``get_*_features``: the tensor itself, or a model output's ``pooler_output``."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        raise WhitenclipError(f"get_*_features returned {type(out).__name__} without pooler_output")
    return pooled


class _ImageProcessorTransform:
    """``PIL.Image -> tensor`` through a transformers image processor (picklable for workers).

    A processor returning only ``pixel_values`` gives that image, (3, H, W). One returning more
    (SigLIP2's patches padded to ``max_num_patches`` with ``pixel_attention_mask`` and
    ``spatial_shapes``) gives every output flattened into one float32 vector, in ``layout`` order;
    :meth:`unpack` restores the batched keyword arguments (masks and shapes are small integers,
    exact in float32).
    """

    def __init__(self, processor):
        from PIL import Image

        self.processor = processor
        self.layout = None  # [(key, shape, dtype)] when the processor returns more than pixel_values
        probe = processor(images=Image.new("RGB", (48, 40)), return_tensors="pt")
        keys = [k for k, v in probe.items() if hasattr(v, "shape")]
        if keys != ["pixel_values"]:
            self.layout = [(k, tuple(probe[k].shape[1:]), probe[k].dtype) for k in keys]

    def __call__(self, image):
        import torch

        out = self.processor(images=image, return_tensors="pt")
        if self.layout is None:
            return out["pixel_values"][0]
        return torch.cat([out[k][0].reshape(-1).to(torch.float32) for k, _, _ in self.layout])

    def unpack(self, batch) -> dict:
        """A stacked batch of :meth:`__call__` outputs -> ``get_image_features`` keyword arguments."""
        import math

        import torch

        if self.layout is None:
            return {"pixel_values": batch}
        parts = torch.split(batch, [math.prod(shape) for _, shape, _ in self.layout], dim=1)
        return {k: part.reshape(len(batch), *shape).to(dtype) for (k, shape, dtype), part in zip(self.layout, parts)}


@register_encoder("hf")
class HFEncoder(Encoder):
    """A transformers model with ``get_image_features`` and ``get_text_features``, loaded with ``AutoModel``.

    The model, tokenizer and image processor come from the local folder or the hub repo NAME
    (the Hugging Face cache first; uncached hub names check the network once, as ``openclip:``
    tags do). Captions of a chunk are tokenised together, sorted by token count and batched; SigLIP
    models pad to their maximum length, as they were trained. ``activation`` records the text and
    vision activations, ``fingerprint`` the weights, configs and preprocessing (image processor,
    maximum length, padding; :func:`~whitenclip.encoders.base.model_fingerprint`), so a whitener is
    refused for raw inputs embedded by a different ``hf:`` model.
    """

    modalities = ("image", "text")
    cpu_batch_size: ClassVar[dict[str, int]] = {"image": 64, "text": 128}
    cuda_batch_size: ClassVar[dict[str, int]] = {"image": 256, "text": 512}

    @classmethod
    def parse(cls, arg: str | None, spec: str) -> EncoderSpec:
        name = name_or_path("hf", arg, spec, "a transformers hub name such as hf:openai/clip-vit-base-patch32")
        return EncoderSpec("hf", arch=name)

    def __init__(self, spec: EncoderSpec, *, normalize: bool, device, precision: str):
        super().__init__(spec, normalize=normalize, device=device, precision=precision)
        import torch
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        where, local_only = hub_location(self.spec, spec.arch, ("config.json",), _HINT, any_of=_WEIGHTS)
        try:
            with quiet_transformers():
                model = AutoModel.from_pretrained(where, local_files_only=local_only)
        except Exception as exc:  # noqa: BLE001 - missing files, unknown architecture, download errors: one line
            reraise_if_out_of_memory(exc)
            raise InputError(f"cannot load {self.spec}: {_one_line(exc)}; {_HINT}") from None
        missing = [m for m in _METHODS if not callable(getattr(model, m, None))]
        if missing:
            raise InputError(f"cannot load {self.spec}: {type(model).__name__} has no {' or '.join(missing)}; "
                             "hf: needs a vision-language model with both (CLIP, SigLIP, ALIGN, ...)")
        if os.path.isdir(where) and not any(n.startswith(_TOKENIZER_FILES) for n in os.listdir(where)):
            # transformers would build an empty vocabulary: every caption the same unknown tokens
            raise InputError(f"cannot load {self.spec}: no tokenizer in {where} (tokenizer.json, "
                             "tokenizer_config.json, vocab.*, *.model); save it beside the model with "
                             "tokenizer.save_pretrained(folder)")
        try:
            with quiet_transformers():
                self.tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=local_only)
                processor = AutoImageProcessor.from_pretrained(where, local_files_only=local_only)
        except Exception as exc:  # noqa: BLE001
            reraise_if_out_of_memory(exc)
            raise InputError(f"cannot load {self.spec}: tokenizer or image processor: {_one_line(exc)}; "
                             f"{_HINT}") from None
        self.model = model.to(device).eval()
        try:  # the processor runs on a probe image: a broken one fails here, in one line
            self.image_transform = _ImageProcessorTransform(processor)
        except Exception as exc:  # noqa: BLE001
            reraise_if_out_of_memory(exc)
            raise InputError(f"cannot load {self.spec}: its image processor fails on a probe image: "
                             f"{_one_line(exc)}; {_HINT}") from None
        config = model.config
        text_cfg = getattr(config, "text_config", config)
        vision_cfg = getattr(config, "vision_config", config)
        limits = [n for n in (getattr(self.tokenizer, "model_max_length", None),
                              getattr(text_cfg, "max_position_embeddings", None)) if n and n < 1_000_000]
        self.max_length = int(min(limits)) if limits else 512
        self.padding = "max_length" if str(config.model_type).startswith("siglip") else "longest"
        self.pad_id = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0)
        acts = [str(getattr(c, "hidden_act", "") or "unknown") for c in (text_cfg, vision_cfg)]
        act = acts[0] if acts[0] == acts[1] else "/".join(acts)
        recorded = (clean_config(config.to_dict()), clean_config(processor.to_dict()), self.max_length, self.padding)
        self.activation, self.fingerprint = act, model_fingerprint(self.model, *recorded)
        self._warned_truncation = False
        try:  # the dimension probe runs the tokenizer and the text tower: their failures are the folder's
            with torch.inference_mode():
                self.dim = int(self.embed_batch(next(self.text_batches(["a"], 1))[1], "text").shape[-1])
        except Exception as exc:  # noqa: BLE001 - e.g. "Unk token <unk> not found in the vocabulary"
            reraise_if_out_of_memory(exc)
            cause = exc.__cause__ if isinstance(exc, InputError) and exc.__cause__ is not None else exc
            raise InputError(f"cannot load {self.spec}: its tokenizer or text model fails on the probe caption "
                             f"'a': {_one_line(cause)}") from None

    def _tokenize(self, texts, **kw):
        """``self.tokenizer(texts, **kw)``; a tokenizer that fails on a caption is one line naming the model."""
        try:
            return self.tokenizer(texts, **kw)
        except Exception as exc:  # noqa: BLE001 - a broken tokenizer.json: unknown token without unk, ...
            reraise_if_out_of_memory(exc)
            raise InputError(f"{self.spec}: its tokenizer fails on these captions: {_one_line(exc)}") from exc

    def text_batches(self, texts, batch_size):
        """Tokenise the chunk, sort by token count, yield ``(rows, tokenizer output)`` batches on the device."""
        with quiet_transformers():  # "sequence longer than the maximum" notes: counted below instead
            lengths = [len(s) for s in self._tokenize(list(texts), truncation=False)["input_ids"]]
        cut = sum(n > self.max_length for n in lengths)
        if cut:
            warnings.warn(f"{self.spec}: {cut} of {len(texts)} captions are longer than {self.max_length} tokens "
                          "and were truncated", TruncationWarning, stacklevel=2)
        order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
        for a in range(0, len(order), batch_size):
            rows = order[a:a + batch_size]
            enc = self._tokenize([texts[i] for i in rows], padding=self.padding, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            yield rows, {k: v.to(self.device, non_blocking=True) for k, v in enc.items()}

    def embed_batch(self, batch, modality: str):
        with autocast(self.device, self.precision):
            if modality == "text":
                return _features(self.model.get_text_features(**batch))
            return _features(self.model.get_image_features(**self.image_transform.unpack(batch)))
