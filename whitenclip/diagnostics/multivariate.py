"""Multivariate shape: Mardia's skewness and kurtosis tests (chunked Gram blocks, O(block x m)
memory) and the isotropy of a covariance spectrum (participation ratio, effective rank, top share)."""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import scipy.stats

from whitenclip.config import MARDIA_BLOCK


# ---------------------------------------------------------------------------------------
# multivariate: Mardia
# ---------------------------------------------------------------------------------------
def _self_whiten(Z: np.ndarray, floor: float = 1e-10) -> np.ndarray:
    """Rows standardised by their own mean and ddof=0 covariance S (over its numerical rank).

    Returns Y = (Z - mean) L^{-T} with S = L L^T (Cholesky); Mardia's statistics are affine
    invariant, so any square root of S gives the same b1 and b2. Falls back to the eigen-basis
    (dropping eigenvalues below floor * max) when S is singular.
    """
    Zc = Z - Z.mean(axis=0)
    S = Zc.T @ Zc / Z.shape[0]
    try:
        L = np.linalg.cholesky(S)
        if np.all(np.diag(L) > math.sqrt(floor) * math.sqrt(max(np.max(np.diag(S)), 0.0))):
            return scipy.linalg.solve_triangular(L, Zc.T, lower=True).T
    except np.linalg.LinAlgError:
        pass
    lam, V = scipy.linalg.eigh(S, driver="evd")
    top = lam.max() if lam.size else 0.0
    keep = lam > floor * top if top > 0 else np.zeros(lam.shape, dtype=bool)
    return (Zc @ V[:, keep]) / np.sqrt(lam[keep])


def mardia_skewness(Y: np.ndarray, *, block: int = MARDIA_BLOCK) -> float:
    """Mardia's b1 = (1/m^2) sum_{i,j} (y_i . y_j)^3 for self-standardised rows Y (m, r).

    Computed by chunked Gram blocks over the upper triangle (the sum is symmetric in i, j):
    memory O(block * m), time O(m^2 r / 2).
    """
    m = Y.shape[0]
    total = 0.0
    for s in range(0, m, block):
        e = min(s + block, m)
        G = Y[s:e] @ Y[s:].T  # rows s..e against columns s..m
        G2 = G * G
        diag = float(np.einsum("ij,ij->", G2[:, : e - s], G[:, : e - s]))
        rest = float(np.einsum("ij,ij->", G2[:, e - s:], G[:, e - s:]))
        total += diag + 2.0 * rest
    return total / m**2


