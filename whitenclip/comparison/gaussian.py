"""Gaussian-model distances between two sets: Frechet distance (FD / FID) and KL divergence.

Both need only the sets' means and covariances (:class:`~whitenclip.moments.Moments`), so they
also run from moments parts (``--engine dask``, ``whitenclip moments``). Both assume the rows are
Gaussian: on real embeddings they are distances between the fitted Gaussians, not between the
laws themselves (the kernel figures of :mod:`whitenclip.comparison.kernel` make no such assumption).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from whitenclip.errors import InputError

FD_ASSUMES = ("Gaussian model: the distance between the Gaussians fitted to each set (means, ddof=1 covariances), "
              "as pytorch-fid's calculate_frechet_distance; blind to anything beyond the first two moments")
FD_INF_ASSUMES = ("Gaussian model, and a bias linear in 1/n (Chong & Forsyth 2020): ||mu1-mu2||^2 unbiased "
                  "(minus tr(S1)/n1 + tr(S2)/n2), tr((S1 S2)^1/2) extrapolated to 1/n = 0 from the full sets, "
                  "2 halves and 5 fifths (not computed when a fifth has no more rows than the covariance rank); "
                  "interval: normal, variance scaled as 1/n from the spread of the 5 disjoint fifths, levels taken "
                  "as independent")
KL_ASSUMES = ("Gaussian model: closed-form KL between the fitted Gaussians in the common subspace of the pooled "
              "covariance (eigenvalues above 1e-10 x the largest, rank <= min(n1, n2) / 2), unbiased under "
              "Gaussian rows (Wishart: E[S^-1] = (n-1)/(n-r-2) Sigma^-1, E[log det S] from log_det_bias)")
EXTRAPOLATION_SPLITS = (1, 2, 5)
"""The full sets, halves and fifths: the sizes the trace term is extrapolated from."""


def _psd_sqrt(S: np.ndarray) -> np.ndarray:
    """S^1/2 of a symmetric PSD matrix (eigenvalues clipped at 0)."""
    lam, V = np.linalg.eigh(S)
    return (V * np.sqrt(np.clip(lam, 0.0, None))) @ V.T


def trace_sqrt_product(S1: np.ndarray, S2: np.ndarray) -> float:
    """tr((S1 S2)^1/2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)), symmetric eigensolvers, tiny negatives clipped.

    S1 S2 is similar to S1^1/2 S2 S1^1/2 (and to L^T S2 L for S1 = L L^T, used when the Cholesky
    factor exists: the same eigenvalues at a third of the cost)."""
    S1 = np.asarray(S1, dtype=np.float64)
    S2 = np.asarray(S2, dtype=np.float64)
    try:
        L = np.linalg.cholesky(S1)
        M = L.T @ S2 @ L
    except np.linalg.LinAlgError:  # singular S1 (n <= d, constant directions): the symmetric square root
        A = _psd_sqrt(S1)
        M = A @ S2 @ A
    lam = np.linalg.eigvalsh(0.5 * (M + M.T))
    return float(np.sqrt(np.clip(lam, 0.0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2) of two Gaussians.

    The same quantity as pytorch-fid's ``calculate_frechet_distance`` and clean-fid's
    ``frechet_distance`` (which take ``scipy.linalg.sqrtm`` of the non-symmetric product), computed
    stably in float64 (:func:`trace_sqrt_product`).

    >>> round(frechet_distance(np.zeros(2), np.eye(2), np.ones(2), 4 * np.eye(2)), 12)
    4.0
    """
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    S1, S2 = np.asarray(sigma1, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(S1) + np.trace(S2) - 2.0 * trace_sqrt_product(S1, S2))
    return max(value, 0.0)


class _Splits:
    """A set's rows, shuffled once (seeded); :meth:`parts` cuts them into ``k`` disjoint parts."""

    def __init__(self, X: np.ndarray, rng: np.random.Generator):
        self.X = X[rng.permutation(X.shape[0])]

    def parts(self, k: int):
        n = self.X.shape[0]
        bounds = np.linspace(0, n, k + 1).round().astype(int)
        for a, b in zip(bounds[:-1], bounds[1:]):
            P = self.X[a:b]
            yield P.mean(axis=0), np.cov(P, rowvar=False, ddof=1).reshape(P.shape[1], P.shape[1]), b - a


