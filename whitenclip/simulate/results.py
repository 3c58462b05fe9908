"""What ``whitenclip simulate`` returns: one run's metric history (:class:`RunHistory`) and every
run with the exact-Gaussian references (:class:`SimulationResult`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from whitenclip.results import Result, json_safe
from whitenclip.simulate.config import METRICS, SimulationConfig


@dataclasses.dataclass(frozen=True)
class RunHistory(Result):
    """Metrics of one (loss, seed) run at each evaluated step.

    ``metrics[name][i]`` is the value at ``steps[i]`` (None where it does not apply); ``extra``
    holds loss-specific final state (AnInfoNCE's learned ``Lambda``).
    """

    loss: str
    seed: int
    steps: tuple
    metrics: dict
    seconds: float
    cpu_seconds: float
    extra: dict = dataclasses.field(default_factory=dict)

    def final(self, name: str):
        """The metric's value at the last evaluated step."""
        return self.metrics[name][-1]

    def initial(self, name: str):
        """The metric's value at step 0."""
        return self.metrics[name][0]


@dataclasses.dataclass(frozen=True)
class SimulationResult(Result):
    """Every run's metric history, the exact-Gaussian references and where embeddings were saved.

    ``reference``: ``ad_pass``, ``dp_pass``, ``ad_mean``, ``dp_mean`` of an exact Gaussian under
    the same protocol, ``w_norm_cv`` = chi_cv(d) for the embedding dim d.
    """

    config: SimulationConfig
    runs: tuple
    reference: dict
    wall_seconds: float
    cpu_seconds: float
    stores: dict = dataclasses.field(default_factory=dict)

    def summary(self) -> dict:
        """``{loss: {metric: {mean, sd, min, max, n, initial_mean}}}`` over seeds, at the final step.

        ``sd`` is the sample standard deviation (ddof=1; 0 for one seed).
        """
        out: dict = {}
        for loss in self.config.losses:
            runs = [r for r in self.runs if r.loss == loss]
            out[loss] = {}
            for name in METRICS:
                vals = np.array([r.final(name) for r in runs if r.final(name) is not None], dtype=float)
                init = np.array([r.initial(name) for r in runs if r.initial(name) is not None], dtype=float)
                if vals.size == 0:
                    out[loss][name] = None
                    continue
                out[loss][name] = {"mean": float(vals.mean()), "sd": float(vals.std(ddof=1)) if vals.size > 1 else 0.0,
                                   "min": float(vals.min()), "max": float(vals.max()), "n": int(vals.size),
                                   "values": vals.tolist(),
                                   "initial_mean": float(init.mean()) if init.size else None}
        return out

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "reference": json_safe(self.reference),
                "summary": json_safe(self.summary()), "runs": [r.to_dict() for r in self.runs],
                "wall_seconds": self.wall_seconds, "cpu_seconds": self.cpu_seconds, "stores": dict(self.stores)}
