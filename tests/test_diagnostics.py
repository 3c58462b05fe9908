"""Tests for whitenclip.diagnostics: statistics against scipy, null calibration, alternatives."""

import json
import math
import warnings

import numpy as np
import pytest
import scipy.stats

from whitenclip.diagnostics import (
    AD_THRESHOLD,
    anderson_darling,
    chi_cv,
    dagostino_pearson,
    expected_gaussian_rates,
    gaussianity_report,
    mardia,
    reference_law,
)
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


def test_report_json_has_every_named_metric(gaussian_report):
    rep = gaussian_report
    text = json.dumps(rep, allow_nan=False)  # no NaN / inf anywhere
    assert json.loads(text) == rep
    for key in ("n", "d", "rank", "norm", "coordinates", "projections", "multivariate", "verdict"):
        assert key in rep
    for kind in ("raw", "whitened"):
        c = rep["coordinates"][kind]
        for key in ("ad_mean", "ad_pass", "dp_mean", "dp_pass", "expected_pass", "constant"):
            assert key in c
        assert 0 <= c["ad_pass"] <= 1 and 0 <= c["dp_pass"] <= 1
    for key in ("k", "ad_mean", "ad_pass"):
        assert key in rep["projections"]
    for key in ("mean", "std", "cv"):
        assert key in rep["norm"]["raw"] and key in rep["norm"]["whitened"]
    assert set(rep["multivariate"]) >= {"skewness", "kurtosis"}
    assert rep["verdict"]["label"] and rep["verdict"]["rule"]
    assert rep["whitener"]["fitted_on_input"] is True
    assert (rep["n"], rep["d"], rep["rank"]) == (3000, 30, 30)


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
    json.dumps(rep, allow_nan=False)
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
    json.dumps(rep, allow_nan=False)
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
    json.dumps(rep, allow_nan=False)
    assert rep["rank"] == 29
    assert rep["protocol"]["trials"] == 1 and rep["protocol"]["subset"] == 30
    assert rep["norm"]["whitened"]["law"] is None and "rank" in rep["norm"]["whitened"]["law_reason"]
    assert rep["multivariate"]["kurtosis"]["pvalue"] is None and rep["multivariate"]["kurtosis"]["reason"]
    assert rep["verdict"]["label"] == "degenerate"


def test_tiny_input_without_dp(rng):
    rep = gaussianity_report(rng.standard_normal((6, 2)), **REPORT_KW)
    json.dumps(rep, allow_nan=False)
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