def _fd_unbiased_terms(mu1, S1, n1, mu2, S2, n2) -> float:
    """||mu1 - mu2||^2 - tr(S1)/n1 - tr(S2)/n2 + tr(S1) + tr(S2): every term but the trace-sqrt one, unbiased."""
    diff = mu1 - mu2
    t1, t2 = float(np.trace(S1)), float(np.trace(S2))
    return float(diff @ diff) - t1 / n1 - t2 / n2 + t1 + t2


def fd_extrapolated(X: np.ndarray, Y: np.ndarray, *, seed: int = 0, confidence: float = 0.95) -> dict:
    """An n-independent Frechet distance with a normal interval (``FD_INF_ASSUMES`` says what it assumes).

    The plug-in FD is biased upward by O(1/n) (Chong & Forsyth 2020, "Effectively unbiased FID").
    Here ||mu1 - mu2||^2 is debiased in closed form and tr((Sigma1 Sigma2)^1/2) is extrapolated:
    it is computed on the full sets, on 2 disjoint halves and on 5 disjoint fifths of each (seeded
    shuffles, paired part by part), and a line in 1/n fitted through the 8 values gives its value
    at 1/n = 0. Needs at least 10 rows per set (fifths of 2 rows).

    The bias is linear in 1/n only while the parts have more rows than dimensions: when a fifth has
    no more rows than the covariance rank r (the larger of the two sets' ranks), so that its covariance
    is singular, ``fd_inf``, ``ci`` and ``std`` are None and ``reason`` says why (at least 5 (r + 1) rows
    per set are needed) rather than a biased figure.

    Returns a dict: ``fd_inf``, ``ci`` (low, high), ``std``, ``fd_std`` (the plug-in fd's standard error on
    the same variance model), ``z``, ``points`` [(1/n1 + 1/n2 of the parts, their fd)], ``rank`` and
    ``reason`` (None when ``fd_inf`` is computed).
    """
    n1, n2 = X.shape[0], Y.shape[0]
    if min(n1, n2) < 10:
        raise InputError(f"fd_inf needs at least 10 rows per set, got {n1} and {n2}")
    rng = np.random.default_rng(seed)
    sx, sy = _Splits(X, rng), _Splits(Y, rng)
    xs, bs, fds = [], [], []
    for k in EXTRAPOLATION_SPLITS:
        for (m1, S1, a), (m2, S2, b) in zip(sx.parts(k), sy.parts(k)):
            B = trace_sqrt_product(S1, S2)
            xs.append(1.0 / a + 1.0 / b)  # the bias of the trace term scales with both sizes
            bs.append(B)
            fds.append(_fd_unbiased_terms(m1, S1, a, m2, S2, b) - 2.0 * B)
    x, b = np.asarray(xs), np.asarray(bs)
    design = np.column_stack([np.ones_like(x), x])
    weights = np.linalg.pinv(design)[0]  # the intercept as a linear combination of the 8 values
    b_inf = float(weights @ b)
    mu1, mu2 = X.mean(axis=0), Y.mean(axis=0)
    S1, S2 = np.cov(X, rowvar=False, ddof=1).reshape(X.shape[1], -1), np.cov(Y, rowvar=False, ddof=1).reshape(
        Y.shape[1], -1)
    value = _fd_unbiased_terms(mu1, S1, n1, mu2, S2, n2) - 2.0 * b_inf
    fifths = np.asarray(fds[-EXTRAPOLATION_SPLITS[-1]:])
    v = float(np.var(fifths, ddof=1)) / float(np.mean(x[-EXTRAPOLATION_SPLITS[-1]:]))  # variance per unit of 1/n
    std = math.sqrt(max(v * float(np.sum(weights ** 2 * x)), 0.0))  # levels as independent, var = v / n
    z = float(special.ndtri(0.5 + 0.5 * confidence))
    fd_std = math.sqrt(max(v * float(x[0]), 0.0))
    rank = max(_rank(S1), _rank(S2))
    smallest = min(n1, n2) // EXTRAPOLATION_SPLITS[-1]
    out = {"fd_inf": value, "ci": (value - z * std, value + z * std), "std": std, "fd_std": fd_std, "z": z,
           "points": [(float(a), float(f)) for a, f in zip(x, fds)], "rank": rank, "reason": None}
    if smallest <= rank:
        out.update(fd_inf=None, ci=None, std=None, reason=(
            f"fd_inf: not computed: the fifths it extrapolates from have {smallest} rows, not more than the "
            f"covariance rank {rank}, where the bias is not linear in 1/n (needs at least "
            f"{EXTRAPOLATION_SPLITS[-1] * (rank + 1)} rows per set)"))
    return out


