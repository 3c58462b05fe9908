"""Whitening transforms fitted on reference embeddings, and their safetensors artifact.

Given rows x in R^d with mean mu and covariance Sigma = V diag(lambda) V^T (eigenvalues in
descending order, ``ddof=1``), a whitening matrix W gives w = (x - mu) @ W with Cov(w) = I
on the kept rank r:

* ``pca``       W = V_r diag(lambda_r^{-1/2})            shape (d, r)  -- the W-CLIP form;
                w are principal coordinates with unit variance.
* ``zca``       W = V_r diag(lambda_r^{-1/2}) V_r^T      shape (d, d)  -- closest to identity.
* ``cholesky``  W = L^{-T} where Sigma = L L^T            shape (d, d)  -- triangular.

All three give the same squared norm ||w||^2 = (x - mu)^T Sigma_r^+ (x - mu) and the same
log|det W| = -1/2 sum_{i<=r} log lambda_i over the kept rank.

Directions whose eigenvalue is below ``floor * lambda_max`` (constant coordinates, n <= d,
duplicated rows) or past ``rank`` are dropped with a :class:`RankDeficiencyWarning`; the
reason is kept in ``dropped_`` and in the artifact's metadata.

Conformal calibration
---------------------
The Gaussian p-values of :mod:`whitenclip.likelihood` trust the Gaussian law of the rows. For a
distribution-free p-value the fit also keeps *calibration distances*: the leave-one-out squared
distances of (a uniform sample of) the reference rows. With D_i^2 = (x_i - mu)^T Sigma^{-1}
(x_i - mu) the in-sample distance under the ``ddof=1`` covariance of all n rows, the distance of
x_i to the mean and covariance of the *other* n - 1 rows is, in closed form (no refit; the mean
moves by (x_i - mu)/(n - 1) and the scatter loses a rank-one term, Sherman-Morrison),

    D_(i)^2 = (n - 2) n^2 / (n - 1)^3 * D_i^2 / (1 - n D_i^2 / (n - 1)^2).

A new row x with distance s = ||w||^2 then gets p = (1 + #{i : D_(i)^2 >= s}) / (n_cal + 1),
valid for any distribution of exchangeable rows (see :func:`calibration_distances`, which also
covers shrinkage and rank truncation, and :class:`~whitenclip.moments.Reservoir` for the sample).

Rows that come in groups (captions of one image, frames of one clip) are exchangeable only group
by group: ``fit(X, groups=...)`` samples whole groups and leaves each row's whole group out (a
rank-k update, :func:`calibration_distances`); without groups, :func:`grouping_check` warns when
the rows look grouped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator, TransformerMixin

from whitenclip import config
from whitenclip.config import CHUNK_ROWS
from whitenclip.errors import InputError, NotFittedError, RankDeficiencyWarning
from whitenclip.moments import RESERVOIR_KEY, Moments, Reservoir
from whitenclip.results import Result, json_safe
from whitenclip.validation import as_matrix

ARTIFACT_FORMAT = "whitenclip-whitener"
ARTIFACT_VERSION = 1
METHODS = ("pca", "zca", "cholesky")
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
DEFAULT_FLOOR = 1e-10
DEFAULT_CALIBRATION_ROWS = config.CALIBRATION_ROWS
"""m, the most reference rows whose leave-one-out distances calibrate ``pvalue_conformal``.

