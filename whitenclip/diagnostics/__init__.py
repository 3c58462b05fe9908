"""Gaussianity diagnostics for embedding spaces (the paper's metrics and more).

The claim under test is "InfoNCE-trained embeddings are close to a multivariate Gaussian".
:func:`gaussianity_report` measures it on rows X of shape (n_samples, n_features) and puts
every number beside what an exact Gaussian of the same n and d gives under the same protocol:

1. **Norm concentration** -- mean, std and CV = std/mean of ||x|| and of ||w|| (w whitened).
   References: a chi with d' degrees of freedom (CV about 1/sqrt(2 d')); for the rows the
   whitener was fitted on, the exact in-sample law n ||w||^2 / (n - 1)^2 ~ Beta(d'/2, (n-d'-1)/2);
   for new rows the Hotelling predictive law (n_fit - r)/(r (n_fit - 1)) * n_fit/(n_fit + 1) ||w||^2
   ~ F(r, n_fit - r). KS and Anderson-Darling distances to that law.
2. **Per-coordinate tests** on random row subsets (default 10 trials x 500 rows): Anderson-Darling
   A2 (pass if A2 < 0.752, the paper's fixed threshold) and D'Agostino-Pearson K2 (pass if
   p > 0.05), on raw and on whitened coordinates; constant coordinates are listed apart.
3. **Random projections** -- k seeded unit directions of the centred data, A2 per direction,
   QQ data for a few directions and for the pooled standardised projections.
4. **Multivariate** -- Mardia's skewness b1 (chunked Gram blocks on a seeded row subsample, so
   memory is O(block x m), never O(n^2)) and kurtosis b2 (from the whitened norms of all rows),
   with their large-sample p-values (valid for n >> d).
5. **Spectrum and isotropy** -- the covariance eigenvalues, and how evenly the variance spreads
   over directions, raw and whitened: participation ratio (sum l)^2 / sum l^2, effective rank
   exp(H(l / sum l)) and the share of variance in the top 1% of directions.
6. **Verdict** -- effect sizes (mean A2, excess kurtosis, CV ratio) and one verdict line with
   the rule that produced it, and the parts that could not be tested, one line each (``untested``).

**Few rows** (n <= rank + 1 on the whitener's own rows, e.g. n <= d): the in-sample whitening
maps the rows onto an exact frame (equal ||w||, no Beta law, Mardia undefined), so the report
answers from what stays testable: raw coordinates and random projections (valid at any n), the
CV of ||x - mean|| against the Gaussian with the same covariance with d_eff = (tr S)^2 / T, T the
unbiased tr(Sigma^2) of :func:`trace_sq_unbiased` (the sample spectrum's d_eff is biased low),
and whitened coordinates from a held-out OAS whitening (:func:`held_out_whitening`: 2 folds, each
whitened by a whitener fitted on the other, exact for Gaussian rows); :data:`VERDICT_RULE_FEW_ROWS`.
"degenerate" is kept for rank < 2 (identical rows are refused).

The report is typed: :func:`gaussianity_report` returns a :class:`GaussianityReport` holding
one :class:`Section` result per entry of :data:`SECTIONS` (norm, coordinates, projections,
multivariate, spectrum, isotropy, verdict), computed in a loop from a shared
:class:`ReportContext` (one streamed pass over X). ``report.to_dict()`` is the documented JSON;
rendering (terminal, HTML, figures) lives in :mod:`whitenclip.render.gaussianity`. Adding a
section is one Section subclass + one entry in SECTIONS + its rows/figure hooks there.

Whether X are the whitener's own fit rows (Beta law) or new rows (F law) is recognised from the
artifact's hash of its fitted moments (:func:`recognise_in_sample`).

The Anderson-Darling statistic's formula and how it is evaluated on many columns at once:
:mod:`whitenclip.diagnostics.marginal`.
"""

from __future__ import annotations

from whitenclip.diagnostics.context import ReportContext
from whitenclip.diagnostics.marginal import (
    AD_THRESHOLD,
    CONSTANT_RTOL,
    DP_ALPHA,
    MIN_DP_ROWS,
    anderson_darling,
    coordinate_tests,
    dagostino_pearson,
    draw_subsets,
    expected_gaussian_rates,
    expected_median_excess_kurtosis,
)
from whitenclip.diagnostics.multivariate import TOP_SHARE, mardia, mardia_skewness, spectrum_isotropy
from whitenclip.diagnostics.norms import chi_cv, norm_concentration, reference_law
from whitenclip.diagnostics.projections import random_projections
from whitenclip.diagnostics.report import (
    GaussianityReport,
    Protocol,
    WhitenerInfo,
    gaussianity_report,
    recognise_in_sample,
)
from whitenclip.diagnostics.sections import (
    SECTIONS,
    Coordinates,
    Isotropy,
    Multivariate,
    NormConcentration,
    Projections,
    Section,
    Spectrum,
    Verdict,
)
from whitenclip.diagnostics.small_n import (
    HELD_OUT_SHRINKAGE,
    MIN_HELD_OUT_ROWS,
    held_out_whitening,
    norm_reference_few_rows,
    trace_sq_unbiased,
)
from whitenclip.diagnostics.verdicts import VERDICT_RULE, VERDICT_RULE_FEW_ROWS, VERDICT_RULE_NEW_ROWS, verdict

__all__ = [
    "ReportContext", "AD_THRESHOLD", "CONSTANT_RTOL", "DP_ALPHA", "MIN_DP_ROWS", "anderson_darling",
    "coordinate_tests", "dagostino_pearson", "draw_subsets", "expected_gaussian_rates",
    "expected_median_excess_kurtosis", "TOP_SHARE", "mardia", "mardia_skewness", "spectrum_isotropy", "chi_cv",
    "norm_concentration", "reference_law", "random_projections", "GaussianityReport", "Protocol", "WhitenerInfo",
    "gaussianity_report", "recognise_in_sample", "SECTIONS", "Coordinates", "Isotropy", "Multivariate",
    "NormConcentration", "Projections", "Section", "Spectrum", "Verdict", "HELD_OUT_SHRINKAGE", "MIN_HELD_OUT_ROWS",
    "held_out_whitening", "norm_reference_few_rows", "trace_sq_unbiased", "VERDICT_RULE", "VERDICT_RULE_FEW_ROWS",
    "VERDICT_RULE_NEW_ROWS", "verdict",
]
