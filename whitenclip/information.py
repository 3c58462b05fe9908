"""Entropy and mutual information of embeddings under a Gaussian model, with k-NN cross-checks.

Once embeddings are close to Gaussian, information quantities have closed forms:

* differential entropy ``H = 0.5 * (r log(2 pi e) + log det Sigma)`` over the kept rank ``r``;
* mutual information between paired blocks (image ``x``, caption ``y``) from the canonical
  correlations ``rho_i``: ``I = -0.5 * sum_i log(1 - rho_i^2)``.

The plug-in estimators are badly biased at embedding sizes (d = 768, n = 1000: the plug-in
entropy is ~217 nats low), so each log-determinant is bias-corrected with the exact Wishart
expectation (:func:`log_det_bias`). Nonparametric estimators (Kozachenko-Leonenko entropy,
Kraskov-Stoegbauer-Grassberger MI) run on a few leading directions, where k-NN methods still
work, as a check on the Gaussian model; each result says which dimensions its figures are over.
The k-NN check of entropy runs on held-out principal components (fitted on the other half of the
rows) beside the Gaussian entropy of the same held-out projections: in-sample components overstate
the spread of the population in their directions when n is close to d.
The KSG check of MI runs on held-out canonical variates (directions fitted on the other
cross-fitting folds) beside a permutation null, so it reads ~0 on independent pairs: in-sample
canonical variates are correlated by construction when n is close to the rank.

Confidence intervals default to a delete-a-group jackknife over 48 seeded row groups (exact
width wherever the rank is well below n, conservative near it); a Bayesian bootstrap of the
same groups is available but is only trustworthy while the rank is much smaller than n.

Estimators follow scikit-learn conventions: ``__init__`` stores parameters, ``fit`` returns
``self`` and fitted attributes end in ``_``. ``result()`` returns a typed, frozen result
(:class:`EntropyResult`, :class:`MIResult`, :class:`PointwiseMIResult`) that
:mod:`whitenclip.render` turns into tables or rows; ``summary()`` is its JSON-ready dict. Each
result names the model it assumes (``assumes``), and an MI whose interval contains 0 is
reported as "no detectable dependence", never as a (negative) measurement.
All accumulation is float64. Natural units (nats) unless ``base="2"`` (bits).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import linalg, special
from scipy.spatial import cKDTree
from scipy.stats import t as _student_t
from threadpoolctl import threadpool_limits

from whitenclip.errors import InputError, NotFittedError, RankDeficiencyWarning
from whitenclip.results import Result
from whitenclip.validation import as_matrix
from whitenclip.whitening import eigh_descending, ledoit_wolf_shrinkage_from_sums, oas_shrinkage, shrink

__all__ = [
    "ENTROPY_ASSUMES",
    "MI_ASSUMES",
    "EntropyResult",
    "GaussianEntropy",
    "GaussianMI",
    "KnnEntropyCheck",
    "KsgCheck",
    "MIResult",
    "PointwiseMIResult",
    "CrossFitMI",
    "HEADLINE_RATIO",
    "cross_fitted_mi",
    "pair_rows",
    "ids_kind",
    "PAIR_BY",
    "effective_dimension",
    "knn_entropy",
    "ksg_mi",
    "log_det_bias",
    "log_det_variance",
    "mi_detectability",
]

_LOG_2PI_E = math.log(2.0 * math.pi * math.e)
_BASES = {"e": 1.0, "2": math.log(2.0)}  # divide nats by this to get the unit
_GROUPS = 48  # row groups whose moments the jackknife / bootstrap recombine (_GroupedMoments)
_CI_METHODS = ("jackknife", "bootstrap", "gaussian", None)


# --------------------------------------------------------------------------- Wishart log det


def log_det_bias(rank: int, n_samples: int) -> float:
    """Expected error of the log-determinant of a Gaussian sample covariance.

    For ``n`` i.i.d. rows of ``N(mu, Sigma)`` in ``r`` dimensions and the unbiased sample
    covariance ``S`` (ddof = 1), ``(n - 1) S`` is Wishart(``n - 1``, Sigma), and (Bartlett
    decomposition) ``log det S - log det Sigma`` is a sum of independent log chi-square terms::

        E[log det S] - log det Sigma = sum_{i=1..r} psi((n - i) / 2) + r log(2 / (n - 1))

    with ``psi`` the digamma function (Ahmed & Gokhale 1989, IEEE Trans. Inf. Theory 35(3);
    Misra, Singh & Demchuk 2005, J. Multivariate Anal. 92). Subtracting it from
    ``log det S`` gives the unbiased (UMVU) estimator of ``log det Sigma``.

    Parameters
    ----------
    rank : int
        Dimension ``r`` of the covariance (the kept rank); needs ``r < n``.
    n_samples : int
        Number of rows ``n`` the covariance was computed from.

    Returns
    -------
    float
        The bias (negative: the plug-in log det is too small).
    """
    n, r = int(n_samples), int(rank)
    if r >= n:
        raise InputError(f"log det correction needs rank < n (rank {r}, n {n})")
    i = np.arange(1, r + 1, dtype=np.float64)
    return float(special.digamma((n - i) / 2.0).sum() + r * math.log(2.0 / (n - 1)))


def log_det_variance(rank: int, n_samples: int) -> float:
    """Sampling variance of ``log det S`` for a Gaussian sample covariance (ddof = 1).

    ``Var[log det S] = sum_{i=1..r} psi'((n - i) / 2)`` (trigamma), from the same Bartlett
    decomposition as :func:`log_det_bias`; it does not depend on Sigma. The entropy
    ``0.5 * log det S + const`` therefore has standard deviation ``0.5 * sqrt(this)``.
    """
    n, r = int(n_samples), int(rank)
    if r >= n:
        raise InputError(f"log det variance needs rank < n (rank {r}, n {n})")
    i = np.arange(1, r + 1, dtype=np.float64)
    return float(special.polygamma(1, (n - i) / 2.0).sum())


# --------------------------------------------------------------------------- k-NN estimators


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


# --------------------------------------------------------------------------- results

ENTROPY_ASSUMES = ("i.i.d. Gaussian rows: entropy of the Gaussian fitted to them over the kept rank "
                   "(bias correction and std exact under that law); the k-NN check assumes no law")
MI_ASSUMES = ("i.i.d. jointly Gaussian pairs: MI of the Gaussian fitted to them, from canonical correlations "
              "(bias correction exact under that law); the KSG check assumes no law")
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


@dataclass(frozen=True)
class KnnEntropyCheck(Result):
    """Nonparametric cross-check of :class:`GaussianEntropy` on the top ``dims`` held-out principal components.

    The rows are split in ``folds`` halves; each half is projected on the top ``dims`` principal
    components of the other half, so no figure sees the rows its directions were fitted on. All
    values are in ``base`` units, averaged over the folds, and over the same held-out projected rows
    (``n`` in all): ``gaussian`` is the bias-corrected Gaussian entropy of those rows
    (``0.5 log det(2 pi e S)``, ``S`` their covariance), ``entropy_raw`` their Kozachenko-Leonenko
    estimate (on the rows whitened by ``S``, shifted back by ``0.5 log det S``), ``gaussian_knn`` the same
    estimator on Gaussian samples of the same size and dims treated alike (``references`` per fold), so
    ``gaussian_knn - gaussian`` is the k-NN estimator's own bias; ``gap = gaussian_knn - entropy_raw``
    estimates the negentropy of the projection (~0 for Gaussian rows, > 0 the less Gaussian they are:
    the Gaussian has the largest entropy of a given covariance), and ``entropy = gaussian - gap`` is the
    k-NN entropy calibrated for that bias, which agrees with ``gaussian`` on Gaussian rows.
    """

    dims: int
    k: int
    n: int
    entropy: float
    gaussian: float
    gaussian_knn: float
    gap: float
    entropy_raw: float
    folds: int = KNN_FOLDS
    references: int = 1
    space: str = KNN_SPACE

    @property
    def over(self) -> str:
        """The dimensions its figures are over, in words."""
        return f"k-NN over the top {self.dims} principal components"

    def to_dict(self) -> dict:
        return {**super().to_dict(), "over": self.over}


@dataclass(frozen=True)
class KsgCheck(Result):
    """Nonparametric cross-check of :class:`GaussianMI` on held-out canonical variates.

    Each row is projected on the top ``dims`` canonical directions of the cross-fitting model that
    did not see it (its fold's), so the variates of independent X and Y are independent: the check
    cannot find information that is not there, as in-sample canonical variates do at n close to
    the rank (they are correlated by construction). ``mi`` is their KSG estimate, ``gaussian_mi``
    the Gaussian MI of the same variates (bias-corrected), ``null_ci`` the 2.5-97.5% range of the
    KSG estimate over ``permutations`` within-fold permutations of the Y variates (its spread
    under independence), ``pvalue`` the permutation p-value, and ``detectable`` whether ``mi``
    lies beyond that noise (``pvalue <= 1 - confidence``).
    """

    dims: int
    k: int
    n: int
    mi: float
    gaussian_mi: float | None
    null_ci: tuple[float, float] | None = None
    pvalue: float | None = None
    detectable: bool | None = None
    permutations: int = 0
    space: str = KSG_SPACE


@dataclass(frozen=True)
class EntropyResult(Result):
    """Result of :class:`GaussianEntropy` (values in ``base`` units: "e" nats, "2" bits).

    ``entropy`` = ``entropy_plugin - 0.5 * log_det_bias(rank, n)`` with
    ``entropy_plugin = 0.5 * (rank * log(2 pi e) + log det S)``; ``ci`` is the ``confidence``
    interval by ``ci_method`` (None without one); ``std`` the exact Gaussian sampling standard
    deviation; ``whitened``: measured in a whitener's kept subspace (still in input units).
    """

    entropy: float
    entropy_plugin: float
    ci: tuple[float, float] | None
    std: float
    base: str
    rank: int
    n: int
    knn: KnnEntropyCheck | None
    confidence: float = 0.95
    ci_method: str | None = "jackknife"
    whitened: bool = False
    assumes: str = ENTROPY_ASSUMES
    n_features: int | None = None
    knn_skipped: str = ""

    @property
    def over(self) -> str:
        """The dimensions ``entropy`` and ``entropy_plugin`` are over, in words (the k-NN check's: ``knn.over``)."""
        of = f" of {self.n_features}" if self.n_features is not None and self.n_features != self.rank else ""
        return f"Gaussian over r = {self.rank}{of} dims (the kept rank)"

    def to_dict(self) -> dict:
        return {**super().to_dict(), "over": self.over}


@dataclass(frozen=True)
class CrossFitMI(Result):
    """The cross-fitted estimate of :func:`cross_fitted_mi` (values in ``base`` units).

    ``mi`` = mean held-out pointwise MI, ``ci`` its interval (``se`` the standard error of the mean;
    clustered by group when ``grouped``), ``folds`` the number of folds, ``ranks`` the ``(k, m)``
    chosen for each fold by held-out joint likelihood: ``k`` principal directions per side, ``m``
    canonical pairs (0 = the independence model won), ``regulariser`` in words.
    """

    mi: float
    ci: tuple[float, float]
    se: float
    folds: int
    grouped: bool
    ranks: tuple[tuple[int, int], ...]
    regulariser: str = ("per fold, k principal directions per side (same budget for X and Y; probabilistic PCA "
                        "marginals) and m canonical pairs, (k, m) chosen by the held-out joint log-likelihood of "
                        "an inner cross-validation on the training folds")


@dataclass(frozen=True)
class MIResult(Result):
    """Result of :class:`GaussianMI` (values in ``base`` units: "e" nats, "2" bits).

    ``mi`` is the raw estimate (bias-corrected unless ``shrinkage`` > 0; it can be negative
    through sampling noise), ``mi_plugin = -0.5 * sum_i log(1 - rho_i^2)``;
    ``canonical_correlations`` holds the leading ``rho_i``. ``detectable`` is True when the
    interval ``ci`` lies above 0, False when it contains 0 (or lies below it), or when there is no
    interval and ``mi <= 0``; None when there is no interval to decide with. ``note`` says so in words.
    """

    mi: float
    mi_plugin: float
    ci: tuple[float, float] | None
    canonical_correlations: tuple[float, ...]
    n: int
    rank_x: int
    rank_y: int
    base: str
    shrinkage: float
    ksg: KsgCheck | None
    detectable: bool | None = None
    note: str = ""
    confidence: float = 0.95
    ci_method: str | None = "jackknife"
    bias_corrected: bool = True
    assumes: str = MI_ASSUMES
    crossfit: CrossFitMI | None = None
    headline: str = "in-sample"
    headline_mi: float | None = None
    headline_ci: tuple[float, float] | None = None
    headline_reason: str = ""
    deterministic: bool = False
    resolvable: bool | None = None
    effective_dims: tuple[float, float] | None = None
    ksg_skipped: str = ""


@dataclass(frozen=True, repr=False)  # repr: bounded (Result.__repr__)
class PointwiseMIResult(Result):
    """Pointwise MI ``log p(x, y) - log p(x) - log p(y)`` of each pair under the fitted Gaussian.

    ``ids`` (n,) names the pairs, ``pmi`` (n,) float64 in ``base`` units; rendered as rows
    ``id, pmi`` (``mi --pointwise``).
    """

    ids: tuple[str, ...]
    pmi: np.ndarray
    base: str = "e"
    assumes: str = MI_ASSUMES


def mi_detectability(mi: float, ci, confidence: float = 0.95) -> tuple[bool | None, str]:
    """``(detectable, note)`` for an MI estimate ``mi`` and its interval ``ci`` (or None).

    Dependence is detected only when the whole interval lies above 0; an interval containing 0
    (or, from sampling noise, below it) means no detectable dependence, and a negative estimate
    is never a measurement (true MI is >= 0).

    >>> mi_detectability(0.5, (0.4, 0.6))[0], mi_detectability(-0.01, (-0.03, 0.01))[0]
    (True, False)
    """
    level = f"{100 * confidence:g}%"
    if ci is None:
        if mi > 0:
            return None, "no interval computed: whether the dependence is detectable is not assessed"
        return False, f"no detectable dependence: the estimate {mi:.3g} is not positive (true MI is >= 0)"
    lo, hi = float(ci[0]), float(ci[1])
    if lo > 0:
        return True, f"dependence detected: the {level} interval lies above 0"
    if hi < 0:
        return False, (f"no detectable dependence: the {level} interval lies below 0, where no MI can be "
                       "(sampling noise, or a departure from the Gaussian model)")
    return False, f"no detectable dependence: the {level} interval contains 0"


# --------------------------------------------------------------------------- estimators


class GaussianEntropy:
    """Differential entropy of the Gaussian fitted to embeddings, with bias correction and CI.

    Over the kept rank ``r`` (eigenvalues ``lambda_i`` of the ddof=1 sample covariance above
    ``floor * lambda_max``; at most ``n - 1 - ceil(n / 48)`` so the jackknife stays defined)::

        H_plugin = 0.5 * (r log(2 pi e) + sum_i log lambda_i)
        H        = H_plugin - 0.5 * log_det_bias(r, n)          (unbiased for Gaussian data)

    ``std_`` is the exact Gaussian sampling standard deviation
    ``0.5 * sqrt(log_det_variance(r, n))``. The confidence interval ``ci_`` is, by ``ci``:

    * ``"jackknife"`` (default): delete-a-group jackknife over 48 seeded row groups, each
      replicate bias-corrected at its own row count; ``H +/- t_{G-1} * se``. Nonparametric,
      and conservative where ``r`` is close to ``n`` (Efron-Stein);
    * ``"bootstrap"``: ``n_boot`` Bayesian-bootstrap resamples of the row groups (seeded),
      percentile spread centred on ``H``. Only valid while ``r << n``: resampling lowers the
      effective row count, which at ``r / n`` of a few percent or more inflates the spread
      of a log-determinant many times (at d = 768, n = 5000: 6.8 nats vs a true 0.22);
    * ``"gaussian"``: ``H +/- z * std_``, exact for Gaussian data;
    * ``None``: no interval.

    As a check on the Gaussian model, the Kozachenko-Leonenko entropy of the top ``knn_dims``
    principal components of the input rows is reported beside the Gaussian entropy of the same
    projected rows (:class:`KnnEntropyCheck`). Both are held out: the rows are split in two halves
    (seeded), each half is projected on the components fitted on the other, and the figures are
    averaged over the two. In-sample components overstate the spread of the population in their
    directions when n is close to d (at n = 300, d = 256, 16 components: the in-sample Gaussian
    entropy ~1.7 nats above that of the population in the same directions, above even that of its
    top 16 components, and the k-NN figure ~3 nats above), so an in-sample check measures
    overfitting, not non-Gaussianity. The check runs on the rows themselves even when a
    ``whitener`` is given, so it does not depend on the whitener: the top principal components of
    whitened rows are arbitrary mixtures of many directions (all variances ~1), which look more
    Gaussian by the central limit theorem. k-NN estimates are biased in ~16 dimensions (about +1
    nat at 150 rows), so the same estimator runs on Gaussian samples of the same size and dims, and
    ``gap = H_knn(Gaussian samples) - H_knn(data)`` estimates the negentropy of the projection (~0 for
    Gaussian data, > 0 the less Gaussian it is). It is skipped, with the reason in
    ``knn_skipped_``, when a half has fewer than ``KNN_ROWS_PER_DIM`` (5) rows per dimension.

    Parameters
    ----------
    base : {"e", "2"}, default "e"
        Units of every reported value: nats or bits.
    ci : {"jackknife", "bootstrap", "gaussian", None}, default "jackknife"
    n_boot : int, default 200
        Bootstrap resamples when ``ci="bootstrap"``.
    confidence : float, default 0.95
    knn_dims : int, default 16
        Number of leading principal components for the k-NN check (``min(r, knn_dims)``);
        0 disables it.
    k : int, default 3
        Neighbour order of the k-NN estimator.
    knn_max_samples : int, default 20000
        Rows used by the k-NN check, both halves together (a seeded subsample above this).
    floor : float, default 1e-12
        Relative eigenvalue floor defining the kept rank.
    whitener : fitted whitenclip.Whitener, optional
        Analyse ``whitener.transform(X)`` (its kept subspace) and add back ``-whitener.log_det_``,
        so the entropy is in the units of ``X``. The k-NN check ignores it.
    random_state : int, default 0

    Attributes
    ----------
    entropy_ : float
        Bias-corrected entropy.
    entropy_plugin_ : float
    ci_ : tuple of float (lo, hi) or None
    std_ : float
    rank_ : int
    n_samples_, n_features_ : int
    mean_ : ndarray of shape (n_features,)
    components_ : ndarray of shape (n_features, rank_)
        Principal directions (columns, descending eigenvalue), in the analysed coordinates.
    eigenvalues_ : ndarray of shape (rank_,)
    knn_ : dict or None
        The fields of :class:`KnnEntropyCheck` (``"dims", "k", "n", "entropy", "gaussian",
        "gaussian_knn", "gap", "entropy_raw", "folds", "references"``) in ``base`` units; None when
        the check is off or skipped.
    knn_skipped_ : str
        Why the k-NN check was skipped ("" when it ran or is off).
    """

    def __init__(self, base="e", ci="jackknife", n_boot=200, confidence=0.95, knn_dims=16, k=3,
                 knn_max_samples=20000, floor=1e-12, whitener=None, random_state=0):
        self.base = base
        self.ci = ci
        self.n_boot = n_boot
        self.confidence = confidence
        self.knn_dims = knn_dims
        self.k = k
        self.knn_max_samples = knn_max_samples
        self.floor = floor
        self.whitener = whitener
        self.random_state = random_state

    def fit(self, X, y=None):
        """Fit on ``X`` of shape (n_samples, n_features); returns ``self``."""
        unit = _unit(self.base)
        X = as_matrix(X, "X", min_rows=3, allow_1d=True)
        _check_ci(self.ci, _CI_METHODS)
        _check_n_boot(self.ci, self.n_boot)
        raw = X  # the k-NN check always runs on the rows themselves, whatever the whitener
        knn_rng = np.random.default_rng([int(self.random_state), 2])  # its own stream: same with or without a CI
        offset = 0.0  # log |det| of the map from X to the analysed coordinates, subtracted
        if self.whitener is not None:
            X, offset = _apply_whitener(self.whitener, X)
        rng = np.random.default_rng(self.random_state)
        n, d = X.shape
        self.mean_ = X.mean(axis=0)
        Xc = X - self.mean_
        groups = _GroupedMoments(Xc, rng, resample=self.ci in ("jackknife", "bootstrap"))
        lam, V = _kept_eigh(groups.covariance(), self.floor, _max_rank(n), "entropy")
        r = lam.size
        log_det = float(np.log(lam).sum()) - 2.0 * offset
        plugin = 0.5 * (r * _LOG_2PI_E + log_det)
        corrected = plugin - 0.5 * log_det_bias(r, n)
        self.std_ = 0.5 * math.sqrt(log_det_variance(r, n)) / unit
        if self.ci == "gaussian":
            self.ci_ = _normal_interval(corrected / unit, self.std_, self.confidence)
        else:
            self.ci_ = _interval(self, groups, _EntropyStatistic(r, V, lam), corrected, rng, unit)
        self.knn_, self.knn_skipped_ = None, ""
        if int(self.knn_dims) > 0:
            self.knn_, self.knn_skipped_ = self._knn_check(raw, knn_rng, unit)
        self.entropy_, self.entropy_plugin_ = corrected / unit, plugin / unit
        self.rank_, self.n_samples_, self.n_features_ = r, n, d
        self.components_, self.eigenvalues_ = V, lam
        return self

    def _knn_check(self, R, rng, unit):
        """``(knn dict or None, why skipped)``: k-NN vs Gaussian entropy of the rows ``R`` projected on
        the top ``m`` principal components of the other half (:class:`KnnEntropyCheck`).

        Each held-out projection ``P`` (rows, m) is whitened by its own covariance ``S`` (Cholesky) for
        the k-NN estimate and shifted back by ``0.5 log det S``; the Gaussian reference samples are
        whitened alike, so the two k-NN figures differ by the shape of ``P`` only.
        """
        R = _subsample(R, self.knn_max_samples, rng)
        n, k = R.shape[0], int(self.k)
        m = min(int(self.knn_dims), R.shape[1])
        half = n // KNN_FOLDS
        if half < KNN_ROWS_PER_DIM * m or half <= k + 1:
            fewer = max(min(half // KNN_ROWS_PER_DIM, int(self.knn_dims)), 0)
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
            _, V = _top_eigh(train - mu, self.floor, train.shape[0] - 1, m)
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

    def result(self) -> EntropyResult:
        """The fitted values as an :class:`EntropyResult` (rendered by :mod:`whitenclip.render`)."""
        _check_fitted(self, "entropy_")
        ci = None if self.ci_ is None else (float(self.ci_[0]), float(self.ci_[1]))
        return EntropyResult(entropy=float(self.entropy_), entropy_plugin=float(self.entropy_plugin_), ci=ci,
                             std=float(self.std_), base=str(self.base), rank=int(self.rank_),
                             n=int(self.n_samples_), knn=None if self.knn_ is None else KnnEntropyCheck(**self.knn_),
                             confidence=float(self.confidence),
                             ci_method=self.ci, whitened=self.whitener is not None,
                             n_features=int(self.n_features_), knn_skipped=str(self.knn_skipped_))

    def summary(self) -> dict:
        """JSON-ready dict of :meth:`result`: entropy, entropy_plugin, ci, std, base, rank, n, knn, ..."""
        return self.result().to_dict()


class GaussianMI:
    """Mutual information between paired blocks under a joint Gaussian, from canonical correlations.

    Each block is centred and whitened over its kept rank (``A_x = V_x Lambda_x^{-1/2}``);
    the singular values of the whitened cross-covariance ``K = A_x^T C_xy A_y`` are the
    canonical correlations ``rho_i`` and::

        I_plugin = -0.5 * sum_i log(1 - rho_i^2)
                 = 0.5 * (log det S_x + log det S_y - log det S_xy)
        I        = I_plugin - 0.5 * (b(r_x) + b(r_y) - b(r_x + r_y)),   b = log_det_bias(., n)

    i.e. ``I = H(X) + H(Y) - H(X, Y)`` with each entropy bias-corrected; unbiased for Gaussian
    data (no correction is applied with shrinkage). Correlations at 1 (a degenerate joint) are
    clipped to ``max_corr`` with a :class:`RankDeficiencyWarning`.

    Pointwise MI (:meth:`pointwise`) is ``log p(x, y) - log p(x) - log p(y)`` under the fitted
    Gaussian; on the fit data it averages exactly to ``mi_plugin_`` (without shrinkage).
    A KSG estimate on the top ``ksg_dims`` canonical pairs, beside their Gaussian MI, checks
    the model; it runs on held-out variates (each row projected on the canonical directions of the
    cross-fitting model fitted without it), with a within-fold permutation null, so it reads ~0 on
    independent pairs, and is skipped (``ksg_skipped_`` says why) when there are no folds. The
    interval ``ci_`` is a delete-a-group jackknife or a Bayesian bootstrap of the same statistic,
    as in :class:`GaussianEntropy` (the bootstrap is only valid while ``r_x + r_y << n``).

    Parameters
    ----------
    base : {"e", "2"}, default "e"
    shrinkage : None, "ledoit-wolf", "oas" or float in [0, 1], default None
        Shrinks the joint covariance of the block-scaled data (each block divided by its mean
        variance) towards the identity: ``S_x <- (1 - a) S_x + a mu_x I`` (same for y) and
        ``C_xy <- (1 - a) C_xy``; the intensity is Ledoit-Wolf's or OAS's (as in scikit-learn),
        computed by :mod:`whitenclip.whitening`.
    bias_correction : bool, default True
    ci : {"jackknife", "bootstrap", None}, default "jackknife"
    n_boot : int, default 200
    confidence : float, default 0.95
    ksg_dims : int, default 2
        Canonical pairs used by the KSG check (held out, see :class:`KsgCheck`); 0 disables it.
    k : int, default 3
    ksg_max_samples : int, default 10000
    floor : float, default 1e-12
    max_corr : float, default 1 - 1e-9
        A leading canonical correlation above it (or identical X and Y) is a deterministic
        relation: ``mi_`` is then ``inf`` (reported as "deterministic relation: MI is infinite").
    folds : int, default 5
        Folds of the cross-fitted estimate (:func:`cross_fitted_mi`); 0 turns it off. It is the
        headline when ``n < HEADLINE_RATIO * (rank_x + rank_y)``, and decides detectability.
    random_state : int, default 0

    Attributes
    ----------
    crossfit_ : dict or None
        :func:`cross_fitted_mi` of the fitted pairs (nats), or None (``folds=0``, too few rows).
    headline_ : {"in-sample", "cross-fitted"}
    deterministic_ : bool
    effective_dims_ : tuple of float
        :func:`effective_dimension` of X and of Y.
    mi_, mi_plugin_ : float
    ci_ : tuple of float (lo, hi) or None
    canonical_correlations_ : ndarray of shape (min(rank_x_, rank_y_),), descending
    x_mean_ : ndarray of shape (dx,)
    y_mean_ : ndarray of shape (dy,)
    x_weights_ : ndarray of shape (dx, n_pairs)
        ``u = (x - x_mean_) @ x_weights_`` are the canonical variates (unit variance).
    y_weights_ : ndarray of shape (dy, n_pairs)
    rank_x_, rank_y_, n_samples_ : int
    shrinkage_ : float
        Shrinkage intensity used (0 without shrinkage).
    ksg_ : dict or None
        ``{"dims", "k", "n", "mi", "gaussian_mi", "null_ci", "pvalue", "detectable", "permutations"}``
        in ``base`` units (:class:`KsgCheck`), or None (``ksg_dims=0``, or skipped: ``ksg_skipped_``).
    ksg_skipped_ : str
        Why the KSG check did not run ("" when it ran or is off).
    """

    def __init__(self, base="e", shrinkage=None, bias_correction=True, ci="jackknife",
                 n_boot=200, confidence=0.95, ksg_dims=2, k=3, ksg_max_samples=10000,
                 floor=1e-12, max_corr=1.0 - 1e-9, folds=5, random_state=0):
        self.folds = folds
        self.base = base
        self.shrinkage = shrinkage
        self.bias_correction = bias_correction
        self.ci = ci
        self.n_boot = n_boot
        self.confidence = confidence
        self.ksg_dims = ksg_dims
        self.k = k
        self.ksg_max_samples = ksg_max_samples
        self.floor = floor
        self.max_corr = max_corr
        self.random_state = random_state

    def fit(self, X, Y, groups=None, names=("X", "Y")):
        """Fit on paired rows: ``X`` (n_samples, dx), ``Y`` (n_samples, dy); returns ``self``.

        ``groups`` (n_samples ids, optional): rows sharing an id (captions of one image, frames
        of one clip) are kept in one cross-fitting fold and clustered in its interval; a None id
        makes the row its own group. ``names``: what refusals call X and Y (the CLI gives the files).
        """
        unit = _unit(self.base)
        X, Y = _paired(X, Y, min_rows=4, names=names)
        _check_ci(self.ci, _CI_METHODS[:2] + (None,))
        _check_n_boot(self.ci, self.n_boot)
        if groups is not None and len(groups) != X.shape[0]:
            raise InputError(f"mi: {len(groups)} group ids for {X.shape[0]} pairs")
        # a missing id (None) makes the pair its own group
        row_groups = None if groups is None else [f"\0row{i}" if g is None else str(g) for i, g in enumerate(groups)]
        rng = np.random.default_rng(self.random_state)
        n = X.shape[0]
        dx, dy = X.shape[1], Y.shape[1]
        self.x_mean_, self.y_mean_ = X.mean(axis=0), Y.mean(axis=0)
        J = np.hstack([X - self.x_mean_, Y - self.y_mean_])  # centred joint rows (n, dx + dy)
        groups = _GroupedMoments(J, rng, resample=self.ci is not None)
        S = groups.covariance()
        a, (sx, sy) = self._shrinkage(J, dx, S)
        # the joint log det needs r_x + r_y below the row count: the budget is shared symmetrically
        (Ax, lx), (Ay, ly) = _whitening_maps(S, dx, a, self.floor, _max_rank(n), names=names)
        rx, ry = Ax.shape[1], Ay.shape[1]
        K = (1.0 - a) * (Ax.T @ S[:dx, dx:] @ Ay)  # whitened cross-covariance (rx, ry)
        with _one_thread():
            P, rho, Qt = np.linalg.svd(K, full_matrices=False)
        self.deterministic_ = bool(X.shape == Y.shape and np.array_equal(X, Y)) or bool(
            rho.size and rho[0] > self.max_corr and a == 0.0)
        if self.deterministic_:
            warnings.warn("mi: deterministic relation between X and Y (identical inputs, or a canonical "
                          "correlation of 1): MI is infinite", RankDeficiencyWarning, stacklevel=2)
        rho = np.minimum(rho, self.max_corr)
        plugin = -0.5 * float(np.log1p(-rho**2).sum())
        correct = self.bias_correction and a == 0.0
        corrected = plugin - (_mi_bias(rx, ry, n) if correct else 0.0)
        targets = (a * np.repeat([sx, sy], [dx, dy]), a * np.concatenate([sx / lx, sy / ly]))
        stat = _MIStatistic(Ax, Ay, a, targets, self.max_corr, correct)
        self.ci_ = _interval(self, groups, stat, corrected, rng, unit)
        self.x_weights_, self.y_weights_ = Ax @ P, Ay @ Qt.T
        self.canonical_correlations_ = rho
        self.mi_, self.mi_plugin_ = corrected / unit, plugin / unit
        self.rank_x_, self.rank_y_, self.n_samples_, self.shrinkage_ = rx, ry, n, a
        self.effective_dims_ = (effective_dimension(S[:dx, :dx], n), effective_dimension(S[dx:, dx:], n))
        ratio = n / float(rx + ry)
        self.crossfit_ = None
        if int(self.folds) and not self.deterministic_:
            self.crossfit_ = cross_fitted_mi(X, Y, self.folds, row_groups, self.floor, self.confidence,
                                             self.random_state, variates=max(int(self.ksg_dims), 0))
        self.ksg_, self.ksg_skipped_ = self._ksg(unit)
        if self.deterministic_:
            self.mi_, self.ci_ = math.inf, None
        self.headline_ = "cross-fitted" if self.crossfit_ is not None and ratio < HEADLINE_RATIO else "in-sample"
        self._fingerprint = _fingerprint(X, Y)
        return self

    def transform(self, X, Y):
        """Canonical variates ``(U, V)``, each of shape (n_samples, n_pairs)."""
        _check_fitted(self, "x_weights_")
        X, Y = _paired(X, Y)
        return (X - self.x_mean_) @ self.x_weights_, (Y - self.y_mean_) @ self.y_weights_

    def pointwise(self, X, Y):
        """Pointwise MI ``log p(x,y) - log p(x) - log p(y)`` per pair, shape (n_samples,).

        In canonical variates ``(u_i, v_i)`` with correlations ``rho_i``::

            pmi = sum_i [-0.5 log(1 - rho_i^2)
                         - (rho_i^2 u_i^2 - 2 rho_i u_i v_i + rho_i^2 v_i^2) / (2 (1 - rho_i^2))]
        """
        U, V = self.transform(X, Y)
        r2 = self.canonical_correlations_**2
        quad = (r2 * (U**2 + V**2) - 2.0 * self.canonical_correlations_ * U * V) / (1.0 - r2)
        return (-0.5 * np.log1p(-r2).sum() - 0.5 * quad.sum(axis=1)) / _unit(self.base)

    def pointwise_result(self, X, Y, ids=None) -> PointwiseMIResult:
        """:meth:`pointwise` as a :class:`PointwiseMIResult`; ``ids`` default to row numbers.

        For the fitted pairs themselves, when the cross-fitted estimate is the headline, these are
        its held-out values (each pair scored by the model of the folds that did not hold it).
        A deterministic relation (``deterministic_``) raises :class:`InputError`: every pair's
        pointwise MI is infinite, and the finite numbers the clipped correlations give mean nothing.
        """
        if getattr(self, "deterministic_", False):
            raise InputError("pointwise MI: deterministic relation between X and Y (identical inputs, or a canonical "
                             "correlation of 1): every pair's pointwise MI is infinite")
        if getattr(self, "crossfit_", None) is not None and self.headline_ == "cross-fitted":
            Xc, Yc = _paired(X, Y)
            if _fingerprint(Xc, Yc) == self._fingerprint:
                pmi = self.crossfit_["pmi"] / _unit(self.base)
            else:
                pmi = self.pointwise(X, Y)
        else:
            pmi = self.pointwise(X, Y)
        ids = tuple(str(i) for i in (range(pmi.size) if ids is None else ids))
        if len(ids) != pmi.size:
            raise InputError(f"pointwise MI: {len(ids)} ids for {pmi.size} pairs")
        return PointwiseMIResult(ids=ids, pmi=pmi, base=str(self.base))

    def result(self, top: int = 10) -> MIResult:
        """The fitted values as an :class:`MIResult` (``top`` leading canonical correlations).

        ``mi``/``ci`` stay the in-sample estimate (the large-n estimate); ``crossfit`` holds the
        cross-fitted one, ``headline`` names the one to read and ``headline_reason`` says why
        (``n / (rank_x + rank_y)`` against :data:`HEADLINE_RATIO`). Whether dependence is
        detectable is decided on the cross-fitted interval when there is one (see :meth:`_verdict`).
        """
        _check_fitted(self, "mi_")
        unit = _unit(self.base)
        ci = None if self.ci_ is None else (float(self.ci_[0]), float(self.ci_[1]))
        cf = None
        if self.crossfit_ is not None:
            c = self.crossfit_
            cf = CrossFitMI(mi=c["mi"] / unit, ci=(c["ci"][0] / unit, c["ci"][1] / unit), se=c["se"] / unit,
                            folds=int(c["folds"]), grouped=bool(c["grouped"]),
                            ranks=tuple((int(k), int(m)) for k, m in c["ranks"]))
        mi = math.inf if self.deterministic_ else float(self.mi_)
        detectable, note, resolvable = self._verdict(mi, ci, cf)
        n, r = int(self.n_samples_), int(self.rank_x_ + self.rank_y_)
        ratio = n / r
        if self.deterministic_:
            reason = "deterministic relation: no finite estimate"
            head_mi, head_ci = math.inf, None
        elif self.headline_ == "cross-fitted":
            reason = (f"n / (rank_x + rank_y) = {n} / {r} = {ratio:.3g} < {HEADLINE_RATIO:g}: in-sample canonical "
                      "correlations are biased towards 1 this close to the rank, so the cross-fitted estimate "
                      "is the headline")
            head_mi, head_ci = cf.mi, cf.ci
        else:
            reason = (f"n / (rank_x + rank_y) = {n} / {r} = {ratio:.3g} >= {HEADLINE_RATIO:g}: the in-sample "
                      "bias-corrected estimate is unbiased for Gaussian pairs and has the smaller variance")
            if cf is None:
                reason = (f"n / (rank_x + rank_y) = {ratio:.3g}; no cross-fitted estimate "
                          f"({'folds=0' if not int(self.folds) else 'too few rows or groups for the folds'})")
            head_mi, head_ci = mi, ci
        return MIResult(mi=mi, mi_plugin=float(self.mi_plugin_), ci=None if self.deterministic_ else ci,
                        canonical_correlations=tuple(float(r) for r in self.canonical_correlations_[:top]),
                        n=n, rank_x=int(self.rank_x_), rank_y=int(self.rank_y_),
                        base=str(self.base), shrinkage=float(self.shrinkage_),
                        ksg=None if self.ksg_ is None else KsgCheck(**self.ksg_), detectable=detectable,
                        note=note, confidence=float(self.confidence), ci_method=self.ci,
                        bias_corrected=bool(self.bias_correction and self.shrinkage_ == 0.0),
                        crossfit=cf, headline=self.headline_, headline_mi=head_mi, headline_ci=head_ci,
                        headline_reason=reason, deterministic=bool(self.deterministic_), resolvable=resolvable,
                        effective_dims=tuple(float(e) for e in self.effective_dims_),
                        ksg_skipped=str(getattr(self, "ksg_skipped_", "")))

    def _verdict(self, mi, ci, cf):
        """``(detectable, note, resolvable)``.

        * deterministic inputs: detectable, "deterministic relation: MI is infinite";
        * with a cross-fitted estimate, the decision is its interval's: above 0 = detected;
          otherwise, when ``n < d_eff_x + d_eff_y`` (effective dimensions, :func:`effective_dimension`)
          the sample cross-covariance noise exceeds what n rows resolve: ``detectable`` None and
          "cannot resolve dependence at this n" (not "none"); else "no detectable dependence", with
          a negative estimate explained, not shown as information;
        * without one, :func:`mi_detectability` of the in-sample interval.
        """
        if self.deterministic_:
            return True, ("deterministic relation: MI is infinite (the inputs are identical, or a linear "
                          "combination of X equals one of Y: a canonical correlation of 1)"), True
        if cf is None:
            det, note = mi_detectability(mi, ci, float(self.confidence))
            return det, note, None
        level = f"{100 * float(self.confidence):g}%"
        n = int(self.n_samples_)
        dex, dey = self.effective_dims_
        resolvable = n >= dex + dey
        where = f"cross-fitted {cf.mi:.3g}, {level} interval [{cf.ci[0]:.3g}, {cf.ci[1]:.3g}]"
        if cf.ci[0] > 0:
            return True, f"dependence detected: the cross-fitted {level} interval lies above 0 ({where})", resolvable
        if not resolvable:
            return None, (f"cannot resolve dependence at this n: n = {n} rows < d_eff(X) + d_eff(Y) = {dex:.0f} + "
                          f"{dey:.0f} (effective dimensions), so sample cross-covariance noise exceeds what the rows "
                          f"can resolve; this is not evidence of independence ({where})"), resolvable
        if all(m == 0 for _, m in cf.ranks):
            return False, ("no detectable dependence: held-out likelihood preferred the independence model in "
                           f"every fold ({where})"), resolvable
        if cf.mi < 0:
            return False, (f"no detectable dependence: the cross-fitted estimate {cf.mi:.3g} is below 0: the "
                           "fitted dependence predicts held-out pairs worse than independence does (noise fitted "
                           f"as signal); it is not an amount of information ({where})"), resolvable
        return False, f"no detectable dependence: the cross-fitted {level} interval contains 0 ({where})", resolvable

    def summary(self, top: int = 10) -> dict:
        """JSON-ready dict of :meth:`result`: mi, mi_plugin, ci, canonical_correlations (top), n,
        ranks, base, shrinkage, ksg, detectable, note, ..."""
        return self.result(top).to_dict()

    # ---------------------------------------------------------------- helpers

    def _shrinkage(self, J, dx, S):
        """Intensity ``a`` and block mean variances ``(mu_x, mu_y)`` (``J`` centred joint rows, ``S``
        their ddof=1 covariance).

        The Ledoit-Wolf / OAS intensities are those of the block-scaled rows
        ``Z = J / sqrt(mu_block)`` taken as centred (scikit-learn's ``assume_centered=True``),
        from ``whitenclip.whitening``: ddof=0 covariance ``S_Z = D S D (n - 1) / n`` with
        ``D = diag(mu_block^{-1/2})``, and for Ledoit-Wolf ``sum_i ||z_i||^4``.
        """
        var = np.diag(S)
        mus = (float(var[:dx].mean()), float(var[dx:].mean()))
        s = self.shrinkage
        if s is None:
            return 0.0, mus
        if isinstance(s, (int, float)) and not isinstance(s, bool):
            if not 0.0 <= s <= 1.0:
                raise InputError(f"shrinkage must be in [0, 1], got {s}")
            return float(s), mus
        if s not in ("ledoit-wolf", "oas"):
            raise InputError(f"unknown shrinkage {s!r} (use ledoit-wolf, oas or a number in [0, 1])")
        n = J.shape[0]
        scale = 1.0 / np.sqrt(np.repeat(mus, [dx, J.shape[1] - dx]))
        cov0 = S * np.outer(scale, scale) * ((n - 1.0) / n)
        if s == "oas":
            return oas_shrinkage(cov0, n), mus
        sum4 = float((((J * J) @ (scale * scale)) ** 2).sum())
        return ledoit_wolf_shrinkage_from_sums(cov0, n, sum4), mus

    def _ksg(self, unit):
        """``(ksg dict or None, why skipped)``: KSG MI of the held-out canonical variates of the
        cross-fitting folds (:func:`cross_fitted_mi`), beside the Gaussian MI of the same variates
        and the KSG estimates of within-fold permutations (its noise under independence)."""
        m = int(self.ksg_dims)
        if m <= 0:
            return None, ""
        if self.deterministic_:
            return None, "deterministic relation: no finite MI to check"
        cf = self.crossfit_
        if cf is not None and cf.get("variates") is None:
            return None, "skipped: a cross-fitting fold kept no canonical direction to project held-out rows on"
        if cf is None:
            why = ("the cross-fit is off (folds=0)" if not int(self.folds) else
                   f"too few rows or groups for {int(self.folds)} cross-fitting folds (at least "
                   f"{4 * max(int(self.folds), 3)} rows)")
            return None, ("skipped: the KSG check runs on held-out canonical variates (directions fitted on the "
                          f"other cross-fitting folds), and {why}; in-sample variates would show dependence "
                          "that is not there")
        U, V, fold = cf["variates"]
        rng = np.random.default_rng([int(self.random_state), 1])  # its own stream: the estimate stays seeded
        if self.ksg_max_samples and U.shape[0] > self.ksg_max_samples:
            keep = np.sort(rng.choice(U.shape[0], int(self.ksg_max_samples), replace=False))
            U, V, fold = U[keep], V[keep], fold[keep]
        n, q = U.shape
        if n <= int(self.k) + 1:
            return None, f"skipped: {n} held-out rows are too few for k = {int(self.k)} neighbours"
        value = ksg_mi(U, V, self.k)
        level = 1.0 - float(self.confidence)  # p-values of `perms` permutations reach 1 / (perms + 1) <= level
        perms = max(KSG_PERMUTATIONS, math.ceil(1.0 / level - 1e-9) - 1) if level > 0 else KSG_PERMUTATIONS
        with warnings.catch_warnings():  # duplicate rows were reported (once) by the estimate itself
            warnings.filterwarnings("ignore", message="ksg_mi: dropped")
            null = np.array([ksg_mi(U, V[_permute_within(fold, rng)], self.k) for _ in range(perms)])
        pvalue = (1.0 + float((null >= value).sum())) / (1.0 + null.size)
        lo, hi = np.quantile(null, [0.025, 0.975])
        gauss = _gaussian_mi_of(U, V)
        return {"dims": q, "k": int(self.k), "n": int(n), "mi": value / unit,
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


# --------------------------------------------------------------------------- cross-fitted MI

HEADLINE_RATIO = 10.0
"""The in-sample estimate is the headline when ``n >= HEADLINE_RATIO * (rank_x + rank_y)``."""
_RANK_GRID = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)


class _FoldMoments:
    """Count, sum and second moment of the joint rows ``Z`` (n, p) in each fold (about the overall
    mean ``centre_``), so the moments of any union of folds, and the second moment of one fold about
    any mean, are sums: no second pass over the rows."""

    def __init__(self, Z, folds):
        self.centre = Z.mean(axis=0)
        self.counts = np.array([f.size for f in folds], dtype=np.float64)
        self.sums = np.empty((len(folds), Z.shape[1]))
        self.seconds = np.empty((len(folds), Z.shape[1], Z.shape[1]))
        for j, f in enumerate(folds):
            Zf = Z[f] - self.centre
            self.sums[j], self.seconds[j] = Zf.sum(axis=0), Zf.T @ Zf

    def pooled(self, idx):
        """``(N, mean, S)`` of the union of folds ``idx`` (mean relative to ``centre``, S ddof=1)."""
        N, s = self.counts[idx].sum(), self.sums[idx].sum(axis=0)
        mean = s / N
        return N, mean, (self.seconds[idx].sum(axis=0) - N * np.outer(mean, mean)) / (N - 1.0)

    def second_about(self, j, mean):
        """``mean_i (z_i - c - mean)(z_i - c - mean)^T`` over fold ``j``."""
        n, s = self.counts[j], self.sums[j]
        return (self.seconds[j] - np.outer(s, mean) - np.outer(mean, s)) / n + np.outer(mean, mean)


class _FoldModel:
    """Gaussian model fitted on training rows (joint covariance ``S``, ``dx`` columns of X):
    per side the eigenpairs above ``floor * lambda_max``, and the whitened cross-covariance in the
    principal bases, ``Kfull = (V_x lam_x^{-1/2})^T S_xy (V_y lam_y^{-1/2})``."""

    def __init__(self, N, S, dx, floor):
        self.N, self.dx, self.dy = N, dx, S.shape[0] - dx
        self.lx, self.Vx, self.rx = _side_eigh(S[:dx, :dx], floor)
        self.ly, self.Vy, self.ry = _side_eigh(S[dx:, dx:], floor)
        self.trx, self.trY = float(np.trace(S[:dx, :dx])), float(np.trace(S[dx:, dx:]))
        self.Wx = self.Vx[:, :self.rx] / np.sqrt(self.lx[:self.rx])
        self.Wy = self.Vy[:, :self.ry] / np.sqrt(self.ly[:self.ry])
        self.Kfull = self.Wx.T @ S[:dx, dx:] @ self.Wy
        self._cca = {}

    def ranks(self, k):
        """The symmetric budget: ``k`` directions per side, or all a side has."""
        return min(k, self.rx), min(k, self.ry)

    def grid(self):
        """Candidate ``k``: the rank grid (and the largest valid k) with ``k_x + k_y <= N - 2``."""
        ks = [k for k in _RANK_GRID if sum(self.ranks(k)) <= self.N - 2 and k <= max(self.rx, self.ry)]
        top = max(self.rx, self.ry)
        while top > 0 and sum(self.ranks(top)) > self.N - 2:
            top -= 1
        return sorted(set(ks) | ({top} if top > 0 else set()))

    def cca(self, k):
        """Canonical pairs of the top-``k`` principal coordinates: ``(P, rho, Q)``, rho descending."""
        if k not in self._cca:
            kx, ky = self.ranks(k)
            P, rho, Qt = np.linalg.svd(self.Kfull[:kx, :ky], full_matrices=False)
            self._cca[k] = (P, np.minimum(rho, _MAX_CCA), Qt.T)
        return self._cca[k]

    def marginal(self, Hx, hx, Hy, hy, k):
        """Mean held-out log-density of the two marginals, each a probabilistic PCA with ``k``
        directions (the kept eigenvalues) and one isotropic variance for the rest, from the held-out
        second moments in the principal bases (``Hx`` diagonal, ``hx`` its trace over all dims)."""
        out = 0.0
        for lam, H, h, tr, d, r in ((self.lx, Hx, hx, self.trx, self.dx, self.ranks(k)[0]),
                                    (self.ly, Hy, hy, self.trY, self.dy, self.ranks(k)[1])):
            q = H[:r]
            out -= 0.5 * (float((q / lam[:r]).sum()) + float(np.log(lam[:r]).sum()) + r * _LOG_2PI)
            if r < d:
                s2 = (tr - float(lam[:r].sum())) / (d - r)
                if not s2 > 0.0:
                    return -math.inf
                out -= 0.5 * ((h - float(q.sum())) / s2 + (d - r) * (_LOG_2PI + math.log(s2)))
        return out

    def pmi_terms(self, Cxx, Cyy, Cxy, k):
        """Mean held-out pointwise MI of each canonical pair of the top-``k`` model, cumulated:
        entry ``m`` is the held-out mean of ``log p(x, y) - log p(x) - log p(y)`` with ``m`` pairs
        (entry 0 is 0: the independence model). ``C..`` are held-out second moments in the
        whitened principal coordinates."""
        kx, ky = self.ranks(k)
        P, rho, Q = self.cca(k)
        uu = ((Cxx[:kx, :kx] @ P) * P).sum(axis=0)
        vv = ((Cyy[:ky, :ky] @ Q) * Q).sum(axis=0)
        uv = ((Cxy[:kx, :ky] @ Q) * P).sum(axis=0)
        r2 = rho * rho
        terms = -0.5 * np.log1p(-r2) - 0.5 * (r2 * (uu + vv) - 2.0 * rho * uv) / (1.0 - r2)
        return np.concatenate([[0.0], np.cumsum(terms)])


_MAX_CCA = 1.0 - 1e-9
_LOG_2PI = math.log(2.0 * math.pi)


def _side_eigh(S, floor):
    lam, V = eigh_descending(S)
    r = int((lam > floor * lam[0]).sum()) if lam[0] > 0.0 else 0
    return lam, V, r


def _select(fm, idx, dx, floor):
    """``(k, m)`` maximising the held-out joint log-likelihood of a K-fold cross-validation over
    the folds ``idx`` (each left out in turn, the model fitted on the others): ``k`` principal
    directions per side, ``m`` canonical pairs (0: the independence model)."""
    total: dict = {}
    for j in idx:
        N, mean, S = fm.pooled([i for i in idx if i != j])
        mod = _FoldModel(N, S, dx, floor)
        C = fm.second_about(j, mean)
        Hx = np.einsum("ij,ik,kj->j", mod.Vx, C[:dx, :dx], mod.Vx, optimize=True)
        Hy = np.einsum("ij,ik,kj->j", mod.Vy, C[dx:, dx:], mod.Vy, optimize=True)
        hx, hy = float(np.trace(C[:dx, :dx])), float(np.trace(C[dx:, dx:]))
        Cxx, Cyy = mod.Wx.T @ C[:dx, :dx] @ mod.Wx, mod.Wy.T @ C[dx:, dx:] @ mod.Wy
        Cxy = mod.Wx.T @ C[:dx, dx:] @ mod.Wy
        for k in mod.grid():
            base = mod.marginal(Hx, hx, Hy, hy, k)
            cum = mod.pmi_terms(Cxx, Cyy, Cxy, k)
            for m in (0, *(g for g in _RANK_GRID if g < min(mod.ranks(k))), min(mod.ranks(k))):
                total.setdefault((k, m), []).append(fm.counts[j] * (base + cum[m]))
    valid = {key: sum(v) for key, v in total.items() if len(v) == len(idx)}
    if not valid:
        return None
    return max(valid, key=valid.get)


def _fold_indices(n, n_folds, label, rng):
    """``n_folds`` folds of row indices (whole groups when ``label``, each row's group index
    0..G-1, is given), seeded."""
    if label is None:
        return [np.sort(f) for f in np.array_split(rng.permutation(n), n_folds)]
    order = rng.permutation(label.max() + 1)
    fold_of = np.empty(order.size, dtype=np.int64)
    for j, part in enumerate(np.array_split(order, n_folds)):
        fold_of[part] = j
    return [np.flatnonzero(fold_of[label] == j) for j in range(n_folds)]


def cross_fitted_mi(X, Y, folds=5, groups=None, floor=1e-12, confidence=0.95, random_state=0, variates=0):
    """Cross-fitted Gaussian MI: held-out pointwise log-density ratios (nats), with a model chosen
    by held-out likelihood.

    Rows are split into ``folds`` folds (whole groups when ``groups`` is given). For each fold f,
    a model is fitted on the other folds and evaluated on f::

        pmi_i = log p(x_i, y_i) - log p(x_i) - log p(y_i),     i in fold f

    The model: per side, the top ``k`` principal directions of the training rows (the same budget
    ``k`` for X and Y), and ``m <= k`` canonical pairs of those coordinates with their training
    correlations ``rho_j`` (``m = 0``: independence). ``(k, m)`` maximises the held-out *joint*
    log-likelihood ``log p(x) + log p(y) + pmi`` (marginals: probabilistic PCA with ``k``
    directions) of an inner cross-validation over the training folds only, so fold f never
    chooses its own model. In the canonical variates ``u_j, v_j`` of the held-out rows, scaled to
    unit variance over fold f (marginal scales only: a training eigenvalue inflated by noise
    would otherwise turn into spurious dependence; the pairing is not used)::

        pmi_i = sum_j [-0.5 log(1 - rho_j^2) - (rho_j^2 (u_ij^2 + v_ij^2) - 2 rho_j u_ij v_ij) / (2 (1 - rho_j^2))]

    The estimate is ``mean_i pmi_i``; its interval ``mean +/- t_{n-1} se`` with ``se`` the
    standard error of the held-out values (clustered by group when ``groups`` is given). For
    independent rows its expectation is <= 0 (a KL divergence with the sign flipped), so a
    negative value means the fitted dependence predicts held-out pairs worse than independence.

    ``variates`` > 0 also returns the held-out canonical variates of the top ``variates`` canonical
    pairs of each fold's top-``k`` model (whatever ``m``; fewer when a fold's model has fewer):
    ``"variates": (U, V, fold)``, U and V of shape (n, q), each fold's rows centred and scaled to
    unit variance over that fold, ``fold`` (n,) each row's fold. The directions never saw the rows
    they project, so U and V are independent whenever X and Y are (the KSG check of
    :class:`GaussianMI` runs on them).

    Returns a dict ``{"mi", "ci", "se", "pmi" (n,), "folds", "grouped", "ranks" [(k, m) per fold],
    "held_out_correlation", "variates"}`` in nats, or None when there are too few rows (or groups)
    for ``folds`` folds (at least ``4 * folds`` rows).
    """
    X, Y = _paired(X, Y)
    n, dx = X.shape
    n_folds = int(folds)
    label, n_groups = None, n  # each row's group index (groups compared as strings), and how many groups
    if groups is not None:
        unique, label = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
        n_groups = unique.size
    if n_folds < 3 or n < 4 * n_folds or n_groups < n_folds:
        return None
    rng = np.random.default_rng(random_state)
    idx = _fold_indices(n, n_folds, label, rng)
    if min(f.size for f in idx) < 2:
        return None
    Z = np.hstack([X, Y])
    pmi = np.empty(n)
    ranks, top_corr, held = [], [], []
    with _one_thread():
        fm = _FoldMoments(Z, idx)
        for f in range(n_folds):
            rest = [i for i in range(n_folds) if i != f]
            chosen = _select(fm, rest, dx, floor)
            if chosen is None:
                return None
            k, m = chosen
            N, mean, S = fm.pooled(rest)
            mod = _FoldModel(N, S, dx, floor)
            kx, ky = mod.ranks(k)
            ranks.append((int(k), int(m)))
            Zh = Z[idx[f]] - fm.centre - mean
            if int(variates) > 0:
                P, _, Q = mod.cca(k)
                q = min(int(variates), P.shape[1])
                held.append((_unit_columns(Zh[:, :dx] @ (mod.Wx[:, :kx] @ P[:, :q])),
                             _unit_columns(Zh[:, dx:] @ (mod.Wy[:, :ky] @ Q[:, :q]))))
            if m == 0:
                pmi[idx[f]] = 0.0
                continue
            P, rho, Q = mod.cca(k)
            P, rho, Q = P[:, :m], rho[:m], Q[:, :m]
            U = Zh[:, :dx] @ (mod.Wx[:, :kx] @ P)
            V = Zh[:, dx:] @ (mod.Wy[:, :ky] @ Q)
            U /= np.sqrt(np.maximum((U * U).mean(axis=0), np.finfo(float).tiny))
            V /= np.sqrt(np.maximum((V * V).mean(axis=0), np.finfo(float).tiny))
            top_corr.append(float((U[:, 0] * V[:, 0]).mean()))
            r2 = rho * rho
            pmi[idx[f]] = (-0.5 * float(np.log1p(-r2).sum())
                           - 0.5 * ((r2 * (U * U + V * V) - 2.0 * rho * U * V) / (1.0 - r2)).sum(axis=1))
    mi = float(pmi.mean())
    if groups is None:
        se = float(pmi.std(ddof=1)) / math.sqrt(n)
        dof = n - 1
    else:
        sums = np.bincount(label, weights=pmi - mi)
        G = sums.size
        se = math.sqrt(G / (G - 1.0) * float((sums**2).sum())) / n
        dof = G - 1
    t = float(_student_t.ppf(0.5 + 0.5 * confidence, dof))
    held_out = None
    if held and min(u.shape[1] for u, _ in held) > 0:
        q = min(u.shape[1] for u, _ in held)
        U, V, fold = np.empty((n, q)), np.empty((n, q)), np.empty(n, dtype=np.int64)
        for f, (u, v) in enumerate(held):
            U[idx[f]], V[idx[f]], fold[idx[f]] = u[:, :q], v[:, :q], f
        held_out = (U, V, fold)
    return {"mi": mi, "ci": (mi - t * se, mi + t * se), "se": se, "pmi": pmi, "folds": n_folds,
            "grouped": groups is not None, "ranks": ranks,
            "held_out_correlation": min(top_corr) if len(top_corr) == n_folds else None, "variates": held_out}


def _unit_columns(A):
    """Columns of ``A`` centred and scaled to unit variance (a constant column stays 0)."""
    A = A - A.mean(axis=0)
    return A / np.sqrt(np.maximum((A * A).mean(axis=0), np.finfo(float).tiny))


def effective_dimension(S, n):
    """Participation ratio ``(tr Sigma)^2 / tr(Sigma^2)`` of a covariance, from the ddof=1 sample
    covariance ``S`` of ``n`` rows with the Gaussian-unbiased estimates (Bai & Saranadasa 1996)::

        tr(Sigma^2)^ = (n-1)^2 / ((n-2)(n+1)) * (tr(S^2) - (tr S)^2 / (n-1))
        (tr Sigma)^2^ = (tr S)^2 - 2 tr(Sigma^2)^ / (n-1)

    (the plug-in ratio is biased low when n is near d: an isotropic N(0, I_512) at n = 500 reads
    253 plug-in, 512 corrected). Falls back to the plug-in ratio when the correction is not positive.

    >>> round(effective_dimension(np.eye(4), 10**9), 6)
    4.0
    """
    t1, t2 = float(np.trace(S)), float((S * S).sum())
    if not t2 > 0.0:
        return 0.0
    n = float(n)
    if n > 2:
        t2u = (n - 1.0) ** 2 / ((n - 2.0) * (n + 1.0)) * (t2 - t1 * t1 / (n - 1.0))
        t1u = t1 * t1 - 2.0 * t2u / (n - 1.0)
        if t2u > 0.0 and t1u > 0.0:
            return t1u / t2u
    return t1 * t1 / t2


PAIR_BY = ("id", "row")
"""Explicit pairing rules of :func:`pair_rows` (``mi --pair-by``); None = the automatic rule."""
ID_KINDS = ("ids", "captions", "none")
"""What a side's row ids are (:func:`ids_kind`): real ids, its own captions, or row numbers only."""


def ids_kind(source) -> str:
    """What the row ids of an opened source are, for pairing (:func:`pair_rows`):

    * ``"ids"``: ids of their own: an id column of a table (``--id-column``, or its ``id`` column;
      integers ``0..n-1`` included), ``.npz``/``.safetensors``/``.pt`` ids, image paths (raw images
      or an image store);
    * ``"captions"``: the ids are the caption text itself (raw captions, or a caption store:
      ``embed`` names each caption row by its caption);
    * ``"none"``: row numbers the reader made up (``.npy``, text vectors, a table without an id column).

    ``source``: a :class:`~whitenclip.stores.EmbeddingFile` or :class:`~whitenclip.sources.EncodedSource`.
    """
    inputs = getattr(source, "inputs", None)
    if inputs is not None:  # raw images/captions: each item (path or caption) is its id
        return "captions" if inputs.modality == "text" else "ids"
    # an EmbeddingFile's blocks: (rows, ids or None); a table block knows its id column
    blocks = getattr(source, "_blocks", ())
    if not any(ids is not None or getattr(getattr(b, "info", None), "id_column", None) for b, ids in blocks):
        return "none"
    p = Path(str(source.path))
    store = p.is_dir() and (p / "meta.json").is_file()
    return "captions" if store and (source.meta or {}).get("modality") == "text" else "ids"


def pair_rows(ids_x, X, ids_y, Y, name_x="X", name_y="Y", *, kinds=(None, None), pair_by=None):
    """Pair the rows of two inputs: ``(ids, X, Y, how)``, ``how`` = ``"id"`` (Y reordered) or ``"row"``.

    ``kinds``: :func:`ids_kind` of each side (None: inferred, ids equal to the row numbers
    ``"0", "1", ...`` then count as none). The rule (``pair_by=None``):

    * both sides carry real ids (``"ids"``): paired by id. Identical lists pair row i with row i,
      the same ids in another order reorder ``Y`` (``how = "id"``), and anything else is refused
      naming the first id found on one side only (or the first duplicate);
    * either side has no ids, or its ids are its own captions: paired by row (row i with row i;
      the row counts must agree).

    ``pair_by="id"`` pairs by id whatever the kinds (captions included), and is refused when a
    side has no ids; ``pair_by="row"`` pairs by position. An id read as ``"None"`` (a null in the
    file) is refused when pairing by id: it names no row.
    """
    if pair_by not in (None, *PAIR_BY):
        raise InputError(f"pair_by must be one of {', '.join(PAIR_BY)} or None; got {pair_by!r}")
    kinds = tuple(k if k is not None else ("ids" if _own_ids(i, A.shape[0]) else "none")
                  for k, i, A in zip(kinds, (ids_x, ids_y), (X, Y)))
    by_id = kinds == ("ids", "ids") if pair_by is None else pair_by == "id"
    if pair_by == "id":
        for kind, name in zip(kinds, (name_x, name_y)):
            if kind == "none":
                raise InputError(f"--pair-by id: {name} has no ids (its rows are only numbered); "
                                 "pair by row (--pair-by row), or give ids (an id column, .npz/.safetensors ids)")
    if not by_id:
        if X.shape[0] != Y.shape[0]:
            raise InputError(f"{name_x} has {X.shape[0]} rows but {name_y} has {Y.shape[0]}; "
                             "mi needs paired rows (row i with row i)")
        return list(ids_x), X, Y, "row"
    for ids, name in ((ids_x, name_x), (ids_y, name_y)):
        bad = next((i for i, v in enumerate(ids) if v is None or str(v) == "None"), None)
        if bad is not None:
            raise InputError(f"{name}: row {bad} has a null id (None); give every row an id, or none")
    ids_x, ids_y = [str(i) for i in ids_x], [str(i) for i in ids_y]
    if ids_x == ids_y:
        return ids_x, X, Y, "row"
    where_x: dict = {}  # id -> row, per side
    where_y: dict = {}
    for ids, name, seen in ((ids_x, name_x, where_x), (ids_y, name_y, where_y)):
        for i, v in enumerate(ids):
            if v in seen:
                raise InputError(f"{name}: id {v!r} appears twice (rows {seen[v]} and {i}); pairing by id "
                                 "needs unique ids")
            seen[v] = i
    for i, v in enumerate(ids_x):
        if v not in where_y:
            raise InputError(f"{name_x} and {name_y} carry different ids: {v!r} (row {i} of {name_x}) is not in "
                             f"{name_y}; rows are paired by id when both inputs carry ids (--pair-by row: by position)")
    for i, v in enumerate(ids_y):
        if v not in where_x:
            raise InputError(f"{name_x} and {name_y} carry different ids: {v!r} (row {i} of {name_y}) is not in "
                             f"{name_x}; rows are paired by id when both inputs carry ids (--pair-by row: by position)")
    order = np.fromiter((where_y[v] for v in ids_x), dtype=np.int64, count=len(ids_x))
    return ids_x, X, Y[order], "id"


def _own_ids(ids, n):
    """Whether ``ids`` are a file's own (not the row numbers a reader makes up)."""
    return ids is not None and len(ids) == n and any(str(v) != str(i) for i, v in enumerate(ids))


# --------------------------------------------------------------------------- internals


class _GroupedMoments:
    """Per-group count, sum and second moment of the rows of ``Z`` (n, p).

    Rows are shuffled (seeded) into ``G = min(n, 48)`` groups (one group when
    ``resample=False``); any weighting of the groups pools exactly into a covariance::

        N = sum v_g n_g,  s = sum v_g s_g,  M = sum v_g M_g,  S = (M - s s^T / N) / (N - 1)

    at ``G p^2`` cost instead of ``n p^2``. The jackknife leaves one group out (``v_g = 0``,
    others 1); the Bayesian bootstrap (Rubin 1981) draws ``v = G * Dirichlet(1, ..., 1)``:
    mean 1 and variance ~1 like multinomial counts but never 0, so replicates keep full rank.
    """

    def __init__(self, Z, rng, resample=True):
        n, p = Z.shape
        G = min(n, _GROUPS) if resample else 1
        groups = np.array_split(rng.permutation(n), G) if G > 1 else [slice(None)]
        self.counts = np.empty(G)
        self.sums = np.empty((G, p))
        self.seconds = np.empty((G, p * p))
        for j, g in enumerate(groups):
            Zg = Z[g]
            self.counts[j] = Zg.shape[0]
            self.sums[j] = Zg.sum(axis=0)
            self.seconds[j] = (Zg.T @ Zg).ravel()

    def covariance(self):
        """ddof=1 covariance of all rows, shape (p, p)."""
        p = self.sums.shape[1]
        N, s = self.counts.sum(), self.sums.sum(axis=0)
        return (self.seconds.sum(axis=0).reshape(p, p) - np.outer(s, s) / N) / (N - 1.0)

    def jackknife(self, statistic):
        """``statistic(S, n)`` with each group left out in turn; shape (G,)."""
        p = self.sums.shape[1]
        M, s, N = self.seconds.sum(axis=0), self.sums.sum(axis=0), self.counts.sum()
        out = np.empty(self.counts.size)
        with _one_thread():
            for g in range(out.size):
                Ng, sg = N - self.counts[g], s - self.sums[g]
                S = ((M - self.seconds[g]).reshape(p, p) - np.outer(sg, sg) / Ng) / (Ng - 1.0)
                out[g] = statistic(S, int(Ng))
        return out

    def bootstrap(self, n_boot, statistic, rng, chunk=16):
        """``statistic(S, n)`` for ``n_boot`` Bayesian-bootstrap replicates; shape (n_boot,)."""
        G, p = self.sums.shape
        weights = G * rng.dirichlet(np.ones(G), size=int(n_boot))
        n = int(self.counts.sum())
        out = np.empty(len(weights))
        for start in range(0, len(weights), chunk):
            w = weights[start:start + chunk]
            M = (w @ self.seconds).reshape(-1, p, p)
            N, s = w @ self.counts, w @ self.sums
            with _one_thread():
                for j in range(len(w)):
                    out[start + j] = statistic((M[j] - np.outer(s[j], s[j]) / N[j]) / (N[j] - 1.0), n)
        return out


class _EntropyStatistic:
    """Bias-corrected ``0.5 log det S`` of a replicate covariance.

    Replicates are factorised in the input coordinates when the kept rank is full; if that
    Cholesky fails (an ill-conditioned input), or the rank is deficient, they are first
    whitened with ``W = V lam^{-1/2}`` and ``log det S = log det(W^T S W) + sum log lam``.
    """

    def __init__(self, r, V, lam):
        self.r, self.W, self.offset = r, V / np.sqrt(lam), float(np.log(lam).sum())
        self.project = V.shape[1] < V.shape[0]

    def __call__(self, S, n):
        bias = log_det_bias(self.r, n)
        if not self.project:
            try:
                return 0.5 * (_log_det_chol(S) - bias)
            except linalg.LinAlgError:
                pass
        return 0.5 * (_log_det_chol(self.W.T @ S @ self.W) + self.offset - bias)


class _MIStatistic:
    """MI of a replicate joint covariance: ``0.5 (logdet S_x + logdet S_y - logdet S) - bias``.

    MI is invariant to invertible maps of each block, so replicates are factorised in the input
    coordinates when both blocks have full rank, and otherwise (or when that fails) after the
    block whitening ``B = diag(A_x, A_y)``. ``targets`` holds the shrinkage target's diagonal,
    times the intensity ``a``, in both coordinates (input, whitened).
    """

    def __init__(self, Ax, Ay, a, targets, max_corr, correct):
        self.rx, self.ry, self.a, self.targets = Ax.shape[1], Ay.shape[1], a, targets
        self.max_corr, self.correct = max_corr, correct
        self.B = linalg.block_diag(Ax, Ay)  # (dx + dy, rx + ry)
        self.project = self.B.shape[0] > self.B.shape[1]

    def __call__(self, S, n):
        bias = _mi_bias(self.rx, self.ry, n) if self.correct else 0.0
        if not self.project:
            try:
                return self._mi(S, self.targets[0]) - bias
            except linalg.LinAlgError:
                pass
        return self._mi(self.B.T @ S @ self.B, self.targets[1]) - bias

    def _mi(self, S, target):
        if self.a:
            S = (1.0 - self.a) * S
            S[np.diag_indices_from(S)] += target
        k = self.rx
        try:
            return 0.5 * (_log_det_chol(S[:k, :k]) + _log_det_chol(S[k:, k:]) - _log_det_chol(S))
        except linalg.LinAlgError:  # degenerate joint: canonical correlations, clipped
            Lx = linalg.cholesky(S[:k, :k], lower=True)
            Ly = linalg.cholesky(S[k:, k:], lower=True)
            K = linalg.solve_triangular(Lx, S[:k, k:], lower=True)
            K = linalg.solve_triangular(Ly, K.T, lower=True)
            rho = np.minimum(linalg.svdvals(K), self.max_corr)
            return -0.5 * float(np.log1p(-rho**2).sum())


def _mi_bias(rx, ry, n):
    """Expected error of the plug-in MI: ``0.5 (b(r_x) + b(r_y) - b(r_x + r_y))`` (>= 0)."""
    return 0.5 * (log_det_bias(rx, n) + log_det_bias(ry, n) - log_det_bias(rx + ry, n))


def _interval(est, groups, statistic, estimate, rng, unit):
    """``est.ci`` interval (in ``unit``) of ``statistic`` over the row ``groups``."""
    method, level = est.ci, est.confidence
    if method is None:
        return None
    if method == "jackknife":
        reps = groups.jackknife(statistic) / unit
        G = reps.size
        se = math.sqrt((G - 1) / G * float(((reps - reps.mean()) ** 2).sum()))
        t = float(_student_t.ppf(0.5 + 0.5 * level, G - 1))
        return (estimate / unit - t * se, estimate / unit + t * se)
    reps = groups.bootstrap(est.n_boot, statistic, rng) / unit
    return _centred_interval(estimate / unit, reps, level)


def _max_rank(n):
    """Largest rank whose log det stays defined with any one row group left out (jackknife)."""
    return n - 1 - math.ceil(n / min(n, _GROUPS))


def _one_thread():
    """Single-threaded BLAS for LAPACK factorisations of (d, d) matrices: on a busy 2-core
    machine OpenBLAS threads make ``eigh`` of a 768 x 768 matrix ~50x slower, not faster."""
    return threadpool_limits(1, user_api="blas")


def _log_det_chol(S):
    """log det of a symmetric positive definite matrix via Cholesky."""
    return 2.0 * float(np.log(np.diag(linalg.cholesky(S, lower=True))).sum())


def _kept_eigh(cov, floor, max_rank, what):
    """Leading eigenpairs above ``floor * lambda_max``, at most ``max_rank`` of them."""
    lam, V = eigh_descending(cov)
    d = lam.size
    if not lam[0] > 0.0:
        raise InputError(f"{what}: all directions have zero variance")
    r = min(int((lam > floor * lam[0]).sum()), int(max_rank))
    if r < 1:
        raise InputError(f"{what}: too few rows for any kept direction")
    if r < d:
        warnings.warn(f"{what}: kept rank {r} of {d} (variance below {floor:g} x the largest, "
                      f"or beyond the {max_rank} allowed by the row count)",
                      RankDeficiencyWarning, stacklevel=4)
    return lam[:r].copy(), np.ascontiguousarray(V[:, :r])


def _top_eigh(Xc, floor, max_rank, m):
    """Top ``m`` (at most) eigenpairs of the ddof=1 covariance of centred rows ``Xc`` above
    ``floor * lambda_max`` and within ``max_rank``, quietly (the caller's rank was reported)."""
    lam, V = eigh_descending((Xc.T @ Xc) / (Xc.shape[0] - 1.0))
    if not lam[0] > 0.0:
        return lam[:0], V[:, :0]
    r = min(int((lam > floor * lam[0]).sum()), int(max_rank), int(m))
    return lam[:r].copy(), np.ascontiguousarray(V[:, :r])


def _whitening_maps(S, dx, a, floor, budget, names=("X", "Y")):
    """``(A_x, lam_x), (A_y, lam_y)``: ``A = V lam^{-1/2}`` (d, r) of each shrunk block
    ``(1 - a) S_b + a (tr S_b / d_b) I`` over its kept rank, with ``r_x + r_y <= budget`` shared
    symmetrically: each side keeps up to half, and a side that needs less leaves the rest to the
    other (never 487 x 1)."""
    sides = []
    for cov, what in ((S[:dx, :dx], f"mi: {names[0]}"), (S[dx:, dx:], f"mi: {names[1]}")):
        lam, V = eigh_descending(shrink(cov, a))
        if not lam[0] > 0.0:
            raise InputError(f"{what}: all directions have zero variance")
        sides.append((lam, V, int((lam > floor * lam[0]).sum()), what))
    (_, _, nx, _), (_, _, ny, _) = sides
    cap_x = max(budget // 2, budget - ny, 1)
    caps = (cap_x, max(budget - min(nx, cap_x), 1))
    out = []
    for (lam, V, r0, what), cap in zip(sides, caps):
        r = min(r0, cap)
        if r < 1:
            raise InputError(f"{what}: too few rows for any kept direction")
        if r < lam.size:
            warnings.warn(f"{what}: kept rank {r} of {lam.size} (variance below {floor:g} x the largest, "
                          f"or beyond the {cap} of the {budget} allowed by the row count, shared by X and Y)",
                          RankDeficiencyWarning, stacklevel=4)
        out.append((np.ascontiguousarray(V[:, :r]) / np.sqrt(lam[:r]), lam[:r].copy()))
    return out


def _fingerprint(X, Y):
    """A digest of the fitted pairs (to recognise them again in :meth:`GaussianMI.pointwise_result`)."""
    h = hashlib.blake2b(digest_size=16)
    for A in (X, Y):
        h.update(str(A.shape).encode())
        h.update(np.ascontiguousarray(A).data)
    return h.hexdigest()


def _check_n_boot(ci, n_boot):
    if ci == "bootstrap" and not (isinstance(n_boot, (int, np.integer)) and n_boot >= 2):
        raise InputError(f"a bootstrap interval needs at least 2 resamples (got {n_boot}); "
                         "200 or more are sensible (1000+ for a 99% interval)")


def _apply_whitener(whitener, X):
    if not hasattr(whitener, "log_det_"):
        raise NotFittedError("entropy: the whitener is not fitted")
    if X.shape[1] != whitener.n_features_:
        raise InputError(f"entropy: input has {X.shape[1]} dims, the whitener "
                         f"{whitener.n_features_}")
    return np.asarray(whitener.transform(X), dtype=np.float64), float(whitener.log_det_)


def _centred_interval(estimate, replicates, confidence):
    """Bootstrap percentile spread, centred on the (already bias-corrected) estimate."""
    alpha = 0.5 * (1.0 - confidence)
    lo, hi = np.quantile(replicates, [alpha, 1.0 - alpha])
    centre = replicates.mean()
    return (float(estimate + lo - centre), float(estimate + hi - centre))


def _check_ci(ci, allowed):
    if ci not in allowed:
        raise InputError(f"ci must be one of {', '.join(map(str, allowed))}; got {ci!r}")


def _normal_interval(estimate, std, confidence):
    z = float(special.ndtri(0.5 + 0.5 * confidence))
    return (float(estimate - z * std), float(estimate + z * std))


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


def _unit(base):
    if str(base) not in _BASES:
        raise InputError(f"base must be 'e' or '2', got {base!r}")
    return _BASES[str(base)]


def _paired(X, Y, min_rows=2, names=("X", "Y")):
    X = as_matrix(X, str(names[0]), min_rows=min_rows, allow_1d=True)
    Y = as_matrix(Y, str(names[1]), min_rows=min_rows, allow_1d=True)
    if X.shape[0] != Y.shape[0]:
        raise InputError(f"{names[0]} has {X.shape[0]} rows but {names[1]} has {Y.shape[0]}; rows must be paired")
    return X, Y


def _check_fitted(est, attr):
    if not hasattr(est, attr):
        raise NotFittedError(f"{type(est).__name__} is not fitted; call fit first")
