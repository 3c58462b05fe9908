"""Which items differ: query rows unlikely under the reference, and reference regions the query misses.

* :func:`outlying_items`: conformal p-values of the query rows under a whitener fitted on the
  reference (:mod:`whitenclip.likelihood`), Benjamini-Hochberg q-values, and the rows flagged at
  a false discovery rate (distribution-free for exchangeable rows; whole groups when given).
* :func:`prdc`: precision, recall, density and coverage (Naeem et al. 2020) exactly as
  ``prdc.compute_prdc(real_features, fake_features, nearest_k)`` defines them (Euclidean
  distances, radii = distance to the k-th nearest other row), computed in row blocks: memory
  O(block x (n + m)), never n x m.
"""

from __future__ import annotations

import warnings

import numpy as np

from whitenclip.errors import InputError

PRDC_ASSUMES = ("none about the law: k-nearest-neighbour balls (Naeem et al. 2020, prdc.compute_prdc) on the raw "
                "rows; precision/density: query rows inside reference balls; recall: reference rows inside query "
                "balls; coverage: reference balls holding a query row")
ITEMS_ASSUMES = ("exchangeable reference rows (or groups): conformal p-values of each query row under a whitener "
                 "fitted on the reference, Benjamini-Hochberg q-values (valid: conformal p-values are PRDS)")
BLOCK_ROWS = 1024


def _sq(A: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", A, A)


def _distances(A: np.ndarray, B: np.ndarray, sa: np.ndarray, sb: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of A and B (as sklearn's euclidean_distances in float64)."""
    D2 = sa[:, None] + sb[None, :] - 2.0 * (A @ B.T)
    return np.sqrt(np.clip(D2, 0.0, None))


def knn_radii(X: np.ndarray, k: int, block: int = BLOCK_ROWS) -> np.ndarray:
    """Distance of each row to its k-th nearest other row (the (k+1)-th smallest, itself included)."""
    n = X.shape[0]
    if not 1 <= k < n:
        raise InputError(f"nearest_k must be in 1..{n - 1} for {n} rows, got {k}")
    s = _sq(X)
    out = np.empty(n)
    for i in range(0, n, block):
        D = _distances(X[i:i + block], X, s[i:i + block], s)
        D[np.arange(D.shape[0]), np.arange(i, i + D.shape[0])] = 0.0  # a row's distance to itself
        out[i:i + block] = np.partition(D, k, axis=1)[:, k]
    return out


def prdc(real, fake, nearest_k: int = 5, block: int = BLOCK_ROWS) -> dict:
    """Precision, recall, density and coverage of ``fake`` (m, d) against ``real`` (n, d).

    Same definitions and values as ``prdc.compute_prdc(real, fake, nearest_k)``:
    precision = share of fake rows within some real row's k-NN radius; recall = share of real rows
    within some fake row's k-NN radius; density = mean over fake rows of (number of real balls
    holding it) / k; coverage = share of real rows whose nearest fake row lies within its radius.
    Computed ``block`` real rows at a time.
    """
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    r_real, r_fake = knn_radii(real, nearest_k, block), knn_radii(fake, nearest_k, block)
    sr, sf = _sq(real), _sq(fake)
    in_balls = np.zeros(fake.shape[0])  # per fake row: number of real balls holding it
    recalled = np.zeros(real.shape[0], dtype=bool)
    covered = np.zeros(real.shape[0], dtype=bool)
    for i in range(0, real.shape[0], block):
        D = _distances(real[i:i + block], fake, sr[i:i + block], sf)
        inside = D < r_real[i:i + block, None]
        in_balls += inside.sum(axis=0)
        recalled[i:i + block] = (D < r_fake[None, :]).any(axis=1)
        covered[i:i + block] = D.min(axis=1) < r_real[i:i + block]
    return {"precision": float((in_balls > 0).mean()), "recall": float(recalled.mean()),
            "density": float(in_balls.mean() / nearest_k), "coverage": float(covered.mean()),
            "nearest_k": int(nearest_k)}


def outlying_items(whitener, Q, ids=None, *, fdr: float = 0.1) -> dict:
    """Conformal p-values (``pvalue_conformal``) of the rows Q under ``whitener`` (fitted on the
    reference with calibration), their BH q-values, and the rows with q <= ``fdr``.

    Returns a dict: ``pvalue`` and ``qvalue`` arrays, ``flagged`` (list of {id, pvalue, qvalue},
    smallest p first), ``n_flagged``, ``fdr``.
    """
    from whitenclip.likelihood import CalibrationWarning, bh_qvalues, conformal_unavailable, score

    if not 0.0 < fdr < 1.0:
        raise InputError(f"--fdr must be in (0, 1), got {fdr}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)  # the Hotelling p-value is not used here
        table = score(whitener, Q, ids)
    if table.pvalue_conformal is None:
        raise InputError(conformal_unavailable(whitener) or "no conformal p-values")
    p = np.asarray(table.pvalue_conformal, dtype=np.float64)
    q = bh_qvalues(p)
    names = table.row_ids()
    hits = np.flatnonzero(q <= fdr)
    hits = hits[np.argsort(p[hits], kind="stable")]
    flagged = [{"id": names[i], "pvalue": float(p[i]), "qvalue": float(q[i])} for i in hits]
    return {"pvalue": p, "qvalue": q, "flagged": flagged, "n_flagged": len(flagged), "fdr": float(fdr)}
