"""Tests for whitenclip.diagnostics: statistics against scipy, null calibration, alternatives."""

import dataclasses
import json
import math
import warnings

import numpy as np
import pytest
import scipy.stats

from whitenclip.diagnostics import (
    AD_THRESHOLD,
    SECTIONS,
    VERDICT_RULE,
    GaussianityReport,
    anderson_darling,
    chi_cv,
    dagostino_pearson,
    draw_subsets,
    expected_gaussian_rates,
    gaussianity_report,
    mardia,
    recognise_in_sample,
    reference_law,
    spectrum_isotropy,
    verdict,
)
from whitenclip.diagnostics.norms import _beta_distances, _sqrt_law_cv
from whitenclip.errors import InputError
from whitenclip.whitening import Whitener


def scipy_a2(x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy 1.17 FutureWarning about `method`
        return scipy.stats.anderson(x, "norm").statistic


def binomial_slack(p, m):
    """Three binomial standard errors of a pass rate over m tests."""
    return 3.0 * math.sqrt(p * (1 - p) / m)


# ---------------------------------------------------------------------------------------
# univariate statistics equal scipy's
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda r: r.standard_normal((500, 40)),
        lambda r: r.standard_t(3, (2000, 15)) * 50.0 + 1e3,
        lambda r: r.uniform(size=(9, 12)),
        lambda r: r.exponential(size=(20000, 3)) * 1e-4,
        lambda r: r.standard_normal((50, 7)).round(1),  # ties
    ],
)
def test_anderson_darling_equals_scipy(rng, make):
    X = make(rng)
    ours = anderson_darling(X)
    ref = np.array([scipy_a2(X[:, j]) for j in range(X.shape[1])])
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-10)


def test_anderson_darling_axis_1d_and_threads(rng):
    X = rng.standard_normal((6, 300))
    np.testing.assert_allclose(anderson_darling(X, axis=1), [scipy_a2(row) for row in X], atol=1e-10)
    np.testing.assert_allclose(anderson_darling(X, axis=1, threads=1), anderson_darling(X, axis=1, threads=3))
    assert abs(float(anderson_darling(X[0])) - scipy_a2(X[0])) < 1e-10


def test_anderson_darling_extreme_tail_is_finite():
    # one far outlier: z ~ sqrt(n-1) > 37 underflows Phi; the log_ndtr fallback keeps A2 finite and exact
    x = np.zeros(5000)
    x[-1] = 1.0
    x[:10] = np.linspace(-1e-9, 1e-9, 10)
    a2 = float(anderson_darling(x))
    assert np.isfinite(a2)
    assert abs(a2 - scipy_a2(x)) < 1e-8 * abs(a2)


def test_constant_columns_give_nan_not_warnings(rng):
    X = rng.standard_normal((100, 3))
    X[:, 1] = 4.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a2 = anderson_darling(X)
        _, p = dagostino_pearson(X)
    assert np.isnan(a2[1]) and np.isnan(p[1])
    assert np.isfinite(a2[[0, 2]]).all() and np.isfinite(p[[0, 2]]).all()


def test_dagostino_pearson_equals_scipy(rng):
    X = rng.gamma(2.0, size=(300, 25))
    stat, p = dagostino_pearson(X)
    ref = scipy.stats.normaltest(X, axis=0)
    np.testing.assert_allclose(stat, ref.statistic, rtol=1e-12)
    np.testing.assert_allclose(p, ref.pvalue, rtol=1e-12)
    assert np.isnan(dagostino_pearson(X[:7])[1]).all()  # fewer than 8 rows: undefined


def test_chi_cv_closed_form():
    rng = np.random.default_rng(0)
    r = np.linalg.norm(rng.standard_normal((400000, 5)), axis=1)
    assert abs(chi_cv(5) - r.std() / r.mean()) < 2e-3
    assert abs(chi_cv(768) - 1 / math.sqrt(2 * 768)) < 1e-4


