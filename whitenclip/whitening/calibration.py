"""Conformal calibration: leave-one-out (or leave-one-group-out) squared distances of reference
rows in closed form, the check for a degenerate calibration and its warning, and filling a fitted
whitener's ``calibration_*`` attributes (see the package docstring for the formulas)."""

from __future__ import annotations

import warnings

import numpy as np

from whitenclip import config
from whitenclip.errors import InputError
from whitenclip.validation import as_matrix
from whitenclip.whitening.grouping import GroupedRowsWarning, grouping_check

DEFAULT_CALIBRATION_ROWS = config.CALIBRATION_ROWS
"""m, the most reference rows whose leave-one-out distances calibrate ``pvalue_conformal``.

Conformal p-values then move in steps of 1/(m + 1) = 2.0e-4; at the 0.05 level the p-value of a
given row varies between calibration samples by about sqrt(0.05 * 0.95 / m) = 0.003 (6% of 0.05);
the sample costs m * d float64 (29 MiB at d = 768, next to a 100 MiB float64 chunk of 16,384 rows)
during the fit and 8 bytes per row in the artifact (39 KiB), and one (m, d) x (d, r) product after
the eigendecomposition (about 0.2 CPU-seconds at d = 768). Fewer rows would coarsen small
p-values (m = 1000: steps of 1e-3, the 0.05 level known to +-0.007); more buy little."""


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


# "Whitener": whitenclip.whitening.estimator, which imports this module (a name, never imported here)
def calibration_distances(whitener: "Whitener", rows, groups=None) -> np.ndarray:  # noqa: F821
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


def calibrate(whitener, sample, groups=None, positions=None) -> None:
    """Set the ``calibration_*`` attributes of a whitener just fitted on n rows from its
    ``calibration_sample`` (see :meth:`Whitener.fit_moments`); all None without calibration (off,
    no sample, or n < 3). Issues the :class:`GroupedRowsWarning` and
    :class:`DegenerateCalibrationWarning`, attributed to the caller of ``fit_moments``."""
    whitener.calibration_ = whitener.calibration_groups_ = whitener.calibration_warning_ = None
    whitener.calibration_degenerate_ = whitener.calibration_largest_group_ = None
    if not (whitener.calibration and sample is not None and whitener.n_samples_ >= 3):
        return
    d = whitener.n_features_
    sample = as_matrix(sample, "calibration_sample")
    if sample.shape[1] != d:
        raise InputError(f"calibration_sample has dimension {sample.shape[1]}, the moments {d}")
    whitener.calibration_ = np.sort(calibration_distances(whitener, sample, groups))
    if groups is not None:
        counts = np.unique(np.asarray(groups), return_counts=True)[1]
        whitener.calibration_groups_, whitener.calibration_largest_group_ = int(counts.size), int(counts.max())
    else:
        whitener.calibration_warning_ = grouping_check(sample, positions).warning
        if whitener.calibration_warning_:
            warnings.warn(whitener.calibration_warning_, GroupedRowsWarning, stacklevel=3)
    whitener.calibration_degenerate_ = degenerate_calibration(
        whitener.calibration_, largest_group=whitener.calibration_largest_group_,
        n_groups=whitener.calibration_groups_)
    if whitener.calibration_degenerate_:
        whitener.calibration_warning_ = "; ".join(w for w in (whitener.calibration_warning_,
                                                              whitener.calibration_degenerate_) if w)
        warnings.warn(whitener.calibration_degenerate_, DegenerateCalibrationWarning, stacklevel=3)
