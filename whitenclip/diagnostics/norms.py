"""Norm concentration: mean, std and CV of ||x||, ||x - mean|| and ||w|| beside their exact-Gaussian
references (chi, the in-sample Beta law and the new-rows F law of ||w||^2), with KS and
Anderson-Darling distances to the law."""

from __future__ import annotations

import math

import numpy as np
import scipy.special
import scipy.stats


def chi_cv(k: float) -> float:
    """Exact CV of a chi variable with k degrees of freedom (the norm of N(0, I_k)).

    E chi = sqrt(2) Gamma((k+1)/2) / Gamma(k/2), Var chi = k - (E chi)^2; CV -> 1/sqrt(2k).
    """
    mean = math.sqrt(2.0) * math.exp(scipy.special.gammaln((k + 1) / 2) - scipy.special.gammaln(k / 2))
    return math.sqrt(max(k - mean**2, 0.0)) / mean


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