def mardia(X, *, sqnorms_in_sample=None, rank: int | None = None, max_rows: int = 5000, seed: int = 0,
           block: int = MARDIA_BLOCK, transform=None) -> dict:
    """Mardia's multivariate skewness and kurtosis tests with large-sample p-values.

    Skewness: on a seeded subsample of m = min(n, max_rows) rows standardised by their own mean
    and ddof=0 covariance (rank r), b1 = (1/m^2) sum_ij (y_i . y_j)^3 via chunked Gram blocks;
    with Mardia's small-sample factor c = (r+1)(m+1)(m+3) / (m ((m+1)(r+1) - 6)),
    m b1 c / 6 ~ chi2(r (r+1)(r+2) / 6).

    Kurtosis: b2 = (1/n) sum_i D_i^4 with D_i^2 the ddof=0 Mahalanobis distance. When the
    whitener was fitted on these rows (``sqnorms_in_sample`` = ||w||^2 of all n rows, ddof=1),
    D_i^2 = ||w_i||^2 n/(n-1) over all n rows; otherwise the subsample's own standardisation.
    z = (b2 - r(r+2)(n-1)/(n+1)) / sqrt(8 r (r+2) / n) ~ N(0, 1), two-sided p-value.
    Effect size: excess_per_dim = (b2 - r(r+2)(n-1)/(n+1)) / r, which equals the mean excess
    kurtosis of the coordinates when they are independent.

    Valid for n >> r. Returns None values with a reason when n <= r + 1. ``transform`` (e.g. a
    whitener's) is applied to the subsample first; it changes nothing (affine invariance) but
    makes the covariance well conditioned and drops null directions.
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x3A4D]))
    sub = np.sort(rng.choice(n, size=max_rows, replace=False)) if n > max_rows else np.arange(n)
    Y = _self_whiten(X[sub] if transform is None else transform(X[sub]))
    m, r = Y.shape
    out = {"skewness": {"method": f"chunked Gram blocks (block={block}) on a seeded subsample of {m} of {n} rows, "
                                  "self-standardised (ddof=0)", "rows": int(m), "rank": int(r)},
           "kurtosis": {}, "valid_large_sample": bool(m >= 10 * max(r, 1))}
    sk = out["skewness"]
    if r < 1 or m <= r + 1:
        reason = f"rows={m} <= rank+1={r + 1}: the sample standardises itself exactly"
        sk.update(b1=None, statistic=None, df=None, pvalue=None, ratio_to_null=None, reason=reason)
    else:
        b1 = mardia_skewness(Y, block=block)
        c = (r + 1) * (m + 1) * (m + 3) / (m * ((m + 1) * (r + 1) - 6))
        df = r * (r + 1) * (r + 2) / 6
        stat = m * b1 * c / 6
        sk.update(b1=b1, statistic=stat, df=df, pvalue=float(scipy.stats.chi2.sf(stat, df)), ratio_to_null=stat / df)
    ku = out["kurtosis"]
    if sqnorms_in_sample is not None and rank is not None:
        nk, rk = int(np.size(sqnorms_in_sample)), int(rank)
        D2 = np.asarray(sqnorms_in_sample, dtype=np.float64) * nk / (nk - 1)
        ku["method"] = f"whitened norms of all {nk} rows (in-sample whitener, rescaled to ddof=0)"
    else:
        nk, rk = m, r
        D2 = np.sum(Y * Y, axis=1)
        ku["method"] = f"own standardisation of the {m}-row subsample (whitener not fitted on these rows)"
    ku.update(rows=nk, rank=rk)
    if rk < 1 or nk <= rk + 1:
        ku.update(b2=None, expected=None, z=None, pvalue=None, excess_per_dim=None,
                  reason=f"rows={nk} <= rank+1={rk + 1}: every D^2 is equal")
    else:
        b2 = float(np.mean(D2**2))
        expected = rk * (rk + 2) * (nk - 1) / (nk + 1)
        z = (b2 - expected) / math.sqrt(8 * rk * (rk + 2) / nk)
        ku.update(b2=b2, expected=expected, z=z, pvalue=float(2 * scipy.stats.norm.sf(abs(z))),
                  excess_per_dim=(b2 - expected) / rk, relative_excess=b2 / expected - 1)
    return out


# ---------------------------------------------------------------------------------------
# spectrum isotropy
# ---------------------------------------------------------------------------------------
TOP_SHARE = 0.01
"""The isotropy section reports the share of variance carried by the top 1% of directions."""


def spectrum_isotropy(eigenvalues, *, top_share: float = TOP_SHARE) -> dict:
    """How evenly the variance spreads over the directions of a covariance spectrum.

    For eigenvalues lambda_1 >= ... >= lambda_D >= 0 (negatives are clipped to 0) and
    p_i = lambda_i / sum_j lambda_j:

        participation_ratio = (sum lambda)^2 / sum lambda^2         in [1, D]
        effective_rank      = exp(H(p)),  H(p) = -sum_i p_i log p_i  in [1, D]  (0 log 0 = 0)
        top_fraction        = sum_{i <= k} p_i,  k = ceil(top_share * D)       in [k/D, 1]

    Both ranks equal D for an isotropic spectrum (all lambda equal) and 1 when one direction
    carries all the variance.

    Parameters
    ----------
    eigenvalues : array-like of shape (D,)
    top_share : float
        Share of the directions counted in ``top_fraction``.

    Returns
    -------
    dict with dimensions (D), participation_ratio, effective_rank, top_directions (k),
    top_fraction; the three figures are None when every eigenvalue is 0.

    >>> r = spectrum_isotropy([2.0, 1.0, 1.0, 0.0])
    >>> r["participation_ratio"], r["top_directions"], r["top_fraction"]
    (2.6666666666666665, 1, 0.5)
    """
    lam = np.clip(np.asarray(eigenvalues, dtype=np.float64).ravel(), 0.0, None)
    lam = np.sort(lam)[::-1]
    dim = int(lam.size)
    k = max(1, math.ceil(top_share * dim - 1e-9)) if dim else 0
    out = {"dimensions": dim, "participation_ratio": None, "effective_rank": None, "top_directions": k,
           "top_fraction": None}
    total = float(lam.sum())
    if dim == 0 or not total > 0:
        return out
    p = lam / total
    nz = p[p > 0]
    out.update(participation_ratio=total**2 / float(np.sum(lam**2)),
               effective_rank=float(np.exp(-np.sum(nz * np.log(nz)))),
               top_fraction=float(np.sum(p[:k])))
    return out
