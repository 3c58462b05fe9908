"""whitenclip: whitening, likelihoods, Gaussianity diagnostics and information estimates
for the embedding spaces of contrastive models (CLIP and other InfoNCE-trained encoders).

Library entry points (imported on first use, so ``import whitenclip`` stays cheap)::

    from whitenclip import Whitener, Moments, score, read_embeddings
    wh = Whitener(method="pca").fit(X)          # X: (n_samples, n_features)
    table = score(wh, X_new)                    # per-row loglik, logpdf, sqnorm, p-values
    from whitenclip import gaussianity_report, GaussianEntropy, GaussianMI, load_encoder
"""

from __future__ import annotations

import importlib

from whitenclip.errors import InputError, NotFittedError, RankDeficiencyWarning, WhitenclipError

__version__ = "0.3.0"
"""The version (the one place it is written: pyproject.toml reads it from here)."""

_LAZY = {
    "Whitener": "whitenclip.whitening",
    "Moments": "whitenclip.moments",
    "score": "whitenclip.likelihood",
    "open_embeddings": "whitenclip.readers.plan",
    "read_embeddings": "whitenclip.readers.plan",
    "gaussianity_report": "whitenclip.diagnostics",
    "GaussianEntropy": "whitenclip.information",
    "GaussianMI": "whitenclip.information",
    "load_encoder": "whitenclip.encoders",
    "compare": "whitenclip.comparison",
}

__all__ = ["InputError", "NotFittedError", "RankDeficiencyWarning", "WhitenclipError", *sorted(_LAZY)]


def __getattr__(name: str):
    """Import public names on first use (PEP 562): the CLI's ``--help`` need not load scipy."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'whitenclip' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
