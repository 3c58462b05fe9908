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

The package, one concern per module (each imports only those above it):
:mod:`~whitenclip.whitening.shrinkage` (OAS, Ledoit-Wolf, the ``"auto"`` rule),
:mod:`~whitenclip.whitening.basis` (eigendecomposition, kept rank, the forms of W),
:mod:`~whitenclip.whitening.grouping` (grouped reference rows),
:mod:`~whitenclip.whitening.calibration` (leave-one-out distances, degenerate calibrations),
:mod:`~whitenclip.whitening.artifact` (the safetensors artifact),
:mod:`~whitenclip.whitening.estimator` (:class:`Whitener`), then
:mod:`~whitenclip.whitening.wclip` (importing a released W),
:mod:`~whitenclip.whitening.streaming` (fitting on files) and
:mod:`~whitenclip.whitening.summary` (``info``'s data). Every name is re-exported here.
"""

from __future__ import annotations

from whitenclip.whitening.artifact import ARTIFACT_FORMAT, ARTIFACT_VERSION, check_whitener_header
from whitenclip.whitening.basis import DEFAULT_FLOOR, METHODS, eigh_descending
from whitenclip.whitening.calibration import (
    DEFAULT_CALIBRATION_ROWS,
    DEGENERATE_GROUP_SHARE,
    DEGENERATE_INFINITE_SHARE,
    DegenerateCalibrationWarning,
    calibration_distances,
    degenerate_calibration,
    loo_sqdist,
    squared_norms,
)
from whitenclip.whitening.estimator import Whitener
from whitenclip.whitening.estimator import _moments_hash as _moments_hash  # diagnostics checks input hashes
from whitenclip.whitening.grouping import (
    GROUPING_ADJACENT,
    GROUPING_DIMS,
    GROUPING_K,
    GROUPING_THRESHOLD,
    GroupedRowsWarning,
    GroupingCheck,
    GroupTagged,
    grouping_check,
    knn_transitivity,
)
from whitenclip.whitening.shrinkage import (
    AUTO_ROWS_PER_DIM,
    SHRINKAGES,
    auto_shrinkage,
    ledoit_wolf_shrinkage,
    ledoit_wolf_shrinkage_from_sums,
    oas_shrinkage,
    oas_shrinkage_of_rows,
    parse_shrinkage,
    shrink,
    shrinkage_intensity,
    sum_centered_sqnorm4,
)
from whitenclip.whitening.streaming import fit_whitener_streaming
from whitenclip.whitening.summary import (
    CALIBRATION_MISSING_NOTE,
    CONFORMAL_MARGIN,
    FEW_ROWS_PER_DIM,
    SpectrumSummary,
    WhitenerSummary,
    few_rows_note,
    spectrum_summary,
    summarize,
    summarize_spectrum,
)
from whitenclip.whitening.wclip import (
    MODALITIES,
    conditioning_report,
    import_wclip,
    infer_modality,
    load_torch_tensor,
    whitener_from_matrix,
)

__all__ = [
    "ARTIFACT_FORMAT", "ARTIFACT_VERSION", "AUTO_ROWS_PER_DIM", "CALIBRATION_MISSING_NOTE", "CONFORMAL_MARGIN",
    "DEFAULT_CALIBRATION_ROWS", "DEFAULT_FLOOR", "DEGENERATE_GROUP_SHARE", "DEGENERATE_INFINITE_SHARE",
    "DegenerateCalibrationWarning", "FEW_ROWS_PER_DIM", "GROUPING_ADJACENT", "GROUPING_DIMS", "GROUPING_K",
    "GROUPING_THRESHOLD", "GroupTagged", "GroupedRowsWarning", "GroupingCheck", "METHODS", "MODALITIES",
    "SHRINKAGES", "SpectrumSummary", "Whitener", "WhitenerSummary", "auto_shrinkage", "calibration_distances",
    "check_whitener_header", "conditioning_report", "degenerate_calibration", "eigh_descending",
    "few_rows_note", "fit_whitener_streaming", "grouping_check", "import_wclip", "infer_modality",
    "knn_transitivity", "ledoit_wolf_shrinkage", "ledoit_wolf_shrinkage_from_sums", "load_torch_tensor",
    "loo_sqdist", "oas_shrinkage", "oas_shrinkage_of_rows", "parse_shrinkage", "shrink", "shrinkage_intensity",
    "spectrum_summary", "squared_norms", "sum_centered_sqnorm4", "summarize", "summarize_spectrum",
    "whitener_from_matrix",
]
