"""The :class:`Whitener` estimator: fitting (from rows or streamed moments), transforming and
scoring; the computation lives in the sibling modules (shrinkage, basis, calibration, artifact)."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from whitenclip.errors import InputError, NotFittedError, RankDeficiencyWarning
from whitenclip.moments import Moments, Reservoir
from whitenclip.validation import as_matrix
from whitenclip.whitening.artifact import (
    load_whitener,
    save_whitener,
    whitener_artifact_metadata,
    whitener_calibration_metadata,
)
from whitenclip.whitening.basis import DEFAULT_FLOOR, METHODS, whitening_basis
from whitenclip.whitening.calibration import DEFAULT_CALIBRATION_ROWS, calibrate, squared_norms
from whitenclip.whitening.shrinkage import SHRINKAGES, resolve_shrinkage, shrink, sum_centered_sqnorm4


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
        check_params(self)

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
        self.shrinkage_, self.shrinkage_choice_, self.shrinkage_rule_ = resolve_shrinkage(
            self.shrinkage, cov, n, sum_sqnorm4)
        if self.shrinkage_ > 0:
            cov = shrink(cov, self.shrinkage_)
        self.mean_ = moments.mean.copy()
        self.covariance_ = cov
        self.n_samples_, self.n_features_ = int(n), int(d)
        self.n_features_in_ = int(d)
        for name, value in whitening_basis(cov, n=self.n_samples_, method=self.method, floor=self.floor,
                                           rank=self.rank).items():
            setattr(self, name, value)
        self.metadata_ = {"input_hash": _moments_hash(moments), "input_hash_of": "moments (n, mean, scatter)"}
        calibrate(self, calibration_sample, calibration_groups, calibration_positions)
        if self.dropped_["n_dropped"]:
            warnings.warn(f"kept rank {self.rank_} of {d}: {self.dropped_['reason']}", RankDeficiencyWarning,
                          stacklevel=2)
        return self

    # -- using --------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "W_"):
            raise NotFittedError("this Whitener is not fitted yet; call fit(X) first")

    def transform(self, X) -> np.ndarray:
        """w = (X - mean_) @ W_, shape (m, r) for pca, (m, d) otherwise; float64.

        X is (m, d) (a 1-D X is one row); rows holding NaN or inf are refused, as in :meth:`fit`.
        """
        self._check_fitted()
        return (fitted_rows(X, self.n_features_) - self.mean_) @ self.W_

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
        return whitener_calibration_metadata(self)

    def artifact_metadata(self) -> dict:
        """Everything the artifact header records, as a JSON-ready dict."""
        return whitener_artifact_metadata(self)

    def save(self, path) -> Path:
        """Write the fitted whitener to one ``.safetensors`` file, atomically.

        Tensors: mean, W, unwhiten, components, eigenvalues, all_eigenvalues, covariance and,
        when present, ``calibration`` (the sorted leave-one-out distances, float64).
        """
        return save_whitener(self, path)

    @classmethod
    def load(cls, path) -> "Whitener":
        """Read a whitener written by :meth:`save`; validates version, shapes and finiteness.

        Artifacts written before calibration existed load with ``calibration_ = None``.
        """
        return load_whitener(cls, path)


def _moments_hash(moments: Moments) -> str:
    h = hashlib.sha256()
    h.update(str(moments.n).encode())
    h.update(np.ascontiguousarray(moments.mean).tobytes())
    h.update(np.ascontiguousarray(moments.scatter).tobytes())
    return h.hexdigest()


def check_params(est: Whitener) -> None:
    """Refuse a whitener's settings (an :class:`InputError` naming the first bad one) before a fit."""
    if est.method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}; got {est.method!r}")
    s = est.shrinkage
    if not (s in (*SHRINKAGES, "auto")
            or (isinstance(s, (int, float)) and not isinstance(s, bool) and 0.0 <= s <= 1.0)):
        raise InputError(f"shrinkage must be none, ledoit-wolf, oas, auto or a float in [0, 1]; got {s!r}")
    if not (np.isfinite(est.floor) and 0.0 <= est.floor < 1.0):
        raise InputError(f"floor must be in [0, 1); got {est.floor!r}")
    if est.rank is not None and int(est.rank) < 1:
        raise InputError(f"rank must be >= 1; got {est.rank!r}")
    if est.calibration and int(est.calibration_rows) < 1:
        raise InputError(f"calibration_rows must be >= 1; got {est.calibration_rows!r}")


def fitted_rows(X, n_features: int, name: str = "X") -> np.ndarray:
    """X as finite float64 rows of the fitted dimension (a 1-D X is one row)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[None, :]
    X = as_matrix(X, name)
    if X.shape[1] != n_features:
        raise InputError(f"input has dimension {X.shape[1]}, the whitener expects {n_features}")
    return X
