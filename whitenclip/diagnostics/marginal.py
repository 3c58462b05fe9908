"""Marginal (per-column) normality tests: Anderson-Darling A2 and D'Agostino-Pearson K2 on many
columns at once, per-column skewness and excess kurtosis, what an exact Gaussian gets under the
same protocol, and the paper's per-coordinate protocol on random row subsets.

Anderson-Darling (case 3: mean and variance estimated, as ``scipy.stats.anderson(x, 'norm')``)
on a sorted column y_1 <= ... <= y_n with z_i = (y_i - mean) / std (ddof=1):

    A2 = -n - (1/n) sum_i (2i - 1) [log Phi(z_i) + log(1 - Phi(z_{n+1-i}))]
       = -n - (1/n) sum_i [(2i - 1) log Phi(z_i) + (2n - 2i + 1) log Phi(-z_i)].

Only the lower tail t_i = log Phi(-|z_i|) is evaluated with the special function; the other
tail is log1p(-exp(t_i)), exact because exp(t_i) <= 1/2. Columns are processed in cache-sized
blocks on a thread pool (numpy's sort and the ufuncs release the GIL).
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.special
import scipy.stats

from whitenclip.errors import InputError

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