def _rank(S: np.ndarray, floor: float = 1e-10) -> int:
    """Eigenvalues of a symmetric PSD matrix above ``floor`` x the largest (KL's rule)."""
    lam = np.linalg.eigvalsh(S)
    return int((lam > floor * lam[-1]).sum()) if lam[-1] > 0 else 0


def gaussian_kl(mu1, S1, n1: int, mu2, S2, n2: int, *, floor: float = 1e-10) -> dict:
    """KL(N1 || N2) and KL(N2 || N1) of the fitted Gaussians, plug-in and unbiased under Gaussian rows.

    KL(P || Q) = 1/2 [tr(Sq^-1 Sp) + dmu^T Sq^-1 dmu - r + log det Sq - log det Sp] in the common
    subspace (see ``KL_ASSUMES``): the top-r eigenvectors of the pooled covariance, with r the
    eigenvalues above ``floor`` x the largest, and r <= min(n1, n2) / 2 so that every Wishart
    moment used exists and the corrections stay small beside the estimate. Unbiased version, with
    c = (nq - r - 2)/(nq - 1):
    1/2 [c tr(Sq^-1 Sp)(1 - 1/np) + c dmu^T Sq^-1 dmu - r/nq - r + (log det Sq - b(r, nq))
    - (log det Sp - b(r, np))], b = :func:`whitenclip.information.log_det_bias`.

    Returns a dict with ``kl_ref_query`` (P = set 1), ``kl_query_ref``, their ``*_plugin`` values,
    ``rank`` and ``projected`` (whether the subspace is smaller than the dimension).
    """
    from whitenclip.information import log_det_bias

    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    S1, S2 = np.asarray(S1, dtype=np.float64), np.asarray(S2, dtype=np.float64)
    d = mu1.shape[0]
    n1, n2 = int(n1), int(n2)
    if min(n1, n2) < 5:
        raise InputError(f"kl needs at least 5 rows per set, got {n1} and {n2}")
    pooled = ((n1 - 1) * S1 + (n2 - 1) * S2) / (n1 + n2 - 2)
    lam, V = np.linalg.eigh(pooled)
    lam, V = lam[::-1], V[:, ::-1]
    if not lam[0] > 0:
        raise InputError("kl: every direction has zero variance in both sets")
    r = min(int((lam > floor * lam[0]).sum()), min(n1, n2) // 2)
    projected = r < d
    P = V[:, :r]
    A1, A2, dm = P.T @ S1 @ P, P.T @ S2 @ P, P.T @ (mu1 - mu2)
    try:
        L1, L2 = np.linalg.cholesky(A1), np.linalg.cholesky(A2)
    except np.linalg.LinAlgError:
        raise InputError("kl: a set's covariance is singular in the common subspace (one set spans "
                         "directions the other has no variance in): KL is infinite") from None
    logdet1, logdet2 = 2.0 * float(np.log(np.diag(L1)).sum()), 2.0 * float(np.log(np.diag(L2)).sum())

    def one_way(Lq, Ap, nq, np_, logdet_p, logdet_q):
        tr = float(np.trace(np.linalg.solve(Lq, np.linalg.solve(Lq, Ap).T)))  # tr(Lq^-1 Ap Lq^-T) = tr(Aq^-1 Ap)
        y = np.linalg.solve(Lq, dm)
        maha = float(y @ y)
        plugin = 0.5 * (tr + maha - r + logdet_q - logdet_p)
        c = (nq - r - 2.0) / (nq - 1.0)
        unbiased = 0.5 * (c * tr * (1.0 - 1.0 / np_) + c * maha - r / nq - r
                          + (logdet_q - log_det_bias(r, nq)) - (logdet_p - log_det_bias(r, np_)))
        return unbiased, plugin

    kl12, kl12_plugin = one_way(L2, A1, n2, n1, logdet1, logdet2)
    kl21, kl21_plugin = one_way(L1, A2, n1, n2, logdet2, logdet1)
    return {"kl_ref_query": kl12, "kl_query_ref": kl21, "kl_ref_query_plugin": kl12_plugin,
            "kl_query_ref_plugin": kl21_plugin, "rank": r, "projected": projected}