Conformal p-values then move in steps of 1/(m + 1) = 2.0e-4; at the 0.05 level the p-value of a
given row varies between calibration samples by about sqrt(0.05 * 0.95 / m) = 0.003 (6% of 0.05);
the sample costs m * d float64 (29 MiB at d = 768, next to a 100 MiB float64 chunk of 16,384 rows)
during the fit and 8 bytes per row in the artifact (39 KiB), and one (m, d) x (d, r) product after
the eigendecomposition (about 0.2 CPU-seconds at d = 768). Fewer rows would coarsen small
p-values (m = 1000: steps of 1e-3, the 0.05 level known to +-0.007); more buy little."""


# ---------------------------------------------------------------------------------------
# shrinkage intensities
# ---------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------
# leave-one-out calibration distances
# ---------------------------------------------------------------------------------------
def loo_sqdist(sqdist, n_samples: int) -> np.ndarray:
    """Leave-one-out squared Mahalanobis distances from in-sample ones (no shrinkage, full rank).

    ``sqdist`` holds D_i^2 = (x_i - mu)^T Sigma^{-1} (x_i - mu) of reference rows x_i under the
    ``ddof=1`` mean and covariance of all n reference rows; returns the distance of each x_i to
    the mean and ``ddof=1`` covariance of the other n - 1 rows:

        D_(i)^2 = (n - 2) n^2 / (n - 1)^3 * D_i^2 / (1 - n D_i^2 / (n - 1)^2).

    A row the others do not span (1 - n D_i^2/(n-1)^2 <= 1e-9: its leave-one-out covariance is
    singular along it) gets +inf.
    """
    n = float(n_samples)
    if n < 3:
        raise InputError(f"leave-one-out distances need n >= 3 reference rows, got {n_samples}")
    D2 = np.asarray(sqdist, dtype=np.float64)
    den = 1.0 - n * D2 / (n - 1.0) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (n - 2.0) * n**2 / (n - 1.0) ** 3 * D2 / den
    return np.where(den > 1e-9, out, np.inf)


def calibration_distances(whitener: "Whitener", rows, groups=None) -> np.ndarray:
    """Leave-one-out (or leave-one-group-out) squared distances of reference ``rows`` (m, d).

    Each row must be one of the whitener's n reference rows; ``groups`` (m labels, or None: every
    row its own group) names the rows that must leave together: every reference row of a group
    must be among ``rows`` (a :class:`~whitenclip.moments.Reservoir` samples whole groups). A row's
    distance is taken to the mean and covariance refitted on the n - k reference rows outside its
    group G (k = |G|), in closed form, as a rank-k update of the fitted moments (no refit):

    With a_j = x_j - mu (j in G, stacked as A, k x d), s_G = A^T 1 and the ddof=1 scatter
    S = (n - 1) Sigma, the rows outside G have mean mu - s_G/(n - k) and scatter
    S' = S - A^T P A, P = I_k + 1 1^T/(n - k), and the rows of G sit at y_j = P A from that mean.
    In the eigenbasis V_r of the fitted (shrunk) covariance, with Z = A V_r (k x r), eigenvalues
    lambda (r,), shrinkage intensity a (held fixed) and t_G = tr(A^T P A), the refitted shrunk
    covariance (1 - a) S'/(n-k-1) + a tr(S')/(d (n-k-1)) I is E - c Z^T P Z with
    E = diag(((n - 1) lambda - a t_G / d) / (n - k - 1)) and c = (1 - a)/(n - k - 1); Woodbury,
    with P^-1 = Q = I_k - 1 1^T/n, gives the k x k solve

        D_(j)^2 = [P G (Q - c G)^-1]_jj,   G = Z E^-1 Z^T   (k x k),

    which for k = 1 and a = 0 is :func:`loo_sqdist`. Exactness, case by case:

    * no shrinkage, full rank: exact (it equals a refit without the group).
    * shrinkage a > 0: exact for the *intensity a held fixed* (a float ``shrinkage``); Ledoit-Wolf
      and OAS would re-estimate a on n - k rows, which moves it by O(k/n) (not modelled).
    * rank truncation (``rank`` or ``floor`` dropping directions): the kept subspace V_r is held
      fixed and only the mean and covariance within it are refitted. This is exact for the
      projected rows (new rows are scored in that same subspace). A refit from scratch would also
      re-pick the subspace, away from the rows left out: its distances came out smaller in every
      row we checked (n = 120, d = 12, r = 5: median 3%, up to 60% for high-leverage rows), so
      holding the subspace errs on the conservative side (larger p-values). Directions dropped
      for constant coordinates or duplicated rows change nothing.

    Rows whose group the other rows do not span get +inf: without shrinkage every row of a group of
    k rows when n - k - 1 < r (the other rows' covariance is singular in the kept subspace: n <= d,
    n = d + 1, or a group holding most rows), with shrinkage when n - k - 1 <= 0; otherwise a row
    whose Q - c G is not positive definite. Such a calibration is flagged by
    :func:`degenerate_calibration` (the conformal p-value of every new row would be near 1).
    Cost: O(m r) for the projections plus one k x k solve per group.
    """
    whitener._check_fitted()
    n = whitener.n_samples_
    if n is None or n < 3:
        raise InputError(f"calibration distances need the number of reference rows n >= 3, got {n}")
    X = as_matrix(rows, "calibration rows")
    s = float(whitener.shrinkage_)
    d, r = whitener.n_features_, whitener.rank_
    if groups is None and r == d and s == 0.0:
        if n - 2 < r:  # the other n - 1 rows have rank n - 2 < r: their covariance is singular
            return np.full(X.shape[0], np.inf)
        return loo_sqdist(squared_norms(whitener.transform(X)), n)
    if groups is None:
        inverse = np.arange(X.shape[0])
    else:
        if len(groups) != X.shape[0]:
            raise InputError(f"{len(groups)} group labels for {X.shape[0]} calibration rows")
        inverse = np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    a = X - whitener.mean_
    z = a @ whitener.components_
    sq = np.einsum("ij,ij->i", a, a)
    lam, nf = np.asarray(whitener.eigenvalues_, dtype=np.float64), float(n)
    out = np.full(X.shape[0], np.inf)
    order = np.argsort(inverse, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(inverse[order]) != 0])
    sizes = np.diff(np.r_[starts, order.size])
    for k in np.unique(sizes):
        if nf - k - 1 <= 0 or (s == 0.0 and nf - k - 1 < r):  # exact rule: round-off gave 1e12-size distances
            continue
        idx = np.stack([order[st:st + k] for st in starts[sizes == k]])  # (g, k) rows of the groups of size k
        Zg, ag = z[idx], a[idx]  # (g, k, r), (g, k, d)
        sum_a = ag.sum(axis=1)
        t_G = sq[idx].sum(axis=1) + np.einsum("gi,gi->g", sum_a, sum_a) / (nf - k)
        e = ((nf - 1.0) * lam[None, :] - s * t_G[:, None] / d) / (nf - k - 1.0)  # (g, r)
        c = (1.0 - s) / (nf - k - 1.0)
        ok = (e > 0).all(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            G = np.einsum("gir,gjr->gij", Zg / np.where(ok[:, None], e, 1.0)[:, None, :], Zg)
        one = np.ones((k, k))
        P, Q = np.eye(k) + one / (nf - k), np.eye(k) - one / nf
        B = Q[None] - c * G
        ok &= np.linalg.eigvalsh(B)[:, 0] > 1e-9
        B[~ok] = np.eye(k)
        D2 = np.einsum("gjj->gj", np.linalg.solve(B, G @ P))  # diag(B^-1 G P) = diag(P G B^-1)
        out[idx[ok]] = D2[ok]
    return out


DEGENERATE_INFINITE_SHARE = 0.01
"""A calibration with more than this share of infinite leave-one-out distances is degenerate: no
row could get a conformal p-value below (1 + n_inf) / (n_cal + 1) > 0.01."""
DEGENERATE_GROUP_SHARE = 0.5
"""A calibration whose largest group holds more than this share of its rows is degenerate."""


class DegenerateCalibrationWarning(UserWarning):
    """The calibration cannot give conformal p-values (see :func:`degenerate_calibration`)."""


def degenerate_calibration(distances, *, largest_group: int | None = None, n_groups: int | None = None) -> str | None:
    """Why leave-one-out (or leave-one-group-out) ``distances`` cannot calibrate conformal p-values,
    in one line, or None when they can.

    Degenerate when one group holds more than half of the calibration rows (its rows are then
    calibrated against a covariance fitted on a minority of the rows, or on none: +inf), or when more than
    1% of the distances are +inf (:func:`calibration_distances`: the other rows do not span the
    ones left out, e.g. n <= d + 1 without shrinkage): the smallest p-value any row could get is
    then (1 + n_inf) / (n_cal + 1), 1.0 when all are infinite, junk included.

    >>> degenerate_calibration(np.r_[np.ones(290), np.full(10, np.inf)])[:61]
    'degenerate calibration: 10 of 300 leave-one-out distances are'
    >>> degenerate_calibration(np.ones(300)) is None
    True
    """
    cal = np.asarray(distances, dtype=np.float64)
    m, n_inf = int(cal.size), int(np.sum(np.isinf(cal)))
    if largest_group is not None and m and largest_group > DEGENERATE_GROUP_SHARE * m:
        return (f"degenerate calibration: one group holds {largest_group} of the {m} calibration rows"
                + (f" ({n_groups} group{'s' * (n_groups != 1)})" if n_groups else "")
                + ": most distances are measured with it left out (infinite when it holds all), so pvalue_conformal "
                "would be too large for every row, junk included; give finer groups (--groups FILE, "
                "--group-column NAME) or --no-groups")
    if m and n_inf > DEGENERATE_INFINITE_SHARE * m:
        kind = "leave-one-out" if largest_group is None and not n_groups else "leave-one-group-out"
        return (f"degenerate calibration: {n_inf} of {m} {kind} distances are infinite (the other rows do not span "
                f"the ones left out: too few rows for the rank, without shrinkage), so no row could get "
                f"pvalue_conformal below {(1.0 + n_inf) / (m + 1.0):.3g}; refit with shrinkage (--shrinkage auto or "
                "oas) or more rows")
    return None


def squared_norms(w: np.ndarray) -> np.ndarray:
    """||w_i||^2 of each row, (m, k) -> (m,), float64."""
    w = np.asarray(w, dtype=np.float64)
    return np.einsum("ij,ij->i", w, w)


# ---------------------------------------------------------------------------------------
# grouped references: the rows of one group travel together
# ---------------------------------------------------------------------------------------
class GroupedRowsWarning(UserWarning):
    """The reference rows look grouped (several rows per image / clip / source), and no groups were given."""


class _GroupId(str):
    """A row id carrying its group id (``.group``) through the row filters of :mod:`whitenclip.stores`."""

    group = None


class GroupTagged:
    """A source whose row ids carry the source's ``groups`` (one id per row, in row order)."""

    def __init__(self, source):
        self.source = source

    def __getattr__(self, name):
        return getattr(self.source, name)

    def iter_chunks(self, chunk_rows: int = CHUNK_ROWS, **kw):
        groups, seen = getattr(self.source, "groups", None), 0
        for ids, X in self.source.iter_chunks(chunk_rows, **kw):
            tagged = [_GroupId(i) for i in ids]
            if groups is not None:
                if seen + len(tagged) > len(groups):
                    raise InputError(f"{self.source.path}: {len(groups)} group ids for more rows than that")
                for t, g in zip(tagged, groups[seen:seen + len(tagged)]):
                    t.group = g
            seen += len(tagged)
            yield tagged, X
        if groups is not None and seen != len(groups):
            raise InputError(f"{self.source.path}: {len(groups)} group ids for {seen} rows")


GROUPING_K = 4
"""Neighbours per row in :func:`grouping_check`."""
GROUPING_ADJACENT = 0.1
"""Excess cosine of rows adjacent in the input over random pairs, first condition of :func:`grouping_check`."""
GROUPING_THRESHOLD = 0.25
"""Excess k-NN transitivity over a Gaussian twin, second condition of :func:`grouping_check`."""
GROUPING_DIMS = 128
"""Rows wider than this are randomly projected to this many dimensions for the k-NN graph."""


@dataclasses.dataclass(frozen=True)
class GroupingCheck(Result):
    """What :func:`grouping_check` found (None where it did not get that far) and its warning."""

    n_rows: int
    n_adjacent: int
    adjacent_excess: float | None
    adjacent_z: float | None
    transitivity: float | None
    gaussian_transitivity: float | None
    excess: float | None
    warning: str | None


def knn_transitivity(X, k: int = GROUPING_K) -> float:
    """Transitivity of the k-NN graph of rows X (m, d) by cosine of the centred rows: the share of
    ordered pairs (a, b) of a row's k nearest neighbours with b among a's k nearest neighbours.
    Products in X's precision, blocks of 1024 rows: O(m^2 d) time, O(1024 m) memory."""
    Y = _unit_centred(X)
    m = Y.shape[0]
    nn = np.empty((m, k), dtype=np.int64)
    for lo in range(0, m, 1024):
        hi = min(lo + 1024, m)
        S = Y[lo:hi] @ Y.T
        S[np.arange(hi - lo), np.arange(lo, hi)] = -np.inf
        nn[lo:hi] = np.argpartition(-S, k - 1, axis=1)[:, :k]
    edges = np.sort((np.arange(m)[:, None] * m + nn).ravel())
    a, b = np.triu_indices(k, 1)
    pairs = np.concatenate([nn[:, a] * m + nn[:, b], nn[:, b] * m + nn[:, a]], axis=1).ravel()
    at = np.minimum(np.searchsorted(edges, pairs), edges.size - 1)
    return float(np.mean(edges[at] == pairs))


def _unit_centred(X) -> np.ndarray:
    X = np.asarray(X)
    Y = X - X.mean(axis=0)
    norm = np.linalg.norm(Y, axis=1)
    return Y / np.where(norm > 0, norm, 1.0)[:, None]


