"""The Gaussianity report at n <= d: held-out whitening, unbiased norm reference, untested parts.

At n <= rank + 1 the whitener fitted on the rows maps them onto an exact frame (equal norms,
no Beta law, Mardia undefined). The report then answers from what can be tested -- raw
coordinates, random projections, the centred-norm CV against the Gaussian with the same
covariance (d_eff from an unbiased tr(Sigma^2)) and a held-out OAS whitening -- lists what it
could not test, and says "degenerate" only for rank < 2.
"""

import io
import itertools
import json
import warnings

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from whitenclip.cli import app
from whitenclip.diagnostics import (
    VERDICT_RULE,
    VERDICT_RULE_FEW_ROWS,
    VERDICT_RULE_NEW_ROWS,
    GaussianityReport,
    expected_median_excess_kurtosis,
    gaussianity_report,
    held_out_whitening,
    trace_sq_unbiased,
    verdict,
)
from whitenclip.errors import InputError
from whitenclip.render import render, write_html
from whitenclip.whitening import Whitener

KW = dict(trials=10, subset=500, projections=200, seed=0)
N, D = 200, 512
FEW_ROWS_UNTESTED = ["in-sample whitened coordinates", "whitened-norm CV and law of ||w||^2", "Mardia skewness",
                     "Mardia kurtosis", "covariance spectrum beyond rank n-1"]


@pytest.fixture(scope="module")
def gaussian_small():
    """n = 200 rows of an isotropic Gaussian in d = 512."""
    return gaussianity_report(np.random.default_rng(7).standard_normal((N, D)), **KW)


@pytest.fixture(scope="module")
def student_small():
    """n = 200 rows of a multivariate Student t (df = 3) in d = 512: every direction is t3."""
    rng = np.random.default_rng(8)
    X = rng.standard_normal((N, D)) / np.sqrt(rng.chisquare(3, (N, 1)) / 3)
    return gaussianity_report(X, **KW)


def terminal_text(rep) -> str:
    buf = io.StringIO()
    render(rep, "table", console=Console(file=buf, width=250, color_system=None))
    return buf.getvalue()


# ---------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------
def test_trace_sq_unbiased_equals_the_u_statistic():
    """Himeno-Yamada's closed form is the U-statistic mean of ((x_i - x_j).(x_k - x_l))^2 / 4."""
    X = np.random.default_rng(1).standard_t(3, (7, 3)) @ np.array([[2.0, 0, 0], [1, 1, 0], [0, 3, 0.5]])
    terms = [float((X[i] - X[j]) @ (X[k] - X[m])) ** 2 / 4 for i, j, k, m in itertools.permutations(range(7), 4)]
    assert trace_sq_unbiased(X) == pytest.approx(np.mean(terms), rel=1e-12)
    assert trace_sq_unbiased(X[:3]) is None


def test_unbiased_d_eff_where_the_sample_spectrum_fails(gaussian_small):
    """Isotropic d = 512 at n = 200: tr S^2 is biased up ~3.6x, so the sample d_eff is ~143; the
    unbiased one is ~512 and the centred-norm CV matches its chi reference."""
    rc = gaussian_small.norm.raw_centred
    assert 130 < rc["d_eff_sample"] < 160
    assert rc["d_eff"] == pytest.approx(512, rel=0.03)
    assert rc["reference_cv"] == pytest.approx(1 / np.sqrt(2 * 512), rel=0.03)
    assert 0.9 < rc["cv_ratio"] < 1.1
    assert rc["histogram"]["reference"].endswith(f"chi2({rc['d_eff']:.1f})")


def test_median_excess_kurtosis_of_few_gaussian_rows_is_below_zero():
    assert expected_median_excess_kurtosis(100) == pytest.approx(-0.13, abs=0.03)
    assert expected_median_excess_kurtosis(15) == pytest.approx(-0.55, abs=0.05)


def test_held_out_whitening_folds():
    X = np.random.default_rng(2).standard_normal((41, 60))
    ho = held_out_whitening(X, seed=3)
    assert ho["rows"] == 20 and ho["fit_rows"] == [21, 20] and ho["rank"] == 60
    assert all(B.shape == (20, 60) for B in ho["blocks"]) and all(0 < a <= 1 for a in ho["shrinkage"])
    assert not ho["notes"]
    assert held_out_whitening(X[:7])["blocks"] is None and "8 rows" in held_out_whitening(X[:7])["reason"]


