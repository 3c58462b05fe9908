"""The few-rows path (n <= rank + 1 on the whitener's own rows): what stays testable when the
in-sample whitening is an exact frame -- the unbiased tr(Sigma^2) and the centred-norm reference
built on it, and the two-fold held-out whitening behind the whitened coordinates."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.stats

from whitenclip.diagnostics.norms import chi_cv

HELD_OUT_SHRINKAGE = "oas"
"""Shrinkage of the held-out whitener at n <= d (full rank from half the rows)."""
MIN_HELD_OUT_ROWS = 4
"""Rows per fold below which the held-out whitening is not tested."""


def trace_sq_unbiased(X) -> float | None:
    """Unbiased estimate of tr(Sigma^2) from rows X of shape (n, d), for any distribution with
    finite fourth moments (Himeno & Yamada 2014; equals the U-statistic of
    ((x_i - x_j) . (x_k - x_l))^2 / 4 over distinct i, j, k, l):

        (n-1) / (n (n-2) (n-3)) * [(n-1)(n-2) tr S^2 + (tr S)^2 - n Q],
        S the ddof=1 covariance,  Q = sum_i ||x_i - mean||^4 / (n-1).

    The plug-in tr S^2 is biased up by about (tr Sigma)^2 / (n-1), which dominates at n <= d
    (isotropic Gaussian, n = 200, d = 512: tr S^2 ~ 3.6 tr Sigma^2). Cost O(n^2 d) through the
    (n, n) Gram matrix when n <= d, else O(n d^2). None when n < 4.
    """
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    if n < 4:
        return None
    Xc = X - X.mean(axis=0)
    sq = np.einsum("ij,ij->i", Xc, Xc)
    G = Xc @ Xc.T if n <= d else Xc.T @ Xc
    tr_s, tr_s2, q = float(sq.sum()) / (n - 1), float(np.sum(G * G)) / (n - 1) ** 2, float(np.sum(sq**2)) / (n - 1)
    return (n - 1) / (n * (n - 2) * (n - 3)) * ((n - 1) * (n - 2) * tr_s2 + tr_s**2 - n * q)


def norm_reference_few_rows(X, centred: dict) -> dict:
    """The centred-norm Gaussian reference at n <= d: ``centred`` ({mean, std, cv} of
    ||x - mean||) updated with d_eff = (tr S)^2 / T, T = :func:`trace_sq_unbiased` (clipped to
    [1, d]), reference_cv = :func:`chi_cv` (d_eff) and cv_ratio. The sample spectrum's
    (tr S)^2 / tr S^2 is kept as ``d_eff_sample`` (biased low at n <= d).
    """
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    out = dict(centred)
    t = trace_sq_unbiased(X)
    tr_s = float(np.sum((X - X.mean(axis=0)) ** 2)) / (n - 1)
    out["d_eff_sample"] = out.pop("d_eff", None)
    out.pop("reference_cv", None)
    out.pop("cv_ratio", None)
    if t is None or not t > 0 or not tr_s > 0:
        out.update(d_eff=None, reference_cv=None, cv_ratio=None,
                   d_eff_reason=f"n={n}: tr(Sigma^2) has no positive unbiased estimate (needs n >= 4)")
        return out
    d_eff = min(max(tr_s**2 / t, 1.0), float(d))
    ref = chi_cv(d_eff)
    out.update(d_eff=d_eff, reference_cv=ref, cv_ratio=out["cv"] / ref if out.get("cv") is not None else None,
               d_eff_estimator="(tr S)^2 / unbiased tr(Sigma^2) (Himeno-Yamada), over all d coordinates")
    # histogram of ||x - mean||^2 beside c chi2(d_eff), c = tr S (n-1) / (n d_eff): the moment-matched law of a
    # Gaussian with the same covariance (x_i - mean ~ N(0, (n-1)/n Sigma))
    sq = np.sum((X - X.mean(axis=0)) ** 2, axis=1)
    scale = tr_s * (n - 1) / n / d_eff
    law = scipy.stats.chi2(d_eff, scale=scale)
    lo, hi = float(min(law.ppf(0.001), np.quantile(sq, 0.005))), float(max(law.ppf(0.999), np.quantile(sq, 0.99)))
    hi = min(hi, 3.0 * float(law.ppf(0.999)))
    counts, edges = np.histogram(sq, bins=40, range=(lo, hi))
    centres = 0.5 * (edges[1:] + edges[:-1])
    out["histogram"] = {"edges": edges.tolist(), "density": (counts / (sq.size * np.diff(edges))).tolist(),
                        "reference_density": law.pdf(centres).tolist(),
                        "reference": f"{scale:.4g} chi2({d_eff:.1f})",
                        "outside_range": float(1.0 - counts.sum() / sq.size)}
    return out


def held_out_whitening(X, *, method: str = "pca", shrinkage=HELD_OUT_SHRINKAGE, seed: int = 0) -> dict:
    """Two-fold held-out whitening: rows split in two seeded halves A, B (h = n // 2 rows each
    tested); a ``Whitener(method, shrinkage)`` fitted on B whitens A and one fitted on A whitens
    h rows of B.

    For Gaussian rows each tested row is independent of the whitener that maps it, so every
    whitened coordinate is exactly Gaussian (any linear map of a Gaussian is); the in-sample
    whitening at n <= rank + 1 instead maps the rows onto an orthonormal frame (equal norms,
    coordinates set by the geometry, not by the data's law). Shrinkage makes the fold's
    covariance full rank with h < d rows.

    Returns
    -------
    dict with ``blocks`` (two (h, r) whitened folds, or None with ``reason``), ``rows`` (h),
    ``fit_rows`` ([rows fitted per fold]), ``shrinkage`` (intensity per fold), ``rank`` (r, the
    smaller fold rank; both folds cut to it), ``method``, ``description``, ``notes``.
    """
    from whitenclip.whitening import Whitener

    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    h = n // 2
    out = {"method": method, "shrinkage_rule": shrinkage, "rows": int(h), "folds": 2, "notes": []}
    if h < MIN_HELD_OUT_ROWS:
        out.update(blocks=None, reason=f"n={n}: a held-out whitening needs at least {2 * MIN_HELD_OUT_ROWS} rows "
                                       f"({MIN_HELD_OUT_ROWS} per fold)")
        return out
    perm = np.random.default_rng(np.random.SeedSequence([int(seed), 0x40F])).permutation(n)
    a, b = np.sort(perm[:h]), np.sort(perm[h:])
    blocks, fits, intensities = [], [], []
    for fit_idx, test_idx in ((b, a), (a, b[:h])):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            wh = Whitener(method=method, shrinkage=shrinkage, calibration=False).fit(X[fit_idx])
        out["notes"] += [f"held-out whitener: {w.message}" for w in caught]
        blocks.append(wh.transform(X[test_idx]))
        fits.append(int(fit_idx.size))
        intensities.append(float(wh.shrinkage_))
    r = min(B.shape[1] for B in blocks)
    shrunk = ", ".join(f"{v:.3g}" for v in intensities)
    out.update(blocks=[B[:, :r] for B in blocks], fit_rows=fits, shrinkage=intensities, rank=int(r),
               description=(f"held-out {method} whitening ({shrinkage} shrinkage {shrunk}): 2 folds, a whitener "
                            f"fitted on one half of the rows whitens {h} rows of the other; {r} whitened coordinates"))
    return out