# ---------------------------------------------------------------------------------------
# exact Gaussian references and null calibration
# ---------------------------------------------------------------------------------------
def test_expected_rates_near_95_percent():
    ref = expected_gaussian_rates(500, 2, 0)
    m = ref["n_columns"]
    assert m == 800
    # A2 < 0.752 is the 5% point of Stephens' modified statistic: about 95% pass
    assert abs(ref["ad_pass"] - 0.95) <= binomial_slack(0.95, m) + 0.005
    assert abs(ref["dp_pass"] - 0.95) <= binomial_slack(0.95, m) + 0.005
    assert abs(ref["dp_mean"] - 0.5) < 0.05
    assert expected_gaussian_rates(500, 2, 0) is ref  # cached per (n, trials, seed)


def test_mardia_null_calibration():
    """A Gaussian sample is rejected about 5% of the time at alpha = 0.05 across seeds."""
    A = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.2], [0.0, 0.0, 2.0]])
    seeds = 300
    rej_skew = rej_kurt = 0
    for s in range(seeds):
        X = np.random.default_rng(1000 + s).standard_normal((200, 3)) @ A + 5.0
        res = mardia(X, seed=s)
        rej_skew += res["skewness"]["pvalue"] < 0.05
        rej_kurt += res["kurtosis"]["pvalue"] < 0.05
    slack = binomial_slack(0.05, seeds)
    assert abs(rej_skew / seeds - 0.05) <= slack, rej_skew
    assert abs(rej_kurt / seeds - 0.05) <= slack, rej_kurt


def test_mardia_matches_direct_formula(rng):
    X = rng.standard_t(5, (150, 4))
    res = mardia(X)
    Xc = X - X.mean(0)
    S_inv = np.linalg.inv(Xc.T @ Xc / len(X))
    G = Xc @ S_inv @ Xc.T
    assert res["skewness"]["b1"] == pytest.approx(np.mean(G**3), rel=1e-9)
    assert res["kurtosis"]["b2"] == pytest.approx(np.mean(np.diag(G) ** 2), rel=1e-9)


def test_mardia_rejects_heavy_tails(rng):
    res = mardia(rng.standard_t(3, (2000, 10)))
    assert res["kurtosis"]["pvalue"] < 1e-6 and res["kurtosis"]["excess_per_dim"] > 1


# ---------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------
REPORT_KW = dict(trials=4, subset=400, projections=150, seed=3)


def correlated_gaussian(rng, n, d):
    A = rng.standard_normal((d, d)) / math.sqrt(d) + np.eye(d)
    return rng.standard_normal((n, d)) @ A + rng.standard_normal(d)


@pytest.fixture(scope="module")
def gaussian_report():
    X = correlated_gaussian(np.random.default_rng(2024), 3000, 30)
    return gaussianity_report(X, **REPORT_KW)


