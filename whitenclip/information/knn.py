"""Nonparametric k-NN estimators (Kozachenko-Leonenko entropy, KSG mutual information) and the held-out
k-NN / KSG checks of the Gaussian entropy and MI estimators."""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import linalg, special
from scipy.spatial import cKDTree

from whitenclip.errors import InputError
from whitenclip.information._common import _LOG_2PI_E, _MAX_CCA, _paired
from whitenclip.information.bias import _mi_bias, log_det_bias
from whitenclip.validation import as_matrix
from whitenclip.whitening import eigh_descending

KNN_SPACE = ("top principal components of the input rows, held out: each half of the rows projected on the "
             "components fitted on the other half (whitener not used); k-NN on the projections whitened by their "
             "own covariance, calibrated on Gaussian samples of the same size treated alike")
KNN_FOLDS = 2
"""Cross-fitting folds of the k-NN entropy check (halves: the most held-out rows per k-NN estimate)."""
KNN_ROWS_PER_DIM = 5
"""The k-NN entropy check runs when each held-out half has at least this many rows per dimension
(``n // 2 >= 5 * dims``, about ``n >= 10 * dims``), else it is skipped with that reason."""
KNN_REFERENCE_ROWS = 2000
"""Gaussian reference rows per fold at least: ``ceil(2000 / rows)`` samples (1 to 8) of each held-out size."""
KSG_SPACE = ("top canonical variate pairs, held out: each row projected on directions fitted on the other "
             "cross-fitting folds")
KSG_PERMUTATIONS = 19
"""Permutations (of Y's held-out variates within each fold) behind the KSG check's null range and p-value:
the smallest p-value is 1/20, so a figure is beyond the noise (at 95%) when it exceeds every permuted one
(more permutations for a higher ``confidence``: 99 at 99%)."""


def knn_entropy(X, k: int = 3) -> float:
    """Kozachenko-Leonenko k-nearest-neighbour estimate of differential entropy (nats).

    ``H = psi(n) - psi(k) + log c_m + (m / n) * sum_i log eps_i``, where ``eps_i`` is the
    Euclidean distance from row ``i`` to its k-th nearest neighbour and
    ``c_m = pi^(m/2) / Gamma(m/2 + 1)`` the volume of the unit m-ball (Kozachenko & Leonenko
    1987; Kraskov, Stoegbauer & Grassberger 2004, eq. 20). Trustworthy for m up to ~10-20
    with tens of thousands of rows. Duplicate rows are dropped (with a warning).

    Parameters
    ----------
    X : array-like of shape (n_samples, m)
    k : int, default 3

    Returns
    -------
    float
    """
    X = _unique_rows(as_matrix(X, "X", min_rows=2, allow_1d=True), "knn_entropy")
    n, m = X.shape
    _check_k(k, n)
    dist, _ = cKDTree(X).query(X, k=k + 1, workers=-1)
    log_ball = 0.5 * m * math.log(math.pi) - special.gammaln(0.5 * m + 1.0)
    return float(special.digamma(n) - special.digamma(k) + log_ball + m * np.log(dist[:, k]).mean())


def ksg_mi(X, Y, k: int = 3) -> float:
    """Kraskov-Stoegbauer-Grassberger mutual information, estimator 1 (nats).

    With the max-norm in the joint space, ``eps_i`` = distance from ``(x_i, y_i)`` to its k-th
    neighbour, and ``n_x(i)`` (``n_y(i)``) = number of other rows strictly closer than
    ``eps_i`` in the x (y) space::

        I = psi(k) + psi(n) - mean_i[psi(n_x(i) + 1) + psi(n_y(i) + 1)]

    (Kraskov, Stoegbauer & Grassberger 2004, eq. 8). Accurate in a few dimensions; strongly
    biased towards 0 in high dimension or at high MI. Duplicate joint rows are dropped.

    Parameters
    ----------
    X : array-like of shape (n_samples, dx)
    Y : array-like of shape (n_samples, dy)
    k : int, default 3

    Returns
    -------
    float
    """
    X, Y = _paired(X, Y)
    Z = _unique_rows(np.hstack([X, Y]), "ksg_mi")
    X, Y = Z[:, : X.shape[1]], Z[:, X.shape[1] :]
    n = Z.shape[0]
    _check_k(k, n)
    eps = cKDTree(Z).query(Z, k=k + 1, p=np.inf, workers=-1)[0][:, k]
    radius = np.nextafter(eps, 0.0)  # strictly closer than eps
    nx = cKDTree(X).query_ball_point(X, radius, p=np.inf, return_length=True, workers=-1) - 1
    ny = cKDTree(Y).query_ball_point(Y, radius, p=np.inf, return_length=True, workers=-1) - 1
    psi = special.digamma
    return float(psi(k) + psi(n) - (psi(nx + 1) + psi(ny + 1)).mean())