def grouping_check(rows, positions=None, *, seed: int = 0) -> GroupingCheck:
    """Do these (calibration) rows look like several rows per unit (captions per image, frames per clip)?

    ``positions`` (m,) are the rows' places in the input (default: ``rows`` are in input order).
    Rule: the rows look grouped when both

    1. rows *adjacent in the input* (positions p and p + 1, both in the sample) are more alike
       than random pairs: their mean cosine (centred rows) exceeds that of the same rows in a
       seeded random order by more than 0.1 and by more than 5 standard errors, with at least 50
       adjacent pairs. Exchangeable rows have no such excess, however they are ordered; files
       that store each image's captions (or each clip's frames) together have a large one; and
    2. the rows form near-cliques: the transitivity of the 4-nearest-neighbour graph (cosine of
       centred rows, randomly projected to 128 dimensions when d is larger) exceeds that of a
       Gaussian twin (same mean and covariance, as many rows) by more than 0.25. This spares
       files that are merely sorted (adjacent rows alike, but no cliques).

    Measured (MiniLM, d = 384): 5 captions per Flickr8k image in file order: adjacent excess 0.47,
    transitivity 0.54 vs 0.09 (n = 1000) and 0.43 vs 0.07 (n = 3000); one caption per random
    image: adjacent excess < 0.01, transitivity excess 0.11-0.17; the demo's 4000 captions drawn
    from a grammar (a population full of near-duplicates, but drawn independently): adjacent
    excess < 0.01 (transitivity alone would have called them grouped: excess 0.51). When the rows
    look grouped, the leave-one-out calibration flags too many new rows (8-13% instead of 5% at
    n = 1000), and the warning names the remedy.

    What it cannot see: groups whose rows are scattered through the input (shuffled), and groups
    when the sample holds a small share of the rows (n >> m: few adjacent pairs are sampled; the
    harm shrinks too, siblings moving a row's distance by O(k d / n)). Cost: O(m d) for the
    first condition; the k-NN graphs (two m x m x 128 float32 products) only when it holds.
    """
    X = as_matrix(rows, "rows")
    m, d = X.shape
    pos = np.arange(m) if positions is None else np.asarray(positions, dtype=np.int64)
    order = np.argsort(pos, kind="stable")
    Y = _unit_centred(X)[order]
    adjacent = np.flatnonzero(np.diff(pos[order]) == 1)
    out = dict(n_rows=m, n_adjacent=int(adjacent.size), adjacent_excess=None, adjacent_z=None, transitivity=None,
               gaussian_transitivity=None, excess=None, warning=None)
    if adjacent.size < 50 or m < 10 * (GROUPING_K + 1):
        return GroupingCheck(**out)
    rng = np.random.default_rng(seed)
    near = np.einsum("ij,ij->i", Y[adjacent], Y[adjacent + 1])
    perm = rng.permutation(m)
    far = np.einsum("ij,ij->i", Y[perm[:-1]], Y[perm[1:]])
    excess = float(near.mean() - far.mean())
    z = excess / float(np.sqrt(near.var() / near.size + far.var() / far.size) or np.inf)
    out.update(adjacent_excess=excess, adjacent_z=z)
    if excess <= GROUPING_ADJACENT or z <= 5:
        return GroupingCheck(**out)
    Z = X - X.mean(axis=0)
    if d > GROUPING_DIMS:
        Z = Z @ (rng.standard_normal((d, GROUPING_DIMS)) / np.sqrt(GROUPING_DIMS))
    lam, V = np.linalg.eigh(Z.T @ Z / (m - 1))
    twin = (rng.standard_normal(Z.shape) * np.sqrt(np.clip(lam, 0.0, None))) @ V.T
    t, t0 = knn_transitivity(Z.astype(np.float32)), knn_transitivity(twin.astype(np.float32))
    out.update(transitivity=t, gaussian_transitivity=t0, excess=t - t0)
    if t - t0 > GROUPING_THRESHOLD:
        out["warning"] = (
            f"reference rows look grouped (rows next to each other are alike, cosine +{excess:.2f}, and form "
            f"near-cliques), e.g. several captions per image: pvalue_conformal would flag too many new rows; "
            "pass --group-column NAME or --groups FILE (fit(X, groups=...))")
    return GroupingCheck(**out)


