"""Fitting a :class:`~whitenclip.whitening.estimator.Whitener` on embedding sources without holding
their rows in memory (one streamed pass, a second one for Ledoit-Wolf)."""

from __future__ import annotations

import warnings

from whitenclip.config import CHUNK_ROWS
from whitenclip.errors import InputError
from whitenclip.moments import Moments
from whitenclip.readers.rows import GroupTagged
from whitenclip.whitening.basis import DEFAULT_FLOOR
from whitenclip.whitening.calibration import DEFAULT_CALIBRATION_ROWS
from whitenclip.whitening.estimator import Whitener
from whitenclip.whitening.shrinkage import sum_centered_sqnorm4


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
    from whitenclip.readers.rows import RowStats, iter_rows

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