def test_report_values_equal_direct_computation(gaussian_report):
    """Every headline number of the report recomputed from X by hand (not just present)."""
    rep = gaussian_report.to_dict()
    assert json.loads(json.dumps(rep, allow_nan=False)) == rep  # no NaN / inf anywhere
    X = correlated_gaussian(np.random.default_rng(2024), 3000, 30)
    n, d = X.shape
    assert (rep["n"], rep["d"], rep["rank"]) == (3000, 30, 30)
    assert rep["whitener"]["fitted_on_input"] is True and rep["whitener"]["in_sample"] is True
    # norms
    norms = np.linalg.norm(X, axis=1)
    raw = rep["norm"]["raw"]
    assert raw["mean"] == pytest.approx(norms.mean(), rel=1e-12)
    assert raw["std"] == pytest.approx(norms.std(ddof=1), rel=1e-12)
    assert raw["cv"] == pytest.approx(norms.std(ddof=1) / norms.mean(), rel=1e-12)
    lam = np.linalg.eigvalsh(np.cov(X, rowvar=False))
    rc = rep["norm"]["raw_centred"]
    assert rc["d_eff"] == pytest.approx(lam.sum() ** 2 / np.sum(lam**2), rel=1e-9)
    assert rc["reference_cv"] == pytest.approx(chi_cv(rc["d_eff"]), rel=1e-12)
    W = Whitener().fit(X).transform(X)
    wn = np.linalg.norm(W, axis=1)
    w = rep["norm"]["whitened"]
    assert w["cv"] == pytest.approx(wn.std(ddof=1) / wn.mean(), rel=1e-9)
    assert w["law"] == "beta" and w["law_params"] == [15.0, (n - d - 1) / 2]
    assert w["law_scale"] == pytest.approx((n - 1) ** 2 / n, rel=1e-15)
    assert w["cv_ratio"] == pytest.approx(w["cv"] / w["reference_cv"], rel=1e-12)
    ks = scipy.stats.kstest(n * wn**2 / (n - 1) ** 2, scipy.stats.beta(*w["law_params"]).cdf)
    assert w["ks"] == pytest.approx(ks.statistic, rel=1e-9) and w["ks_pvalue"] == pytest.approx(ks.pvalue, rel=1e-6)
    # per-coordinate protocol on the same seeded subsets
    subsets = draw_subsets(n, 4, 400, np.random.default_rng(np.random.SeedSequence([3, 0xC00D])))
    A2 = np.vstack([anderson_darling(X[idx]) for idx in subsets])
    P = np.vstack([dagostino_pearson(X[idx])[1] for idx in subsets])
    c = rep["coordinates"]["raw"]
    assert c["ad_mean"] == pytest.approx(A2.mean(), rel=1e-12)
    assert c["ad_pass"] == np.mean(A2 < AD_THRESHOLD) and c["dp_pass"] == np.mean(P > 0.05)
    assert c["dp_mean"] == pytest.approx(P.mean(), rel=1e-12)
    np.testing.assert_allclose(c["a2_per_coordinate"], A2.mean(axis=0), rtol=1e-12)
    ref = expected_gaussian_rates(400, 4, 3)
    assert c["expected_pass"] == {"ad": ref["ad_pass"], "dp": ref["dp_pass"], "tolerance": ref["tolerance"]}
    # projections: summary equals its own per-direction A2
    p = rep["projections"]
    assert p["ad_mean"] == pytest.approx(np.mean(p["a2"]), rel=1e-12)
    assert p["ad_pass"] == np.mean(np.array(p["a2"]) < AD_THRESHOLD) and len(p["a2"]) == p["k"] == 150
    # Mardia's kurtosis from the in-sample whitened norms (ddof=0 rescale)
    ku = rep["multivariate"]["kurtosis"]
    assert ku["b2"] == pytest.approx(np.mean((wn**2 * n / (n - 1)) ** 2), rel=1e-9)
    assert ku["expected"] == pytest.approx(d * (d + 2) * (n - 1) / (n + 1), rel=1e-15)
    # the verdict's effect sizes are the sections' numbers
    e, wc = rep["verdict"]["effect_sizes"], rep["coordinates"]["whitened"]
    assert e["ad_pass_gap_whitened"] == pytest.approx(wc["expected_pass"]["ad"] - wc["ad_pass"], abs=1e-15)
    assert e["ad_pass_gap_projections"] == pytest.approx(p["expected_pass"]["ad"] - p["ad_pass"], abs=1e-15)
    assert e["cv_ratio"] == w["cv_ratio"] and e["mardia_excess_kurtosis_per_dim"] == ku["excess_per_dim"]
    assert rep["verdict"]["rule"] == VERDICT_RULE
    assert verdict(rep) == rep["verdict"]  # the dict-level verdict agrees with the typed one


def test_typed_report_sections_and_round_trip(gaussian_report):
    rep = gaussian_report
    assert isinstance(rep, GaussianityReport)
    assert [s.key for s in rep.sections] == [cls.key for cls in SECTIONS]
    assert list(rep.to_dict()) == ["n", "d", "rank", "whitener", "protocol", *[cls.key for cls in SECTIONS], "notes"]
    assert rep.norm is rep.section("norm") and rep.verdict.label == rep["verdict"]["label"]
    assert rep.projections.k == 150 and rep.protocol.seed == 3 and rep.whitener.in_sample
    with pytest.raises(AttributeError):
        rep.no_such_section  # noqa: B018
    assert dict(rep) == rep.to_dict() and "isotropy" in rep and list(rep)[-1] == "notes"
    again = GaussianityReport.from_dict(json.loads(json.dumps(rep.to_dict())))
    assert again == rep and again.to_dict() == rep.to_dict()