def _knn_entropy_check(R, rng, unit, *, knn_dims, k, knn_max_samples, floor):
    """``(knn dict or None, why skipped)``: k-NN vs Gaussian entropy of the rows ``R`` projected on
    the top ``m`` principal components of the other half (:class:`KnnEntropyCheck`).

    Each held-out projection ``P`` (rows, m) is whitened by its own covariance ``S`` (Cholesky) for
    the k-NN estimate and shifted back by ``0.5 log det S``; the Gaussian reference samples are
    whitened alike, so the two k-NN figures differ by the shape of ``P`` only.
    """
    R = _subsample(R, knn_max_samples, rng)
    n, k = R.shape[0], int(k)
    m = min(int(knn_dims), R.shape[1])
    half = n // KNN_FOLDS
    if half < KNN_ROWS_PER_DIM * m or half <= k + 1:
        fewer = max(min(half // KNN_ROWS_PER_DIM, int(knn_dims)), 0)
        hint = f"--knn-dims {fewer} or fewer, or more rows" if fewer else "more rows"
        return None, (f"skipped: the k-NN check fits the top {m} principal components on one half of the rows "
                      f"and takes the k-NN estimate on the other (held out: in-sample components overstate "
                      f"the spread when n is close to d); it needs {KNN_ROWS_PER_DIM} held-out rows per "
                      f"dimension (and more than k + 1 = {k + 1}), and {n} rows give halves of {half} "
                      f"(< {max(KNN_ROWS_PER_DIM * m, k + 2)}); use {hint}")
    order = rng.permutation(n)
    halves = [np.sort(order[:half]), np.sort(order[half:])]
    bases = []
    for f in range(KNN_FOLDS):
        train = R[halves[1 - f]]
        mu = train.mean(axis=0)
        _, V = _top_eigh(train - mu, floor, train.shape[0] - 1, m)
        bases.append((mu, V))
    m = min(V.shape[1] for _, V in bases)
    if m == 0:
        return None, "skipped: a half of the rows has no direction of nonzero variance for the k-NN check"
    figures = []
    for f, (mu, V) in enumerate(bases):
        P = (R[halves[f]] - mu) @ V[:, :m]
        rows = P.shape[0]
        W, log_det = _self_whitened(P)
        if W is None:
            return None, (f"skipped: the held-out rows projected on the top {m} principal components of the "
                          "other half are degenerate (their covariance is singular)")
        refs = min(8, max(1, math.ceil(KNN_REFERENCE_ROWS / rows)))
        ref = float(np.mean([knn_entropy(_self_whitened(rng.standard_normal((rows, m)))[0], k)
                             for _ in range(refs)]))
        gauss = 0.5 * (m * _LOG_2PI_E + log_det - log_det_bias(m, rows))
        figures.append((knn_entropy(W, k) + 0.5 * log_det, ref + 0.5 * log_det, gauss))
    raw, ref, gauss = (float(v) for v in np.mean(figures, axis=0))
    return {"dims": m, "k": k, "n": n, "entropy": (gauss - (ref - raw)) / unit, "gaussian": gauss / unit,
            "gaussian_knn": ref / unit, "gap": (ref - raw) / unit, "entropy_raw": raw / unit,
            "folds": KNN_FOLDS, "references": refs}, ""


def _ksg_check(cf, unit, *, ksg_dims, k, ksg_max_samples, confidence, folds, deterministic,
               random_state):
    """``(ksg dict or None, why skipped)``: KSG MI of the held-out canonical variates of the
    cross-fitting folds (:func:`cross_fitted_mi`), beside the Gaussian MI of the same variates
    and the KSG estimates of within-fold permutations (its noise under independence)."""
    m = int(ksg_dims)
    if m <= 0:
        return None, ""
    if deterministic:
        return None, "deterministic relation: no finite MI to check"
    if cf is not None and cf.get("variates") is None:
        return None, "skipped: a cross-fitting fold kept no canonical direction to project held-out rows on"
    if cf is None:
        why = ("the cross-fit is off (folds=0)" if not int(folds) else
               f"too few rows or groups for {int(folds)} cross-fitting folds (at least "
               f"{4 * max(int(folds), 3)} rows)")
        return None, ("skipped: the KSG check runs on held-out canonical variates (directions fitted on the "
                      f"other cross-fitting folds), and {why}; in-sample variates would show dependence "
                      "that is not there")
    U, V, fold = cf["variates"]
    rng = np.random.default_rng([int(random_state), 1])  # its own stream: the estimate stays seeded
    if ksg_max_samples and U.shape[0] > ksg_max_samples:
        keep = np.sort(rng.choice(U.shape[0], int(ksg_max_samples), replace=False))
        U, V, fold = U[keep], V[keep], fold[keep]
    n, q = U.shape
    if n <= int(k) + 1:
        return None, f"skipped: {n} held-out rows are too few for k = {int(k)} neighbours"
    value = ksg_mi(U, V, k)
    level = 1.0 - float(confidence)  # p-values of `perms` permutations reach 1 / (perms + 1) <= level
    perms = max(KSG_PERMUTATIONS, math.ceil(1.0 / level - 1e-9) - 1) if level > 0 else KSG_PERMUTATIONS
    with warnings.catch_warnings():  # duplicate rows were reported (once) by the estimate itself
        warnings.filterwarnings("ignore", message="ksg_mi: dropped")
        null = np.array([ksg_mi(U, V[_permute_within(fold, rng)], k) for _ in range(perms)])
    pvalue = (1.0 + float((null >= value).sum())) / (1.0 + null.size)
    lo, hi = np.quantile(null, [0.025, 0.975])
    gauss = _gaussian_mi_of(U, V)
    return {"dims": q, "k": int(k), "n": int(n), "mi": value / unit,
            "gaussian_mi": None if gauss is None else gauss / unit,
            "null_ci": (float(lo) / unit, float(hi) / unit), "pvalue": pvalue,
            "detectable": bool(pvalue <= level), "permutations": perms}, ""


def _permute_within(label, rng):
    """A permutation of ``range(label.size)`` that moves rows only within their ``label``."""
    order = np.arange(label.size)
    for f in np.unique(label):
        where = np.flatnonzero(label == f)
        order[where] = rng.permutation(where)
    return order


def _gaussian_mi_of(U, V):
    """Bias-corrected Gaussian MI (nats) of paired variates ``U``, ``V`` (n, q) each, or None when a
    block is degenerate."""
    n, q = U.shape
    if n <= 2 * q + 1:
        return None
    S = np.cov(np.hstack([U, V]), rowvar=False).reshape(2 * q, 2 * q)
    try:
        Lx, Ly = linalg.cholesky(S[:q, :q], lower=True), linalg.cholesky(S[q:, q:], lower=True)
    except linalg.LinAlgError:
        return None
    K = linalg.solve_triangular(Ly, linalg.solve_triangular(Lx, S[:q, q:], lower=True).T, lower=True)
    rho = np.minimum(linalg.svdvals(K), _MAX_CCA)
    return -0.5 * float(np.log1p(-rho**2).sum()) - _mi_bias(q, q, n)


def _self_whitened(P):
    """``(W, log det S)``: rows ``P`` centred and whitened by their own ddof=1 covariance ``S`` (Cholesky),
    so ``W`` has identity covariance; ``(None, None)`` when ``S`` is singular."""
    Pc = P - P.mean(axis=0)
    try:
        L = linalg.cholesky((Pc.T @ Pc) / (P.shape[0] - 1.0), lower=True)
    except linalg.LinAlgError:
        return None, None
    diag = np.diag(L)
    if not np.all(diag > 0.0) or not np.all(np.isfinite(diag)):
        return None, None
    return linalg.solve_triangular(L, Pc.T, lower=True).T, 2.0 * float(np.log(diag).sum())


def _top_eigh(Xc, floor, max_rank, m):
    """Top ``m`` (at most) eigenpairs of the ddof=1 covariance of centred rows ``Xc`` above
    ``floor * lambda_max`` and within ``max_rank``, quietly (the caller's rank was reported)."""
    lam, V = eigh_descending((Xc.T @ Xc) / (Xc.shape[0] - 1.0))
    if not lam[0] > 0.0:
        return lam[:0], V[:, :0]
    r = min(int((lam > floor * lam[0]).sum()), int(max_rank), int(m))
    return lam[:r].copy(), np.ascontiguousarray(V[:, :r])


def _subsample(X, max_rows, rng):
    if max_rows and X.shape[0] > max_rows:
        return X[np.sort(rng.choice(X.shape[0], int(max_rows), replace=False))]
    return X


def _unique_rows(X, what):
    U = np.unique(X, axis=0)
    if U.shape[0] < X.shape[0]:
        warnings.warn(f"{what}: dropped {X.shape[0] - U.shape[0]} duplicate rows", UserWarning,
                      stacklevel=3)
    return U


def _check_k(k, n):
    if not 1 <= int(k) < n:
        raise InputError(f"k must be in [1, n - 1] (k {k}, n {n})")
