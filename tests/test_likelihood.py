import numpy as np
import pytest
from scipy import stats

from whitenclip import Whitener, score
from whitenclip.likelihood import CalibrationWarning, loglik_from_sqnorm, pvalue_hotelling


def test_closed_forms_on_identity_gaussian():
    """With mean 0 and Sigma = I exactly, loglik = logpdf = log N(x; 0, I) and sqnorm = ||x||^2."""
    rng = np.random.default_rng(1)
    d = 6
    X = rng.standard_normal((5000, d))
    wh = Whitener().fit(X)
    wh.mean_ = np.zeros(d)
    wh.W_ = np.eye(d)
    wh.log_det_ = 0.0
    x = rng.standard_normal((10, d))
    s = score(wh, x)
    np.testing.assert_allclose(s["sqnorm"], np.sum(x**2, 1), rtol=1e-14)
    np.testing.assert_allclose(s["loglik"], stats.multivariate_normal(np.zeros(d), np.eye(d)).logpdf(x), rtol=1e-12)
    np.testing.assert_allclose(s["logpdf"], s["loglik"])
    np.testing.assert_allclose(s["pvalue_chi2"], stats.chi2.sf(np.sum(x**2, 1), d))


def test_loglik_formula():
    assert loglik_from_sqnorm(np.array([0.0]), 768)[0] == pytest.approx(-0.5 * 768 * np.log(2 * np.pi))


def test_hotelling_pvalue_is_uniform_for_new_rows():
    """A new row from the same Gaussian gets a Uniform(0, 1) p-value even at small n (the F law),
    while chi2 is anti-conservative there."""
    rng = np.random.default_rng(7)
    n, d, reps = 30, 10, 4000
    p_f, p_chi = np.empty(reps), np.empty(reps)
    for k in range(reps):
        X = rng.standard_normal((n + 1, d))
        wh = Whitener().fit(X[:n])
        s = score(wh, X[n:])
        p_f[k], p_chi[k] = s["pvalue"][0], s["pvalue_chi2"][0]
    assert stats.kstest(p_f, "uniform").pvalue > 0.01
    assert abs(np.mean(p_f < 0.05) - 0.05) < 3 * np.sqrt(0.05 * 0.95 / reps)
    assert np.mean(p_chi < 0.05) > 0.15  # chi2 rejects far too often at n=30, d=10


def test_hotelling_matches_chi2_for_large_n():
    sq = np.array([5.0, 10.0, 20.0])
    np.testing.assert_allclose(pvalue_hotelling(sq, 10**8, 8), stats.chi2.sf(sq, 8), rtol=1e-5)


def test_falls_back_to_chi2_and_says_so(rng):
    X = rng.standard_normal((8, 20))
    with pytest.warns(UserWarning):
        wh = Whitener().fit(X)
    with pytest.warns(CalibrationWarning, match="chi2"):
        s = score(wh, rng.standard_normal((3, 20)))
    np.testing.assert_allclose(s["pvalue"], s["pvalue_chi2"])