# ---------------------------------------------------------------------------------------
# the estimator
# ---------------------------------------------------------------------------------------
class Whitener(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """Linear whitening w = (x - mean_) @ W_ fitted on reference rows; a Gaussian density model.

    A scikit-learn estimator: ``get_params``/``set_params``, ``clone``, ``Pipeline`` and
    ``GridSearchCV`` work (``score`` is the mean held-out log-density, so a grid search picks
    the ``shrinkage`` with the best held-out likelihood).

    Parameters
    ----------
    method : {"pca", "zca", "cholesky"}, default "pca"
        Form of W (see module doc). ``pca`` is the W-CLIP form.
    shrinkage : None, "ledoit-wolf", "oas", "auto" or float in [0, 1], default None
        Covariance shrinkage towards (tr Sigma / d) I before the eigendecomposition. ``"auto"``
        (the ``fit`` command's default) picks OAS when n < 10 d, else none (:func:`auto_shrinkage`).
        The estimator's default stays None: the exact sample covariance, as
        ``sklearn.covariance.EmpiricalCovariance``; at small n its calibration is then degenerate
        (see ``calibration_degenerate_``).
    floor : float, default 1e-10
        Eigenvalues below ``floor * lambda_max`` are dropped (relative floor).
    rank : int or None, default None
        Keep at most this many leading directions.
    calibration : bool, default True
        Keep leave-one-out distances of up to ``calibration_rows`` reference rows for the
        conformal p-value (:func:`calibration_distances`).
    calibration_rows : int, default 5000
        m, the most reference rows sampled for calibration (all rows when n <= m); conformal
        p-values have resolution 1/(n_cal + 1). See :data:`DEFAULT_CALIBRATION_ROWS`.
    calibration_seed : int, default 0
        Seed of the sample (:class:`~whitenclip.moments.Reservoir`: bottom-m keys of the row positions).

    Attributes
    ----------
    mean_ : ndarray of shape (d,)
    W_ : ndarray of shape (d, r) for pca, (d, d) for zca and cholesky
    unwhiten_ : ndarray of shape (r, d) or (d, d)
        Right inverse used by :meth:`inverse_transform`: x = mean_ + w @ unwhiten_.
    components_ : ndarray of shape (d, r)
        Eigenvectors of ``covariance_`` as columns, descending eigenvalue.
    eigenvalues_ : ndarray of shape (r,)
        Kept eigenvalues, descending.
    all_eigenvalues_ : ndarray of shape (d,)
        All eigenvalues of ``covariance_``, descending, negative round-off clipped to 0.
    covariance_ : ndarray of shape (d, d)
        The (shrunk) covariance, ddof=1.
    shrinkage_ : float
        Shrinkage intensity applied (0 when none).
    shrinkage_choice_ : None, "ledoit-wolf", "oas" or float
        The shrinkage applied: ``shrinkage``, or what ``"auto"`` chose.
    shrinkage_rule_ : str or None
        Why ``"auto"`` chose it (``"auto: oas, as n = 300 rows < 10 d = 5120"``); None when not ``"auto"``.
    rank_ : int
        r, the kept rank.
    n_samples_, n_features_ : int
    n_features_in_ : int
        d (scikit-learn's name).
    log_det_ : float
        log|det W| over the kept rank = -1/2 sum log eigenvalues_.
    dropped_ : dict
        {"n_dropped": int, "reason": str}.
    calibration_ : ndarray of shape (n_cal,) or None
        Leave-one-out squared distances of the calibration rows, ascending (may hold +inf);
        None when not computed (``calibration=False``, :meth:`fit_moments` without rows, an
        imported W, or an artifact written before calibration existed).
    calibration_groups_ : int or None
        Groups behind ``calibration_`` when the fit was given groups (leave-one-group-out), else None.
    calibration_warning_ : str or None
        The :class:`GroupedRowsWarning` of a fit without groups whose rows look grouped, or the
        :class:`DegenerateCalibrationWarning` (both, joined by "; ").
    calibration_degenerate_ : str or None
        Why the calibration cannot give conformal p-values (:func:`degenerate_calibration`: too
        many infinite leave-one-out distances, or one group holding most rows), else None. Scores
        then have no ``pvalue_conformal`` (never a silent 1.0).
    calibration_largest_group_ : int or None
        Rows of the largest calibration group (groups mode), else None.
    metadata_ : dict
        Free-form provenance (encoder, modality, normalized, input_hash, ...).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((500, 4)) @ np.diag([1, 2, 3, 4])
    >>> wh = Whitener().fit(X)
    >>> np.allclose(np.cov(wh.transform(X), rowvar=False), np.eye(4))
    True
    >>> wh.calibration_.shape
    (500,)
    """

    def __init__(self, method: str = "pca", shrinkage=None, floor: float = DEFAULT_FLOOR, rank: int | None = None,
                 calibration: bool = True, calibration_rows: int = DEFAULT_CALIBRATION_ROWS, calibration_seed: int = 0):
        self.method = method
        self.shrinkage = shrinkage
        self.floor = floor
        self.rank = rank
        self.calibration = calibration
        self.calibration_rows = calibration_rows
        self.calibration_seed = calibration_seed

    # -- validation ---------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"method must be one of {', '.join(METHODS)}; got {self.method!r}")
        s = self.shrinkage
        if not (s in (*SHRINKAGES, "auto")
                or (isinstance(s, (int, float)) and not isinstance(s, bool) and 0.0 <= s <= 1.0)):
            raise InputError(f"shrinkage must be none, ledoit-wolf, oas, auto or a float in [0, 1]; got {s!r}")
        if not (np.isfinite(self.floor) and 0.0 <= self.floor < 1.0):
            raise InputError(f"floor must be in [0, 1); got {self.floor!r}")
        if self.rank is not None and int(self.rank) < 1:
            raise InputError(f"rank must be >= 1; got {self.rank!r}")
        if self.calibration and int(self.calibration_rows) < 1:
            raise InputError(f"calibration_rows must be >= 1; got {self.calibration_rows!r}")

    def _new_reservoir(self, n_features: int) -> Reservoir | None:
        """The calibration sample a fit fills, or None when calibration is off."""
        if not self.calibration:
            return None
        return Reservoir(int(self.calibration_rows), n_features, seed=int(self.calibration_seed))

    # -- fitting ------------------------------------------------------------------------
    def fit(self, X, y=None, groups=None) -> "Whitener":
        """Fit on rows X of shape (n_samples, n_features); returns self.

        ``groups`` (n_samples ids, or None) names rows that are not independent of each other
        (captions of one image, frames of one clip, crops of one source): the calibration then
        samples whole groups and leaves each row's whole group out (:func:`calibration_distances`).
        """
        self._check_params()
        X = as_matrix(X)
        if groups is not None and len(groups) != X.shape[0]:
            raise InputError(f"groups has {len(groups)} ids for {X.shape[0]} rows")
        moments = Moments.from_array(X)
        sum4 = None
        if self.shrinkage == "ledoit-wolf":
            sum4 = sum_centered_sqnorm4([X], moments.mean)
        reservoir = self._new_reservoir(X.shape[1])
        if reservoir is None:
            return self.fit_moments(moments, sum_sqnorm4=sum4)
        reservoir.update(X, groups=None if groups is None else list(groups))
        return self.fit_moments(moments, sum_sqnorm4=sum4, calibration_sample=reservoir.rows,
                                calibration_groups=reservoir.keys if reservoir.grouped else None,
                                calibration_positions=reservoir.positions)

    def fit_moments(self, moments: Moments, *, sum_sqnorm4: float | None = None,
                    calibration_sample=None, calibration_groups=None, calibration_positions=None) -> "Whitener":
        """Fit from streamed :class:`Moments` (count, mean, scatter); returns self.

        ``sum_sqnorm4`` = sum_i ||x_i - mean||^4 is needed only for Ledoit-Wolf shrinkage
        (a second pass over the rows; see :func:`sum_centered_sqnorm4`).
        ``calibration_sample`` (m, d): reference rows (a uniform sample of the rows behind
        ``moments``, e.g. :attr:`Reservoir.rows`) whose leave-one-out distances become
        ``calibration_`` when ``calibration`` is on; without it ``calibration_`` is None.
        ``calibration_groups`` (m labels, e.g. :attr:`Reservoir.keys` of a grouped reservoir):
        rows of one label leave together (leave-one-group-out). Without it each row is left out
        alone, and the sample is checked for rows that look grouped (:func:`grouping_check`, with
        ``calibration_positions``: the rows' places in the input, default: the sample is in input order):
        when they do, ``calibration_warning_`` holds the one-line warning (also issued as a
        :class:`GroupedRowsWarning`).
        """
        self._check_params()
        n, d = moments.n, moments.n_features
        if n < 2:
            raise InputError(f"need at least 2 rows to fit a whitener, got {n}")
        cov = moments.covariance(ddof=1)
        self.shrinkage_ = self._shrinkage_intensity(cov, n, sum_sqnorm4)
        if self.shrinkage_ > 0:
            cov = shrink(cov, self.shrinkage_)
        self.mean_ = moments.mean.copy()
        self.covariance_ = cov
        self.n_samples_, self.n_features_ = int(n), int(d)
        self.n_features_in_ = int(d)
        lam, V = eigh_descending(cov)
        keep = self._kept_count(lam)
        if keep == 0:
            raise InputError("every coordinate is constant: nothing to whiten")
        self.dropped_ = self._explain_dropped(lam, keep, cov)
        self._set_basis(lam, V, keep, cov)
        self.metadata_ = {"input_hash": _moments_hash(moments), "input_hash_of": "moments (n, mean, scatter)"}
        self.calibration_ = self.calibration_groups_ = self.calibration_warning_ = None
        self.calibration_degenerate_ = self.calibration_largest_group_ = None
        if self.calibration and calibration_sample is not None and n >= 3:
            sample = as_matrix(calibration_sample, "calibration_sample")
            if sample.shape[1] != d:
                raise InputError(f"calibration_sample has dimension {sample.shape[1]}, the moments {d}")
            self.calibration_ = np.sort(calibration_distances(self, sample, calibration_groups))
            if calibration_groups is not None:
                counts = np.unique(np.asarray(calibration_groups), return_counts=True)[1]
                self.calibration_groups_, self.calibration_largest_group_ = int(counts.size), int(counts.max())
            else:
                self.calibration_warning_ = grouping_check(sample, calibration_positions).warning
                if self.calibration_warning_:
                    warnings.warn(self.calibration_warning_, GroupedRowsWarning, stacklevel=2)
            self.calibration_degenerate_ = degenerate_calibration(
                self.calibration_, largest_group=self.calibration_largest_group_, n_groups=self.calibration_groups_)
            if self.calibration_degenerate_:
                self.calibration_warning_ = "; ".join(w for w in (self.calibration_warning_,
                                                                  self.calibration_degenerate_) if w)
                warnings.warn(self.calibration_degenerate_, DegenerateCalibrationWarning, stacklevel=2)
        if self.dropped_["n_dropped"]:
            warnings.warn(f"kept rank {keep} of {d}: {self.dropped_['reason']}", RankDeficiencyWarning, stacklevel=2)
        return self

    def _shrinkage_intensity(self, cov: np.ndarray, n: int, sum4) -> float:
        """The intensity of ``shrinkage`` (resolving ``"auto"``); sets ``shrinkage_choice_``, ``shrinkage_rule_``."""
        choice, self.shrinkage_rule_ = self.shrinkage, None
        if choice == "auto":
            choice, self.shrinkage_rule_ = auto_shrinkage(n, cov.shape[0])
        self.shrinkage_choice_ = choice
        if choice is None:
            return 0.0
        if choice == "oas":
            return oas_shrinkage(cov * (n - 1) / n, n)
        if choice == "ledoit-wolf":
            if sum4 is None:
                raise InputError("ledoit-wolf shrinkage needs sum ||x - mean||^4 (a second pass over the rows)")
            return ledoit_wolf_shrinkage_from_sums(cov * (n - 1) / n, n, sum4)
        return float(choice)

    def _kept_count(self, lam: np.ndarray) -> int:
        lam_max = lam[0]
        if lam_max <= 0:
            return 0
        keep = int(np.sum(lam > self.floor * lam_max))
        if self.rank is not None:
            keep = min(keep, int(self.rank))
        return keep

    def _explain_dropped(self, lam: np.ndarray, keep: int, cov: np.ndarray) -> dict:
        d, n = lam.size, self.n_samples_
        reasons = []
        constant = int(np.sum(np.diag(cov) <= self.floor * lam[0]))
        if constant:
            reasons.append(f"{constant} constant coordinate(s)")
        if n - 1 < d:
            reasons.append(f"n={n} rows give rank at most n-1={n - 1} < d={d}")
        below = int(np.sum(lam <= self.floor * lam[0]))
        if below and not reasons:
            reasons.append(f"{below} eigenvalue(s) below floor {self.floor:g} x lambda_max "
                           "(collinear or duplicated rows)")
        elif below:
            reasons.append(f"{below} eigenvalue(s) below floor {self.floor:g} x lambda_max in all")
        if self.rank is not None and keep == int(self.rank) and keep < d - below:
            reasons.append(f"rank capped at {self.rank}")
        return {"n_dropped": int(d - keep), "reason": "; ".join(reasons) if d - keep else ""}

    def _set_basis(self, lam: np.ndarray, V: np.ndarray, keep: int, cov: np.ndarray) -> None:
        lam_r, V_r = lam[:keep], V[:, :keep]
        self.all_eigenvalues_ = lam
        self.eigenvalues_ = lam_r
        self.components_ = V_r
        self.rank_ = keep
        self.log_det_ = float(-0.5 * np.sum(np.log(lam_r)))
        inv_sqrt, sqrt = lam_r**-0.5, lam_r**0.5
        method = self.method
        if method == "cholesky" and keep < self.n_features_:
            warnings.warn("cholesky whitening of a rank-deficient covariance: using the kept eigen-subspace "
                          "(the pca form)", RankDeficiencyWarning, stacklevel=3)
            method = "pca"
        if method == "pca":
            self.W_ = V_r * inv_sqrt
            self.unwhiten_ = (V_r * sqrt).T
        elif method == "zca":
            self.W_ = (V_r * inv_sqrt) @ V_r.T
            self.unwhiten_ = (V_r * sqrt) @ V_r.T
        else:
            L = scipy.linalg.cholesky(cov, lower=True)
            self.W_ = scipy.linalg.solve_triangular(L, np.eye(L.shape[0]), lower=True).T
            self.unwhiten_ = L.T
        self.effective_method_ = method

    # -- using --------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "W_"):
            raise NotFittedError("this Whitener is not fitted yet; call fit(X) first")

    def _rows(self, X, name: str = "X") -> np.ndarray:
        """X as finite float64 rows of the fitted dimension (a 1-D X is one row)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[None, :]
        X = as_matrix(X, name)
        if X.shape[1] != self.n_features_:
            raise InputError(f"input has dimension {X.shape[1]}, the whitener expects {self.n_features_}")
        return X

    def transform(self, X) -> np.ndarray:
        """w = (X - mean_) @ W_, shape (m, r) for pca, (m, d) otherwise; float64.

        X is (m, d) (a 1-D X is one row); rows holding NaN or inf are refused, as in :meth:`fit`.
        """
        self._check_fitted()
        return (self._rows(X) - self.mean_) @ self.W_

    def inverse_transform(self, Z) -> np.ndarray:
        """x = mean_ + Z @ unwhiten_, shape (m, d); exact on the kept subspace."""
        self._check_fitted()
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim == 1:
            Z = Z[None, :]
        if Z.shape[1] != self.unwhiten_.shape[0]:
            raise InputError(f"whitened input has dimension {Z.shape[1]}, expected {self.unwhiten_.shape[0]}")
        return self.mean_ + Z @ self.unwhiten_

    def fit_transform(self, X, y=None) -> np.ndarray:
        return self.fit(X).transform(X)

    def mahalanobis(self, X) -> np.ndarray:
        """Squared Mahalanobis distances ||w||^2 = (x - mean_)^T Sigma_r^+ (x - mean_), shape (m,)
        (as ``sklearn.covariance.EmpiricalCovariance.mahalanobis``, on the kept rank)."""
        return squared_norms(self.transform(X))

    def score_samples(self, X) -> np.ndarray:
        """Gaussian log-density log N(x; mean_, covariance_) of each row, shape (m,).

        -1/2 (r log 2 pi + ||w||^2) + log|det W| over the kept rank r; with full rank it equals
        ``scipy.stats.multivariate_normal(mean_, covariance_).logpdf(X)``.
        """
        return -0.5 * (self.rank_ * np.log(2.0 * np.pi) + self.mahalanobis(X)) + self.log_det_

    def score(self, X, y=None) -> float:
        """Mean log-density of the rows of X (higher is better: held-out likelihood)."""
        return float(np.mean(self.score_samples(X)))

    @property
    def condition_number_(self) -> float:
        """lambda_max / lambda_min over the kept rank (condition number of the kept covariance)."""
        self._check_fitted()
        return float(self.eigenvalues_[0] / self.eigenvalues_[-1])

    @property
    def n_cal_(self) -> int | None:
        """Calibration rows behind ``calibration_`` (None when there are none)."""
        self._check_fitted()
        cal = getattr(self, "calibration_", None)
        return None if cal is None else int(cal.size)

    # -- artifact -------------------------------------------------------------------------
    def calibration_metadata(self) -> dict | None:
        """How ``calibration_`` was made (JSON-ready), or None when the whitener has none:
        ``mode`` "groups" (whole groups sampled and left out; ``n_groups`` of them) or "rows"
        (each row left out alone), ``largest_group`` (rows of the largest group, groups mode),
        ``degenerate`` (why it cannot give conformal p-values, :func:`degenerate_calibration`, or None)
        and ``warning``: the grouped-rows warning of a rows-mode fit and/or the degenerate one."""
        if self.n_cal_ is None:
            return None
        groups = getattr(self, "calibration_groups_", None)
        return {"n_cal": self.n_cal_, "rows_max": int(self.calibration_rows), "seed": int(self.calibration_seed),
                "mode": "rows" if groups is None else "groups", "n_groups": groups,
                "sampling": f"rows with key <= T (at most rows_max rows; whole groups) of {RESERVOIR_KEY}",
                "distance": ("leave-one-group-out" if groups is not None else "leave-one-out")
                + " squared Mahalanobis distance, closed form",
                "n_infinite": int(np.sum(np.isinf(self.calibration_))),
                "largest_group": getattr(self, "calibration_largest_group_", None),
                "degenerate": getattr(self, "calibration_degenerate_", None),
                "warning": getattr(self, "calibration_warning_", None)}

    def artifact_metadata(self) -> dict:
        """Everything the artifact header records, as a JSON-ready dict."""
        self._check_fitted()
        return {
            "format": ARTIFACT_FORMAT,
            "version": ARTIFACT_VERSION,
            "method": self.method,
            "effective_method": self.effective_method_,
            "shrinkage": getattr(self, "shrinkage_choice_", self.shrinkage),
            "shrinkage_intensity": self.shrinkage_,
            "shrinkage_rule": getattr(self, "shrinkage_rule_", None),
            "floor": self.floor,
            "rank_requested": self.rank,
            "rank": self.rank_,
            "n": self.n_samples_,
            "d": self.n_features_,
            "log_det": self.log_det_,
            "dropped": self.dropped_,
            "eigenvalues": [float(v) for v in self.eigenvalues_],
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "encoder": None,
            "modality": None,
            "normalized": None,
            **self.metadata_,
            "n_cal": self.n_cal_,
            "calibration": self.calibration_metadata(),
        }

    def save(self, path) -> Path:
        """Write the fitted whitener to one ``.safetensors`` file, atomically.

        Tensors: mean, W, unwhiten, components, eigenvalues, all_eigenvalues, covariance and,
        when present, ``calibration`` (the sorted leave-one-out distances, float64).
        """
        from safetensors.numpy import save as st_save

        from whitenclip.stores import atomic_write

        meta = self.artifact_metadata()
        tensors = {
            "mean": self.mean_, "W": self.W_, "unwhiten": self.unwhiten_, "components": self.components_,
            "eigenvalues": self.eigenvalues_, "all_eigenvalues": self.all_eigenvalues_, "covariance": self.covariance_,
        }
        if self.n_cal_ is not None:
            tensors["calibration"] = self.calibration_
        header = {"format": ARTIFACT_FORMAT, "version": str(ARTIFACT_VERSION), "whitenclip": json.dumps(meta)}
        blob = st_save({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in tensors.items()}, metadata=header)
        with atomic_write(path) as fh:
            fh.write(blob)
        return Path(path)

    @classmethod
    def load(cls, path) -> "Whitener":
        """Read a whitener written by :meth:`save`; validates version, shapes and finiteness.

        Artifacts written before calibration existed load with ``calibration_ = None``.
        """
        from whitenclip.stores import read_safetensors

        tensors, header = read_safetensors(path)
        if header.get("format") != ARTIFACT_FORMAT or "whitenclip" not in header:
            raise InputError(f"{path}: not a whitenclip whitener (no '{ARTIFACT_FORMAT}' header)")
        try:
            meta = json.loads(header["whitenclip"])
            version = int(meta.get("version", -1))
        except (ValueError, TypeError, AttributeError):
            raise InputError(f"{path}: whitener header is not valid JSON") from None
        if version != ARTIFACT_VERSION:
            raise InputError(f"{path}: whitener format version {version} is not supported "
                             f"(expected {ARTIFACT_VERSION})")
        meta = check_whitener_header(meta, path)
        cal = meta["calibration"]
        wh = cls(method=meta["method"], shrinkage=meta["shrinkage"], floor=meta["floor"], rank=meta["rank_requested"],
                 calibration="calibration" in tensors,
                 calibration_rows=cal["rows_max"] if cal else DEFAULT_CALIBRATION_ROWS,
                 calibration_seed=cal["seed"] if cal else 0)
        _restore(wh, tensors, meta, path)
        return wh


def check_whitener_header(meta, path) -> dict:
    """The ``whitenclip`` JSON of a whitener artifact with every field :meth:`Whitener.load` reads
    checked (an :class:`InputError` naming the file and the field otherwise): ``method`` and
    ``effective_method`` known, ``shrinkage`` none/ledoit-wolf/oas/[0, 1], ``shrinkage_intensity``
    in [0, 1], ``floor`` in [0, 1), ``d`` >= 1, ``rank`` in [1, d], ``rank_requested`` null or >= 1,
    ``n`` null or a count in [1, 2^53], ``dropped`` {n_dropped, reason}, ``calibration`` null or
    {rows_max in [1, RESERVOIR_MAX_ROWS], seed >= 0}. Returns a copy with those fields normalised."""
    from whitenclip.moments import MAX_COUNT, RESERVOIR_MAX_ROWS

    def bad(key, what):
        return InputError(f"{path}: whitener header field {key}={meta.get(key, '<missing>')!r} {what}")

    def number(key, lo, hi, *, hi_open=False):
        v = meta.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) \
                or not (lo <= v < hi if hi_open else lo <= v <= hi):
            raise bad(key, f"must be a number in [{lo}, {hi}{')' if hi_open else ']'}")
        return float(v)

    def count(key, lo, hi=MAX_COUNT, optional=False):
        v = meta.get(key)
        if optional and v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise bad(key, f"must be an integer in [{lo}, {'2^53' if hi == MAX_COUNT else hi}]")
        return v

    if not isinstance(meta, dict):
        raise InputError(f"{path}: whitener header is not a JSON object")
    out = dict(meta)
    for key in ("method", "effective_method"):
        if meta.get(key) not in (*METHODS, "imported"):
            raise bad(key, f"must be one of {', '.join(METHODS)}, imported")
    s = meta.get("shrinkage")
    if isinstance(s, (int, float)) and not isinstance(s, bool):
        out["shrinkage"] = number("shrinkage", 0.0, 1.0)
    elif s not in SHRINKAGES:
        raise bad("shrinkage", "must be null, ledoit-wolf, oas or a number in [0, 1]")
    else:
        out["shrinkage"] = s
    out["shrinkage_intensity"] = number("shrinkage_intensity", 0.0, 1.0)
    out["floor"] = number("floor", 0.0, 1.0, hi_open=True)
    out["d"] = count("d", 1)
    out["rank"] = count("rank", 1, out["d"])
    out["rank_requested"] = count("rank_requested", 1, optional=True)
    out["n"] = count("n", 1, optional=True)
    dropped = meta.get("dropped", {"n_dropped": out["d"] - out["rank"], "reason": ""})
    if not (isinstance(dropped, dict) and isinstance(dropped.get("reason", ""), str)
            and isinstance(dropped.get("n_dropped"), int) and not isinstance(dropped.get("n_dropped"), bool)
            and 0 <= dropped["n_dropped"] <= out["d"]):
        raise bad("dropped", "must be {n_dropped: integer in [0, d], reason: string}")
    out["dropped"] = {"n_dropped": dropped["n_dropped"], "reason": dropped.get("reason", "")}
    cal = meta.get("calibration")
    if cal is not None:
        if not (isinstance(cal, dict) and all(isinstance(cal.get(k), int) and not isinstance(cal.get(k), bool)
                                              for k in ("rows_max", "seed"))
                and 1 <= cal["rows_max"] <= RESERVOIR_MAX_ROWS and cal["seed"] >= 0):
            raise bad("calibration", f"must be null or {{rows_max in [1, {RESERVOIR_MAX_ROWS}], seed >= 0, ...}}")
    out["calibration"] = cal
    return out


def _restore(wh: Whitener, tensors: dict, meta: dict, path) -> None:
    need = ("mean", "W", "unwhiten", "components", "eigenvalues", "all_eigenvalues", "covariance")
    missing = [k for k in need if k not in tensors]
    if missing:
        raise InputError(f"{path}: whitener is missing tensor(s) {', '.join(missing)}")
    d, r = meta["d"], meta["rank"]  # checked by check_whitener_header
    width = r if meta["effective_method"] == "pca" else d
    shapes = {"mean": (d,), "W": (d, width), "unwhiten": (width, d), "components": (d, r), "eigenvalues": (r,),
              "all_eigenvalues": (d,), "covariance": (d, d)}
    for k, shape in shapes.items():
        if tensors[k].shape != shape:
            raise InputError(f"{path}: tensor {k} has shape {tensors[k].shape}, header implies {shape}")
        if not np.isfinite(tensors[k]).all():
            raise InputError(f"{path}: tensor {k} holds NaN or inf")
    if not (tensors["eigenvalues"] > 0).all():
        raise InputError(f"{path}: kept eigenvalues must be positive")
    wh.mean_, wh.W_, wh.unwhiten_ = tensors["mean"], tensors["W"], tensors["unwhiten"]
    wh.components_, wh.eigenvalues_ = tensors["components"], tensors["eigenvalues"]
    wh.all_eigenvalues_, wh.covariance_ = tensors["all_eigenvalues"], tensors["covariance"]
    wh.rank_, wh.n_samples_, wh.n_features_ = r, meta["n"], d
    wh.shrinkage_, wh.effective_method_ = float(meta["shrinkage_intensity"]), meta["effective_method"]
    wh.log_det_ = float(-0.5 * np.sum(np.log(wh.eigenvalues_)))
    wh.dropped_ = meta["dropped"]
    wh.n_features_in_ = d
    wh.calibration_ = _restore_calibration(tensors.get("calibration"), path)
    cal = meta["calibration"] or {}  # None or a dict: checked by check_whitener_header
    n_groups, warning, largest = cal.get("n_groups"), cal.get("warning"), cal.get("largest_group")
    wh.calibration_groups_ = int(n_groups) if isinstance(n_groups, int) and n_groups > 0 else None
    wh.calibration_warning_ = str(warning) if isinstance(warning, str) and warning else None
    wh.calibration_largest_group_ = largest if isinstance(largest, int) and not isinstance(largest, bool) \
        and largest > 0 else None
    wh.calibration_degenerate_ = None if wh.calibration_ is None else degenerate_calibration(
        wh.calibration_, largest_group=wh.calibration_largest_group_, n_groups=wh.calibration_groups_)
    if wh.calibration_degenerate_ and wh.calibration_degenerate_ not in (wh.calibration_warning_ or ""):
        # an artifact written before degenerate calibrations were flagged: said now
        wh.calibration_warning_ = "; ".join(w for w in (wh.calibration_warning_, wh.calibration_degenerate_) if w)
    wh.shrinkage_choice_ = meta["shrinkage"]
    rule = meta.get("shrinkage_rule")
    wh.shrinkage_rule_ = rule if isinstance(rule, str) and rule else None
    skip = {"format", "version", "method", "effective_method", "shrinkage", "shrinkage_intensity", "floor",
            "rank_requested", "rank", "n", "d", "log_det", "dropped", "eigenvalues", "n_cal", "calibration",
            "shrinkage_rule"}
    from whitenclip.encoders.base import split_encoder_meta  # older artifacts: fingerprint inside activation

    wh.metadata_ = split_encoder_meta({k: v for k, v in meta.items() if k not in skip})


def _restore_calibration(cal, path) -> np.ndarray | None:
    """The artifact's calibration tensor, checked (1-D, no NaN, >= 0, ascending), or None."""
    if cal is None:
        return None
    cal = np.asarray(cal, dtype=np.float64)
    if cal.ndim != 1 or cal.size == 0:
        raise InputError(f"{path}: tensor calibration has shape {cal.shape}, expected (n_cal,) with n_cal >= 1")
    if np.isnan(cal).any() or (cal < 0).any() or (cal[1:] < cal[:-1]).any():
        raise InputError(f"{path}: tensor calibration must hold ascending distances >= 0 (no NaN)")
    return cal


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


def _moments_hash(moments: Moments) -> str:
    h = hashlib.sha256()
    h.update(str(moments.n).encode())
    h.update(np.ascontiguousarray(moments.mean).tobytes())
    h.update(np.ascontiguousarray(moments.scatter).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# importing a released whitening matrix (W-CLIP)
# ---------------------------------------------------------------------------------------
def whitener_from_matrix(mean, W, *, n_samples: int | None = None, metadata: dict | None = None) -> Whitener:
    """Wrap a given mean (d,) and whitening matrix W (d, d) as a fitted :class:`Whitener`.

    W is kept exactly, so scores equal -1/2 (d log 2 pi + ||(x - mean) @ W||^2). The
    eigen-structure is recovered from Sigma^{-1} = W W^T: with the SVD W = U S V^T,
    Sigma = U S^{-2} U^T, so the covariance eigenvalues are 1/s_i^2 (eigenvectors U) and
    log|det W| = sum log s_i. ``n_samples`` (rows W was fitted on) enables the calibrated
    p-value; unknown n falls back to chi2.
    """
    from whitenclip.moments import header_count

    if n_samples is not None:
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)):
            raise InputError(f"n_samples must be a positive integer, got {n_samples!r}")
        n_samples = header_count(int(n_samples), "--n-samples", "n_samples", lo=1)
    mean = np.asarray(mean, dtype=np.float64).ravel()
    W = np.asarray(W, dtype=np.float64)
    d = mean.size
    if W.shape != (d, d):
        raise InputError(f"whitening matrix has shape {W.shape}, expected ({d}, {d}) to match the mean")
    if not (np.isfinite(mean).all() and np.isfinite(W).all()):
        raise InputError("mean or whitening matrix holds NaN or inf")
    U, s, Vt = np.linalg.svd(W)
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        if s[-1] <= 0 or not np.isfinite(1.0 / s[-1] ** 2):
            raise InputError("whitening matrix is singular: it cannot define a Gaussian density")
        if not s[0] ** -2.0 > 0:  # covariance eigenvalue 1/s^2 underflows to 0
            raise InputError(f"whitening matrix has a gain of {s[0]:.3g}: its implied covariance eigenvalue "
                             "1/s^2 underflows float64")
    order = np.argsort(s)  # ascending s = descending covariance eigenvalue 1/s^2
    U, s = U[:, order], s[order]
    wh = Whitener(method="pca", floor=0.0, calibration=False)
    wh.method = "imported"
    wh.mean_, wh.W_ = mean, W
    wh.unwhiten_ = (Vt.T[:, order] / s) @ U.T  # pinv(W) = V S^-1 U^T
    wh.components_, wh.eigenvalues_ = U, s**-2.0
    wh.all_eigenvalues_, wh.covariance_ = wh.eigenvalues_.copy(), (U * s**-2.0) @ U.T
    wh.shrinkage_, wh.effective_method_ = 0.0, "imported"
    wh.rank_, wh.n_samples_, wh.n_features_ = d, n_samples, d
    wh.log_det_ = float(np.sum(np.log(s)))
    wh.n_features_in_ = d
    wh.dropped_ = {"n_dropped": 0, "reason": ""}
    wh.calibration_ = None  # no reference rows: no conformal p-value
    wh.calibration_degenerate_ = wh.calibration_largest_group_ = None
    wh.shrinkage_choice_, wh.shrinkage_rule_ = None, None
    wh.metadata_ = {**(metadata or {}), "conditioning": conditioning_report(wh.eigenvalues_)}
    return wh


