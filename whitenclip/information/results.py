"""The typed, frozen results of the information estimators (entropy, MI, pointwise MI, their k-NN / KSG
checks and the cross-fitted MI), and the detectability verdict of an MI interval."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whitenclip.information.knn import KNN_FOLDS, KNN_SPACE, KSG_SPACE
from whitenclip.results import Result

ENTROPY_ASSUMES = ("i.i.d. Gaussian rows: entropy of the Gaussian fitted to them over the kept rank "
                   "(bias correction and std exact under that law); the k-NN check assumes no law")
MI_ASSUMES = ("i.i.d. jointly Gaussian pairs: MI of the Gaussian fitted to them, from canonical correlations "
              "(bias correction exact under that law); the KSG check assumes no law")


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
