"""The verdict: the rules (general, few rows, few new rows), the effect sizes they read, the label
they give, and the list of parts the report could not test."""

from __future__ import annotations

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