def conditioning_report(eigenvalues) -> dict:
    """Summary of a covariance spectrum lambda (descending): extremes, condition number and
    decades spanned, and ``n_degenerate``: directions with lambda > 1e20 x lambda_min, i.e. whose
    whitening gain s = lambda^{-1/2} is below 1e-10 of the largest: W (numerically) annihilates
    them, so log|det W| and ``logpdf`` are not meaningful there."""
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    cond = float(lam[0] / lam[-1])
    return {
        "lambda_max": float(lam[0]),
        "lambda_min": float(lam[-1]),
        "condition_number": cond,
        "decades": float(np.log10(cond)),
        "n_degenerate": int(np.sum(lam > 1e20 * lam[-1])),
    }


def _warn_conditioning(report: dict, name: str) -> None:
    if report["n_degenerate"]:
        warnings.warn(f"{name}: W is numerically singular: it annihilates {report['n_degenerate']} direction(s) "
                      f"(implied covariance eigenvalues up to {report['lambda_max']:.3g}); loglik keeps the "
                      "paper's formula, logpdf is not meaningful", RankDeficiencyWarning, stacklevel=3)
    elif report["decades"] > 6:
        warnings.warn(f"{name}: ill-conditioned covariance: eigenvalues span {report['decades']:.1f} decades "
                      f"(lambda_min {report['lambda_min']:.3g})", RankDeficiencyWarning, stacklevel=3)


