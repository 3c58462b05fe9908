"""Covariance shrinkage towards (tr Sigma / d) I: OAS and Ledoit-Wolf intensities (from rows or from
streamed sums), the ``shrinkage="auto"`` rule, and parsing a command line's ``--shrinkage``."""

from __future__ import annotations

import numpy as np

from whitenclip.errors import InputError
from whitenclip.validation import as_matrix

SHRINKAGES = (None, "ledoit-wolf", "oas")
"""The shrinkage choices an artifact records (``"auto"`` is recorded as what it chose, with ``shrinkage_rule``)."""
AUTO_ROWS_PER_DIM = 10
"""``shrinkage="auto"`` (the ``fit`` command's default) applies OAS when n < 10 d, none from 10 d rows on.

Measured (3 reference draws each; share of held-out rows with pvalue_conformal < 0.05 / share of junk
flagged): without shrinkage the calibration is all +inf at n <= d + 1 (every p-value 1.0, junk too)
and useless just above (MiniLM Flickr8k captions, d = 384, n = d: 0.000 / 0.10 for junk at the
captions' norm); with OAS 0.053-0.055 / 1.00 at n = d/2, d, 2d. Gaussian rows with a k^-1.5 spectrum
(d = 512): OAS 0.042-0.043 / 1.00 at n = d/2, d. Held-out logpdf (nats per row), OAS vs none: MiniLM
+174 vs +65 at 2 d, +206 vs +191 at 5 d, +219 vs +210 at 10 d; k^-1.5 spectrum (d = 512) +1274 vs
+1273 at 10 d, +1282.2 vs +1281.9 at 20 d. The exception: a small d whose variances span decades
(d = 40, standard deviations 3 to 0.05), where the identity target is too flat: none gives the better
density from 2 d on (-25.6 vs -32.9 at 3 d, -20.1 vs -25.8 at 10 d; conformal level and junk flagged
the same), so pass ``--shrinkage none`` there. OAS and Ledoit-Wolf gave the same numbers to 0.5 nat
everywhere; OAS needs no second pass over the rows (nor power sums in moments files). So the rule
shrinks wherever the sample covariance is poor and keeps the exact covariance (the W-CLIP estimator)
once rows are plentiful; ``--shrinkage oas`` still gains a little there on high-d embeddings."""


def oas_shrinkage(cov: np.ndarray, n_samples: int) -> float:
    """Oracle Approximating Shrinkage intensity (Chen et al. 2010), as in sklearn's ``oas``.

    ``cov`` is the ``ddof=0`` covariance S (d, d) of ``n_samples`` rows. With mu = tr(S)/d and
    alpha = mean(S**2) (the mean of its d^2 squared entries),

        num = alpha + mu^2,  den = (n + 1) (alpha - mu^2 / d),  shrinkage = min(num / den, 1)

    (1 when den = 0). The shrunk covariance is (1 - a) S + a mu I (:func:`shrink`).
    See :func:`oas_shrinkage_of_rows` for rows, :func:`shrinkage_intensity` for any choice.
    """
    d = cov.shape[0]
    mu = np.trace(cov) / d
    alpha = np.mean(cov**2)
    num = alpha + mu**2
    den = (n_samples + 1.0) * (alpha - mu**2 / d)
    return 1.0 if den == 0 else float(min(num / den, 1.0))


def ledoit_wolf_shrinkage_from_sums(cov0: np.ndarray, n_samples: int, sum_sqnorm4: float) -> float:
    """Ledoit-Wolf (2004) shrinkage intensity from streamed sums (sklearn's formula).

    cov0 is the ddof=0 covariance S (d, d) and sum_sqnorm4 = sum_i ||x_i - mu||^4, the only
    fourth-moment quantity the estimator needs:

        m = tr(S)/d,  delta = ||S||_F^2/d - m^2,
        beta = (sum_i ||x_i - mu||^4 / n - ||S||_F^2) / (d n),
        shrinkage = min(beta, delta) / delta          (0 when delta <= 0).

    Equals ``sklearn.covariance.ledoit_wolf_shrinkage``. See :func:`ledoit_wolf_shrinkage` for rows.
    """
    d = cov0.shape[0]
    mu = np.trace(cov0) / d
    fro2 = float(np.sum(cov0**2))
    delta = fro2 / d - mu**2
    beta = max((sum_sqnorm4 / n_samples - fro2) / (d * n_samples), 0.0)  # >= 0 for true sums: keeps [0, 1]
    if delta <= 0:
        return 0.0
    return float(min(beta, delta) / delta)


def _centred_rows(X, assume_centered: bool) -> np.ndarray:
    X = as_matrix(X, min_rows=1)
    return X if assume_centered else X - X.mean(axis=0)


def ledoit_wolf_shrinkage(X, *, assume_centered: bool = False) -> float:
    """Ledoit-Wolf intensity of rows X (n, d): :func:`ledoit_wolf_shrinkage_from_sums` of their
    ddof=0 covariance (around 0 when ``assume_centered``, else around their mean) and
    sum ||x_i - mu||^4; equals ``sklearn.covariance.ledoit_wolf_shrinkage(X, assume_centered=...)``."""
    Xc = _centred_rows(X, assume_centered)
    n = Xc.shape[0]
    sq = np.einsum("ij,ij->i", Xc, Xc)
    return ledoit_wolf_shrinkage_from_sums(Xc.T @ Xc / n, n, float(np.sum(sq**2)))


