"""What files of embeddings record about the encoder of their rows, read the same way for every format."""

from __future__ import annotations

import json
import re

from whitenclip.errors import InputError

ENCODER_META_KEYS = ("encoder", "modality", "normalized", "activation", "encoder_fingerprint")
"""What stores, embedding files and whitener artifacts record about the encoder of their rows
(:meth:`Encoder.meta`, less ``dim``); a key is absent or None where unknown."""


_OLD_FINGERPRINTED = re.compile(r"(?P<activation>.+) \((?:hf|st) (?P<fingerprint>[0-9a-f]{12})\)")


def split_encoder_meta(meta: dict) -> dict:
    """A copy of ``meta`` in today's form: an ``activation`` written before ``encoder_fingerprint``
    existed, ``"ACT (hf|st FINGERPRINT)"``, becomes ``activation=ACT`` and ``encoder_fingerprint``.

    Anything else (no activation, a plain one, a recorded fingerprint) is returned unchanged.
    """
    out = dict(meta)
    act = out.get("activation")
    m = _OLD_FINGERPRINTED.fullmatch(act) if isinstance(act, str) else None
    if m and not out.get("encoder_fingerprint"):
        out["activation"], out["encoder_fingerprint"] = m.group("activation"), m.group("fingerprint")
    return out


def agreed_encoder_meta(metas, what: str) -> dict:
    """What every one of ``metas`` (dicts) records about its encoder (``ENCODER_META_KEYS``), None
    where none records it; :class:`InputError` when two disagree (``"{what} disagree on KEY"``)."""
    metas = list(metas)
    meta = {}
    for key in ENCODER_META_KEYS:
        values = {json.dumps(m.get(key)) for m in metas if m.get(key) is not None}
        if len(values) > 1:
            raise InputError(f"{what} disagree on {key}: {', '.join(sorted(values))}")
        meta[key] = json.loads(values.pop()) if values else None
    return meta