def load_torch_tensor(path) -> np.ndarray:
    """Read one real, finite tensor from a torch ``.pt`` file with ``torch.load(weights_only=True)``, as float64."""
    import torch

    from whitenclip.stores import _existing_file, torch_load, torch_load_error

    p = _existing_file(path)
    try:
        obj = torch_load(p)
    except Exception as exc:
        raise InputError(f"{p}: not a loadable torch tensor file ({torch_load_error(exc)})") from None
    if isinstance(obj, dict) and len(obj) == 1:
        obj = next(iter(obj.values()))
    if not isinstance(obj, torch.Tensor):
        raise InputError(f"{p}: expected a tensor, found {type(obj).__name__}")
    if obj.layout != torch.strided:
        raise InputError(f"{p}: holds a sparse tensor ({str(obj.layout).replace('torch.', '')}); save a dense one")
    if obj.is_complex() or not (obj.is_floating_point() or obj.dtype in (torch.int8, torch.int16, torch.int32,
                                                                        torch.int64, torch.uint8)):
        raise InputError(f"{p}: holds a {str(obj.dtype).replace('torch.', '')} tensor; expected real numbers")
    out = obj.detach().to(torch.float64).numpy()
    if not np.isfinite(out).all():
        bad = np.argwhere(~np.isfinite(out))[0]
        raise InputError(f"{p}: holds {out[tuple(bad)]} at index {tuple(int(i) for i in bad)}; expected finite numbers")
    return out


