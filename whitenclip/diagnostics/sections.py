"""The report's sections: one typed :class:`Section` result per entry of :data:`SECTIONS`, each
computed from the shared :class:`~whitenclip.diagnostics.context.ReportContext` by the estimators
of its family."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import scipy.linalg

from whitenclip.diagnostics.context import ReportContext
from whitenclip.diagnostics.marginal import (
    CONSTANT_RTOL,
    _central_moments,
    _shape_summary,
    coordinate_tests,
    expected_median_excess_kurtosis,
)
from whitenclip.diagnostics.multivariate import TOP_SHARE, mardia, spectrum_isotropy
from whitenclip.diagnostics.norms import norm_concentration
from whitenclip.diagnostics.projections import random_projections
from whitenclip.diagnostics.small_n import norm_reference_few_rows
from whitenclip.diagnostics.verdicts import _effect_sizes, _judge, _rule, _untested
from whitenclip.results import Result


@dataclasses.dataclass(frozen=True)
class Section(Result):
    """One section of a :class:`GaussianityReport` (its JSON key is ``key``).

    Adding a section: a subclass with ``key`` and :meth:`compute`, one entry in
    :data:`SECTIONS`, and its rows / figures in ``whitenclip/render/gaussianity.py``.
    """

    key: ClassVar[str] = ""

    @classmethod
    def compute(cls, ctx: ReportContext, done: dict[str, "Section"]) -> "Section":
        """The section for the rows in ``ctx``; ``done`` holds the sections computed before it."""
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: dict) -> "Section":
        """Rebuild from the section's JSON mapping (missing keys become None)."""
        return cls(**{f.name: data.get(f.name) for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class NormConcentration(Section):
    """Mean, std and CV of ||x||, ||x - mean|| and ||w||, beside the exact-Gaussian references
    (see :func:`norm_concentration`; ``whitened`` also holds the law of ||w||^2 and its histogram)."""

    key: ClassVar[str] = "norm"
    raw: dict
    raw_centred: dict
    whitened: dict

    @classmethod
    def compute(cls, ctx, done):
        out = norm_concentration(ctx.raw_norms, ctx.centred_sq, ctx.sqnorms, rank=ctx.rank, n_fit=ctx.n_fit,
                                 in_sample=ctx.in_sample, covariance_eigenvalues=ctx.spectrum)
        if ctx.few_rows:  # in-sample whitened norms are all equal; the raw reference needs an unbiased tr(Sigma^2)
            out["raw_centred"] = norm_reference_few_rows(ctx.X, out["raw_centred"])
            out["whitened"].update(cv_ratio=None, untestable=(
                f"n={ctx.n} <= rank+1={ctx.rank + 1}: every in-sample whitened row has the same norm, so its CV "
                "is 0 by construction and no law applies"))
        return cls(**out)


@dataclasses.dataclass(frozen=True)
class Coordinates(Section):
    """Per-coordinate AD / DP tests (:func:`coordinate_tests`) on raw and whitened coordinates,
    and the coordinates' skewness / excess kurtosis summaries on ``shape_rows`` seeded rows."""

    key: ClassVar[str] = "coordinates"
    raw: dict
    whitened: dict
    shape_rows: int
    raw_shape: dict
    whitened_shape: dict

    @classmethod
    def compute(cls, ctx, done):
        wh, subsets = ctx.whitener, ctx.subsets
        rshape = _central_moments([ctx.X[ctx.shape_sub]], ctx.d)
        wshape = _central_moments([ctx.w_shape], wh.W_.shape[1])
        # constant: exactly, or numerically (spread below float32 resolution of the widest coordinate)
        sd = np.sqrt(ctx.col_sq / ctx.n)
        constant = sd <= CONSTANT_RTOL * sd.max()
        for k in ("skewness", "excess_kurtosis"):
            rshape[k][constant] = np.nan
        raw = coordinate_tests(ctx.X, subsets=subsets, seed=ctx.seed, global_constant=constant)
        if ctx.few_rows:
            white, wshape = cls._held_out(ctx)
        else:
            white = coordinate_tests(ctx.X, subsets=subsets, seed=ctx.seed, transform=wh.transform,
                                     global_constant=~np.isfinite(wshape["excess_kurtosis"]))
        if len(subsets) < ctx.trials:
            ctx.notes.append(f"n={ctx.n} <= subset={ctx.subset}: one trial on all rows instead of {ctx.trials} subsets")
        return cls(raw=raw, whitened=white, shape_rows=int(ctx.shape_sub.size), raw_shape=_shape_summary(rshape),
                   whitened_shape=_shape_summary(wshape))

    @staticmethod
    def _held_out(ctx) -> tuple[dict, dict]:
        """Whitened-coordinate tests and shapes of the held-out folds (n <= rank + 1): each fold is
        one trial of h rows; skewness / excess kurtosis per (fold, coordinate)."""
        ho = ctx.held_out
        if ho["blocks"] is None:
            empty = {"n_coordinates": 0, "trials": 0, "subset": 0, "tested": 0, "ad_mean": None, "ad_pass": None,
                     "dp_mean": None, "dp_pass": None, "expected_pass": {"ad": None, "dp": None, "tolerance": None},
                     "expected_mean": {"ad": None, "dp": None}, "a2_per_coordinate": [], "worst": [],
                     "constant": {"count": 0, "indices": [], "truncated": False, "constant_in_subset": 0},
                     "basis": "held-out whitening", "untestable": ho["reason"]}
            return empty, {"skewness": np.full(0, np.nan), "excess_kurtosis": np.full(0, np.nan)}
        A, B = ho["blocks"]
        h, r = ho["rows"], ho["rank"]
        shapes = [_central_moments([A], r), _central_moments([B], r)]
        constant = ~np.isfinite(shapes[0]["excess_kurtosis"]) & ~np.isfinite(shapes[1]["excess_kurtosis"])
        white = coordinate_tests(np.vstack([A, B]), subsets=[np.arange(h), np.arange(h, 2 * h)], seed=ctx.seed,
                                 global_constant=constant)
        white["basis"] = ho["description"]
        wshape = {k: np.concatenate([sh[k] for sh in shapes]) for k in ("skewness", "excess_kurtosis")}
        wshape["gaussian_median_excess_kurtosis"] = expected_median_excess_kurtosis(h, ctx.seed)
        return white, wshape


@dataclasses.dataclass(frozen=True)
class Projections(Section):
    """A2 of the centred rows along k seeded unit directions, with QQ data (:func:`random_projections`)."""

    key: ClassVar[str] = "projections"
    k: int
    rows: int
    tested: int
    ad_mean: float | None
    ad_pass: float | None
    expected_pass: dict
    expected_mean: dict
    a2: list
    excess_kurtosis: float | None
    qq: dict | None
    note: str | None = None

    @classmethod
    def compute(cls, ctx, done):
        return cls(**random_projections(ctx.X, ctx.mean, k=ctx.projections, rows=ctx.projection_rows, seed=ctx.seed))

    def to_dict(self) -> dict:
        out = super().to_dict()
        note = out.pop("note")
        if note is None:
            return out
        keys = list(out)
        at = keys.index("ad_pass") + 1  # where random_projections puts it
        return {**{k: out[k] for k in keys[:at]}, "note": note, **{k: out[k] for k in keys[at:]}}


@dataclasses.dataclass(frozen=True)
class Multivariate(Section):
    """Mardia's skewness and kurtosis tests (:func:`mardia`)."""

    key: ClassVar[str] = "multivariate"
    skewness: dict
    kurtosis: dict
    valid_large_sample: bool

    @classmethod
    def compute(cls, ctx, done):
        wh = ctx.whitener
        in_sample = ctx.in_sample and wh.shrinkage_ == 0
        return cls(**mardia(ctx.X, sqnorms_in_sample=ctx.sqnorms if in_sample else None, rank=ctx.rank,
                            max_rows=ctx.mardia_rows, seed=ctx.seed, transform=wh.transform))


@dataclasses.dataclass(frozen=True)
class Spectrum(Section):
    """The whitener's covariance eigenvalues (all of them, descending)."""

    key: ClassVar[str] = "spectrum"
    eigenvalues: list
    source: str

    @classmethod
    def compute(cls, ctx, done):
        source = "whitener covariance (all eigenvalues, descending)"
        if ctx.few_rows:
            source += (f"; from n={ctx.n} rows at most n-1={ctx.n - 1} of d={ctx.d} eigenvalues are non-zero and the "
                       "leading ones are biased up: the population spectrum is not estimable from them")
        return cls(eigenvalues=[float(v) for v in ctx.whitener.all_eigenvalues_], source=source)


@dataclasses.dataclass(frozen=True)
class Isotropy(Section):
    """How evenly the variance spreads over directions (:func:`spectrum_isotropy`), raw and whitened.

    ``raw``: the covariance of the rows X (d directions). ``whitened``: the covariance of the
    whitened rows, W^T Cov(X) W, over the kept rank r (all ones, so both ranks equal r, when the
    whitener was fitted on these rows).
    """

    key: ClassVar[str] = "isotropy"
    raw: dict
    whitened: dict
    top_share: float
    source: str

    @classmethod
    def compute(cls, ctx, done):
        from threadpoolctl import threadpool_limits

        W = ctx.whitener.W_
        # one BLAS thread: the (r, r) eigenvalues take ~0.1 s at r = 768, threaded LAPACK 2-5x more CPU
        with threadpool_limits(limits=1, user_api="blas"):
            Cw = W.T @ ctx.covariance @ W
            lam_w = scipy.linalg.eigh(0.5 * (Cw + Cw.T), eigvals_only=True, driver="evr")
        lam_w = np.sort(lam_w)[::-1][:ctx.rank]
        source = ("covariance of the input rows (the whitener's own: in-sample)" if ctx.fitted_here or ctx.in_sample
                  else "covariance of the input rows")
        if ctx.few_rows:
            source += (f"; at n={ctx.n} <= rank+1 the sample spectrum is biased (raw participation ratio; the norm "
                       f"section's unbiased d_eff = (tr S)^2 / tr(Sigma^2) is the population's), and the whitened "
                       "spectrum is the identity by construction")
        return cls(raw=spectrum_isotropy(ctx.spectrum), whitened=spectrum_isotropy(lam_w), top_share=TOP_SHARE,
                   source=source + "; whitened: W^T Cov W over the kept rank")


@dataclasses.dataclass(frozen=True)
class Verdict(Section):
    """One label from :data:`VERDICT_RULE`, the reason and the effect sizes behind it."""

    key: ClassVar[str] = "verdict"
    label: str
    rule: str
    because: str
    effect_sizes: dict
    untested: list = dataclasses.field(default_factory=list)
    """What the report could not test, one {"part", "reason"} per line (empty when everything was)."""

    @classmethod
    def compute(cls, ctx, done):
        coords, proj = done["coordinates"], done["projections"]
        few = ctx.few_rows
        effects = _effect_sizes(coords.whitened, proj.ad_pass, proj.expected_pass, coords.whitened_shape,
                                {} if few else done["multivariate"].kurtosis,
                                done["norm"].raw_centred if few else done["norm"].whitened)
        testable = coords.whitened.get("ad_pass") is not None or (few and proj.ad_pass is not None)
        label, because = _judge(ctx.n, ctx.rank, testable, effects, few_rows=few, in_sample=ctx.in_sample)
        return cls(label=label, rule=_rule(ctx.n, ctx.rank, ctx.in_sample, few), because=because,
                   effect_sizes=effects, untested=_untested(ctx.n, ctx.d, ctx.rank, few,
                                                            {k: s.to_dict() for k, s in done.items()}))


SECTIONS: tuple[type[Section], ...] = (NormConcentration, Coordinates, Projections, Multivariate, Spectrum,
                                       Isotropy, Verdict)
"""The report's sections, computed and written in this order (the verdict reads the others)."""
