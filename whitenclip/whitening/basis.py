"""The whitening basis: eigendecomposition of the (shrunk) covariance, the kept rank and why
directions were dropped, and the pca / zca / cholesky forms of W and of its right inverse."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import scipy.linalg

from whitenclip.errors import InputError, RankDeficiencyWarning

METHODS = ("pca", "zca", "cholesky")
DEFAULT_FLOOR = 1e-10


def eigh_descending(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenpairs of a symmetric matrix (float64, LAPACK syevr), descending, negatives clipped to 0.

    Runs single-threaded: at d ~ 1000 threaded OpenBLAS gains nothing here and, on a busy machine,
    spinning threads made it 5-90x slower (measured on the 2-core dev machine).
    """
    from threadpoolctl import threadpool_limits

    limit = threadpool_limits(limits=1, user_api="blas") if cov.shape[0] >= 128 else contextlib.nullcontext()
    with limit:
        lam, V = scipy.linalg.eigh(cov, driver="evr")
    lam, V = lam[::-1], V[:, ::-1]
    return np.clip(lam, 0.0, None), np.ascontiguousarray(V)



def kept_count(lam: np.ndarray, floor: float, rank: int | None) -> int:
    """Directions kept of the descending eigenvalues ``lam``: those above ``floor * lambda_max``,
    at most ``rank`` (0 when lambda_max <= 0)."""
    lam_max = lam[0]
    if lam_max <= 0:
        return 0
    keep = int(np.sum(lam > floor * lam_max))
    if rank is not None:
        keep = min(keep, int(rank))
    return keep


def explain_dropped(lam: np.ndarray, keep: int, cov: np.ndarray, *, n: int, floor: float, rank: int | None) -> dict:
    """``{"n_dropped": int, "reason": str}``: why ``keep`` of the d eigenvalues ``lam`` of ``cov``
    (fitted on n rows) were kept (the ``dropped_`` of a fit)."""
    d = lam.size
    reasons = []
    constant = int(np.sum(np.diag(cov) <= floor * lam[0]))
    if constant:
        reasons.append(f"{constant} constant coordinate(s)")
    if n - 1 < d:
        reasons.append(f"n={n} rows give rank at most n-1={n - 1} < d={d}")
    below = int(np.sum(lam <= floor * lam[0]))
    if below and not reasons:
        reasons.append(f"{below} eigenvalue(s) below floor {floor:g} x lambda_max "
                       "(collinear or duplicated rows)")
    elif below:
        reasons.append(f"{below} eigenvalue(s) below floor {floor:g} x lambda_max in all")
    if rank is not None and keep == int(rank) and keep < d - below:
        reasons.append(f"rank capped at {rank}")
    return {"n_dropped": int(d - keep), "reason": "; ".join(reasons) if d - keep else ""}


def whitening_basis(cov: np.ndarray, *, n: int, method: str, floor: float, rank: int | None) -> dict:
    """The basis a fit on n rows with (shrunk) covariance ``cov`` sets, as ``{attribute: value}``:
    ``all_eigenvalues_``, ``eigenvalues_``, ``components_``, ``rank_``, ``log_det_``, ``dropped_``,
    ``W_`` and ``unwhiten_`` in the ``method``'s form, and ``effective_method_``.

    ``cholesky`` of a rank-deficient covariance (r < d) falls back to the pca form, with a
    :class:`RankDeficiencyWarning` (attributed to the caller of the fit that called this).
    """
    lam, V = eigh_descending(cov)
    keep = kept_count(lam, floor, rank)
    if keep == 0:
        raise InputError("every coordinate is constant: nothing to whiten")
    lam_r, V_r = lam[:keep], V[:, :keep]
    out = {"dropped_": explain_dropped(lam, keep, cov, n=n, floor=floor, rank=rank), "all_eigenvalues_": lam,
           "eigenvalues_": lam_r, "components_": V_r, "rank_": keep, "log_det_": float(-0.5 * np.sum(np.log(lam_r)))}
    inv_sqrt, sqrt = lam_r**-0.5, lam_r**0.5
    if method == "cholesky" and keep < cov.shape[0]:
        warnings.warn("cholesky whitening of a rank-deficient covariance: using the kept eigen-subspace "
                      "(the pca form)", RankDeficiencyWarning, stacklevel=3)
        method = "pca"
    if method == "pca":
        out["W_"], out["unwhiten_"] = V_r * inv_sqrt, (V_r * sqrt).T
    elif method == "zca":
        out["W_"], out["unwhiten_"] = (V_r * inv_sqrt) @ V_r.T, (V_r * sqrt) @ V_r.T
    else:
        L = scipy.linalg.cholesky(cov, lower=True)
        out["W_"], out["unwhiten_"] = scipy.linalg.solve_triangular(L, np.eye(L.shape[0]), lower=True).T, L.T
    out["effective_method_"] = method
    return out
