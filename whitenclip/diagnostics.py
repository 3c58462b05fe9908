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

Anderson-Darling (case 3: mean and variance estimated, as ``scipy.stats.anderson(x, 'norm')``)
on a sorted column y_1 <= ... <= y_n with z_i = (y_i - mean) / std (ddof=1):

    A2 = -n - (1/n) sum_i (2i - 1) [log Phi(z_i) + log(1 - Phi(z_{n+1-i}))]
       = -n - (1/n) sum_i [(2i - 1) log Phi(z_i) + (2n - 2i + 1) log Phi(-z_i)].

Only the lower tail t_i = log Phi(-|z_i|) is evaluated with the special function; the other
tail is log1p(-exp(t_i)), exact because exp(t_i) <= 1/2. Columns are processed in cache-sized
blocks on a thread pool (numpy's sort and the ufuncs release the GIL).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import numpy as np
import scipy.linalg
import scipy.special
import scipy.stats

from whitenclip.config import CHUNK_ROWS, DIAGNOSTICS_CHUNK_ROWS, MARDIA_BLOCK
from whitenclip.errors import InputError
from whitenclip.results import Result, json_safe
from whitenclip.validation import as_matrix

AD_THRESHOLD = 0.752
"""Pass threshold on A2 used by the paper (fixed; scipy's critical-value tables are not used)."""
DP_ALPHA = 0.05
"""D'Agostino-Pearson pass level: a coordinate passes when p > DP_ALPHA."""
MIN_DP_ROWS = 8
"""scipy.stats.normaltest (skewtest) needs at least 8 rows."""
CONSTANT_RTOL = 1e-7
"""A coordinate is constant when its std is at most CONSTANT_RTOL x the largest coordinate std
(exactly constant, or spread below float32 resolution; such columns are listed, not tested)."""
_SIM_COLUMNS_PER_TRIAL = 400
_QQ_POINTS = 101
_QQ_SHOWN = 4
_POOLED_MAX = 200_000


# ---------------------------------------------------------------------------------------
# univariate statistics, many columns at once
# ---------------------------------------------------------------------------------------
def anderson_darling(X, axis: int = 0, *, threads: int | None = None) -> np.ndarray:
    """Anderson-Darling A2 against the normal family for every column of X at once.

    Equals ``scipy.stats.anderson(x, 'norm').statistic`` (to ~1e-11) for each column: the
    mean and the ddof=1 standard deviation are estimated, and with z sorted,

        A2 = -n - (1/n) sum_i [(2i - 1) log Phi(z_(i)) + (2n - 2i + 1) log Phi(-z_(i))].

    With t_i = log Phi(-|z_i|) (the only special-function call), u_i = log1p(-exp(t_i)) and
    c_i = (2i - 1)/n - 1, this is -n - [sum_i c_i sign(z_i) (u_i - t_i) + sum_i (t_i + u_i)]
    (the weights of the two logs add up to 2), evaluated in place on cache-sized column blocks.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_columns) (or any shape; see ``axis``)
        Samples along ``axis``. A 1-D input gives a 0-d result.
    axis : int, default 0
        Axis holding the samples.
    threads : int or None
        Worker threads over column blocks; None uses ``os.cpu_count()``.

    Returns
    -------
    A2 : ndarray of the shape of X without ``axis``, float64
        NaN where a column is constant or has fewer than 2 rows (the statistic is undefined).
    """
    X = np.asarray(X)
    if X.dtype != np.float64:
        X = X.astype(np.float64)
    Y = np.moveaxis(X, axis, -1)
    out_shape = Y.shape[:-1]
    n = Y.shape[-1]
    Y = Y.reshape(-1, n)
    k = Y.shape[0]
    out = np.full(k, np.nan)
    if n < 2 or k == 0:
        return out.reshape(out_shape)
    c = (2.0 * np.arange(1, n + 1) - 1.0) / n - 1.0

    def block(sl: slice) -> None:
        z = np.array(Y[sl], dtype=np.float64, order="C", copy=True)  # (b, n), ours to overwrite
        z.sort(axis=1)
        z -= z.mean(axis=1, keepdims=True)
        sd = np.sqrt(np.einsum("ij,ij->i", z, z) / (n - 1))
        ok = (sd > 0) & np.isfinite(sd)
        if not ok.all():
            z = z[ok]
            sd = sd[ok]
        if z.shape[0] == 0:
            return
        z /= sd[:, None]
        t = np.abs(z)
        np.negative(t, out=t)  # -|z|
        far = t < -30.0  # Phi underflows below about -37.5: asymptotic log_ndtr there
        far_values = scipy.special.log_ndtr(t[far]) if far.any() else None
        scipy.special.ndtr(t, out=t)
        with np.errstate(divide="ignore"):
            np.log(t, out=t)  # t = log Phi(-|z|)
        if far_values is not None:
            t[far] = far_values
        u = np.exp(t)
        np.negative(u, out=u)
        np.log1p(u, out=u)  # u = log(1 - Phi(-|z|))
        total = t.sum(axis=1) + u.sum(axis=1)
        np.subtract(u, t, out=u)
        np.copysign(u, z, out=u)  # sign(z) (u - t) = log Phi(z) - log Phi(-z)
        res = -n - (u @ c + total)
        if ok.all():
            out[sl] = res
        else:
            out[np.arange(sl.start, sl.stop)[ok]] = res

    width = int(min(256, max(4, 262144 // n)))  # about 2 MiB of float64 per block
    blocks = [slice(s, min(s + width, k)) for s in range(0, k, width)]
    workers = min(len(blocks), threads or os.cpu_count() or 1)
    if workers <= 1:
        for sl in blocks:
            block(sl)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(block, blocks))
    return out.reshape(out_shape)


def dagostino_pearson(X, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """D'Agostino-Pearson K2 statistic and p-value per column (``scipy.stats.normaltest``).

    K2 = Z(skewness)^2 + Z(kurtosis)^2 ~ chi2(2) under normality. Constant columns and
    fewer than 8 rows give NaN (undefined) instead of scipy's warnings.

    Returns
    -------
    statistic, pvalue : ndarrays of the shape of X without ``axis``
    """
    X = np.moveaxis(np.asarray(X, dtype=np.float64), axis, 0)
    stat = np.full(X.shape[1:], np.nan)
    pval = np.full(X.shape[1:], np.nan)
    if X.shape[0] < MIN_DP_ROWS:
        return stat, pval
    ok = np.ptp(X, axis=0) > 0
    if ok.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # kurtosistest's n < 20 caveat
            warnings.simplefilter("ignore", UserWarning)
            res = scipy.stats.normaltest(X[:, ok], axis=0)
        stat[ok], pval[ok] = res.statistic, res.pvalue
    return stat, pval


def _central_moments(chunks, d: int) -> dict:
    """Per-column mean, skewness g1 and excess kurtosis g2 (biased, as scipy.stats defaults),
    from a stream of (m, d) chunks: one pass of power sums around a first-chunk shift."""
    n, shift, s1, s2, s3, s4 = 0, None, np.zeros(d), np.zeros(d), np.zeros(d), np.zeros(d)
    for C in chunks:
        if shift is None:
            shift = C.mean(axis=0)
        D = C - shift
        D2 = D * D
        n += D.shape[0]
        s1 += D.sum(axis=0)
        s2 += D2.sum(axis=0)
        s3 += np.einsum("ij,ij->j", D2, D)
        s4 += np.einsum("ij,ij->j", D2, D2)
    m1 = s1 / n
    m2 = s2 / n - m1**2
    m3 = s3 / n - 3 * m1 * s2 / n + 2 * m1**3
    m4 = s4 / n - 4 * m1 * s3 / n + 6 * m1**2 * s2 / n - 3 * m1**4
    with np.errstate(divide="ignore", invalid="ignore"):
        tiny = m2 <= 1e-24 * np.maximum(1.0, (shift + m1) ** 2)
        skew = np.where(tiny, np.nan, m3 / m2**1.5)
        kurt = np.where(tiny, np.nan, m4 / m2**2 - 3.0)
    return {"mean": shift + m1, "var": m2, "skewness": skew, "excess_kurtosis": kurt}


# ---------------------------------------------------------------------------------------
# exact-Gaussian references under the same protocol
# ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def expected_gaussian_rates(n_rows: int, trials: int, seed: int = 0, with_dp: bool = True) -> dict:
    """Pass rates and mean statistics an exact Gaussian gets under the per-column protocol.

    Simulates ``trials * 400`` independent N(0, 1) columns of ``n_rows`` rows with the given
    seed (cached per (n_rows, trials, seed)) and applies the same tests and thresholds.

    Returns
    -------
    dict with ad_pass, dp_pass (fractions), ad_mean, dp_mean, n_columns and tolerance
    (three binomial standard errors of a pass rate over the simulated columns).
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x6A055, int(n_rows), int(trials)]))
    m = int(trials) * _SIM_COLUMNS_PER_TRIAL
    Z = rng.standard_normal((int(n_rows), m))
    a2 = anderson_darling(Z)
    p = dagostino_pearson(Z)[1] if with_dp else np.full(1, np.nan)
    ad_pass = float(np.mean(a2 < AD_THRESHOLD))
    out = {"n_rows": int(n_rows), "n_columns": m, "ad_pass": ad_pass, "ad_mean": float(np.mean(a2)),
           "tolerance": float(3.0 * math.sqrt(max(ad_pass * (1 - ad_pass), 0.05 * 0.95) / m))}
    if np.isfinite(p).all():
        out.update(dp_pass=float(np.mean(p > DP_ALPHA)), dp_mean=float(np.mean(p)))
    else:
        out.update(dp_pass=None, dp_mean=None)
    return out


@functools.lru_cache(maxsize=64)
def expected_median_excess_kurtosis(n_rows: int, seed: int = 0, columns: int = 4000) -> float:
    """Median sample excess kurtosis g2 (biased, as :func:`_central_moments`) of ``columns``
    seeded N(0, 1) columns of ``n_rows`` rows: what an exact Gaussian shows under the same
    protocol (E g2 = -6/(n+1) and g2 is right-skewed, so the median is below 0: about -0.13 at
    100 rows, -0.6 at 15)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x6B2, int(n_rows)]))
    Z = rng.standard_normal((int(n_rows), int(columns)))
    return float(np.median(_central_moments([Z], int(columns))["excess_kurtosis"]))


# ---------------------------------------------------------------------------------------
# per-coordinate protocol
# ---------------------------------------------------------------------------------------
def coordinate_tests(X, *, trials: int = 10, subset: int = 500, seed: int = 0, subsets=None,
                     transform=None, global_constant=None) -> dict:
    """The paper's five per-coordinate metrics on random row subsets.

    For each of ``trials`` seeded subsets of ``subset`` rows (all rows, once, when
    n <= subset), every coordinate gets A2 and the D'Agostino-Pearson p-value. Over all
    (trial, coordinate) pairs that are not constant:

        ad_mean = mean A2,  ad_pass = fraction with A2 < 0.752,
        dp_mean = mean p,   dp_pass = fraction with p > 0.05.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    trials, subset, seed : protocol (subsets are drawn without replacement)
    subsets : list of index arrays, optional
        Reuse given subsets (so raw and whitened coordinates see the same rows).
    transform : callable, optional
        Applied to each subset's rows before testing (e.g. ``whitener.transform``).
    global_constant : ndarray of bool, optional
        Coordinates known to be constant over all rows (listed in ``constant``).

    Returns
    -------
    dict (JSON-ready) with ad_mean, ad_pass, dp_mean, dp_pass, expected_pass, expected_mean,
    constant, tested, trials, subset, a2_per_coordinate (mean over trials), worst.
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    if subsets is None:
        subsets = draw_subsets(n, trials, subset, np.random.default_rng(seed))
    m = len(subsets[0])
    a2_rows, p_rows = [], []
    for idx in subsets:
        S = X[idx] if transform is None else transform(X[idx])
        a2_rows.append(anderson_darling(S))
        p_rows.append(dagostino_pearson(S)[1])
    A2, P = np.vstack(a2_rows), np.vstack(p_rows)  # (trials, d)
    d = A2.shape[1]
    if global_constant is None:
        global_constant = ~np.isfinite(A2).any(axis=0)
    global_constant = np.asarray(global_constant, dtype=bool)
    A2[:, global_constant] = np.nan  # (numerically) constant coordinates: excluded even if A2 is finite
    P[:, global_constant] = np.nan
    valid = np.isfinite(A2)
    constant_idx = np.flatnonzero(global_constant)
    out = {"n_coordinates": int(d), "trials": len(subsets), "subset": int(m),
           "constant": {"count": int(constant_idx.size), "indices": constant_idx[:100].tolist(),
                        "truncated": bool(constant_idx.size > 100),
                        "constant_in_subset": int((~valid[:, ~global_constant]).sum())}}
    pairs = int(valid.sum())
    out["tested"] = pairs
    if pairs:
        a2v = A2[valid]
        out.update(ad_mean=float(a2v.mean()), ad_pass=float(np.mean(a2v < AD_THRESHOLD)))
    else:
        out.update(ad_mean=None, ad_pass=None)
    pvalid = np.isfinite(P)
    if pvalid.any():
        out.update(dp_mean=float(P[pvalid].mean()), dp_pass=float(np.mean(P[pvalid] > DP_ALPHA)))
    else:
        out.update(dp_mean=None, dp_pass=None)
        out["dp_note"] = f"D'Agostino-Pearson needs at least {MIN_DP_ROWS} rows per subset and non-constant columns"
    ref = expected_gaussian_rates(m, len(subsets), seed)
    out["expected_pass"] = {"ad": ref["ad_pass"], "dp": ref["dp_pass"], "tolerance": ref["tolerance"]}
    out["expected_mean"] = {"ad": ref["ad_mean"], "dp": ref["dp_mean"]}
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_coord = np.nanmean(np.where(valid, A2, np.nan), axis=0)
    out["a2_per_coordinate"] = [None if not np.isfinite(v) else float(v) for v in per_coord]
    order = np.argsort(np.where(np.isfinite(per_coord), -per_coord, np.inf))[:5]
    out["worst"] = [{"index": int(j), "ad_mean": float(per_coord[j])} for j in order if np.isfinite(per_coord[j])]
    return out


def draw_subsets(n: int, trials: int, subset: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``trials`` sorted row subsets of size min(subset, n), without replacement.

    When subset >= n every trial would see the same rows, so a single trial of all rows is used.
    """
    if trials < 1 or subset < 2:
        raise InputError(f"need trials >= 1 and subset >= 2, got trials={trials}, subset={subset}")
    if subset >= n:
        return [np.arange(n)]
    return [np.sort(rng.choice(n, size=subset, replace=False)) for _ in range(trials)]


# ---------------------------------------------------------------------------------------
# norm concentration
# ---------------------------------------------------------------------------------------
def chi_cv(k: float) -> float:
    """Exact CV of a chi variable with k degrees of freedom (the norm of N(0, I_k)).

    E chi = sqrt(2) Gamma((k+1)/2) / Gamma(k/2), Var chi = k - (E chi)^2; CV -> 1/sqrt(2k).
    """
    mean = math.sqrt(2.0) * math.exp(scipy.special.gammaln((k + 1) / 2) - scipy.special.gammaln(k / 2))
    return math.sqrt(max(k - mean**2, 0.0)) / mean


def trace_sq_unbiased(X) -> float | None:
    """Unbiased estimate of tr(Sigma^2) from rows X of shape (n, d), for any distribution with
    finite fourth moments (Himeno & Yamada 2014; equals the U-statistic of
    ((x_i - x_j) . (x_k - x_l))^2 / 4 over distinct i, j, k, l):

        (n-1) / (n (n-2) (n-3)) * [(n-1)(n-2) tr S^2 + (tr S)^2 - n Q],
        S the ddof=1 covariance,  Q = sum_i ||x_i - mean||^4 / (n-1).

    The plug-in tr S^2 is biased up by about (tr Sigma)^2 / (n-1), which dominates at n <= d
    (isotropic Gaussian, n = 200, d = 512: tr S^2 ~ 3.6 tr Sigma^2). Cost O(n^2 d) through the
    (n, n) Gram matrix when n <= d, else O(n d^2). None when n < 4.
    """
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    if n < 4:
        return None
    Xc = X - X.mean(axis=0)
    sq = np.einsum("ij,ij->i", Xc, Xc)
    G = Xc @ Xc.T if n <= d else Xc.T @ Xc
    tr_s, tr_s2, q = float(sq.sum()) / (n - 1), float(np.sum(G * G)) / (n - 1) ** 2, float(np.sum(sq**2)) / (n - 1)
    return (n - 1) / (n * (n - 2) * (n - 3)) * ((n - 1) * (n - 2) * tr_s2 + tr_s**2 - n * q)


def norm_reference_few_rows(X, centred: dict) -> dict:
    """The centred-norm Gaussian reference at n <= d: ``centred`` ({mean, std, cv} of
    ||x - mean||) updated with d_eff = (tr S)^2 / T, T = :func:`trace_sq_unbiased` (clipped to
    [1, d]), reference_cv = :func:`chi_cv` (d_eff) and cv_ratio. The sample spectrum's
    (tr S)^2 / tr S^2 is kept as ``d_eff_sample`` (biased low at n <= d).
    """
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    out = dict(centred)
    t = trace_sq_unbiased(X)
    tr_s = float(np.sum((X - X.mean(axis=0)) ** 2)) / (n - 1)
    out["d_eff_sample"] = out.pop("d_eff", None)
    out.pop("reference_cv", None)
    out.pop("cv_ratio", None)
    if t is None or not t > 0 or not tr_s > 0:
        out.update(d_eff=None, reference_cv=None, cv_ratio=None,
                   d_eff_reason=f"n={n}: tr(Sigma^2) has no positive unbiased estimate (needs n >= 4)")
        return out
    d_eff = min(max(tr_s**2 / t, 1.0), float(d))
    ref = chi_cv(d_eff)
    out.update(d_eff=d_eff, reference_cv=ref, cv_ratio=out["cv"] / ref if out.get("cv") is not None else None,
               d_eff_estimator="(tr S)^2 / unbiased tr(Sigma^2) (Himeno-Yamada), over all d coordinates")
    # histogram of ||x - mean||^2 beside c chi2(d_eff), c = tr S (n-1) / (n d_eff): the moment-matched law of a
    # Gaussian with the same covariance (x_i - mean ~ N(0, (n-1)/n Sigma))
    sq = np.sum((X - X.mean(axis=0)) ** 2, axis=1)
    scale = tr_s * (n - 1) / n / d_eff
    law = scipy.stats.chi2(d_eff, scale=scale)
    lo, hi = float(min(law.ppf(0.001), np.quantile(sq, 0.005))), float(max(law.ppf(0.999), np.quantile(sq, 0.99)))
    hi = min(hi, 3.0 * float(law.ppf(0.999)))
    counts, edges = np.histogram(sq, bins=40, range=(lo, hi))
    centres = 0.5 * (edges[1:] + edges[:-1])
    out["histogram"] = {"edges": edges.tolist(), "density": (counts / (sq.size * np.diff(edges))).tolist(),
                        "reference_density": law.pdf(centres).tolist(),
                        "reference": f"{scale:.4g} chi2({d_eff:.1f})",
                        "outside_range": float(1.0 - counts.sum() / sq.size)}
    return out


def _sqrt_law_cv(ref: dict) -> float | None:
    """CV of sqrt(V) for the reference law V of ||w||^2 / scale, in closed form.

    Beta(a, b): E V = a/(a+b), E sqrt(V) = B(a + 1/2, b) / B(a, b).
    F(d1, d2):  E V = d2/(d2-2), E sqrt(V) = sqrt(d2/d1) G((d1+1)/2) G((d2-1)/2) / (G(d1/2) G(d2/2)).
    """
    gl, bl = scipy.special.gammaln, scipy.special.betaln
    if ref.get("law") == "beta":
        a, b = ref["params"]
        m1, mh = a / (a + b), math.exp(bl(a + 0.5, b) - bl(a, b))
    elif ref.get("law") == "f" and ref["params"][1] > 2:
        d1, d2 = ref["params"]
        m1 = d2 / (d2 - 2)
        mh = math.sqrt(d2 / d1) * math.exp(gl((d1 + 1) / 2) + gl((d2 - 1) / 2) - gl(d1 / 2) - gl(d2 / 2))
    else:
        return None
    return math.sqrt(max(m1 - mh**2, 0.0)) / mh


def _beta_distances(v: np.ndarray, a: float, b: float) -> dict:
    """KS (with p-value) and Anderson-Darling (case 0) distances of v to Beta(a, b).

    cdf via ``scipy.special.betainc``; the upper tail 1 - F via ``betaincc`` where F > 1/2.
    """
    v = np.sort(v)
    n = v.size
    F = scipy.special.betainc(a, b, v)
    S = 1.0 - F
    hi = F > 0.5
    if hi.any():
        S[hi] = scipy.special.betaincc(a, b, v[hi])
    i = np.arange(1, n + 1)
    ks = float(max(np.max(i / n - F), np.max(F - (i - 1) / n)))
    tiny = np.finfo(np.float64).tiny  # a value beyond the law's float range counts as at its edge
    lf, ls = np.log(np.maximum(F, tiny)), np.log(np.maximum(S, tiny))
    ad = float(-n - np.sum((2 * i - 1) * (lf + ls[::-1])) / n)
    return {"ks": ks, "ks_pvalue": float(scipy.stats.kstwo.sf(ks, n)), "ad_distance": ad}


def reference_law(rank: int, n_fit: int, in_sample: bool) -> dict:
    """Exact law of ||w||^2 for Gaussian rows whitened with a whitener fitted on n_fit rows.

    in-sample:  ||w||^2 = (n-1)^2/n * B,           B ~ Beta(r/2, (n-r-1)/2)
    new rows:   ||w||^2 = r (n-1)(n+1) / (n (n-r)) * F,  F ~ F(r, n-r)

    Returns a dict {"law", "params", "scale"} or {"law": None, "reason"} when degenerate.
    """
    r, n = int(rank), int(n_fit)
    if in_sample:
        b = (n - r - 1) / 2
        if b <= 0:
            return {"law": None, "reason": f"n={n} <= rank+1={r + 1}: every in-sample row has the same ||w||^2"}
        return {"law": "beta", "params": [r / 2, b], "scale": (n - 1) ** 2 / n}
    if n - r <= 0:
        return {"law": None, "reason": f"whitener fitted on n={n} <= rank={r} rows: the F law is undefined"}
    return {"law": "f", "params": [r, n - r], "scale": r * (n - 1) * (n + 1) / (n * (n - r))}


def _frozen(ref: dict):
    if ref.get("law") == "beta":
        return scipy.stats.beta(*ref["params"])
    if ref.get("law") == "f":
        return scipy.stats.f(*ref["params"])
    return None


def norm_concentration(raw_norms, centred_sqnorms, sqnorms, *, rank: int, n_fit: int, in_sample: bool,
                       covariance_eigenvalues=None, bins: int = 60) -> dict:
    """Norm statistics of raw and whitened rows beside their exact-Gaussian references.

    Parameters
    ----------
    raw_norms : ndarray of shape (n,)        ||x||
    centred_sqnorms : ndarray of shape (n,)  ||x - mean||^2
    sqnorms : ndarray of shape (n,)          ||w||^2
    rank : int                               d', the whitened dimension
    n_fit : int                              rows the whitener was fitted on
    in_sample : bool                         rows are the whitener's own fit rows
    covariance_eigenvalues : ndarray (d,)    for the raw reference d_eff = (tr S)^2 / tr S^2

    The raw reference is the Gaussian with the same covariance: ||x - mu||^2 has mean tr S and
    variance 2 tr S^2, so CV(||x - mu||) ~ 1/sqrt(2 d_eff).
    """
    def stats(v):
        mean = float(np.mean(v))
        std = float(np.std(v, ddof=1)) if v.size > 1 else 0.0
        return {"mean": mean, "std": std, "cv": std / mean if mean > 0 else None}

    wn = np.sqrt(sqnorms)
    out = {"raw": stats(raw_norms), "raw_centred": stats(np.sqrt(centred_sqnorms)), "whitened": stats(wn)}
    if covariance_eigenvalues is not None:
        lam = np.asarray(covariance_eigenvalues, dtype=np.float64)
        tr, tr2 = float(lam.sum()), float(np.sum(lam**2))
        if tr > 0:
            d_eff = tr**2 / tr2
            out["raw_centred"].update(d_eff=d_eff, reference_cv=chi_cv(d_eff))
            cv = out["raw_centred"]["cv"]
            out["raw_centred"]["cv_ratio"] = cv / out["raw_centred"]["reference_cv"] if cv is not None else None
    ref = reference_law(rank, n_fit, in_sample)
    w = out["whitened"]
    w.update(rank=int(rank), chi_cv=chi_cv(rank), chi_cv_approx=1.0 / math.sqrt(2 * rank),
             in_sample=bool(in_sample), law=ref.get("law"))
    law = _frozen(ref)
    if law is None:
        w.update(reference_cv=w["chi_cv"], reference="chi", law_reason=ref["reason"], ks=None, ks_pvalue=None,
                 ad_distance=None)
    else:
        w["law_params"] = ref["params"]
        w["law_scale"] = ref["scale"]
        w["reference"] = ("in-sample Beta: n ||w||^2/(n-1)^2 ~ Beta(d'/2, (n-d'-1)/2)" if ref["law"] == "beta"
                          else "new rows: (n-r)/(r(n-1)) * n/(n+1) ||w||^2 ~ F(r, n-r)")
        x = sqnorms / ref["scale"]
        if ref["law"] == "beta":
            a, b = ref["params"]
            v = x
        else:  # F(d1, d2) -> Beta(d1/2, d2/2) via v = d1 x / (d1 x + d2) (monotone: same KS and A2)
            d1, d2 = ref["params"]
            v, a, b = d1 * x / (d1 * x + d2), d1 / 2, d2 / 2
        w.update(_beta_distances(v, a, b))
        ref_cv = _sqrt_law_cv(ref)
        w["reference_cv"] = ref_cv if ref_cv is not None else w["chi_cv"]
    w["cv_ratio"] = w["cv"] / w["reference_cv"] if (w["cv"] is not None and w["reference_cv"]) else None
    chi2 = scipy.stats.chi2(rank)
    w["chi2_ks"] = float(scipy.stats.kstest(sqnorms, chi2.cdf).statistic)
    # histogram of ||w||^2 with the reference density at the bin centres (for the report figure)
    # range: the reference law's central 99.8% and the data's 0.5%..99% quantiles, at most 3x the
    # law's upper end (so heavy tails do not squash the bulk); the share of rows outside is recorded
    ref_lo, ref_hi = ((law.ppf(0.001) * ref["scale"], law.ppf(0.999) * ref["scale"]) if law is not None
                      else (chi2.ppf(0.001), chi2.ppf(0.999)))
    q_lo, q_hi = np.quantile(sqnorms, [0.005, 0.99])
    lo = float(min(ref_lo, q_lo))
    hi = float(min(max(ref_hi, q_hi), 3.0 * ref_hi))
    if not hi - lo > 1e-9 * max(1.0, abs(hi)):  # (near-)equal norms, e.g. n <= rank + 1
        lo, hi = float(q_lo) - 0.5, float(q_lo) + 0.5
    counts, edges = np.histogram(sqnorms, bins=bins, range=(lo, hi))
    dens_data = counts / (sqnorms.size * np.diff(edges))  # density w.r.t. all rows, not only those in range
    centres = 0.5 * (edges[1:] + edges[:-1])
    dens = law.pdf(centres / ref["scale"]) / ref["scale"] if law is not None else chi2.pdf(centres)
    w["histogram"] = {"edges": edges.tolist(), "density": dens_data.tolist(), "reference_density": dens.tolist(),
                      "reference": ref["law"] or "chi2", "outside_range": float(1.0 - counts.sum() / sqnorms.size)}
    return out


# ---------------------------------------------------------------------------------------
# random projections
# ---------------------------------------------------------------------------------------
def random_projections(X, mean, *, k: int = 1000, rows: int = 5000, seed: int = 0) -> dict:
    """A2 of the centred data along k seeded unit directions, with QQ data.

    Directions u_j ~ N(0, I_d) / ||.||; projections p = (x - mean) . u_j on a seeded subsample
    of min(n, rows) rows (A2 grows with n for any fixed deviation, so a fixed row count keeps
    the 0.752 threshold comparable across data sets).

    Returns
    -------
    dict with k, rows, ad_mean, ad_pass, expected_pass, excess_kurtosis (mean over directions),
    a2 (per direction), qq {"normal", "projections": [..], "pooled"}.
    """
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x9E0]))
    sub = np.sort(rng.choice(n, size=rows, replace=False)) if n > rows else np.arange(n)
    U = rng.standard_normal((d, int(k)))
    U /= np.linalg.norm(U, axis=0)
    P = (X[sub] - mean) @ U  # (m, k)
    a2 = anderson_darling(P)
    ok = np.isfinite(a2)
    m = P.shape[0]
    out = {"k": int(k), "rows": int(m), "tested": int(ok.sum())}
    if ok.any():
        out.update(ad_mean=float(a2[ok].mean()), ad_pass=float(np.mean(a2[ok] < AD_THRESHOLD)))
    else:
        out.update(ad_mean=None, ad_pass=None, note="every projection is constant")
    ref = expected_gaussian_rates(m, 2, seed, with_dp=False)
    out["expected_pass"] = {"ad": ref["ad_pass"], "tolerance": ref["tolerance"]}
    out["expected_mean"] = {"ad": ref["ad_mean"]}
    out["a2"] = [float(v) if np.isfinite(v) else None for v in a2]
    # standardised projections, QQ data
    Pk = P[:, ok]
    if Pk.shape[1] and m > 1:
        Z = (Pk - Pk.mean(axis=0)) / Pk.std(axis=0, ddof=1)
        Z2 = Z * Z
        kurt = np.einsum("ij,ij->j", Z2, Z2) / m / ((m - 1) / m) ** 2 - 3.0  # g2 = m4 / m2^2 (ddof=0)
        out["excess_kurtosis"] = float(np.mean(kurt))
        # quantile levels evenly spaced in normal score, out to the last plotting position
        # 1 - 1/(2m), so the tails (where heavy or light tails show) are drawn
        def levels(size):
            z_max = scipy.special.ndtri(1 - 0.5 / size)
            return scipy.special.ndtr(np.linspace(-z_max, z_max, _QQ_POINTS))

        probs = levels(m)
        out["qq"] = {"normal": scipy.special.ndtri(probs).tolist(),
                     "projections": [{"index": int(np.flatnonzero(ok)[j]), "a2": float(a2[ok][j]),
                                      "sample": np.quantile(Z[:, j], probs).tolist()}
                                     for j in range(min(_QQ_SHOWN, Z.shape[1]))]}
        pooled = Z.ravel()
        if pooled.size > _POOLED_MAX:  # a seeded sample of the pooled values is plenty for the quantiles
            pooled = pooled[rng.integers(0, pooled.size, size=_POOLED_MAX)]
        pprobs = levels(pooled.size)
        out["qq"]["pooled"] = {"normal": scipy.special.ndtri(pprobs).tolist(),
                               "sample": np.quantile(pooled, pprobs).tolist(), "values": int(pooled.size)}
    else:
        out["excess_kurtosis"] = None
        out["qq"] = None
    return out