def test_exact_gaussian_passes(gaussian_report):
    rep = gaussian_report
    for kind in ("raw", "whitened"):
        c = rep["coordinates"][kind]
        m = c["tested"]
        assert m == 4 * 30
        for metric, key in (("ad_pass", "ad"), ("dp_pass", "dp")):
            exp = c["expected_pass"][key]
            assert abs(c[metric] - exp) <= binomial_slack(0.95, m) + c["expected_pass"]["tolerance"], (kind, metric)
        assert abs(c["dp_mean"] - 0.5) < 0.12
        assert c["ad_mean"] < 0.6
    p = rep["projections"]
    slack = binomial_slack(0.95, p["k"]) + p["expected_pass"]["tolerance"]
    assert abs(p["ad_pass"] - p["expected_pass"]["ad"]) <= slack
    w = rep["norm"]["whitened"]
    assert w["law"] == "beta" and w["ks_pvalue"] > 0.01
    assert 0.85 < w["cv_ratio"] < 1.15
    assert rep["multivariate"]["skewness"]["pvalue"] > 0.01
    assert rep["multivariate"]["kurtosis"]["pvalue"] > 0.01
    assert rep["verdict"]["label"] == "close to Gaussian"


def test_seed_reproducible(rng):
    X = rng.standard_normal((800, 6))
    a = gaussianity_report(X, **REPORT_KW)
    b = gaussianity_report(X, **REPORT_KW)
    assert a == b
    c = gaussianity_report(X, **{**REPORT_KW, "seed": 4})
    assert c["coordinates"]["raw"]["ad_mean"] != a["coordinates"]["raw"]["ad_mean"]


def _alt(name, rng, n=3000, d=20):
    if name == "student_t3":
        return rng.standard_t(3, (n, d))
    if name == "laplace":
        return rng.laplace(size=(n, d))
    if name == "mixture":
        signs = rng.choice([-1.0, 1.0], size=(n, 1))
        return rng.standard_normal((n, d)) + 1.5 * signs
    if name == "uniform":
        return rng.uniform(-1, 1, (n, d))
    raise ValueError(name)


@pytest.mark.parametrize(
    "name, label",
    [("student_t3", "heavy-tailed"), ("laplace", "heavy-tailed"), ("mixture", "multi-modal"),
     ("uniform", "light-tailed")],
)
def test_non_gaussian_alternatives_fail(rng, name, label):
    rep = gaussianity_report(_alt(name, rng), **REPORT_KW)
    json.dumps(rep.to_dict(), allow_nan=False)
    raw, white, proj = rep["coordinates"]["raw"], rep["coordinates"]["whitened"], rep["projections"]
    expected = raw["expected_pass"]["ad"]
    assert rep["verdict"]["label"] == label, rep["verdict"]
    assert raw["ad_pass"] < expected - 0.3 and raw["ad_mean"] > 2 * AD_THRESHOLD
    assert raw["dp_pass"] < raw["expected_pass"]["dp"] - 0.3
    kurt = rep["multivariate"]["kurtosis"]
    w = rep["norm"]["whitened"]
    if name == "mixture":
        # once whitened, only the direction separating the modes is non-Gaussian
        assert white["worst"][0]["index"] == 0 and white["worst"][0]["ad_mean"] > 10
        assert rep["coordinates"]["whitened_shape"]["min_excess_kurtosis"] < -1.5
        assert proj["ad_pass"] < proj["expected_pass"]["ad"] - 0.3
        return
    # heavy and light tails show in the norms and in Mardia's kurtosis
    assert kurt["pvalue"] < 1e-6 and w["ks_pvalue"] < 1e-6
    assert (w["cv_ratio"] > 1.25) if label == "heavy-tailed" else (w["cv_ratio"] < 0.8)
    assert proj["ad_pass"] < proj["expected_pass"]["ad"] - 0.05
    # principal axes of iid coordinates are arbitrary rotations, which Gaussianise the
    # marginals (CLT): whitened coordinates fail clearly only for the heaviest tails
    if name == "student_t3":
        assert white["ad_pass"] < white["expected_pass"]["ad"] - 0.3
    if name == "laplace":
        assert white["ad_pass"] < white["expected_pass"]["ad"] - 0.05


