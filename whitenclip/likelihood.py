"""Per-row likelihood scores under a fitted whitener.

With w = (x - mu) @ W and r the kept rank:

* ``sqnorm``  = ||w||^2 (the squared Mahalanobis distance on the kept rank);
* ``loglik``  = -1/2 (r log 2 pi + ||w||^2): the W-CLIP score, the log-density of w under
  N(0, I_r); comparable between rows scored with the same W only;
* ``logpdf``  = loglik + log|det W|: the Gaussian log-density of x itself,
  log N(x; mu, Sigma) = -1/2 (r log 2 pi + log det Sigma_r + ||w||^2);
* ``pvalue``  = P(T2' >= T2) for a *new* row under the Hotelling predictive law: with n fit
  rows, T2 = n/(n+1) ||w||^2 and (n - r)/(r (n - 1)) T2 ~ F(r, n - r). When n <= r + 1 the
  F law does not exist and the chi2(r) tail is used instead (with a warning);
* ``pvalue_chi2`` = P(chi2_r >= ||w||^2), the n -> infinity limit.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

COLUMNS = ("loglik", "logpdf", "sqnorm", "pvalue")
LOG_2PI = float(np.log(2.0 * np.pi))


class CalibrationWarning(UserWarning):
    """The calibrated (F-law) p-value is unavailable; the chi2 approximation was used."""


def squared_norms(whitened: np.ndarray) -> np.ndarray:
    """||w_i||^2 for each row of w, shape (m, k) -> (m,), accumulated in float64."""
    w = np.asarray(whitened, dtype=np.float64)
    return np.einsum("ij,ij->i", w, w)


def loglik_from_sqnorm(sqnorm: np.ndarray, rank: int) -> np.ndarray:
    """W-CLIP log-likelihood -1/2 (r log 2 pi + ||w||^2), shape (m,)."""
    return -0.5 * (rank * LOG_2PI + np.asarray(sqnorm, dtype=np.float64))


def f_law_applies(n_samples: int | None, rank: int) -> bool:
    """True when the Hotelling predictive F(r, n - r) law is defined (n known and n > r + 1)."""
    return n_samples is not None and n_samples > rank + 1


def pvalue_hotelling(sqnorm: np.ndarray, n_samples: int, rank: int) -> np.ndarray:
    """Upper-tail p-value of a new row: F.sf((n - r)/(r (n - 1)) * n/(n + 1) * ||w||^2; r, n - r)."""
    n, r = float(n_samples), float(rank)
    t2 = n / (n + 1.0) * np.asarray(sqnorm, dtype=np.float64)
    return stats.f.sf((n - r) / (r * (n - 1.0)) * t2, r, n - r)


def pvalue_chi2(sqnorm: np.ndarray, rank: int) -> np.ndarray:
    """Upper-tail p-value P(chi2_r >= ||w||^2), the large-n limit."""
    return stats.chi2.sf(np.asarray(sqnorm, dtype=np.float64), rank)


def score(whitener, X) -> dict[str, np.ndarray]:
    """Score rows X of shape (m, d) under a fitted :class:`~whitenclip.whitening.Whitener`.

    Returns a dict of float64 arrays of shape (m,): ``sqnorm``, ``loglik``, ``logpdf``,
    ``pvalue`` (Hotelling predictive F law, chi2 fallback) and ``pvalue_chi2``.
    """
    sq = squared_norms(whitener.transform(X))
    r = int(whitener.rank_)
    loglik = loglik_from_sqnorm(sq, r)
    p_chi2 = pvalue_chi2(sq, r)
    if f_law_applies(whitener.n_samples_, r):
        p = pvalue_hotelling(sq, whitener.n_samples_, r)
    else:
        warnings.warn(f"calibrated p-value needs n > rank + 1 (n={whitener.n_samples_}, rank={r}); "
                      "using the chi2 approximation", CalibrationWarning, stacklevel=2)
        p = p_chi2
    return {"sqnorm": sq, "loglik": loglik, "logpdf": loglik + whitener.log_det_, "pvalue": p, "pvalue_chi2": p_chi2}
