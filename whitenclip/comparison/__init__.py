"""Compare a reference set of embeddings with one or more query sets.

``compare(ref, query)`` answers three questions, each with what it assumes:

* **How far apart?** ``fd`` (the Frechet distance of the fitted Gaussians, exactly pytorch-fid's),
  ``fd_inf`` (an n-independent version with an interval), ``kl`` both ways (closed form,
  bias-corrected): Gaussian-model figures that need only moments (:mod:`.gaussian`); ``cmmd``
  (CMMD, google-research/cmmd's definition, and its unbiased U-statistic): distribution-free
  (:mod:`.kernel`).
* **Is the difference real?** ``pvalue``: a permutation two-sample test valid for exchangeable
  rows (or groups), at any n (:func:`.kernel.permutation_test`).
* **Which items?** Query rows least likely under the reference (conformal p-values and BH
  q-values, flagged at ``fdr``) and reference regions the query misses (precision, recall,
  density, coverage) (:mod:`.items`).

Each set gets a one-line Gaussianity verdict (the cheap part of the Gaussianity report on a
subsample); when a set is not Gaussian the distribution-free figures are the ones to use. The
kernel figures, the test and PRDC run on a seeded subsample of at most ``max_rows`` rows per set
(the result states the sizes); fd and kl use every row.

``whitenclip.compare`` is :func:`compare` (this module is ``whitenclip.comparison``).

>>> import numpy as np, whitenclip
>>> rng = np.random.default_rng(0)
>>> r = whitenclip.compare(rng.standard_normal((300, 4)), rng.standard_normal((300, 4)) + 1.0,
...                        n_permutations=99, verdict=False)
>>> q = r.queries[0]
>>> round(q.fd, 1), q.pvalue
(4.1, 0.01)
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np

from whitenclip.comparison.gaussian import (
    FD_ASSUMES,
    FD_INF_ASSUMES,
    KL_ASSUMES,
    fd_extrapolated,
    frechet_distance,
    gaussian_kl,
)
from whitenclip.comparison.items import ITEMS_ASSUMES, PRDC_ASSUMES, outlying_items, prdc
from whitenclip.comparison.kernel import CMMD_ASSUMES, TEST_ASSUMES, cmmd, permutation_test
from whitenclip.errors import InputError
from whitenclip.results import Result

__all__ = ["CompareResult", "QueryComparison", "SetSummary", "compare"]

MAX_ROWS = 10_000
"""Rows per set (seeded subsample) for the kernel figures, the test and PRDC (CMMD's paper uses 30,000)."""
VERDICT_ROWS = 2000
DISTRIBUTION_FREE = ("cmmd", "pvalue", "prdc", "flagged")
MOMENTS_ONLY_NOTE = ("moments only: fd and kl (Gaussian model); cmmd, the test, prdc, the flagged items and fd_inf "
                     "need rows")


@dataclasses.dataclass(frozen=True)
class SetSummary(Result):
    """One set: its name, rows, rows used by the kernel figures, groups and Gaussianity verdict."""

    name: str
    n: int
    d: int
    n_used: int | None = None
    n_groups: int | None = None
    gaussianity: str | None = None
    gaussianity_because: str | None = None


@dataclasses.dataclass(frozen=True)
class QueryComparison(Result):
    """REF against one QUERY (fields documented in the module doc and ``assumes``; None: not computed)."""

    name: str
    ref: SetSummary
    query: SetSummary
    fd: float
    fd_ci: tuple | None
    fd_inf: float | None
    fd_inf_ci: tuple | None
    kl_ref_query: float | None
    kl_query_ref: float | None
    kl_ref_query_plugin: float | None
    kl_query_ref_plugin: float | None
    kl_rank: int | None
    cmmd: float | None
    cmmd_ci: tuple | None
    cmmd_unbiased: float | None
    cmmd_unbiased_ci: tuple | None
    pvalue: float | None
    test_statistic: float | None
    n_permutations: int | None
    grouped: bool
    precision: float | None
    recall: float | None
    density: float | None
    coverage: float | None
    nearest_k: int | None
    fdr: float | None
    n_flagged: int | None
    flagged: tuple
    rank: int | None
    assumes: dict
    confidence: float
    notes: tuple

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["n_ref"], d["n_query"] = self.ref.n, self.query.n
        return d


@dataclasses.dataclass(frozen=True)
class CompareResult(Result):
    """REF against each QUERY, in the order given; ``ranked_by`` names the figure ``rank`` sorts on."""

    ref: SetSummary
    queries: tuple
    ranked_by: str
    notes: tuple = ()


def _is_moments(obj) -> bool:
    from whitenclip.moments import Moments, MomentsPart

    return isinstance(obj, (Moments, MomentsPart))


def _moments_of(obj):
    """(n, mean, ddof=1 covariance) of rows or of a Moments / MomentsPart."""
    from whitenclip.moments import MomentsPart

    if _is_moments(obj):
        m = obj.moments if isinstance(obj, MomentsPart) else obj
        if m.n < 2:
            raise InputError(f"a moments input holds {m.n} rows; compare needs at least 2")
        return int(m.n), np.asarray(m.mean, dtype=np.float64), m.covariance(ddof=1)
    return obj.shape[0], obj.mean(axis=0), np.cov(obj, rowvar=False, ddof=1).reshape(obj.shape[1], obj.shape[1])


def _rows(X, name: str) -> np.ndarray:
    from whitenclip.validation import as_matrix

    X = as_matrix(X, name)
    if X.shape[0] < 2:
        raise InputError(f"{name}: compare needs at least 2 rows, got {X.shape[0]}")
    return X


def subsample(X: np.ndarray, groups, max_rows: int, rng: np.random.Generator):
    """(rows, groups) of a seeded subsample of at most ``max_rows`` rows: rows, or whole groups (shuffled
    groups taken while they fit); everything when X has no more rows."""
    n = X.shape[0]
    if n <= max_rows:
        return X, groups
    if groups is None:
        idx = np.sort(rng.choice(n, size=max_rows, replace=False))
        return X[idx], None
    _, inverse = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    inverse = inverse.ravel()
    sizes = np.bincount(inverse)
    order = rng.permutation(sizes.size)
    keep = order[np.cumsum(sizes[order]) <= max_rows]
    idx = np.flatnonzero(np.isin(inverse, keep))
    return X[idx], [groups[i] for i in idx]


def gaussianity_verdict(X: np.ndarray, *, seed: int = 0, rows: int = VERDICT_ROWS) -> tuple[str, str]:
    """(label, because) of the Gaussianity report's verdict on a seeded subsample of ``rows`` rows, with
    its cheap protocol (3 trials of 500 rows, 200 projections)."""
    from whitenclip.diagnostics import gaussianity_report

    rng = np.random.default_rng(seed)
    S = X if X.shape[0] <= rows else X[np.sort(rng.choice(X.shape[0], size=rows, replace=False))]
    if S.shape[0] < 10:
        return "degenerate", f"n={S.shape[0]}: too few rows to judge"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the verdict line says what matters; the full report has the rest
        rep = gaussianity_report(S, trials=3, subset=min(500, S.shape[0]), projections=200,
                                 projection_rows=rows, mardia_rows=min(1000, rows), shape_rows=rows, seed=seed)
    v = rep.verdict
    return str(v.label), str(v.because)


def compare(ref, query, *, names=None, ref_groups=None, query_groups=None, query_ids=None,
            max_rows: int = MAX_ROWS, n_permutations: int = 1000, nearest_k: int = 5, fdr: float = 0.1,
            seed: int = 0, confidence: float = 0.95, verdict: bool = True) -> CompareResult:
    """Compare REF with one or several QUERY sets (see the module doc).

    Parameters
    ----------
    ref : array-like of shape (n, d), or :class:`~whitenclip.moments.Moments` / ``MomentsPart``
        The reference rows (moments: only fd and kl are computed).
    query : array-like of shape (m, d), a Moments, or a list of them
        One query set, or several (ranked).
    names : sequence of str, optional
        Names of REF then each QUERY (default ``REF``, ``QUERY1``...).
    ref_groups, query_groups : sequence, optional
        One group id per row (captions of one image...); a list of them for several queries.
        Groups are permuted, subsampled, folded and left out whole.
    query_ids : sequence of str, optional
        Row ids of each query (a list of them for several queries), naming the flagged items.
    max_rows : int
        Rows per set for cmmd, the test and prdc (seeded subsample, whole groups when given).
    n_permutations, nearest_k, fdr, seed, confidence : see the figures.
    verdict : bool
        Whether to run the per-set Gaussianity verdict.

    Returns
    -------
    CompareResult
    """
    many = isinstance(query, (list, tuple))
    queries = list(query) if many else [query]
    if not queries:
        raise InputError("compare needs at least one QUERY")
    n_q = len(queries)
    default = ["REF", *(f"QUERY{i + 1}" if n_q > 1 else "QUERY" for i in range(n_q))]
    names = list(names) if names is not None else default
    if len(names) != n_q + 1:
        raise InputError(f"{len(names)} names for {n_q + 1} sets")
    per = lambda v: (list(v) if many else [v]) if v is not None else [None] * n_q  # noqa: E731
    q_groups, q_ids = per(query_groups), per(query_ids)
    if len(q_groups) != n_q or len(q_ids) != n_q:
        raise InputError("query_groups and query_ids need one entry per QUERY")
    if max_rows < 10:
        raise InputError(f"max_rows must be >= 10, got {max_rows}")
    ref_moments_only = _is_moments(ref)
    R = None if ref_moments_only else _rows(ref, names[0])
    if R is not None and ref_groups is not None and len(ref_groups) != R.shape[0]:
        raise InputError(f"{names[0]}: {len(ref_groups)} group ids for {R.shape[0]} rows")
    n_r, mu_r, S_r = _moments_of(ref if R is None else R)
    d = mu_r.shape[0]
    rng = np.random.default_rng(seed)
    R_sub, g_sub = (None, None) if R is None else subsample(R, ref_groups, max_rows, rng)
    ref_verdict = gaussianity_verdict(R, seed=seed) if verdict and R is not None else (None, None)
    ref_summary = SetSummary(name=names[0], n=n_r, d=d, n_used=None if R_sub is None else R_sub.shape[0],
                             n_groups=None if ref_groups is None else len(set(map(str, ref_groups))),
                             gaussianity=ref_verdict[0], gaussianity_because=ref_verdict[1])
    whitener, ref_notes = None, []
    results = []
    for k, (Q, name, gq, ids) in enumerate(zip(queries, names[1:], q_groups, q_ids)):
        q_moments_only = _is_moments(Q)
        Qr = None if q_moments_only else _rows(Q, name)
        if Qr is not None and gq is not None and len(gq) != Qr.shape[0]:
            raise InputError(f"{name}: {len(gq)} group ids for {Qr.shape[0]} rows")
        n_q_rows, mu_q, S_q = _moments_of(Q if Qr is None else Qr)
        if mu_q.shape[0] != d:
            raise InputError(f"{name}: rows have dimension {mu_q.shape[0]}, {names[0]} has {d}")
        rows = R is not None and Qr is not None
        notes = [] if rows else [MOMENTS_ONLY_NOTE]
        fig: dict[str, Any] = {"fd": frechet_distance(mu_r, S_r, mu_q, S_q)}
        try:
            fig.update(gaussian_kl(mu_r, S_r, n_r, mu_q, S_q, n_q_rows))
            if fig["projected"]:
                notes.append(f"kl: computed in the common {fig['rank']}-dimensional subspace of the pooled "
                             f"covariance (of {d} dimensions)")
        except InputError as exc:
            notes.append(str(exc))
        q_sub = qg_sub = None
        if rows:
            ext = fd_extrapolated(R, Qr, seed=seed, confidence=confidence) if min(n_r, n_q_rows) >= 10 else None
            if ext is not None:
                half = ext["z"] * ext["fd_std"]
                fig.update(fd_inf=ext["fd_inf"], fd_inf_ci=ext["ci"], fd_ci=(fig["fd"] - half, fig["fd"] + half))
                notes += [ext["reason"]] if ext["reason"] else []
            q_sub, qg_sub = subsample(Qr, gq, max_rows, np.random.default_rng([seed, k]))
            fig.update({f"c_{key}": v for key, v in cmmd(R_sub, q_sub, groups_x=g_sub, groups_y=qg_sub, seed=seed,
                                                        confidence=confidence).items()})
            fig.update({f"t_{key}": v for key, v in permutation_test(
                R_sub, q_sub, groups_x=g_sub, groups_y=qg_sub, n_permutations=n_permutations, seed=seed).items()})
            if min(R_sub.shape[0], q_sub.shape[0]) > nearest_k:
                fig.update(prdc(R_sub, q_sub, nearest_k))
            else:
                notes.append(f"prdc: needs more than nearest_k = {nearest_k} rows per set")
            if whitener is None and not ref_notes:
                whitener = _reference_whitener(R, ref_groups, ref_notes)
            notes += ref_notes
            if whitener is not None:
                try:
                    fig.update({f"i_{key}": v for key, v in outlying_items(whitener, Qr, ids, fdr=fdr).items()})
                except InputError as exc:
                    notes.append(f"flagged items: {exc}")
        q_verdict = gaussianity_verdict(Qr, seed=seed) if verdict and Qr is not None else (None, None)
        labels = [v for v in (ref_verdict[0], q_verdict[0]) if v is not None]
        if any(v != "close to Gaussian" for v in labels):
            notes.append("not Gaussian: fd, fd_inf and kl describe the fitted Gaussians only; use the "
                         "distribution-free cmmd, pvalue, prdc and flagged items")
        results.append(_query_result(name, ref_summary, SetSummary(
            name=name, n=n_q_rows, d=d, n_used=None if q_sub is None else q_sub.shape[0],
            n_groups=None if gq is None else len(set(map(str, gq))), gaussianity=q_verdict[0],
            gaussianity_because=q_verdict[1]), fig, n_permutations, nearest_k, fdr, confidence, notes))
    ranked_by = "cmmd" if all(r.cmmd is not None for r in results) else "fd"
    order = sorted(range(n_q), key=lambda i: getattr(results[i], ranked_by))
    rank = {i: pos + 1 for pos, i in enumerate(order)}
    results = [dataclasses.replace(r, rank=rank[i] if n_q > 1 else None) for i, r in enumerate(results)]
    return CompareResult(ref=ref_summary, queries=tuple(results), ranked_by=ranked_by,
                         notes=(MOMENTS_ONLY_NOTE,) if ref_moments_only else ())


def _reference_whitener(R, groups, notes):
    from whitenclip.whitening import Whitener

    if R.shape[0] < 3:
        notes.append("flagged items: the reference needs at least 3 rows")
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wh = Whitener(shrinkage="auto").fit(R, groups=groups)  # as `fit`'s default: calibration holds at small n
    notes += [f"reference whitener: {' '.join(str(w.message).split())}" for w in caught]
    if wh.shrinkage_rule_:
        notes.append(f"reference whitener: shrinkage {wh.shrinkage_rule_}")
    return wh


def _query_result(name, ref_summary, q_summary, fig, n_permutations, nearest_k, fdr, confidence, notes):
    g = fig.get
    assumes = {"fd": FD_ASSUMES, "fd_inf": FD_INF_ASSUMES, "kl": KL_ASSUMES, "cmmd": CMMD_ASSUMES,
               "pvalue": TEST_ASSUMES, "prdc": PRDC_ASSUMES, "flagged": ITEMS_ASSUMES}
    has_items = g("i_pvalue") is not None
    return QueryComparison(
        name=name, ref=ref_summary, query=q_summary, fd=fig["fd"], fd_ci=g("fd_ci"), fd_inf=g("fd_inf"),
        fd_inf_ci=g("fd_inf_ci"), kl_ref_query=g("kl_ref_query"), kl_query_ref=g("kl_query_ref"),
        kl_ref_query_plugin=g("kl_ref_query_plugin"), kl_query_ref_plugin=g("kl_query_ref_plugin"),
        kl_rank=g("rank"), cmmd=g("c_cmmd"), cmmd_ci=g("c_ci"), cmmd_unbiased=g("c_cmmd_unbiased"),
        cmmd_unbiased_ci=g("c_ci_unbiased"), pvalue=g("t_pvalue"), test_statistic=g("t_statistic"),
        n_permutations=n_permutations if g("t_pvalue") is not None else None, grouped=bool(g("t_grouped", False)),
        precision=g("precision"), recall=g("recall"), density=g("density"), coverage=g("coverage"),
        nearest_k=nearest_k if g("precision") is not None else None, fdr=fdr if has_items else None,
        n_flagged=g("i_n_flagged"), flagged=tuple(g("i_flagged") or ()), rank=None, assumes=assumes,
        confidence=confidence, notes=tuple(notes))