# ---------------------------------------------------------------------------------------
# the report at n < d
# ---------------------------------------------------------------------------------------
def test_gaussian_at_n_below_d_passes_at_the_documented_rate(gaussian_small):
    """Old code: 'degenerate (rank=199, n=200)'. Now every tested section is within three binomial
    standard errors of the exact-Gaussian rate under the same protocol, and the verdict follows."""
    rep = gaussian_small
    assert rep.rank == 199 and rep.whitener.in_sample
    raw, white, proj = rep.coordinates.raw, rep.coordinates.whitened, rep.projections
    assert (raw["trials"], raw["subset"]) == (1, 200) and (white["trials"], white["subset"]) == (2, 100)
    assert raw["expected_pass"]["ad"] == pytest.approx(0.955, abs=0.01)
    assert abs(raw["ad_pass"] - raw["expected_pass"]["ad"]) <= raw["expected_pass"]["tolerance"]
    assert abs(raw["dp_pass"] - raw["expected_pass"]["dp"]) <= raw["expected_pass"]["tolerance"]
    assert white["n_coordinates"] == D and white["basis"].startswith("held-out pca whitening (oas shrinkage")
    assert abs(white["ad_pass"] - white["expected_pass"]["ad"]) <= white["expected_pass"]["tolerance"]
    assert abs(proj.ad_pass - proj.expected_pass["ad"]) <= 3 * np.sqrt(0.05 * 0.95 / proj.k)
    shape = rep.coordinates.whitened_shape
    assert abs(shape["median_excess_kurtosis"] - shape["gaussian_median_excess_kurtosis"]) < 0.1
    v = rep.verdict
    assert v.label == "close to Gaussian" and v.rule == VERDICT_RULE_FEW_ROWS
    assert v.because.startswith("n=200 <= rank+1=200: AD pass gap")
    assert v.effect_sizes["mardia_excess_kurtosis_per_dim"] is None
    assert [u["part"] for u in v.untested] == FEW_ROWS_UNTESTED
    assert rep.whitener.held_out["rows"] == 100 and rep.whitener.held_out["shrinkage_rule"] == "oas"


def test_heavy_tailed_t3_fails_at_n_below_d(student_small):
    rep = student_small
    white, proj, rc = rep.coordinates.whitened, rep.projections, rep.norm.raw_centred
    assert rep.verdict.label == "heavy-tailed"
    assert proj.ad_pass < proj.expected_pass["ad"] - 0.5
    assert white["ad_pass"] < white["expected_pass"]["ad"] - 0.5
    assert rc["cv_ratio"] > 5
    assert rep.coordinates.whitened_shape["median_excess_kurtosis"] > 1.5


def test_iid_t3_coordinates_fail_the_raw_marginals():
    """Independent t3 coordinates: projections and whitened axes mix them towards Gaussian (CLT),
    the raw coordinates and the norm CV do not."""
    rep = gaussianity_report(np.random.default_rng(9).standard_t(3, (N, D)), **KW)
    raw = rep.coordinates.raw
    assert raw["ad_pass"] < 0.1 and raw["dp_pass"] < 0.1
    assert rep.norm.raw_centred["cv_ratio"] > 2 and rep.verdict.label == "heavy-tailed"


def test_n_equal_d_plus_one_is_few_rows():
    """n = d + 1 gives rank d and n <= rank + 1: the in-sample Beta law has no room either."""
    rep = gaussianity_report(np.random.default_rng(10).standard_normal((61, 60)), trials=2, subset=100,
                             projections=50)
    assert rep.rank == 60 and rep.verdict.rule == VERDICT_RULE_FEW_ROWS
    assert rep.verdict.label != "degenerate" and rep.whitener.held_out["rows"] == 30


@pytest.mark.parametrize("make", [
    lambda r: np.outer(r.standard_normal(N), r.standard_normal(D)),  # rank 1
    lambda r: r.standard_normal((N, 1)) * np.ones(D),  # every row constant across its coordinates
])
def test_rank_one_is_still_degenerate(rng, make):
    rep = gaussianity_report(make(rng), **KW)
    assert rep.rank == 1 and rep.verdict.label == "degenerate" and rep.verdict.because == f"rank=1, n={N}"
    assert rep.whitener.held_out is None


def test_identical_rows_are_refused_as_degenerate():
    with pytest.raises(InputError, match=r"all 200 rows are identical \(rank 0\): degenerate"):
        gaussianity_report(np.full((N, D), 0.25), **KW)