def test_constant_coordinates_listed_and_excluded(rng):
    X = rng.standard_normal((1000, 12))
    X[:, [2, 7]] = 3.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from NaN arithmetic
        rep = gaussianity_report(X, **REPORT_KW)
    json.dumps(rep.to_dict(), allow_nan=False)
    raw = rep["coordinates"]["raw"]
    assert raw["constant"]["count"] == 2 and raw["constant"]["indices"] == [2, 7]
    assert raw["tested"] == 4 * 10
    assert raw["a2_per_coordinate"][2] is None and raw["a2_per_coordinate"][0] is not None
    assert rep["rank"] == 10 and rep["coordinates"]["whitened"]["constant"]["count"] == 0
    assert any("constant" in note for note in rep["notes"])  # the whitener's rank warning is kept
    assert rep["verdict"]["label"] == "close to Gaussian"


def test_fewer_rows_than_dimensions_is_finite(rng):
    X = rng.standard_normal((30, 60))
    rep = gaussianity_report(X, **REPORT_KW)
    json.dumps(rep.to_dict(), allow_nan=False)
    assert rep["rank"] == 29
    assert rep["protocol"]["trials"] == 1 and rep["protocol"]["subset"] == 30
    assert rep["norm"]["whitened"]["law"] is None and "rank" in rep["norm"]["whitened"]["law_reason"]
    assert rep["multivariate"]["kurtosis"]["pvalue"] is None and rep["multivariate"]["kurtosis"]["reason"]
    # n <= d is not degenerate: the verdict reads a held-out whitening (tests/test_diagnostics_small_n.py)
    assert rep["verdict"]["label"] == "close to Gaussian" and rep["whitener"]["held_out"]["rows"] == 15


def test_tiny_input_without_dp(rng):
    rep = gaussianity_report(rng.standard_normal((6, 2)), **REPORT_KW)
    json.dumps(rep.to_dict(), allow_nan=False)
    assert rep["coordinates"]["raw"]["dp_pass"] is None and rep["coordinates"]["raw"]["dp_note"]


def test_external_whitener_uses_f_law(rng):
    A = rng.standard_normal((8, 8)) + 3 * np.eye(8)
    fit_rows = rng.standard_normal((400, 8)) @ A
    new_rows = rng.standard_normal((3000, 8)) @ A
    wh = Whitener().fit(fit_rows)
    rep = gaussianity_report(new_rows, wh, **REPORT_KW)
    w = rep["norm"]["whitened"]
    assert rep["whitener"]["fitted_on_input"] is False and rep["whitener"]["in_sample"] is False
    assert w["law"] == "f" and w["law_params"] == [8, 392]
    assert w["ks_pvalue"] > 0.01
    # the same whitener on its own fit rows is recognised as in-sample
    assert gaussianity_report(fit_rows, wh, **REPORT_KW)["norm"]["whitened"]["law"] == "beta"


def test_in_sample_beta_law_is_exact():
    """n ||w||^2 / (n-1)^2 ~ Beta(d/2, (n-d-1)/2): pooled KS over many small samples."""
    rng = np.random.default_rng(7)
    n, d = 25, 4
    u = []
    for _ in range(400):
        X = rng.standard_normal((n, d))
        w = Whitener().fit(X).transform(X)
        u.append(n * np.sum(w**2, axis=1) / (n - 1) ** 2)
    ref = reference_law(d, n, True)
    assert ref["params"] == [2.0, 10.0]
    assert scipy.stats.kstest(np.concatenate(u)[::n], scipy.stats.beta(*ref["params"]).cdf).pvalue > 0.01


