"""Streaming, mergeable first and second moments in float64.

For rows x_1..x_n in R^d we keep

* ``n``       the count,
* ``mean``    m = (1/n) sum_i x_i                       shape (d,),
* ``scatter`` S = sum_i (x_i - m)(x_i - m)^T            shape (d, d),

so that the sample covariance is ``S / (n - ddof)``. Chunks are folded in with the exact
pairwise update of Chan, Golub & LeVeque (1979): for two sets A and B with
delta = m_B - m_A and n = n_A + n_B,

    m = m_A + delta * n_B / n
    S = S_A + S_B + outer(delta, delta) * n_A * n_B / n

Each chunk's own scatter is computed around the chunk's mean (centred GEMM), which keeps
the accumulation stable when the mean is large compared with the spread.

Modules, one concern each (each imports only those listed before it):

* :mod:`~whitenclip.moments.numerics`  centring, the centred Gram, power-sum shifts, overflow refusal;
* :mod:`~whitenclip.moments.estimator` :class:`Moments` and the plain moments file;
* :mod:`~whitenclip.moments.coverage`  file identity and the row ranges a part covers;
* :mod:`~whitenclip.moments.sampling`  the calibration :class:`Reservoir` (whole groups of rows);
* :mod:`~whitenclip.moments.artifact`  writing and reading (checked) part files;
* :mod:`~whitenclip.moments.part`      :class:`MomentsPart`: accumulation and merge;
* :mod:`~whitenclip.moments.summary`   what ``whitenclip info`` says about a moments file.
"""

from __future__ import annotations

from whitenclip.moments.artifact import check_part_info
from whitenclip.moments.coverage import IDENTITY_BLOCK, coverage_entry, file_identity, first_overlap
from whitenclip.moments.estimator import (
    MAX_COUNT,
    MOMENTS_FORMAT,
    MOMENTS_VERSION,
    Moments,
    header_count,
    moments_from_file,
)
from whitenclip.moments.numerics import GRAM_DTYPES, centred_gram, shift_power_sums
from whitenclip.moments.part import EXTRA_MERGERS, PART_KEYS_THAT_MUST_MATCH, MomentsPart
from whitenclip.moments.sampling import (
    RESERVOIR_EXTRA,
    RESERVOIR_KEY,
    RESERVOIR_MAX_ROWS,
    Reservoir,
    check_calibration_rows,
    check_reservoir_tensors,
    group_keys,
    reservoir_from_tensors,
    reservoir_to_tensors,
    row_keys,
    splitmix64,
)
from whitenclip.moments.summary import MomentsSummary, summarize_moments

__all__ = [
    "EXTRA_MERGERS", "GRAM_DTYPES", "IDENTITY_BLOCK", "MAX_COUNT", "MOMENTS_FORMAT", "MOMENTS_VERSION",
    "PART_KEYS_THAT_MUST_MATCH", "RESERVOIR_EXTRA", "RESERVOIR_KEY", "RESERVOIR_MAX_ROWS", "Moments",
    "MomentsPart", "MomentsSummary", "Reservoir", "centred_gram", "check_calibration_rows", "check_part_info",
    "check_reservoir_tensors", "coverage_entry", "file_identity", "first_overlap", "group_keys", "header_count",
    "moments_from_file", "reservoir_from_tensors", "reservoir_to_tensors", "row_keys", "shift_power_sums",
    "splitmix64", "summarize_moments",
]
