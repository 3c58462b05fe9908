"""whitenclip: whitening, likelihoods, Gaussianity diagnostics and information estimates
for the embedding spaces of contrastive models (CLIP and other InfoNCE-trained encoders).

Library entry points::

    from whitenclip import Whitener, Moments, score, open_embeddings
    wh = Whitener(method="pca").fit(X)          # X: (n_samples, n_features)
    table = score(wh, X_new)                    # dict of (m,) arrays: loglik, logpdf, ...
"""

from whitenclip.errors import InputError, NotFittedError, RankDeficiencyWarning, WhitenclipError
from whitenclip.likelihood import score
from whitenclip.moments import Moments
from whitenclip.stores import open_embeddings, read_embeddings
from whitenclip.whitening import Whitener

__version__ = "0.1.0"

__all__ = [
    "InputError",
    "Moments",
    "NotFittedError",
    "RankDeficiencyWarning",
    "Whitener",
    "WhitenclipError",
    "open_embeddings",
    "read_embeddings",
    "score",
]