# ---------------------------------------------------------------------------------------
# held-out whitening (n <= rank + 1: the in-sample whitening says nothing about the data)
# ---------------------------------------------------------------------------------------
HELD_OUT_SHRINKAGE = "oas"
"""Shrinkage of the held-out whitener at n <= d (full rank from half the rows)."""
MIN_HELD_OUT_ROWS = 4
"""Rows per fold below which the held-out whitening is not tested."""


def held_out_whitening(X, *, method: str = "pca", shrinkage=HELD_OUT_SHRINKAGE, seed: int = 0) -> dict:
    """Two-fold held-out whitening: rows split in two seeded halves A, B (h = n // 2 rows each
    tested); a ``Whitener(method, shrinkage)`` fitted on B whitens A and one fitted on A whitens
    h rows of B.

    For Gaussian rows each tested row is independent of the whitener that maps it, so every
    whitened coordinate is exactly Gaussian (any linear map of a Gaussian is); the in-sample
    whitening at n <= rank + 1 instead maps the rows onto an orthonormal frame (equal norms,
    coordinates set by the geometry, not by the data's law). Shrinkage makes the fold's
    covariance full rank with h < d rows.

    Returns
    -------
    dict with ``blocks`` (two (h, r) whitened folds, or None with ``reason``), ``rows`` (h),
    ``fit_rows`` ([rows fitted per fold]), ``shrinkage`` (intensity per fold), ``rank`` (r, the
    smaller fold rank; both folds cut to it), ``method``, ``description``, ``notes``.
    """
    from whitenclip.whitening import Whitener

    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    h = n // 2
    out = {"method": method, "shrinkage_rule": shrinkage, "rows": int(h), "folds": 2, "notes": []}
    if h < MIN_HELD_OUT_ROWS:
        out.update(blocks=None, reason=f"n={n}: a held-out whitening needs at least {2 * MIN_HELD_OUT_ROWS} rows "
                                       f"({MIN_HELD_OUT_ROWS} per fold)")
        return out
    perm = np.random.default_rng(np.random.SeedSequence([int(seed), 0x40F])).permutation(n)
    a, b = np.sort(perm[:h]), np.sort(perm[h:])
    blocks, fits, intensities = [], [], []
    for fit_idx, test_idx in ((b, a), (a, b[:h])):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            wh = Whitener(method=method, shrinkage=shrinkage, calibration=False).fit(X[fit_idx])
        out["notes"] += [f"held-out whitener: {w.message}" for w in caught]
        blocks.append(wh.transform(X[test_idx]))
        fits.append(int(fit_idx.size))
        intensities.append(float(wh.shrinkage_))
    r = min(B.shape[1] for B in blocks)
    shrunk = ", ".join(f"{v:.3g}" for v in intensities)
    out.update(blocks=[B[:, :r] for B in blocks], fit_rows=fits, shrinkage=intensities, rank=int(r),
               description=(f"held-out {method} whitening ({shrinkage} shrinkage {shrunk}): 2 folds, a whitener "
                            f"fitted on one half of the rows whitens {h} rows of the other; {r} whitened coordinates"))
    return out