MODALITIES = ("image", "text")


def infer_modality(*paths) -> str | None:
    """``image`` or ``text`` when the file names (not their folders) say exactly one of them
    (``mean_image_L14.pt``, ``w_mat_text_L14.pt``), else None."""
    found = {m for p in paths for m in MODALITIES if m in Path(p).name.lower()}
    return found.pop() if len(found) == 1 else None


def import_wclip(mean_path, matrix_path, *, n_samples: int | None = None, modality: str | None = None) -> Whitener:
    """Build a whitener from the W-CLIP paper's released ``mean_*.pt`` and ``w_mat_*.pt`` files.

    ``modality`` (``image`` or ``text``) defaults to what the two file names say
    (:func:`infer_modality`); an InputError asks for it when they say neither or both. A given
    modality that contradicts the file names is used, with a warning.
    """
    inferred = infer_modality(mean_path, matrix_path)
    if modality is None:
        if inferred is None:
            raise InputError(f"cannot tell the modality from the file names {Path(mean_path).name} and "
                             f"{Path(matrix_path).name} (neither or both say image/text); give it: image or text")
        modality = inferred
    elif modality not in MODALITIES:
        raise InputError(f"modality must be image or text; got {modality!r}")
    elif inferred is not None and inferred != modality:
        warnings.warn(f"modality {modality} given, but the file names say {inferred} "
                      f"({Path(mean_path).name}, {Path(matrix_path).name}); recording {modality}", UserWarning,
                      stacklevel=2)
    mean = load_torch_tensor(mean_path)
    W = load_torch_tensor(matrix_path)
    meta = {"source": "wclip", "source_files": [str(mean_path), str(matrix_path)], "modality": modality,
            "normalized": False, "encoder": "openclip:ViT-L-14/openai"}
    try:
        wh = whitener_from_matrix(mean, W, n_samples=n_samples, metadata=meta)
    except InputError as exc:
        raise InputError(f"{matrix_path}: {exc}") from None
    _warn_conditioning(wh.metadata_["conditioning"], str(matrix_path))
    return wh


# ---------------------------------------------------------------------------------------
# streaming fit over files, and spectrum summaries
# ---------------------------------------------------------------------------------------
def fit_whitener_streaming(sources, *, method: str = "pca", shrinkage=None, floor: float = DEFAULT_FLOOR,
                           rank: int | None = None, drop_nonfinite: bool = False, chunk_rows: int = CHUNK_ROWS,
                           extra_metadata: dict | None = None, gram: str = "float64", calibration: bool = True,
                           calibration_rows: int = DEFAULT_CALIBRATION_ROWS, calibration_seed: int = 0):
    """Fit a :class:`Whitener` on embedding sources without holding their rows in memory.

    One pass accumulates :class:`Moments` chunk by chunk (peak memory O(chunk_rows * d + d^2),
    independent of n); Ledoit-Wolf shrinkage adds a second pass for sum ||x - mean||^4.
    ``gram="float32"`` computes each chunk's Gram in float32 (see :meth:`Moments.update`).

    With ``calibration`` (default) the same pass keeps a seeded uniform
    :class:`~whitenclip.moments.Reservoir` of at most ``calibration_rows`` rows (their embeddings:
    raw inputs are embedded once), and their leave-one-out distances are computed after the
    eigendecomposition (:func:`calibration_distances`); positions count the rows kept, in input
    order. Extra memory: ``calibration_rows`` x d float64.
    Sources with a ``groups`` attribute (one id per row, from ``--group-column``/``--groups`` or a
    store that records them) make it a sample of whole groups, left out group by group.
    Returns ``(whitener, row_stats)``.
    """
    from whitenclip.stores import RowStats, iter_rows

    proto = Whitener(method=method, shrinkage=shrinkage, floor=floor, rank=rank, calibration=calibration,
                     calibration_rows=calibration_rows, calibration_seed=calibration_seed)
    proto._check_params()
    sources = list(sources)
    stats = RowStats()
    moments = reservoir = None
    where, seen = (sources[0].path if len(sources) == 1 else "inputs"), 0  # names an overflowing row
    grouped = calibration and any(getattr(src, "groups", None) is not None for src in sources)
    tagged = [GroupTagged(src) for src in sources] if grouped else sources
    for ids, X in iter_rows(tagged, drop_nonfinite=drop_nonfinite, stats=stats, chunk_rows=chunk_rows):
        if moments is None:
            moments, reservoir = Moments(X.shape[1]), proto._new_reservoir(X.shape[1])
        if reservoir is not None:  # copies the rows it keeps, before the chunk is centred in place
            reservoir.update(X, groups=[getattr(i, "group", None) for i in ids] if grouped else None)
        moments.update(X, overwrite=True, gram=gram, origin=(where, seen))
        seen += X.shape[0]
    if moments is None:
        raise InputError(f"{', '.join(s.path for s in sources)}: no usable rows")
    if moments.n < 2:
        raise InputError(f"{sources[0].path}: need at least 2 rows to fit a whitener, got {moments.n}")
    sum4 = None
    if shrinkage == "ledoit-wolf":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            chunks = (X for _, X in iter_rows(sources, drop_nonfinite=drop_nonfinite, chunk_rows=chunk_rows))
            sum4 = sum_centered_sqnorm4(chunks, moments.mean)
    sample = reservoir.rows if reservoir is not None else None
    keys = reservoir.keys if reservoir is not None and reservoir.grouped else None
    wh = proto.fit_moments(moments, sum_sqnorm4=sum4, calibration_sample=sample, calibration_groups=keys,
                           calibration_positions=None if reservoir is None else reservoir.positions)
    wh.metadata_.update({k: v for k, v in (extra_metadata or {}).items() if v is not None})
    wh.metadata_["gram_dtype"] = gram
    return wh, stats


