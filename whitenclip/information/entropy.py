"""GaussianEntropy: bias-corrected differential entropy of the Gaussian fitted to embeddings."""

from __future__ import annotations

import math
import warnings

import numpy as np

from whitenclip.errors import InputError, NotFittedError, RankDeficiencyWarning
from whitenclip.information._common import _LOG_2PI_E, _check_fitted, _unit
from whitenclip.information.bias import log_det_bias, log_det_variance
from whitenclip.information.intervals import (
    _CI_METHODS,
    _check_ci,
    _check_n_boot,
    _EntropyStatistic,
    _GroupedMoments,
    _interval,
    _max_rank,
    _normal_interval,
)
from whitenclip.information.knn import _knn_entropy_check
from whitenclip.information.results import EntropyResult, KnnEntropyCheck
from whitenclip.validation import as_matrix
from whitenclip.whitening import eigh_descending


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
            self.knn_, self.knn_skipped_ = _knn_entropy_check(raw, knn_rng, unit, knn_dims=self.knn_dims, k=self.k,
                                                              knn_max_samples=self.knn_max_samples,
                                                              floor=self.floor)
        self.entropy_, self.entropy_plugin_ = corrected / unit, plugin / unit
        self.rank_, self.n_samples_, self.n_features_ = r, n, d
        self.components_, self.eigenvalues_ = V, lam
        return self

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


def _apply_whitener(whitener, X):
    if not hasattr(whitener, "log_det_"):
        raise NotFittedError("entropy: the whitener is not fitted")
    if X.shape[1] != whitener.n_features_:
        raise InputError(f"entropy: input has {X.shape[1]} dims, the whitener "
                         f"{whitener.n_features_}")
    return np.asarray(whitener.transform(X), dtype=np.float64), float(whitener.log_det_)
