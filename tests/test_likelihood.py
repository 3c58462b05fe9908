import numpy as np
import pytest
from scipy import stats

from whitenclip import Whitener, score
from whitenclip.likelihood import CalibrationWarning, loglik_from_sqnorm, pvalue_hotelling
from whitenclip.whitening import DEFAULT_CALIBRATION_ROWS as DEFAULT_ROWS


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


# ---------------------------------------------------------------------------------------
# conformal p-value
# ---------------------------------------------------------------------------------------
def test_conformal_and_hotelling_pvalues_are_uniform_on_gaussian_rows():
    """A new row from the reference Gaussian: both p-values Uniform(0, 1) (KS), each rep a fresh fit."""
    rng = np.random.default_rng(11)
    n, d, reps = 200, 5, 1500
    p_f, p_c = np.empty(reps), np.empty(reps)
    for k in range(reps):
        X = rng.standard_normal((n + 1, d))
        s = score(Whitener().fit(X[:n]), X[n:])
        p_f[k], p_c[k] = s["pvalue"][0], s["pvalue_conformal"][0]
    assert stats.kstest(p_f, "uniform").pvalue > 0.01
    assert stats.kstest(p_c, "uniform").pvalue > 0.01
    se = np.sqrt(0.05 * 0.95 / reps)
    assert abs(np.mean(p_c <= 0.05) - 0.05) < 3 * se
    assert set(np.round(p_c * (n + 1)).astype(int)) <= set(range(1, n + 2))  # resolution 1/(n_cal + 1)


def test_conformal_pvalue_holds_where_the_gaussian_one_fails():
    """Heavy-tailed rows (multivariate t, 3 dof): the F-law p-value rejects far too often, the
    conformal one keeps its level."""
    rng = np.random.default_rng(5)
    d, n = 8, 3000

    def t_rows(m):
        return rng.standard_normal((m, d)) / np.sqrt(rng.chisquare(3, (m, 1)) / 3)

    wh = Whitener().fit(t_rows(n))
    s = score(wh, t_rows(4000))
    assert np.mean(s["pvalue"] < 0.05) > 0.09  # measured 0.11
    assert abs(np.mean(s["pvalue_conformal"] < 0.05) - 0.05) < 0.015


def test_conformal_pvalue_counts_calibration_distances():
    from whitenclip.likelihood import pvalue_conformal

    cal = np.array([1.0, 2.0, 2.0, 5.0, np.inf])
    got = pvalue_conformal(np.array([0.0, 1.0, 2.0, 2.5, 5.0, 1e300]), cal)
    np.testing.assert_allclose(got, np.array([6, 6, 5, 3, 3, 2]) / 6)


# ---------------------------------------------------------------------------------------
# ScoreTable and its row renderers
# ---------------------------------------------------------------------------------------
def _table(calibrated=True):
    from whitenclip.likelihood import ScoreTable

    a = np.array
    return ScoreTable(loglik=a([-1.5, -2.25]), logpdf=a([0.1, np.nan]), sqnorm=a([1.0, 1e-20]), pvalue=a([0.5, 1.0]),
                      pvalue_chi2=a([0.4, 0.9]), pvalue_conformal=a([0.25, np.inf]) if calibrated else None,
                      ids=["a\tb\\c", 'x,"y"\nz'])


def test_score_table_reads_like_the_old_dict(anisotropic):
    wh = Whitener().fit(anisotropic)
    t = score(wh, anisotropic[:4], ids=["p", "q", "r", "s"])
    assert t.columns == ("loglik", "logpdf", "sqnorm", "pvalue", "pvalue_conformal") and t.n_rows == 4
    for key in (*t.columns, "pvalue_chi2"):
        assert t[key] is getattr(t, key) and t[key].dtype == np.float64 and t[key].shape == (4,)
    assert "pvalue_chi2" in t and "nope" not in t
    with pytest.raises(KeyError):
        t["nope"]
    d = t.to_dict()
    assert d["ids"] == ["p", "q", "r", "s"] and d["sqnorm"] is t.sqnorm
    assert score(wh, anisotropic[:2]).row_ids() == ["0", "1"]


def test_render_rows_exact_text():
    from whitenclip.render import _load_renderers, render_rows

    _load_renderers()
    t = _table()
    assert render_rows(t, "tsv") == (
        "id\tloglik\tlogpdf\tsqnorm\tpvalue\tpvalue_conformal\n"
        "a\\tb\\\\c\t-1.5\t0.1\t1.0\t0.5\t0.25\n"
        'x,"y"\\nz\t-2.25\tnan\t1e-20\t1.0\tinf\n')
    assert render_rows(t, "csv") == (
        "id,loglik,logpdf,sqnorm,pvalue,pvalue_conformal\n"
        "a\tb\\c,-1.5,0.1,1.0,0.5,0.25\n"
        '"x,""y""\nz",-2.25,nan,1e-20,1.0,inf\n')
    assert render_rows(t, "jsonl") == (
        '{"id": "a\\tb\\\\c", "loglik": -1.5, "logpdf": 0.1, "sqnorm": 1.0, "pvalue": 0.5, "pvalue_conformal": 0.25}\n'
        '{"id": "x,\\"y\\"\\nz", "loglik": -2.25, "logpdf": null, "sqnorm": 1e-20, "pvalue": 1.0, '
        '"pvalue_conformal": null}\n')
    assert render_rows(t, "tsv", header=False) == render_rows(t, "tsv").split("\n", 1)[1]
    # an uncalibrated whitener's table: the four old columns, exactly as before
    old = _table(calibrated=False)
    assert render_rows(old, "tsv") == ("id\tloglik\tlogpdf\tsqnorm\tpvalue\n"
                                       "a\\tb\\\\c\t-1.5\t0.1\t1.0\t0.5\n"
                                       'x,"y"\\nz\t-2.25\tnan\t1e-20\t1.0\n')
    assert render_rows(old, "jsonl").splitlines()[0] == (
        '{"id": "a\\tb\\\\c", "loglik": -1.5, "logpdf": 0.1, "sqnorm": 1.0, "pvalue": 0.5}')


