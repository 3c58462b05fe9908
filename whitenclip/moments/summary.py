"""What ``whitenclip info`` says about a moments file: :class:`MomentsSummary`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whitenclip.moments.part import MomentsPart
from whitenclip.moments.sampling import RESERVOIR_EXTRA
from whitenclip.results import Result


@dataclass(frozen=True)
class MomentsSummary(Result):
    """What ``whitenclip info`` shows about a moments file (``whitenclip moments`` / ``merge-moments``):
    rows ``n`` x ``d``, ``pieces`` read, the encoder ``meta`` it records, the Gram precision, whether it
    holds the power sums (Ledoit-Wolf), the calibration sample (``calibration_rows`` kept, drawn by
    ``calibration_mode`` rows or groups; None when it has none), dropped non-finite rows and ``input_hash``."""

    path: str
    n: int
    d: int
    pieces: int
    encoder: dict
    gram: str | None
    power_sums: bool
    calibration_mode: str | None
    calibration_rows: int | None
    dropped_nonfinite: int
    input_hash: str


def summarize_moments(path) -> MomentsSummary:
    """:class:`MomentsSummary` of a moments file (read and checked by :meth:`MomentsPart.load`)."""
    part = MomentsPart.load(path)
    res = part.extras.get(RESERVOIR_EXTRA)
    kept = None if res is None else int(np.asarray(res["rows"]).shape[0])
    meta = {k: v for k, v in part.meta.items() if v is not None and k not in ("gram", "calibration_mode")}
    return MomentsSummary(path=str(path), n=int(part.n), d=int(part.n_features),
                          pieces=int(part.stats.get("pieces", 0)), encoder=meta, gram=part.meta.get("gram"),
                          power_sums=bool(part.has_power_sums), calibration_mode=part.calibration_mode,
                          calibration_rows=kept, dropped_nonfinite=int(part.stats.get("dropped_nonfinite", 0)),
                          input_hash=part.input_hash)