def test_bad_input_raises(rng):
    with pytest.raises(InputError):
        gaussianity_report(rng.standard_normal(10))
    X = rng.standard_normal((50, 3))
    X[4, 1] = np.nan
    with pytest.raises(InputError, match="row 4"):
        gaussianity_report(X)


def test_numerically_constant_coordinate_is_listed(rng):
    """A float32 embedding coordinate that is constant up to 1e-30 noise is not tested."""
    X = rng.standard_normal((600, 5))
    X[:, 3] = 0.5 + 1e-30 * rng.standard_normal(600)
    rep = gaussianity_report(X, **REPORT_KW)
    raw = rep["coordinates"]["raw"]
    assert raw["constant"]["indices"] == [3] and raw["tested"] == 4 * 4
    assert raw["a2_per_coordinate"][3] is None


def test_projection_kurtosis_matches_scipy(rng):
    from whitenclip.diagnostics import random_projections

    X = rng.laplace(size=(400, 5))
    res = random_projections(X, X.mean(axis=0), k=7, rows=400, seed=0)
    # rebuild the same directions to compare with scipy.stats.kurtosis (Fisher, biased)
    g = np.random.default_rng(np.random.SeedSequence([0, 0x9E0]))
    U = g.standard_normal((5, 7))
    U /= np.linalg.norm(U, axis=0)
    P = (X - X.mean(axis=0)) @ U
    assert res["excess_kurtosis"] == pytest.approx(np.mean(scipy.stats.kurtosis(P, axis=0)), rel=1e-10)
    np.testing.assert_allclose(res["a2"], [scipy_a2(P[:, j]) for j in range(7)], atol=1e-10)


# ---------------------------------------------------------------------------------------
# the reference laws' closed forms (issue 8 section 6: mutations that used to survive)
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("d1, d2", [(3, 5), (8, 12), (30, 400)])
def test_sqrt_law_cv_f_equals_quadrature(d1, d2):
    """CV of sqrt(V), V ~ F(d1, d2): E V = d2/(d2-2) and E sqrt(V) against scipy's numerical expectation."""
    law = scipy.stats.f(d1, d2)
    m1 = law.mean()
    mh = law.expect(np.sqrt)
    assert _sqrt_law_cv({"law": "f", "params": [d1, d2]}) == pytest.approx(math.sqrt(m1 - mh**2) / mh, rel=1e-7)


@pytest.mark.parametrize("a, b", [(1.5, 3.0), (4.0, 190.0)])
def test_sqrt_law_cv_beta_equals_quadrature(a, b):
    law = scipy.stats.beta(a, b)
    mh = law.expect(np.sqrt)
    assert _sqrt_law_cv({"law": "beta", "params": [a, b]}) == pytest.approx(math.sqrt(law.mean() - mh**2) / mh,
                                                                             rel=1e-7)
    assert _sqrt_law_cv({"law": "f", "params": [3, 2]}) is None  # F mean undefined for d2 <= 2


def test_beta_distances_equal_scipy():
    """KS and the case-0 Anderson-Darling distance to a fully specified Beta equal scipy's."""
    rng = np.random.default_rng(11)
    a, b = 2.0, 5.0
    v = rng.beta(a, b, 60) ** 1.3  # a little off the law, so the statistic is not tiny
    ours = _beta_distances(v, a, b)
    ref_ad = scipy.stats.goodness_of_fit(scipy.stats.beta, v, known_params={"a": a, "b": b, "loc": 0, "scale": 1},
                                         statistic="ad", n_mc_samples=9, rng=0).statistic
    ref_ks = scipy.stats.kstest(v, scipy.stats.beta(a, b).cdf)
    assert ours["ad_distance"] == pytest.approx(ref_ad, rel=1e-10)
    assert ours["ks"] == pytest.approx(ref_ks.statistic, rel=1e-12)
    assert ours["ks_pvalue"] == pytest.approx(ref_ks.pvalue, rel=1e-9)