def oas_shrinkage_of_rows(X, *, assume_centered: bool = False) -> float:
    """OAS intensity of rows X (n, d): :func:`oas_shrinkage` of their ddof=0 covariance (around 0
    when ``assume_centered``); equals ``sklearn.covariance.oas(X, assume_centered=...)[1]``."""
    Xc = _centred_rows(X, assume_centered)
    n = Xc.shape[0]
    return oas_shrinkage(Xc.T @ Xc / n, n)


def shrinkage_intensity(X, shrinkage, *, assume_centered: bool = False) -> float:
    """The intensity a in [0, 1] that ``shrinkage`` (None, "ledoit-wolf", "oas", "auto" or a float
    in [0, 1]) gives for rows X (n, d); None gives 0. InputError for anything else."""
    if shrinkage == "auto":
        X = as_matrix(X, min_rows=1)
        shrinkage = auto_shrinkage(*X.shape)[0]
    if shrinkage is None:
        return 0.0
    if isinstance(shrinkage, (int, float, np.integer, np.floating)) and not isinstance(shrinkage, (bool, np.bool_)):
        if not 0.0 <= float(shrinkage) <= 1.0:
            raise InputError(f"shrinkage must be in [0, 1], got {shrinkage}")
        return float(shrinkage)
    if shrinkage == "ledoit-wolf":
        return ledoit_wolf_shrinkage(X, assume_centered=assume_centered)
    if shrinkage == "oas":
        return oas_shrinkage_of_rows(X, assume_centered=assume_centered)
    raise InputError(f"shrinkage must be none, ledoit-wolf, oas or a float in [0, 1]; got {shrinkage!r}")


def sum_centered_sqnorm4(chunks, mean: np.ndarray) -> float:
    """sum_i ||x_i - mean||^4 over an iterable of (m, d) chunks (second pass for Ledoit-Wolf)."""
    total = 0.0
    for X in chunks:
        total += float(np.sum(np.sum((np.asarray(X, dtype=np.float64) - mean) ** 2, axis=1) ** 2))
    return total


def parse_shrinkage(value: str | float | None, *, allow_auto: bool = False):
    """A shrinkage setting as given on a command line: None, "ledoit-wolf", "oas" or a float
    (and "auto" when ``allow_auto``: see :func:`auto_shrinkage`).

    >>> parse_shrinkage("LW"), parse_shrinkage("none"), parse_shrinkage("0.1"), parse_shrinkage("auto", allow_auto=True)
    ('ledoit-wolf', None, 0.1, 'auto')
    """
    if value is None or str(value).lower() in ("none", "no", "0"):
        return None
    text = str(value).lower()
    if text == "auto" and allow_auto:
        return "auto"
    if text in ("ledoit-wolf", "lw", "oas"):
        return "oas" if text == "oas" else "ledoit-wolf"
    try:
        return float(value)
    except ValueError:
        raise InputError(f"--shrinkage must be none, ledoit-wolf, oas or a number in [0, 1]; got {value!r}") from None


def auto_shrinkage(n_samples: int, n_features: int) -> tuple[str | None, str]:
    """What ``shrinkage="auto"`` chooses for n rows of dimension d, and the rule (one phrase):
    ``"oas"`` when n < :data:`AUTO_ROWS_PER_DIM` d (the sample covariance is then poorly conditioned,
    singular at n <= d, and its leave-one-out calibration infinite at n <= d + 1), else None.

    >>> auto_shrinkage(300, 512)
    ('oas', 'auto: oas, as n = 300 rows < 10 d = 5120')
    >>> auto_shrinkage(6000, 512)[0] is None
    True
    """
    limit = AUTO_ROWS_PER_DIM * int(n_features)
    if int(n_samples) < limit:
        return "oas", f"auto: oas, as n = {int(n_samples)} rows < {AUTO_ROWS_PER_DIM} d = {limit}"
    return None, f"auto: none, as n = {int(n_samples)} rows >= {AUTO_ROWS_PER_DIM} d = {limit}"


def shrink(cov: np.ndarray, shrinkage: float) -> np.ndarray:
    """Shrunk covariance (1 - a) Sigma + a (tr Sigma / d) I, for a in [0, 1]."""
    d = cov.shape[0]
    out = (1.0 - shrinkage) * cov
    out[np.diag_indices(d)] += shrinkage * np.trace(cov) / d
    return out


def resolve_shrinkage(shrinkage, cov: np.ndarray, n: int, sum4) -> tuple[float, object, str | None]:
    """``(intensity, choice, rule)`` of a fit's ``shrinkage`` setting for the ddof=1 covariance ``cov``
    of n rows: ``choice`` is the setting, or what ``"auto"`` chose (:func:`auto_shrinkage`), and
    ``rule`` why (None when not ``"auto"``); ``sum4`` = sum ||x - mean||^4 (Ledoit-Wolf only)."""
    choice, rule = shrinkage, None
    if choice == "auto":
        choice, rule = auto_shrinkage(n, cov.shape[0])
    if choice is None:
        return 0.0, choice, rule
    if choice == "oas":
        return oas_shrinkage(cov * (n - 1) / n, n), choice, rule
    if choice == "ledoit-wolf":
        if sum4 is None:
            raise InputError("ledoit-wolf shrinkage needs sum ||x - mean||^4 (a second pass over the rows)")
        return ledoit_wolf_shrinkage_from_sums(cov * (n - 1) / n, n, sum4), choice, rule
    return float(choice), choice, rule