def test_render_whitener_summary_table(tmp_path, anisotropic):
    import io

    from rich.console import Console

    from whitenclip.render import render
    from whitenclip.whitening import summarize

    wh = Whitener().fit(anisotropic)
    buf = io.StringIO()
    render(summarize(wh, "w.safetensors"), "table", console=Console(file=buf, width=120))
    text = buf.getvalue()
    assert "whitener w.safetensors" in text and "n_cal" in text and "600" in text
    assert "spectrum.dims_for_50pct" in text and "note:" not in text
    wh.calibration_ = None
    buf = io.StringIO()
    render(summarize(wh), "table", console=Console(file=buf, width=200))
    assert "note: no calibration distances" in buf.getvalue()


# ---------------------------------------------------------------------------------------
# real data: MiniLM captions (../shared; skipped when absent)
# ---------------------------------------------------------------------------------------
def test_conformal_pvalue_on_minilm_captions(capsys):
    """Fit on 6000 Flickr8k captions, score 400 captions of 80 other images and the odd captions.

    The Gaussian (F-law) p-value flags about a third of ordinary held-out captions at 0.05; the
    conformal one flags 2-10% of them, while most odd captions (code, SQL, legal text, other
    languages) still get p < 0.05. Embedding 6430 captions takes ~20 s on 2 quiet CPU cores."""
    import warnings as _w

    from conftest import REPO, flickr_captions_by_image

    from whitenclip.encoders import embed, load_encoder

    by_image = flickr_captions_by_image()
    images = sorted(by_image)
    order = np.random.default_rng(0).permutation(len(images))
    ref, held, k = [], [], 0
    while len(ref) < 6000:
        ref += by_image[images[order[k]]]
        k += 1
    while len(held) < 400:  # captions of images none of whose captions are in ref
        held += by_image[images[order[k]]]
        k += 1
    ref, held = ref[:6000], held[:400]
    assert not set(held) & set(ref)
    odd = [line.strip() for line in (REPO / "data" / "captions_odd.txt").read_text().splitlines() if line.strip()]
    enc = load_encoder("minilm", device="cpu")
    ref_rows, held_rows, odd_rows = (embed(enc, items, modality="text")[1] for items in (ref, held, odd))
    with _w.catch_warnings():
        _w.simplefilter("ignore")  # 3 of 384 MiniLM coordinates are constant
        wh = Whitener().fit(ref_rows)
    assert wh.n_cal_ == DEFAULT_ROWS
    h, o = score(wh, held_rows), score(wh, odd_rows)
    frac = {c: (float(np.mean(h[c] < 0.05)), float(np.mean(o[c] < 0.05))) for c in ("pvalue", "pvalue_conformal")}
    with capsys.disabled():
        print(f"\nMiniLM, fit on 6000 Flickr8k captions (n_cal {wh.n_cal_}): fraction p < 0.05 "
              f"held-out / odd: Gaussian {frac['pvalue'][0]:.3f} / {frac['pvalue'][1]:.3f}, "
              f"conformal {frac['pvalue_conformal'][0]:.3f} / {frac['pvalue_conformal'][1]:.3f}")
    assert frac["pvalue"][0] > 0.2  # the Gaussian p-value is far off on real embeddings
    assert 0.02 <= frac["pvalue_conformal"][0] <= 0.10
    assert frac["pvalue_conformal"][1] >= 0.8
    assert np.median(o["pvalue_conformal"]) < 0.01


def test_rows_near_1e300_are_refused_never_scored_inf(tmp_path):
    """Issue 14: rows near 1e300 scored loglik -inf / sqnorm inf with exit 0."""
    from typer.testing import CliRunner

    from whitenclip.cli import app
    from whitenclip.errors import InputError
    from whitenclip.whitening import whitener_from_matrix

    rng = np.random.default_rng(3)
    wh = Whitener().fit(rng.standard_normal((200, 4)))
    X = np.zeros((3, 4))
    X[1] = 1e300
    with pytest.raises(InputError, match="row with id 'b'"):
        score(wh, X, ids=["a", "b", "c"])
    huge_gain = whitener_from_matrix(np.zeros(4), np.eye(4) * 1e150)  # finite rows, overflowing ||w||^2
    with pytest.raises(InputError, match="row 0: .*overflows"):
        score(huge_gain, np.full((2, 4), 1e10))
    with pytest.raises(InputError, match="underflows"):
        whitener_from_matrix(np.zeros(4), np.eye(4) * 1e200)
    wh.save(tmp_path / "w.safetensors")
    np.save(tmp_path / "x.npy", X)
    for extra in ([], ["--engine", "dask"]):
        r = CliRunner().invoke(app, ["score", str(tmp_path / "x.npy"), "-w", str(tmp_path / "w.safetensors"), *extra])
        assert r.exit_code == 2 and "inf" not in r.output.replace("rows", "").lower().split("error")[0]
        # named by the reader (file, row and, where it has them, id) before any scoring
        assert f"{tmp_path / 'x.npy'}: row 1 " in r.output and "internal error" not in r.output