# ---------------------------------------------------------------------------------------
# summaries (the `info` command's data)
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SpectrumSummary(Result):
    """Eigen-spectrum facts a person checks first (see :func:`spectrum_summary`)."""

    lambda_max: float
    lambda_min_kept: float
    condition_number: float
    decades: float
    rank: int
    dims_for_50pct: int
    dims_for_90pct: int
    dims_for_99pct: int


def _dims_for(frac: np.ndarray, level: float) -> int:
    """Fewest leading directions whose cumulative variance fraction reaches ``level``."""
    return int(min(np.searchsorted(frac, level) + 1, frac.size))


def summarize_spectrum(whitener: Whitener) -> SpectrumSummary:
    """:class:`SpectrumSummary` of a fitted whitener: extremes and condition number of the kept
    covariance, and k_p = min {k : sum_{i<=k} lambda_i >= p sum_i lambda_i} for p = 50/90/99%
    over all eigenvalues (kept or not)."""
    whitener._check_fitted()
    lam = np.asarray(whitener.all_eigenvalues_, dtype=np.float64)
    kept = np.asarray(whitener.eigenvalues_, dtype=np.float64)
    frac = np.cumsum(lam) / lam.sum() if lam.sum() > 0 else np.zeros_like(lam)
    return SpectrumSummary(
        lambda_max=float(kept.max()), lambda_min_kept=float(kept.min()),
        condition_number=float(kept.max() / kept.min()), decades=float(np.log10(kept.max() / kept.min())),
        rank=int(whitener.rank_), dims_for_50pct=_dims_for(frac, 0.5), dims_for_90pct=_dims_for(frac, 0.9),
        dims_for_99pct=_dims_for(frac, 0.99))


def spectrum_summary(whitener: Whitener) -> dict:
    """Eigen-spectrum facts a person checks first, as a dict (:func:`summarize_spectrum`)."""
    return summarize_spectrum(whitener).to_dict()


CALIBRATION_MISSING_NOTE = ("no calibration distances in this whitener (fitted with --no-calibration, imported, "
                            "or written before calibration existed): pvalue_conformal is not available; "
                            "refit to get it")

FEW_ROWS_PER_DIM = 5
"""``fit`` notes a fit without shrinkage on fewer than this many rows per dimension."""


CONFORMAL_MARGIN = 20
"""``fit`` notes a fit without shrinkage whose kept rank r leaves fewer than this many rows beyond it."""


def few_rows_note(n_samples: int, n_features: int, shrinkage=None, rank: int | None = None) -> str | None:
    """The one-line note ``fit`` prints when n < 5 d without shrinkage (None otherwise).

    With n close to d the smallest sample eigenvalues are far below the true ones, and 1/lambda
    weights them in ||w||^2: loglik of new rows reaches -1e5 or less, while their *ranking* still
    works. Measured with MiniLM (d = 384), n = 400, no shrinkage vs ``oas``: the demo captions'
    held-out vs out-of-domain AUC 1.000 vs 0.999, held-out mean logpdf -5663 vs +318; Flickr8k
    captions AUC 0.961 vs 0.932, logpdf -4179 vs +147 (at n = 4000: 0.986 vs 0.981, +221 vs +227).
    oas wins the density only near n = d: on Gaussian rows with a 60x spread of scales (d = 40)
    it gives -41 vs -500 at n = 1.1 d but -33 vs -25 at n = 3 d (the identity target is too flat).

    >>> few_rows_note(4000, 384) is None, few_rows_note(400, 384, "oas") is None
    (True, True)
    >>> few_rows_note(400, 384)[:43]
    'note: 400 rows for 384 dimensions (n < 5 d)'
    """
    if shrinkage is not None or n_samples >= FEW_ROWS_PER_DIM * n_features:
        return None
    margin = ""
    if rank is not None and 0 < n_samples - rank - 1 < CONFORMAL_MARGIN:
        # rank + 1 < n < rank + 21: finite but heavy-tailed leave-one-out distances (infinite ones: degenerate)
        margin = (f"; with n - r = {n_samples - rank} rows beyond the rank, pvalue_conformal is far too conservative "
                  "(MiniLM, n = d: 0 held-out rows below 0.05, 10% of junk)")
    return (f"note: {n_samples} rows for {n_features} dimensions (n < {FEW_ROWS_PER_DIM} d): the smallest "
            "eigenvalues are underestimated, so loglik of new rows can be far more negative than with more rows "
            "(compare logliks only under this whitener); ranking rows by loglik still works; when n is close to d, "
            "--shrinkage oas gives the better density (MiniLM, n = 400, d = 384: held-out mean logpdf +318 vs "
            f"-5663); >= 10 rows per dimension help most{margin}")


@dataclasses.dataclass(frozen=True)
class WhitenerSummary(Result):
    """What ``whitenclip info`` shows: the artifact header, its spectrum and calibration.

    ``to_dict()`` is ``{"path": ..., **header (without the eigenvalue list), "spectrum": {...}}``
    with ``n_cal`` and ``calibration`` among the header keys (None when absent, with ``note``);
    ``calibration`` records ``mode`` ("rows": leave-one-out, or "groups": leave-one-group-out),
    ``n_groups``, ``largest_group``, ``n_infinite``, ``degenerate`` (why it cannot give conformal
    p-values, or None) and ``warning`` (the grouped-rows and/or degenerate warning, or None).
    """

    path: str | None
    header: dict
    spectrum: SpectrumSummary
    n_cal: int | None
    note: str | None = None

    @property
    def calibration_mode(self) -> str | None:
        """"rows" or "groups" (None without calibration); artifacts from before groups say "rows"."""
        cal = self.header.get("calibration")
        return None if not isinstance(cal, dict) else str(cal.get("mode") or "rows")

    @property
    def n_groups(self) -> int | None:
        cal = self.header.get("calibration")
        return cal.get("n_groups") if isinstance(cal, dict) else None

    @property
    def warning(self) -> str | None:
        """The grouped-rows and/or degenerate-calibration warning (fit time, or found on loading), or None."""
        cal = self.header.get("calibration")
        return cal.get("warning") if isinstance(cal, dict) else None

    @property
    def degenerate(self) -> str | None:
        """Why the calibration cannot give conformal p-values (:func:`degenerate_calibration`), or None."""
        cal = self.header.get("calibration")
        return cal.get("degenerate") if isinstance(cal, dict) else None

    def to_dict(self) -> dict:
        out = {"path": self.path, **json_safe(self.header), "spectrum": self.spectrum.to_dict()}
        out["n_cal"] = self.n_cal
        if self.note:
            out["note"] = self.note
        return out


def summarize(whitener: Whitener, path=None) -> WhitenerSummary:
    """:class:`WhitenerSummary` of a fitted whitener (``path``: the artifact it came from)."""
    header = whitener.artifact_metadata()
    header.pop("eigenvalues", None)
    n_cal = whitener.n_cal_
    return WhitenerSummary(path=None if path is None else str(path), header=header,
                           spectrum=summarize_spectrum(whitener), n_cal=n_cal,
                           note=None if n_cal is not None else CALIBRATION_MISSING_NOTE)