# ---------------------------------------------------------------------------------------
# multivariate: Mardia
# ---------------------------------------------------------------------------------------
def _self_whiten(Z: np.ndarray, floor: float = 1e-10) -> np.ndarray:
    """Rows standardised by their own mean and ddof=0 covariance S (over its numerical rank).

    Returns Y = (Z - mean) L^{-T} with S = L L^T (Cholesky); Mardia's statistics are affine
    invariant, so any square root of S gives the same b1 and b2. Falls back to the eigen-basis
    (dropping eigenvalues below floor * max) when S is singular.
    """
    Zc = Z - Z.mean(axis=0)
    S = Zc.T @ Zc / Z.shape[0]
    try:
        L = np.linalg.cholesky(S)
        if np.all(np.diag(L) > math.sqrt(floor) * math.sqrt(max(np.max(np.diag(S)), 0.0))):
            return scipy.linalg.solve_triangular(L, Zc.T, lower=True).T
    except np.linalg.LinAlgError:
        pass
    lam, V = scipy.linalg.eigh(S, driver="evd")
    top = lam.max() if lam.size else 0.0
    keep = lam > floor * top if top > 0 else np.zeros(lam.shape, dtype=bool)
    return (Zc @ V[:, keep]) / np.sqrt(lam[keep])