def test_new_rows_below_d_with_an_outside_whitener_are_tested(rng):
    """30 new rows, whitener fitted on 3000 others (d = 50): old code said 'degenerate'; the
    whitened coordinates and the F law are valid, only Mardia is not."""
    wh = Whitener(calibration=False).fit(rng.standard_normal((3000, 50)))
    rep = gaussianity_report(rng.standard_normal((30, 50)), wh, trials=2, subset=100, projections=50)
    assert not rep.whitener.in_sample and rep.whitener.held_out is None
    assert rep.norm.whitened["law"] == "f" and rep.norm.whitened["ks_pvalue"] > 0.01
    assert rep.verdict.label == "close to Gaussian" and rep.verdict.rule == VERDICT_RULE_NEW_ROWS
    assert [u["part"] for u in rep.verdict.untested] == ["Mardia skewness", "Mardia kurtosis"]


def test_given_whitener_fitted_on_these_few_rows_uses_the_held_out_path():
    """`-w W` where W was fitted on these 120 rows (d = 200): recognised in-sample, so the same
    few-rows path, with W's method for the held-out whiteners."""
    X = np.random.default_rng(3).standard_normal((120, 200))
    with pytest.warns(UserWarning, match="kept rank 119 of 200"):
        wh = Whitener(method="zca", calibration=False).fit(X)
    rep = gaussianity_report(X, wh, trials=2, subset=100, projections=50)
    assert rep.whitener.in_sample and rep.whitener.in_sample_basis == "input hash of the fitted moments matches"
    assert rep.whitener.held_out["method"] == "zca" and rep.verdict.rule == VERDICT_RULE_FEW_ROWS
    assert rep.verdict.label == "close to Gaussian"


def test_more_rows_than_dimensions_unchanged(rng):
    rep = gaussianity_report(rng.standard_normal((600, 20)), trials=2, subset=300, projections=50)
    assert rep.verdict.rule == VERDICT_RULE and rep.verdict.untested == [] and rep.whitener.held_out is None
    assert "basis" not in rep.coordinates.whitened and "d_eff_estimator" not in rep.norm.raw_centred
    assert "gaussian_median_excess_kurtosis" not in rep.verdict.effect_sizes
    assert not [b for s in rep.sections if s.key == "verdict" for b in _blocks(s, rep)]


def _blocks(section, rep):
    from whitenclip.render.gaussianity import section_blocks

    return section_blocks(section, rep)


# ---------------------------------------------------------------------------------------
# JSON, terminal and HTML say what was not tested
# ---------------------------------------------------------------------------------------
def test_json_round_trip_and_dict_verdict(gaussian_small):
    d = gaussian_small.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert GaussianityReport.from_dict(json.loads(text)) == gaussian_small
    assert verdict(d) == d["verdict"]
    assert [u["part"] for u in d["verdict"]["untested"]] == FEW_ROWS_UNTESTED
    assert d["whitener"]["held_out"]["description"] == d["coordinates"]["whitened"]["basis"]


def test_untested_lines_in_terminal_and_html(gaussian_small, tmp_path):
    text = terminal_text(gaussian_small)
    assert "Not tested on these rows" in text and "verdict: close to Gaussian" in text
    lines = [line for line in text.splitlines() if any(part in line for part in FEW_ROWS_UNTESTED)]
    assert len(lines) >= len(FEW_ROWS_UNTESTED)
    assert "whitened (held-out, 2 x 100 rows)" in text and "unbiased tr(Sigma^2)" in text
    written = write_html(gaussian_small, tmp_path)
    page = written["html"].read_text()
    assert "Not tested on these rows" in page
    for u in gaussian_small.verdict.untested:
        assert u["reason"].replace("<=", "&lt;=") in page
    assert set(written) >= {"sqnorm.png", "a2.png", "qq.png", "spectrum.png"}
    assert "Histogram of ||x - mean||^2 over all d=512 coordinates" in page
    assert "directions of all d=512 coordinates (200 rows" in page


def test_cli_at_n_below_d(tmp_path):
    X = np.random.default_rng(11).standard_normal((120, 200)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    res = CliRunner().invoke(app, ["gaussianity-report", str(tmp_path / "x.npy"), "--json", "--projections", "60"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["verdict"]["label"] == "close to Gaussian" and rep["verdict"]["rule"] == VERDICT_RULE_FEW_ROWS
    assert [u["part"] for u in rep["verdict"]["untested"]] == FEW_ROWS_UNTESTED
    assert "held-out" in res.stderr
    np.save(tmp_path / "c.npy", np.ones((50, 20), dtype=np.float32))
    bad = CliRunner().invoke(app, ["gaussianity-report", str(tmp_path / "c.npy")])
    assert bad.exit_code == 2 and "degenerate" in bad.output and "Traceback" not in bad.output
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gaussianity_report(X[:40].astype(np.float64), trials=1, subset=40, projections=20)  # quiet
