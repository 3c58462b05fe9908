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

from whitenclip.information.bias import effective_dimension, log_det_bias, log_det_variance
from whitenclip.information.crossfit import HEADLINE_RATIO, cross_fitted_mi
from whitenclip.information.entropy import GaussianEntropy
from whitenclip.information.knn import (
    KNN_FOLDS,
    KNN_REFERENCE_ROWS,
    KNN_ROWS_PER_DIM,
    KNN_SPACE,
    KSG_PERMUTATIONS,
    KSG_SPACE,
    knn_entropy,
    ksg_mi,
)
from whitenclip.information.mi import GaussianMI
from whitenclip.information.pairing import ID_KINDS, PAIR_BY, ids_kind, pair_rows
from whitenclip.information.results import (
    ENTROPY_ASSUMES,
    MI_ASSUMES,
    CrossFitMI,
    EntropyResult,
    KnnEntropyCheck,
    KsgCheck,
    MIResult,
    PointwiseMIResult,
    mi_detectability,
)

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
    # module constants, re-exported from the submodules that define them
    "ID_KINDS",
    "KNN_FOLDS",
    "KNN_REFERENCE_ROWS",
    "KNN_ROWS_PER_DIM",
    "KNN_SPACE",
    "KSG_PERMUTATIONS",
    "KSG_SPACE",
]