def mardia_skewness(Y: np.ndarray, *, block: int = MARDIA_BLOCK) -> float:
    """Mardia's b1 = (1/m^2) sum_{i,j} (y_i . y_j)^3 for self-standardised rows Y (m, r).

    Computed by chunked Gram blocks over the upper triangle (the sum is symmetric in i, j):
    memory O(block * m), time O(m^2 r / 2).
    """
    m = Y.shape[0]
    total = 0.0
    for s in range(0, m, block):
        e = min(s + block, m)
        G = Y[s:e] @ Y[s:].T  # rows s..e against columns s..m
        G2 = G * G
        diag = float(np.einsum("ij,ij->", G2[:, : e - s], G[:, : e - s]))
        rest = float(np.einsum("ij,ij->", G2[:, e - s:], G[:, e - s:]))
        total += diag + 2.0 * rest
    return total / m**2


def mardia(X, *, sqnorms_in_sample=None, rank: int | None = None, max_rows: int = 5000, seed: int = 0,
           block: int = MARDIA_BLOCK, transform=None) -> dict:
    """Mardia's multivariate skewness and kurtosis tests with large-sample p-values.

    Skewness: on a seeded subsample of m = min(n, max_rows) rows standardised by their own mean
    and ddof=0 covariance (rank r), b1 = (1/m^2) sum_ij (y_i . y_j)^3 via chunked Gram blocks;
    with Mardia's small-sample factor c = (r+1)(m+1)(m+3) / (m ((m+1)(r+1) - 6)),
    m b1 c / 6 ~ chi2(r (r+1)(r+2) / 6).

    Kurtosis: b2 = (1/n) sum_i D_i^4 with D_i^2 the ddof=0 Mahalanobis distance. When the
    whitener was fitted on these rows (``sqnorms_in_sample`` = ||w||^2 of all n rows, ddof=1),
    D_i^2 = ||w_i||^2 n/(n-1) over all n rows; otherwise the subsample's own standardisation.
    z = (b2 - r(r+2)(n-1)/(n+1)) / sqrt(8 r (r+2) / n) ~ N(0, 1), two-sided p-value.
    Effect size: excess_per_dim = (b2 - r(r+2)(n-1)/(n+1)) / r, which equals the mean excess
    kurtosis of the coordinates when they are independent.

    Valid for n >> r. Returns None values with a reason when n <= r + 1. ``transform`` (e.g. a
    whitener's) is applied to the subsample first; it changes nothing (affine invariance) but
    makes the covariance well conditioned and drops null directions.
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x3A4D]))
    sub = np.sort(rng.choice(n, size=max_rows, replace=False)) if n > max_rows else np.arange(n)
    Y = _self_whiten(X[sub] if transform is None else transform(X[sub]))
    m, r = Y.shape
    out = {"skewness": {"method": f"chunked Gram blocks (block={block}) on a seeded subsample of {m} of {n} rows, "
                                  "self-standardised (ddof=0)", "rows": int(m), "rank": int(r)},
           "kurtosis": {}, "valid_large_sample": bool(m >= 10 * max(r, 1))}
    sk = out["skewness"]
    if r < 1 or m <= r + 1:
        reason = f"rows={m} <= rank+1={r + 1}: the sample standardises itself exactly"
        sk.update(b1=None, statistic=None, df=None, pvalue=None, ratio_to_null=None, reason=reason)
    else:
        b1 = mardia_skewness(Y, block=block)
        c = (r + 1) * (m + 1) * (m + 3) / (m * ((m + 1) * (r + 1) - 6))
        df = r * (r + 1) * (r + 2) / 6
        stat = m * b1 * c / 6
        sk.update(b1=b1, statistic=stat, df=df, pvalue=float(scipy.stats.chi2.sf(stat, df)), ratio_to_null=stat / df)
    ku = out["kurtosis"]
    if sqnorms_in_sample is not None and rank is not None:
        nk, rk = int(np.size(sqnorms_in_sample)), int(rank)
        D2 = np.asarray(sqnorms_in_sample, dtype=np.float64) * nk / (nk - 1)
        ku["method"] = f"whitened norms of all {nk} rows (in-sample whitener, rescaled to ddof=0)"
    else:
        nk, rk = m, r
        D2 = np.sum(Y * Y, axis=1)
        ku["method"] = f"own standardisation of the {m}-row subsample (whitener not fitted on these rows)"
    ku.update(rows=nk, rank=rk)
    if rk < 1 or nk <= rk + 1:
        ku.update(b2=None, expected=None, z=None, pvalue=None, excess_per_dim=None,
                  reason=f"rows={nk} <= rank+1={rk + 1}: every D^2 is equal")
    else:
        b2 = float(np.mean(D2**2))
        expected = rk * (rk + 2) * (nk - 1) / (nk + 1)
        z = (b2 - expected) / math.sqrt(8 * rk * (rk + 2) / nk)
        ku.update(b2=b2, expected=expected, z=z, pvalue=float(2 * scipy.stats.norm.sf(abs(z))),
                  excess_per_dim=(b2 - expected) / rk, relative_excess=b2 / expected - 1)
    return out


# ---------------------------------------------------------------------------------------
# spectrum isotropy
# ---------------------------------------------------------------------------------------
TOP_SHARE = 0.01
"""The isotropy section reports the share of variance carried by the top 1% of directions."""


def spectrum_isotropy(eigenvalues, *, top_share: float = TOP_SHARE) -> dict:
    """How evenly the variance spreads over the directions of a covariance spectrum.

    For eigenvalues lambda_1 >= ... >= lambda_D >= 0 (negatives are clipped to 0) and
    p_i = lambda_i / sum_j lambda_j:

        participation_ratio = (sum lambda)^2 / sum lambda^2         in [1, D]
        effective_rank      = exp(H(p)),  H(p) = -sum_i p_i log p_i  in [1, D]  (0 log 0 = 0)
        top_fraction        = sum_{i <= k} p_i,  k = ceil(top_share * D)       in [k/D, 1]

    Both ranks equal D for an isotropic spectrum (all lambda equal) and 1 when one direction
    carries all the variance.

    Parameters
    ----------
    eigenvalues : array-like of shape (D,)
    top_share : float
        Share of the directions counted in ``top_fraction``.

    Returns
    -------
    dict with dimensions (D), participation_ratio, effective_rank, top_directions (k),
    top_fraction; the three figures are None when every eigenvalue is 0.

    >>> r = spectrum_isotropy([2.0, 1.0, 1.0, 0.0])
    >>> r["participation_ratio"], r["top_directions"], r["top_fraction"]
    (2.6666666666666665, 1, 0.5)
    """
    lam = np.clip(np.asarray(eigenvalues, dtype=np.float64).ravel(), 0.0, None)
    lam = np.sort(lam)[::-1]
    dim = int(lam.size)
    k = max(1, math.ceil(top_share * dim - 1e-9)) if dim else 0
    out = {"dimensions": dim, "participation_ratio": None, "effective_rank": None, "top_directions": k,
           "top_fraction": None}
    total = float(lam.sum())
    if dim == 0 or not total > 0:
        return out
    p = lam / total
    nz = p[p > 0]
    out.update(participation_ratio=total**2 / float(np.sum(lam**2)),
               effective_rank=float(np.exp(-np.sum(nz * np.log(nz)))),
               top_fraction=float(np.sum(p[:k])))
    return out


# ---------------------------------------------------------------------------------------
# verdict
# ---------------------------------------------------------------------------------------
VERDICT_RULE = (
    "degenerate if rank < 2, n <= rank + 1 or no coordinate is testable; else close to Gaussian if "
    "whitened-coordinate and projection AD pass rates are within 0.05 of the exact-Gaussian rate, "
    "|median whitened excess kurtosis| < 0.5 and the whitened-norm CV ratio is in [0.8, 1.25]; else "
    "heavy-tailed if median whitened excess kurtosis > 0.5 or CV ratio > 1.25; else light-tailed if "
    "median excess kurtosis < -0.5 or CV ratio < 0.8; else multi-modal if some whitened coordinate "
    "has excess kurtosis < -1 (bimodal); else not Gaussian (skewed or other)"
)
VERDICT_RULE_FEW_ROWS = (
    "n <= rank + 1 (no more rows than dimensions): the in-sample whitening is an exact frame, so 'whitened' "
    "means a held-out whitening (2 folds, OAS shrinkage, fitted on one half, tested on the other) and the CV "
    "ratio is that of the centred raw norms against the Gaussian with the same covariance (d_eff from an unbiased "
    "tr(Sigma^2)); Mardia is not used. degenerate if rank < 2 or nothing is testable; else the same thresholds: "
    "close to Gaussian if held-out whitened-coordinate and projection AD pass rates are within 0.05 of the "
    "exact-Gaussian rate, |k| < 0.5 with k the median held-out excess kurtosis minus an exact Gaussian's median at "
    "the same rows (g2 is biased low on few rows) and the CV ratio is in [0.8, 1.25]; else heavy-tailed if k > 0.5 "
    "or CV ratio > 1.25; else light-tailed if k < -0.5 or CV ratio < 0.8; else multi-modal if some held-out "
    "coordinate has excess kurtosis < -1; "
    "else not Gaussian (skewed or other)"
)
VERDICT_RULE_NEW_ROWS = VERDICT_RULE.replace(
    "degenerate if rank < 2, n <= rank + 1 or no coordinate is testable",
    "degenerate if rank < 2 or no coordinate is testable (n <= rank + 1 new rows: the whitener was fitted on other "
    "rows, so their whitened coordinates and norms stay testable; Mardia is not)")


def _rule(n: int, rank: int, in_sample: bool, few_rows: bool) -> str:
    """The verdict rule that applies: few rows in-sample, few new rows, or the general one."""
    if few_rows:
        return VERDICT_RULE_FEW_ROWS
    return VERDICT_RULE_NEW_ROWS if (not in_sample and n <= rank + 1) else VERDICT_RULE


def _effect_sizes(wc: dict, proj_ad_pass, proj_expected: dict, shape: dict, mardia_kurtosis: dict,
                  wn: dict) -> dict:
    return {
        "ad_mean_whitened": wc.get("ad_mean"),
        "ad_pass_gap_whitened": None if wc.get("ad_pass") is None else wc["expected_pass"]["ad"] - wc["ad_pass"],
        "ad_pass_gap_projections": None if proj_ad_pass is None else proj_expected["ad"] - proj_ad_pass,
        "median_excess_kurtosis": shape.get("median_excess_kurtosis"),
        **({"gaussian_median_excess_kurtosis": shape["gaussian_median_excess_kurtosis"]}
           if "gaussian_median_excess_kurtosis" in shape else {}),
        "min_excess_kurtosis": shape.get("min_excess_kurtosis"),
        "mardia_excess_kurtosis_per_dim": mardia_kurtosis.get("excess_per_dim"),
        "cv_ratio": wn.get("cv_ratio"),
    }


def _judge(n: int, rank: int, testable: bool, effects: dict, *, few_rows: bool = False,
           in_sample: bool = True) -> tuple[str, str]:
    """(label, because) of :data:`VERDICT_RULE` (``few_rows``: :data:`VERDICT_RULE_FEW_ROWS`; new
    rows at n <= rank + 1: :data:`VERDICT_RULE_NEW_ROWS`) applied to the effect sizes."""
    if rank < 2 or (in_sample and n <= rank + 1 and not few_rows) or not testable:
        return "degenerate", f"rank={rank}, n={n}" + ("" if testable else ", nothing testable")
    gap_c = effects["ad_pass_gap_whitened"]
    gap_c_text = "n/a" if gap_c is None else f"{gap_c:+.3f}"
    if few_rows and gap_c is None:  # held-out whitening untestable (n < 8): projections alone
        gap_c = 0.0
    gap_p = effects["ad_pass_gap_projections"] or 0.0
    kmed = effects["median_excess_kurtosis"] or 0.0
    kref = effects.get("gaussian_median_excess_kurtosis") or 0.0  # few rows: g2's small-sample median
    kmed -= kref
    kmin = effects["min_excess_kurtosis"] or 0.0
    cvr = effects["cv_ratio"] if effects["cv_ratio"] is not None else 1.0
    if gap_c <= 0.05 and gap_p <= 0.05 and abs(kmed) < 0.5 and 0.8 <= cvr <= 1.25:
        label = "close to Gaussian"
    elif kmed > 0.5 or cvr > 1.25:
        label = "heavy-tailed"
    elif kmed < -0.5 or cvr < 0.8:
        label = "light-tailed"
    elif kmin < -1.0:
        label = "multi-modal"
    else:
        label = "not Gaussian (skewed or other)"
    if few_rows:
        return label, (f"n={n} <= rank+1={rank + 1}: AD pass gap {gap_c_text} (held-out whitened coords), "
                       f"{gap_p:+.3f} (projections); median held-out excess kurtosis {kmed + kref:+.2f} "
                       f"(exact Gaussian {kref:+.2f}, difference {kmed:+.2f}), min {kmin:+.2f}; "
                       f"CV ratio {cvr:.2f} (centred raw norms)")
    return label, (f"AD pass gap {gap_c:+.3f} (coords), {gap_p:+.3f} (projections); median excess kurtosis "
                   f"{kmed:+.2f}, min {kmin:+.2f}; CV ratio {cvr:.2f}")


def verdict(report) -> dict:
    """One verdict label with the rule and the effect sizes that produced it.

    ``report``: a report's JSON mapping (``GaussianityReport.to_dict()`` or a saved report.json).
    """
    wc, proj = report["coordinates"]["whitened"], report["projections"]
    few_rows = (report["whitener"].get("held_out") or None) is not None
    effects = _effect_sizes(wc, proj.get("ad_pass"), proj["expected_pass"], report["coordinates"]["whitened_shape"],
                            {} if few_rows else report["multivariate"]["kurtosis"],
                            report["norm"]["raw_centred" if few_rows else "whitened"])
    testable = wc.get("ad_pass") is not None or (few_rows and proj.get("ad_pass") is not None)
    in_sample = bool(report["whitener"].get("in_sample", True))
    label, because = _judge(report["n"], report["rank"], testable, effects, few_rows=few_rows, in_sample=in_sample)
    return {"label": label, "rule": _rule(report["n"], report["rank"], in_sample, few_rows), "because": because,
            "effect_sizes": effects, "untested": _untested(report["n"], report["d"], report["rank"], few_rows, report)}


# ---------------------------------------------------------------------------------------
# typed report: one result per section
# ---------------------------------------------------------------------------------------
class ReportContext:
    """What every section reads: the rows, the whitener, the protocol and one streamed pass.

    Attributes (shapes for n rows of dimension d, whitened rank r)
    ----------
    X : (n, d) float64;  whitener : fitted Whitener;  fitted_here, in_sample : bool
    seed, trials, subset, projections, projection_rows, mardia_rows, shape_rows : protocol
    mean : (d,);  raw_norms : (n,) ||x||;  centred_sq : (n,) ||x - mean||^2;  col_sq : (d,)
    sqnorms : (n,) ||w||^2;  shape_sub : seeded row indices;  w_shape : (len(shape_sub), r') whitened
    covariance : (d, d) covariance of X (ddof=1; the whitener's own when in-sample)
    spectrum : (d,) its eigenvalues, descending;  notes : list of str (appended to)
    few_rows : bool, in-sample rows with n <= r + 1 (the whitening is an exact frame; whitened
    figures come from :attr:`held_out`, :func:`held_out_whitening`)
    """

    def __init__(self, X: np.ndarray, whitener, *, fitted_here: bool, in_sample: bool, seed: int, trials: int,
                 subset: int, projections: int, projection_rows: int, mardia_rows: int, shape_rows: int,
                 notes: list[str]):
        self.X, self.whitener, self.fitted_here, self.in_sample = X, whitener, fitted_here, in_sample
        self.seed, self.trials, self.subset, self.projections = int(seed), int(trials), int(subset), int(projections)
        self.projection_rows, self.mardia_rows, self.shape_rows = projection_rows, mardia_rows, shape_rows
        self.notes = notes
        self.n, self.d = X.shape
        self.rank = int(whitener.rank_)
        self.n_fit = int(whitener.n_samples_) if whitener.n_samples_ is not None else self.n
        self.few_rows = bool(in_sample and self.rank >= 2 and self.n <= self.rank + 1)
        self._stream_pass()

    @functools.cached_property
    def held_out(self) -> dict:
        """:func:`held_out_whitening` of X (the whitener's method, OAS shrinkage, this seed)."""
        out = held_out_whitening(self.X, method=self.whitener.method, seed=self.seed)
        self.notes.extend(out.pop("notes"))
        return out

    def _stream_pass(self) -> None:
        X, n, d, rows = self.X, self.n, self.d, DIAGNOSTICS_CHUNK_ROWS
        self.mean = mean = X.mean(axis=0)
        self.raw_norms = np.sqrt(np.einsum("ij,ij->i", X, X))
        self.centred_sq, self.col_sq = np.empty(n), np.zeros(d)
        for s, C in zip(range(0, n, rows), _chunks(X, lambda C: C - mean, rows)):
            C2 = C * C
            self.centred_sq[s:s + C.shape[0]] = C2.sum(axis=1)
            self.col_sq += C2.sum(axis=0)
        # per-coordinate skewness / excess kurtosis on a seeded subsample (sd of g2 ~ sqrt(24 / rows));
        # its whitened rows are picked up during the single transform pass that gives ||w||^2
        rng_shape = np.random.default_rng(np.random.SeedSequence([self.seed, 0x5AE]))
        self.shape_sub = (np.sort(rng_shape.choice(n, size=self.shape_rows, replace=False)) if n > self.shape_rows
                          else np.arange(n))
        self.sqnorms, w_rows = np.empty(n), []
        for s, W in zip(range(0, n, rows), _chunks(X, self.whitener.transform, rows)):
            self.sqnorms[s:s + W.shape[0]] = np.einsum("ij,ij->i", W, W)
            lo, hi = np.searchsorted(self.shape_sub, [s, s + W.shape[0]])
            w_rows.append(W[self.shape_sub[lo:hi] - s])
        self.w_shape = np.concatenate(w_rows)
        if self.fitted_here or self.in_sample:
            self.covariance = self.whitener.covariance_
            self.spectrum = self.whitener.all_eigenvalues_
        else:
            self.covariance = np.cov(X, rowvar=False).reshape(d, d)
            self.spectrum = np.clip(np.linalg.eigvalsh(self.covariance), 0, None)[::-1]

    @functools.cached_property
    def subsets(self) -> list[np.ndarray]:
        """The per-coordinate protocol's row subsets (shared by raw and whitened coordinates)."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0xC00D]))
        return draw_subsets(self.n, self.trials, self.subset, rng)


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


def _untested(n: int, d: int, rank: int, few_rows: bool, sections: dict) -> list[dict]:
    """One {"part", "reason"} per figure the report could not compute on these rows
    (``sections``: the sections' JSON mappings by key)."""
    out = []
    if few_rows:
        out.append({"part": "in-sample whitened coordinates",
                    "reason": f"n={n} <= rank+1={rank + 1}: the whitener fitted on these rows maps them onto an exact "
                              "orthonormal frame; whitened coordinates come from a held-out whitening instead"})
    w, rc = sections["norm"]["whitened"], sections["norm"]["raw_centred"]
    if w.get("untestable"):
        out.append({"part": "whitened-norm CV and law of ||w||^2", "reason": w["untestable"]})
    elif w.get("law") is None:
        out.append({"part": "law of ||w||^2", "reason": w.get("law_reason") or ""})
    if rc.get("d_eff_reason"):
        out.append({"part": "centred-norm CV reference", "reason": rc["d_eff_reason"]})
    for kind in ("raw", "whitened"):
        c = sections["coordinates"][kind]
        if c.get("untestable"):
            out.append({"part": f"{kind} coordinates", "reason": c["untestable"]})
        elif c.get("dp_pass") is None and c.get("dp_note"):
            out.append({"part": f"D'Agostino-Pearson on {kind} coordinates", "reason": c["dp_note"]})
    proj = sections["projections"]
    if proj.get("ad_pass") is None:
        out.append({"part": "random projections", "reason": proj.get("note") or "no projection testable"})
    for name in ("skewness", "kurtosis"):
        part = sections["multivariate"][name]
        if part.get("pvalue") is None and part.get("reason"):
            out.append({"part": f"Mardia {name}", "reason": part["reason"]})
    if few_rows:
        out.append({"part": "covariance spectrum beyond rank n-1",
                    "reason": f"n={n} rows give at most {n - 1} non-zero eigenvalues of d={d}"})
    return out


SECTIONS: tuple[type[Section], ...] = (NormConcentration, Coordinates, Projections, Multivariate, Spectrum,
                                       Isotropy, Verdict)
"""The report's sections, computed and written in this order (the verdict reads the others)."""


@dataclasses.dataclass(frozen=True)
class WhitenerInfo(Result):
    """Which whitener the report used and whether X are its own fit rows (``in_sample``)."""

    fitted_on_input: bool
    in_sample: bool
    method: str
    shrinkage: float
    n_fit: int
    dropped: dict
    note: str
    in_sample_basis: str
    held_out: dict | None = None
    """At n <= rank + 1 (in-sample): the held-out whitening behind the whitened coordinates
    (method, shrinkage rule and intensity per fold, rows, rank, description); else None."""


@dataclasses.dataclass(frozen=True)
class Protocol(Result):
    """The sampling protocol actually run (after clipping to the rows available)."""

    trials: int
    trials_requested: int
    subset: int
    projections: int
    projection_rows: int
    seed: int
    ad_threshold: float
    dp_alpha: float
    mardia_rows: int


@dataclasses.dataclass(frozen=True)
class GaussianityReport(Result):
    """The Gaussianity report: header, protocol and one :class:`Section` result per section.

    ``to_dict()`` is the documented JSON (keys n, d, rank, whitener, protocol, one key per
    section, notes). Sections are read by attribute (``report.norm``, ``report.verdict``) or
    with :meth:`section`; ``report["key"]`` reads the JSON mapping (the pre-typed interface).
    """

    n: int
    d: int
    rank: int
    whitener: WhitenerInfo
    protocol: Protocol
    sections: tuple[Section, ...]
    notes: tuple[str, ...] = ()

    def section(self, key: str) -> Section:
        for s in self.sections:
            if s.key == key:
                return s
        raise KeyError(key)

    def __getattr__(self, name: str):
        if name.startswith("_") or name == "sections":
            raise AttributeError(name)
        try:
            return self.section(name)
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no attribute or section {name!r}") from None

    def to_dict(self) -> dict:
        out = {"n": self.n, "d": self.d, "rank": self.rank, "whitener": self.whitener.to_dict(),
               "protocol": self.protocol.to_dict()}
        for s in self.sections:
            out[s.key] = s.to_dict()
        out["notes"] = list(self.notes)
        return json_safe(out)

    # the pre-typed, read-only mapping interface (``report["norm"]["whitened"]["cv"]``, ``dict(report)``)
    def __getitem__(self, key: str):
        return self.to_dict()[key]

    def __contains__(self, key: str) -> bool:
        return key in self.to_dict()

    def keys(self):
        return self.to_dict().keys()

    def __iter__(self):
        return iter(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict) -> "GaussianityReport":
        """Rebuild a report from its JSON (e.g. a saved report.json); absent sections are skipped."""
        return cls(n=data["n"], d=data["d"], rank=data["rank"],
                   whitener=WhitenerInfo(**{f.name: data["whitener"].get(f.name)
                                            for f in dataclasses.fields(WhitenerInfo)}),
                   protocol=Protocol(**{f.name: data["protocol"].get(f.name) for f in dataclasses.fields(Protocol)}),
                   sections=tuple(s.from_dict(data[s.key]) for s in SECTIONS if data.get(s.key) is not None),
                   notes=tuple(data.get("notes") or ()))


def _sanitised(section: Section, notes: list[str]) -> Section:
    """The section with JSON-ready field values (NaN/inf -> None, each noted)."""
    values = {f.name: json_safe(getattr(section, f.name), notes, f"{section.key}.{f.name}")
              for f in dataclasses.fields(section)}
    return dataclasses.replace(section, **values)


# ---------------------------------------------------------------------------------------
# in-sample recognition
# ---------------------------------------------------------------------------------------
def recognise_in_sample(X: np.ndarray, whitener) -> tuple[bool, str]:
    """Whether rows X are the whitener's own fit rows, and on what basis.

    Necessary: same n, no shrinkage, same mean (to 1e-9). Then, when the artifact records
    ``metadata_["input_hash"]`` (the hash of the fitted float64 :class:`~whitenclip.moments.Moments`),
    X's moments are hashed the same way (chunks of ``config.CHUNK_ROWS`` rows, as ``fit`` reads one
    file and as ``Whitener.fit`` does when n <= CHUNK_ROWS; the artifact's ``gram_dtype``): equal
    hashes mean the same rows. Unequal hashes fall back to comparing X's covariance with the
    artifact's (relative 1e-9: the same rows in another order, or read in other chunks, e.g. from
    several files). Artifacts without a hash keep the n / mean test. Cost: one O(n d^2) pass over
    X, only when n and the mean already match.

    Returns
    -------
    (in_sample, basis) : bool, str
    """
    from whitenclip.moments import Moments
    from whitenclip.whitening import _moments_hash

    n, d = X.shape
    if whitener.n_samples_ != n or whitener.shrinkage_ != 0:
        return False, "row count or shrinkage differ from the fit"
    if not np.allclose(whitener.mean_, X.mean(axis=0), rtol=1e-9, atol=1e-12):
        return False, "mean differs from the fit's"
    meta = getattr(whitener, "metadata_", None) or {}
    want = meta.get("input_hash")
    if not want:
        return True, "same n and mean (artifact without input hash)"
    moments = Moments(d)
    for s in range(0, n, CHUNK_ROWS):
        moments.update(X[s:s + CHUNK_ROWS], gram=meta.get("gram_dtype", "float64"))
    if _moments_hash(moments) == want:
        return True, "input hash of the fitted moments matches"
    cov, ref = moments.covariance(ddof=1), np.asarray(whitener.covariance_, dtype=np.float64)
    if np.allclose(cov, ref, rtol=1e-9, atol=1e-9 * float(np.max(np.abs(ref)))):
        return True, "same n, mean and covariance (input hash differs: other row order or chunking)"
    return False, "input hash and covariance differ from the fit's"


# ---------------------------------------------------------------------------------------
# the entry point
# ---------------------------------------------------------------------------------------
def _chunks(X: np.ndarray, fn=None, rows: int = DIAGNOSTICS_CHUNK_ROWS):
    for s in range(0, X.shape[0], rows):
        C = X[s:s + rows]
        yield C if fn is None else fn(C)


def gaussianity_report(X, whitener=None, *, trials: int = 10, subset: int = 500, projections: int = 1000,
                       seed: int = 0, projection_rows: int = 5000, mardia_rows: int = 5000,
                       shape_rows: int = 20000, in_sample: bool | None = None) -> GaussianityReport:
    """How close rows X are to a multivariate Gaussian, beside an exact Gaussian's figures.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Embeddings (finite).
    whitener : whitenclip.whitening.Whitener, optional
        Fitted whitener. None fits ``Whitener()`` (pca, no shrinkage) on X itself; the report
        says so under ``whitener.fitted_on_input``.
    trials, subset : int
        Per-coordinate protocol: ``trials`` random subsets of ``subset`` rows.
    projections : int
        Number k of random unit directions.
    seed : int
        Seeds every random choice (subsets, directions, subsamples, Gaussian references).
    projection_rows, mardia_rows, shape_rows : int
        Row subsample sizes for projections, for Mardia's skewness and for the per-coordinate
        skewness / excess kurtosis (all seeded; all rows when n is smaller).
    in_sample : bool, optional
        Whether X are the rows the whitener was fitted on (chooses the Beta or F reference law).
        None: True when the whitener is fitted here, else :func:`recognise_in_sample` (the
        artifact's input hash, or its n and mean when it has no hash).

    Returns
    -------
    GaussianityReport
        One result per entry of :data:`SECTIONS` (norm, coordinates, projections, multivariate,
        spectrum, isotropy, verdict). ``to_dict()`` is JSON-ready (no NaN or inf: undefined
        values are None with a reason or a note) with keys n, d, rank, whitener, protocol, the
        sections and notes. Pass rates are fractions in [0, 1].

    Examples
    --------
    >>> X = np.random.default_rng(0).standard_normal((200, 3))
    >>> rep = gaussianity_report(X, trials=1, subset=50, projections=10)
    >>> [s.key for s in rep.sections]
    ['norm', 'coordinates', 'projections', 'multivariate', 'spectrum', 'isotropy', 'verdict']
    >>> rep.rank, rep.norm.whitened["law"], rep["whitener"]["in_sample"]
    (3, 'beta', True)
    >>> round(rep.isotropy.whitened["effective_rank"], 9)  # whitened in-sample rows are isotropic
    3.0
    """
    from whitenclip.whitening import Whitener

    X = as_matrix(X, "X")
    n, d = X.shape
    if n < 3:
        raise InputError(f"X: need at least 3 rows for a Gaussianity report, got {n}")
    if projections < 1:
        raise InputError(f"projections must be >= 1, got {projections}")
    notes: list[str] = []
    fitted_here = whitener is None
    if fitted_here:
        if not np.any(X != X[0]):  # rank 0: nothing varies, nothing to whiten or test
            raise InputError(f"X: all {n} rows are identical (rank 0): degenerate, nothing to test")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            whitener = Whitener(calibration=False).fit(X)  # the report needs no p-values
        notes += [str(w.message) for w in caught]
        basis = "whitener fitted on the input here"
    elif whitener.n_features_ != d:
        raise InputError(f"input has dimension {d}, the whitener expects {whitener.n_features_}")
    if in_sample is not None:
        basis = "given by the caller"
    elif fitted_here:
        in_sample = True
    else:
        in_sample, basis = recognise_in_sample(X, whitener)

    ctx = ReportContext(X, whitener, fitted_here=fitted_here, in_sample=bool(in_sample), seed=seed, trials=trials,
                        subset=subset, projections=projections, projection_rows=projection_rows,
                        mardia_rows=mardia_rows, shape_rows=shape_rows, notes=notes)
    done: dict[str, Section] = {}
    for cls in SECTIONS:
        done[cls.key] = cls.compute(ctx, done)
    subsets = ctx.subsets
    info = WhitenerInfo(fitted_on_input=bool(fitted_here), in_sample=bool(in_sample), method=whitener.method,
                        shrinkage=float(whitener.shrinkage_), n_fit=ctx.n_fit, dropped=json_safe(whitener.dropped_),
                        note=("no whitener given: fitted Whitener(method='pca') on the input itself" if fitted_here
                              else "whitener given by the user"), in_sample_basis=basis,
                        held_out=({k: v for k, v in ctx.held_out.items() if k != "blocks"} if ctx.few_rows else None))
    protocol = Protocol(trials=len(subsets), trials_requested=int(trials), subset=len(subsets[0]),
                        projections=int(projections), projection_rows=done["projections"].rows, seed=int(seed),
                        ad_threshold=AD_THRESHOLD, dp_alpha=DP_ALPHA,
                        mardia_rows=done["multivariate"].skewness["rows"])
    sections = tuple(_sanitised(s, notes) for s in done.values())
    return GaussianityReport(n=int(n), d=int(d), rank=ctx.rank, whitener=info, protocol=protocol, sections=sections,
                             notes=tuple(notes))


def _shape_summary(shape: dict) -> dict:
    k = shape["excess_kurtosis"]
    s = shape["skewness"]
    ok = np.isfinite(k)
    extra = {"gaussian_median_excess_kurtosis": shape["gaussian_median_excess_kurtosis"]} \
        if "gaussian_median_excess_kurtosis" in shape else {}
    if not ok.any():
        return {"median_excess_kurtosis": None, "mean_excess_kurtosis": None, "min_excess_kurtosis": None,
                "max_excess_kurtosis": None, "mean_abs_skewness": None, **extra}
    return {"median_excess_kurtosis": float(np.median(k[ok])), "mean_excess_kurtosis": float(np.mean(k[ok])),
            "min_excess_kurtosis": float(np.min(k[ok])), "max_excess_kurtosis": float(np.max(k[ok])),
            "mean_abs_skewness": float(np.mean(np.abs(s[ok]))), **extra}