def test_beta_ad_distance_null_mean_is_one():
    """Under the law, E[A2] = 1 for every n (case 0): the mean over 400 samples is 1 +- 4 se."""
    rng = np.random.default_rng(12)
    a2 = np.array([_beta_distances(rng.beta(3.0, 40.0, 50), 3.0, 40.0)["ad_distance"] for _ in range(400)])
    se = a2.std(ddof=1) / math.sqrt(a2.size)
    assert abs(a2.mean() - 1.0) < 4 * se


# ---------------------------------------------------------------------------------------
# spectrum isotropy
# ---------------------------------------------------------------------------------------
def test_spectrum_isotropy_geometric_closed_form():
    """lambda_i = q^i (i = 0..D-1): PR = (1-q^D)^2 (1+q) / ((1-q)(1+q^D)(1-q^D)),
    H = -log((1-q)/(1-q^D)) - log(q) (q/(1-q) - D q^D/(1-q^D)), top-k share (1-q^k)/(1-q^D)."""
    q, D = 0.9, 250
    res = spectrum_isotropy(q ** np.arange(D)[::-1])  # any order
    s1, s2 = (1 - q**D) / (1 - q), (1 - q ** (2 * D)) / (1 - q**2)
    H = -math.log((1 - q) / (1 - q**D)) - math.log(q) * (q / (1 - q) - D * q**D / (1 - q**D))
    k = math.ceil(0.01 * D)
    assert res["dimensions"] == D and res["top_directions"] == k == 3
    assert res["participation_ratio"] == pytest.approx(s1**2 / s2, rel=1e-12)
    assert res["effective_rank"] == pytest.approx(math.exp(H), rel=1e-12)
    assert res["top_fraction"] == pytest.approx((1 - q**k) / (1 - q**D), rel=1e-12)


def test_spectrum_isotropy_flat_spike_and_zero():
    flat = spectrum_isotropy(np.full(300, 2.5))
    assert flat["participation_ratio"] == pytest.approx(300) and flat["effective_rank"] == pytest.approx(300)
    assert flat["top_fraction"] == pytest.approx(3 / 300)
    spike = spectrum_isotropy([4.0, 0.0, 0.0, -1e-17])  # negatives (rounding) clipped to 0
    assert spike["participation_ratio"] == 1.0 and spike["effective_rank"] == 1.0 and spike["top_fraction"] == 1.0
    two = spectrum_isotropy([1.0, 1.0, 0.0])
    assert two["effective_rank"] == pytest.approx(2.0) and two["participation_ratio"] == pytest.approx(2.0)
    none = spectrum_isotropy(np.zeros(5))
    assert none["participation_ratio"] is None and none["effective_rank"] is None


def test_report_isotropy_raw_and_whitened(rng):
    A = rng.standard_normal((10, 10)) * np.geomspace(3.0, 0.1, 10)
    X = rng.standard_normal((2000, 10)) @ A
    iso = gaussianity_report(X, **REPORT_KW).isotropy
    lam = np.linalg.eigvalsh(np.cov(X, rowvar=False))
    assert iso.raw["participation_ratio"] == pytest.approx(lam.sum() ** 2 / np.sum(lam**2), rel=1e-9)
    p = lam / lam.sum()
    assert iso.raw["effective_rank"] == pytest.approx(math.exp(-np.sum(p * np.log(p))), rel=1e-9)
    assert iso.raw["top_fraction"] == pytest.approx(lam.max() / lam.sum(), rel=1e-9)
    # in-sample whitened rows have identity covariance: both ranks are the rank, top share 1/r
    assert iso.whitened["participation_ratio"] == pytest.approx(10, rel=1e-9)
    assert iso.whitened["effective_rank"] == pytest.approx(10, rel=1e-9)
    assert iso.whitened["top_fraction"] == pytest.approx(0.1, rel=1e-9)
    # new rows: the spectrum of the whitened rows' own covariance
    wh = Whitener().fit(X[:500])
    Y = X[500:]
    iso_new = gaussianity_report(Y, wh, **REPORT_KW).isotropy
    mu = np.linalg.eigvalsh(np.cov(wh.transform(Y), rowvar=False))
    assert iso_new.whitened["participation_ratio"] == pytest.approx(mu.sum() ** 2 / np.sum(mu**2), rel=1e-9)
    assert iso_new.whitened["participation_ratio"] < 9.9  # not the in-sample identity


