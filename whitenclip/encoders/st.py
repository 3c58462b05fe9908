"""``st:NAME_OR_PATH`` -- any sentence-transformers model (texts), exactly ``SentenceTransformer.encode``."""

from __future__ import annotations

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

_HINT = ("offline choices: a local sentence-transformers folder st:/path/to/model (SentenceTransformer.save "
         "output) or the text model 'minilm'")


@register_encoder("st")
class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model run through its own module pipeline.

    Each batch is ``SentenceTransformer.encode(batch)``: the model's tokenizer (truncation at its
    ``max_seq_length``), transformer, pooling and, when the model has one, its ``Normalize`` layer
    (then the features are unit vectors whatever ``--normalize`` says). Captions of a chunk are
    sorted by length and batched, as ``minilm`` does and as ``encode`` itself sorts; rows come back
    in input order. ``activation`` records the transformer's hidden activation, ``fingerprint`` the
    weights, config, module pipeline and maximum length
    (:func:`~whitenclip.encoders.base.model_fingerprint`).
    """

    modalities = ("text",)
    cpu_batch_size: ClassVar[dict[str, int]] = {"text": 64}
    cuda_batch_size: ClassVar[dict[str, int]] = {"text": 512}

    @classmethod
    def parse(cls, arg: str | None, spec: str) -> EncoderSpec:
        name = name_or_path("st", arg, spec, "a sentence-transformers hub name")
        return EncoderSpec("st", arch=name)

    def __init__(self, spec: EncoderSpec, *, normalize: bool, device, precision: str):
        super().__init__(spec, normalize=normalize, device=device, precision=precision)
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise WhitenclipError(f"cannot load {self.spec}: sentence-transformers is not installed; "
                                  "pip install sentence-transformers") from None
        where, local_only = hub_location(self.spec, spec.arch, ("modules.json",), _HINT,
                                         default_org="sentence-transformers")
        try:
            with quiet_transformers():
                self.model = SentenceTransformer(where, device=str(device), local_files_only=local_only).eval()
        except Exception as exc:  # noqa: BLE001 - missing files, bad config, download errors: one line
            reraise_if_out_of_memory(exc)
            raise InputError(f"cannot load {self.spec}: {_one_line(exc)}; {_HINT}") from None
        first = self.model[0] if len(self.model) else None
        auto = getattr(first, "auto_model", None) or getattr(first, "model", None)
        config = getattr(auto, "config", None)
        act = str(getattr(config, "hidden_act", "") or "") or "unknown"
        modules = [type(m).__name__ for m in self.model]
        cfg = clean_config(config.to_dict()) if config is not None else {}
        self.activation = act
        self.fingerprint = model_fingerprint(self.model, cfg, modules, self.model.max_seq_length)
        self.has_normalize = "Normalize" in modules
        try:  # the dimension probe runs the tokenizer and the modules: their failures are the folder's
            self.dim = int(self.model.encode(["a"], convert_to_numpy=True, show_progress_bar=False).shape[-1])
        except Exception as exc:  # noqa: BLE001 - a tokenizer without its unk token, a broken module, ...
            reraise_if_out_of_memory(exc)
            raise InputError(f"cannot load {self.spec}: it fails on the probe caption 'a': {_one_line(exc)}; "
                             f"{_HINT}") from None

    def text_batches(self, texts, batch_size):
        """Sort the chunk by caption length (characters, as ``encode`` does) and yield lists of str."""
        order = np.argsort(np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts)), kind="stable")
        for a in range(0, len(order), batch_size):
            rows = order[a:a + batch_size]
            yield rows, [texts[i] for i in rows]

    def embed_batch(self, batch, modality: str):
        """``SentenceTransformer.encode(batch)`` as one batch: float (m, d) tensor."""
        try:
            with autocast(self.device, self.precision):
                return self.model.encode(batch, batch_size=len(batch), convert_to_tensor=True,
                                         show_progress_bar=False)
        except Exception as exc:  # noqa: BLE001 - its tokenizer failing on a caption: one line naming the model
            reraise_if_out_of_memory(exc)
            raise InputError(f"{self.spec}: fails on these captions: {_one_line(exc)}") from None
