"""Gaussian entropy from merged moments alone (no rows): the ``entropy`` command's sharded path."""

from __future__ import annotations

import math

import numpy as np

from whitenclip.engine.drivers import compute_moments
from whitenclip.engine.options import EngineOptions
from whitenclip.errors import InputError
from whitenclip.moments import MomentsPart


def entropy_from_moments(part: MomentsPart, *, base: str = "e", whitener=None, floor: float = 1e-12,
                         confidence: float = 0.95):
    """Gaussian entropy from moments alone (what needs no rows): plug-in, bias-corrected, exact
    Gaussian std and interval (the row-group jackknife and k-NN check need rows: absent here).

    Over the kept rank r of the ddof=1 covariance Sigma (of ``whitener``-coordinates
    C = W^T Sigma W when given, then + log|det W^-1| back to input units):
    H_plugin = 0.5 (r log(2 pi e) + sum log lambda), H = H_plugin - 0.5 log_det_bias(r, n),
    std = 0.5 sqrt(log_det_variance(r, n)), ci = H -/+ z std. Same keys as
    ``GaussianEntropy.summary()`` plus ``ci_method`` and ``source``.
    """
    from scipy import special

    from whitenclip.information import EntropyResult, log_det_bias, log_det_variance
    from whitenclip.whitening import eigh_descending

    unit = {"e": 1.0, "2": math.log(2.0)}.get(str(base))
    if unit is None:
        raise InputError(f"base must be e or 2, got {base!r}")
    n = part.n
    if n < 3:
        raise InputError(f"entropy needs at least 3 rows, got {n}")
    cov = part.moments.covariance(ddof=1)
    offset = 0.0
    if whitener is not None:
        if whitener.n_features_ != part.n_features:
            raise InputError(f"entropy: moments have {part.n_features} dims, the whitener {whitener.n_features_}")
        W = np.asarray(whitener.W_, dtype=np.float64)
        cov, offset = W.T @ cov @ W, float(whitener.log_det_)
    lam, _ = eigh_descending(cov)
    if not lam[0] > 0:
        raise InputError("entropy: all directions have zero variance")
    r = min(int((lam > floor * lam[0]).sum()), n - 1)
    lam = lam[:r]
    log_det = float(np.log(lam).sum()) - 2.0 * offset
    plugin = 0.5 * (r * math.log(2.0 * math.pi * math.e) + log_det)
    corrected = plugin - 0.5 * log_det_bias(r, n)
    std = 0.5 * math.sqrt(log_det_variance(r, n)) / unit
    z = float(special.ndtri(0.5 + 0.5 * confidence))
    H = corrected / unit
    return EntropyResult(entropy=H, entropy_plugin=plugin / unit, ci=(H - z * std, H + z * std), std=std,
                         base=str(base), rank=r, n=n, knn=None, confidence=confidence, ci_method="gaussian",
                         whitened=whitener is not None)


def entropy_summary(inputs, opts: EngineOptions, *, base: str = "e", whitener=None):
    """:func:`entropy_from_moments` of INPUTs' merged moments (moments files or embeddings)."""
    part = compute_moments(inputs, opts)
    return entropy_from_moments(part, base=base, whitener=whitener)