# ---------------------------------------------------------------------------------------
# in-sample recognition from the artifact's input hash (issue 8 section 4)
# ---------------------------------------------------------------------------------------
@pytest.fixture
def fit_rows(rng):
    A = rng.standard_normal((6, 6)) + 2 * np.eye(6)
    return rng.standard_normal((300, 6)) @ A + 4.0


def test_in_sample_recognised_by_hash(fit_rows):
    wh = Whitener().fit(fit_rows)
    assert recognise_in_sample(fit_rows, wh) == (True, "input hash of the fitted moments matches")
    rep = gaussianity_report(fit_rows, wh, **REPORT_KW)
    assert rep.whitener.in_sample and rep.norm.whitened["law"] == "beta"
    assert rep.whitener.in_sample_basis.startswith("input hash")


def test_same_n_and_mean_but_other_rows_is_not_in_sample(fit_rows):
    """Spread scaled about the mean: n and mean match (the old heuristic said in-sample), the hash does not."""
    wh = Whitener().fit(fit_rows)
    mean = fit_rows.mean(axis=0)
    other = mean + (fit_rows - mean) * 1.01
    assert np.allclose(other.mean(axis=0), wh.mean_, rtol=1e-9, atol=1e-12)
    in_sample, basis = recognise_in_sample(other, wh)
    assert not in_sample and "differ" in basis
    rep = gaussianity_report(other, wh, **REPORT_KW)
    assert not rep.whitener.in_sample and rep.norm.whitened["law"] == "f"
    # an artifact without the hash keeps the n / mean heuristic
    wh.metadata_ = {k: v for k, v in wh.metadata_.items() if k != "input_hash"}
    assert recognise_in_sample(other, wh) == (True, "same n and mean (artifact without input hash)")


def test_reordered_fit_rows_are_in_sample_by_covariance(fit_rows, rng):
    wh = Whitener().fit(fit_rows)
    shuffled = fit_rows[rng.permutation(len(fit_rows))]
    in_sample, basis = recognise_in_sample(shuffled, wh)
    assert in_sample and "covariance" in basis
    assert not recognise_in_sample(fit_rows[:-1], wh)[0]


def test_in_sample_recognised_from_saved_artifact(fit_rows, tmp_path):
    """The CLI's streamed fit (chunks of config.CHUNK_ROWS) writes the hash the report recomputes."""
    from whitenclip.readers.plan import open_embeddings
    from whitenclip.whitening import fit_whitener_streaming

    np.save(tmp_path / "x.npy", fit_rows.astype(np.float32))
    wh, _ = fit_whitener_streaming([open_embeddings(tmp_path / "x.npy")])
    wh.save(tmp_path / "w.safetensors")
    loaded = Whitener.load(tmp_path / "w.safetensors")
    X = fit_rows.astype(np.float32).astype(np.float64)
    assert recognise_in_sample(X, loaded) == (True, "input hash of the fitted moments matches")


def test_non_finite_values_become_null_with_a_note(gaussian_report):
    from whitenclip.diagnostics.report import _sanitised

    norm = gaussian_report.norm
    bad = dataclasses.replace(norm, raw={**norm.raw, "cv": float("nan")}, whitened={**norm.whitened, "mean": np.inf})
    notes: list[str] = []
    clean = _sanitised(bad, notes)
    assert clean.raw["cv"] is None and clean.whitened["mean"] is None and clean.raw["mean"] == norm.raw["mean"]
    assert notes == ["norm.raw.cv: non-finite value (nan) replaced by null",
                     "norm.whitened.mean: non-finite value (inf) replaced by null"]
