"""Random projections: Anderson-Darling A2 of the centred rows along seeded unit directions, with
QQ data for a few directions and for the pooled standardised projections."""

from __future__ import annotations

import numpy as np
import scipy.special

from whitenclip.diagnostics.marginal import AD_THRESHOLD, anderson_darling, expected_gaussian_rates

_QQ_POINTS = 101
_QQ_SHOWN = 4
_POOLED_MAX = 200_000


def random_projections(X, mean, *, k: int = 1000, rows: int = 5000, seed: int = 0) -> dict:
    """A2 of the centred data along k seeded unit directions, with QQ data.

    Directions u_j ~ N(0, I_d) / ||.||; projections p = (x - mean) . u_j on a seeded subsample
    of min(n, rows) rows (A2 grows with n for any fixed deviation, so a fixed row count keeps
    the 0.752 threshold comparable across data sets).

    Returns
    -------
    dict with k, rows, ad_mean, ad_pass, expected_pass, excess_kurtosis (mean over directions),
    a2 (per direction), qq {"normal", "projections": [..], "pooled"}.
    """
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x9E0]))
    sub = np.sort(rng.choice(n, size=rows, replace=False)) if n > rows else np.arange(n)
    U = rng.standard_normal((d, int(k)))
    U /= np.linalg.norm(U, axis=0)
    P = (X[sub] - mean) @ U  # (m, k)
    a2 = anderson_darling(P)
    ok = np.isfinite(a2)
    m = P.shape[0]
    out = {"k": int(k), "rows": int(m), "tested": int(ok.sum())}
    if ok.any():
        out.update(ad_mean=float(a2[ok].mean()), ad_pass=float(np.mean(a2[ok] < AD_THRESHOLD)))
    else:
        out.update(ad_mean=None, ad_pass=None, note="every projection is constant")
    ref = expected_gaussian_rates(m, 2, seed, with_dp=False)
    out["expected_pass"] = {"ad": ref["ad_pass"], "tolerance": ref["tolerance"]}
    out["expected_mean"] = {"ad": ref["ad_mean"]}
    out["a2"] = [float(v) if np.isfinite(v) else None for v in a2]
    # standardised projections, QQ data
    Pk = P[:, ok]
    if Pk.shape[1] and m > 1:
        Z = (Pk - Pk.mean(axis=0)) / Pk.std(axis=0, ddof=1)
        Z2 = Z * Z
        kurt = np.einsum("ij,ij->j", Z2, Z2) / m / ((m - 1) / m) ** 2 - 3.0  # g2 = m4 / m2^2 (ddof=0)
        out["excess_kurtosis"] = float(np.mean(kurt))
        # quantile levels evenly spaced in normal score, out to the last plotting position
        # 1 - 1/(2m), so the tails (where heavy or light tails show) are drawn
        def levels(size):
            z_max = scipy.special.ndtri(1 - 0.5 / size)
            return scipy.special.ndtr(np.linspace(-z_max, z_max, _QQ_POINTS))

        probs = levels(m)
        out["qq"] = {"normal": scipy.special.ndtri(probs).tolist(),
                     "projections": [{"index": int(np.flatnonzero(ok)[j]), "a2": float(a2[ok][j]),
                                      "sample": np.quantile(Z[:, j], probs).tolist()}
                                     for j in range(min(_QQ_SHOWN, Z.shape[1]))]}
        pooled = Z.ravel()
        if pooled.size > _POOLED_MAX:  # a seeded sample of the pooled values is plenty for the quantiles
            pooled = pooled[rng.integers(0, pooled.size, size=_POOLED_MAX)]
        pprobs = levels(pooled.size)
        out["qq"]["pooled"] = {"normal": scipy.special.ndtri(pprobs).tolist(),
                               "sample": np.quantile(pooled, pprobs).tolist(), "values": int(pooled.size)}
    else:
        out["excess_kurtosis"] = None
        out["qq"] = None
    return out
