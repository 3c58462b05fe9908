import json
import warnings

import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.covariance import OAS, LedoitWolf
from sklearn.decomposition import PCA

from whitenclip import Whitener, score
from whitenclip.errors import InputError, NotFittedError, RankDeficiencyWarning
from whitenclip.moments import Moments


@pytest.mark.parametrize("method", ["pca", "zca", "cholesky"])
def test_whitened_covariance_is_identity(anisotropic, method):
    wh = Whitener(method=method).fit(anisotropic)
    Z = wh.transform(anisotropic)
    np.testing.assert_allclose(np.cov(Z, rowvar=False), np.eye(Z.shape[1]), atol=1e-8)
    np.testing.assert_allclose(Z.mean(0), 0, atol=1e-10)
    np.testing.assert_allclose(wh.inverse_transform(Z), anisotropic, atol=1e-9)
    # all forms share ||w||^2 and log|det W|
    ref = Whitener(method="pca").fit(anisotropic)
    np.testing.assert_allclose(np.sum(Z**2, 1), np.sum(ref.transform(anisotropic) ** 2, 1), rtol=1e-9)
    # log|det W| = -1/2 log det Sigma, from numpy's covariance (every method, pca included)
    expected = -0.5 * np.linalg.slogdet(np.cov(anisotropic, rowvar=False))[1]
    assert wh.log_det_ == pytest.approx(expected, rel=1e-10)
    if method != "pca":  # square W: also its own determinant
        assert wh.log_det_ == pytest.approx(np.linalg.slogdet(wh.W_)[1], rel=1e-9)


def test_zca_is_symmetric_and_cholesky_triangular(anisotropic):
    zca = Whitener(method="zca").fit(anisotropic)
    np.testing.assert_allclose(zca.W_, zca.W_.T, atol=1e-12)
    chol = Whitener(method="cholesky").fit(anisotropic)
    np.testing.assert_allclose(np.tril(chol.W_, -1), 0, atol=1e-14)  # W = L^{-T} is upper triangular


def test_pca_matches_sklearn_up_to_sign(anisotropic):
    wh = Whitener(method="pca").fit(anisotropic)
    ref = PCA(whiten=True, svd_solver="full").fit(anisotropic)
    Z, Zr = wh.transform(anisotropic), ref.transform(anisotropic)
    signs = np.sign(np.sum(Z * Zr, axis=0))
    np.testing.assert_allclose(Z * signs, Zr, atol=1e-8)
    np.testing.assert_allclose(wh.eigenvalues_, ref.explained_variance_, rtol=1e-10)


def test_logpdf_equals_scipy_multivariate_normal(anisotropic, rng):
    wh = Whitener().fit(anisotropic)
    X_new = anisotropic[:50] + rng.normal(0, 1, (50, anisotropic.shape[1]))
    ref = multivariate_normal(wh.mean_, np.cov(anisotropic, rowvar=False)).logpdf(X_new)
    np.testing.assert_allclose(score(wh, X_new)["logpdf"], ref, rtol=1e-8)


def test_fit_from_moments_equals_fit(anisotropic):
    m = Moments(anisotropic.shape[1])
    for lo in range(0, 600, 100):
        m.update(anisotropic[lo:lo + 100])
    a, b = Whitener().fit(anisotropic), Whitener().fit_moments(m)
    np.testing.assert_allclose(a.W_, b.W_, rtol=1e-9, atol=1e-12)
    assert a.metadata_["input_hash"] != "" and isinstance(a.metadata_["input_hash"], str)


@pytest.mark.parametrize("shrinkage,ref", [("ledoit-wolf", LedoitWolf), ("oas", OAS)])
def test_shrinkage_intensity_matches_sklearn(anisotropic, shrinkage, ref):
    wh = Whitener(shrinkage=shrinkage).fit(anisotropic)
    assert wh.shrinkage_ == pytest.approx(ref().fit(anisotropic).shrinkage_, rel=1e-8)
    cov = np.cov(anisotropic, rowvar=False)
    mu = np.trace(cov) / cov.shape[0]
    np.testing.assert_allclose(wh.covariance_, (1 - wh.shrinkage_) * cov + wh.shrinkage_ * mu * np.eye(12), rtol=1e-12)


def test_float_shrinkage_and_rank_cap(anisotropic):
    wh = Whitener(shrinkage=1.0).fit(anisotropic)
    np.testing.assert_allclose(wh.eigenvalues_, np.trace(np.cov(anisotropic, rowvar=False)) / 12, rtol=1e-10)
    with pytest.warns(RankDeficiencyWarning, match="rank capped at 5"):
        capped = Whitener(rank=5).fit(anisotropic)
    assert capped.rank_ == 5 and capped.W_.shape == (12, 5)
    assert capped.dropped_["n_dropped"] == 7


def test_constant_coordinates_are_dropped_with_reason(anisotropic):
    X = anisotropic.copy()
    X[:, 3] = 7.0
    X[:, 8] = -1.5
    with pytest.warns(RankDeficiencyWarning, match="2 constant coordinate"):
        wh = Whitener().fit(X)
    assert wh.rank_ == 10
    s = score(wh, X)
    assert all(np.isfinite(v).all() for v in s.values())
    np.testing.assert_allclose(np.cov(wh.transform(X), rowvar=False), np.eye(10), atol=1e-8)
    assert "constant" in wh.dropped_["reason"]


def test_n_smaller_than_d_is_finite(rng):
    X = rng.standard_normal((10, 40))
    with pytest.warns(RankDeficiencyWarning, match="rank at most n-1=9"), \
            pytest.warns(UserWarning, match="degenerate calibration: 10 of 10 leave-one-out distances are infinite"):
        wh = Whitener().fit(X)
    assert wh.rank_ == 9
    with pytest.warns(UserWarning, match="chi2"):  # n <= rank + 1: no F law
        s = score(wh, rng.standard_normal((5, 40)))
    assert all(np.isfinite(v).all() for v in s.values())


def test_duplicated_rows_are_finite(rng):
    base = rng.standard_normal((6, 10))
    X = np.repeat(base, 50, axis=0)  # 300 rows but only 6 distinct -> rank 5
    with pytest.warns(UserWarning) as rec:
        wh = Whitener().fit(X)
    assert {type(w.message).__name__ for w in rec} == {"RankDeficiencyWarning", "GroupedRowsWarning"}  # runs
    assert wh.rank_ == 5
    assert np.isfinite(wh.log_det_)


def test_validation_messages(anisotropic):
    with pytest.raises(InputError, match="method must be one of"):
        Whitener(method="svd").fit(anisotropic)
    with pytest.raises(InputError, match="shrinkage must be"):
        Whitener(shrinkage=1.5).fit(anisotropic)
    with pytest.raises(InputError, match="2-D"):
        Whitener().fit(anisotropic[0])
    bad = anisotropic.copy()
    bad[17, 2] = np.nan
    with pytest.raises(InputError, match="row 17"):
        Whitener().fit(bad)
    with pytest.raises(InputError, match="at least 2 rows"):
        Whitener().fit(anisotropic[:1])
    with pytest.raises(InputError, match="constant"):
        Whitener().fit(np.ones((5, 3)))
    with pytest.raises(NotFittedError):
        Whitener().transform(anisotropic)
    wh = Whitener().fit(anisotropic)
    with pytest.raises(InputError, match="dimension 5"):
        wh.transform(np.ones((2, 5)))


def test_artifact_roundtrip_and_metadata(tmp_path, anisotropic):
    wh = Whitener(method="zca", shrinkage="oas").fit(anisotropic)
    wh.metadata_.update({"encoder": "minilm", "modality": "text", "normalized": True})
    path = wh.save(tmp_path / "w.safetensors")
    back = Whitener.load(path)
    np.testing.assert_array_equal(back.W_, wh.W_)
    np.testing.assert_array_equal(back.mean_, wh.mean_)
    assert (back.rank_, back.n_samples_, back.method) == (12, 600, "zca")
    assert back.metadata_["encoder"] == "minilm" and back.metadata_["normalized"] is True
    meta = back.artifact_metadata()
    for key in ("format", "version", "method", "shrinkage", "floor", "rank", "n", "d", "eigenvalues", "encoder",
                "modality", "normalized", "created_at", "input_hash"):
        assert key in meta
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temp file


def test_load_rejects_foreign_and_tampered_files(tmp_path, anisotropic):
    from safetensors.numpy import load_file, save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": np.ones((3, 3))}, str(foreign))
    with pytest.raises(InputError, match="not a whitenclip whitener"):
        Whitener.load(foreign)
    wh = Whitener().fit(anisotropic)
    path = wh.save(tmp_path / "w.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputError, match="truncated.safetensors"):
        Whitener.load(truncated)
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as fh:
        header = fh.metadata()
    tensors = load_file(str(path))
    tensors["W"] = tensors["W"][:, :5].copy()
    tampered = tmp_path / "tampered.safetensors"
    save_file(tensors, str(tampered), metadata=header)
    with pytest.raises(InputError, match="tensor W has shape"):
        Whitener.load(tampered)
    tensors = load_file(str(path))
    tensors["mean"][0] = np.inf
    save_file(tensors, str(tampered), metadata=header)
    with pytest.raises(InputError, match="NaN or inf"):
        Whitener.load(tampered)
    with pytest.raises(InputError, match="no such file"):
        Whitener.load(tmp_path / "missing.safetensors")


def test_fit_transform_no_warning_on_full_rank(anisotropic):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Whitener().fit_transform(anisotropic)


def test_streaming_fit_equals_in_memory_fit_and_leaves_source_intact(tmp_path, anisotropic):
    """Two passes (Ledoit-Wolf) over an in-memory float64 source: chunks are centred in place,
    so they must be copies, never views into the source."""
    from whitenclip.readers.plan import open_embeddings
    from whitenclip.whitening import fit_whitener_streaming

    np.savez(tmp_path / "x.npz", embeddings=anisotropic)
    src = open_embeddings(tmp_path / "x.npz")
    streamed, _ = fit_whitener_streaming([src], shrinkage="ledoit-wolf", chunk_rows=64)
    direct = Whitener(shrinkage="ledoit-wolf").fit(anisotropic)
    assert streamed.shrinkage_ == pytest.approx(direct.shrinkage_, rel=1e-10)
    np.testing.assert_allclose(streamed.eigenvalues_, direct.eigenvalues_, rtol=1e-10)
    np.testing.assert_array_equal(src.read_all()[1], anisotropic)


# ---------------------------------------------------------------------------------------
# spectrum summary
# ---------------------------------------------------------------------------------------
def test_dims_for_pct_closed_form():
    """Linear spectrum lambda_i = d - i (i = 0..d-1): the first k directions hold
    S_k = d k - k (k - 1) / 2 of S = d (d + 1) / 2, so k_p = ceil(((2d + 1) - sqrt((2d + 1)^2 - 4 p d (d + 1))) / 2)."""
    from whitenclip.whitening import spectrum_summary, summarize_spectrum, whitener_from_matrix

    d = 100
    lam = np.arange(d, 0, -1, dtype=np.float64)
    wh = whitener_from_matrix(np.zeros(d), np.diag(lam**-0.5))

    def k(p):
        return int(np.ceil(((2 * d + 1) - np.sqrt((2 * d + 1) ** 2 - 4 * p * d * (d + 1))) / 2))

    assert (k(0.5), k(0.9), k(0.99)) == (30, 69, 91)  # S_29 = 2494 < 2525 <= S_30 = 2565, ...
    summary = summarize_spectrum(wh)
    assert (summary.dims_for_50pct, summary.dims_for_90pct, summary.dims_for_99pct) == (30, 69, 91)
    assert summary.lambda_max == pytest.approx(100) and summary.lambda_min_kept == pytest.approx(1)
    assert summary.condition_number == pytest.approx(100) and summary.decades == pytest.approx(2)
    assert spectrum_summary(wh) == summary.to_dict()


# ---------------------------------------------------------------------------------------
# leave-one-out calibration distances
# ---------------------------------------------------------------------------------------
def _loo_refits(X, **params):
    """Brute force: refit on the other n - 1 rows, distance of the row left out."""
    out = np.empty(X.shape[0])
    for i in range(X.shape[0]):
        wh = Whitener(calibration=False, **params).fit(np.delete(X, i, axis=0))
        out[i] = np.sum(wh.transform(X[i]) ** 2)
    return out


@pytest.fixture
def with_outliers(anisotropic):
    X = anisotropic[:120].copy()
    X[:3] = X[:3] * 4 - 3 * X.mean(0)  # three far rows: large leverage
    return X


@pytest.mark.parametrize("params", [{}, {"method": "zca"}, {"method": "cholesky"}, {"shrinkage": 0.3},
                                    {"shrinkage": 1.0}])
def test_loo_closed_form_equals_refits(with_outliers, params):
    from whitenclip.whitening import calibration_distances, loo_sqdist

    wh = Whitener(**params).fit(with_outliers)
    got = calibration_distances(wh, with_outliers)
    np.testing.assert_allclose(got, _loo_refits(with_outliers, **params), rtol=1e-12)
    np.testing.assert_allclose(wh.calibration_, np.sort(got), rtol=0)
    if not params.get("shrinkage"):  # the formula on in-sample D_i^2
        np.testing.assert_allclose(loo_sqdist(wh.mahalanobis(with_outliers), 120), got, rtol=1e-12)


def test_loo_with_estimated_shrinkage_holds_the_intensity(with_outliers):
    """OAS / Ledoit-Wolf: exact for the intensity held at the full-data value; refits that
    re-estimate it on n - 1 rows differ by O(1/n)."""
    from whitenclip.whitening import calibration_distances

    for shrinkage in ("oas", "ledoit-wolf"):
        wh = Whitener(shrinkage=shrinkage).fit(with_outliers)
        got = calibration_distances(wh, with_outliers)
        np.testing.assert_allclose(got, _loo_refits(with_outliers, shrinkage=wh.shrinkage_), rtol=1e-12)
        free = _loo_refits(with_outliers, shrinkage=shrinkage)
        assert np.median(np.abs(got / free - 1)) < 5e-3 and np.max(np.abs(got / free - 1)) < 5e-2


def test_loo_under_rank_truncation_holds_the_subspace(with_outliers):
    """rank < d: exact for the kept subspace held fixed (mean and covariance refitted inside it);
    refits from scratch re-pick the subspace and give smaller distances (conservative here)."""
    from whitenclip.whitening import calibration_distances

    with pytest.warns(RankDeficiencyWarning):
        wh = Whitener(rank=5, shrinkage=0.2).fit(with_outliers)
    got = calibration_distances(wh, with_outliers)
    V, s, d = wh.components_, wh.shrinkage_, 12
    fixed = np.empty(120)
    for i in range(120):
        rest = np.delete(with_outliers, i, axis=0)
        S = np.cov(rest, rowvar=False)
        C = V.T @ ((1 - s) * S + s * np.trace(S) / d * np.eye(d)) @ V
        a = (with_outliers[i] - rest.mean(0)) @ V
        fixed[i] = a @ np.linalg.solve(C, a)
    np.testing.assert_allclose(got, fixed, rtol=1e-11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankDeficiencyWarning)
        refit = _loo_refits(with_outliers, rank=5, shrinkage=0.2)
    assert np.all(got >= refit * (1 - 1e-9))
    assert np.median(got / refit - 1) < 0.05


def test_loo_of_rows_the_others_do_not_span_is_infinite(rng):
    X = rng.standard_normal((10, 40))
    with pytest.warns(RankDeficiencyWarning), pytest.warns(UserWarning, match="degenerate calibration"):
        wh = Whitener().fit(X)
    assert wh.calibration_.shape == (10,) and np.isinf(wh.calibration_).all()
    with pytest.warns(UserWarning, match="chi2"):
        table = score(wh, rng.standard_normal((3, 40)) * 100)
    # nothing can be told apart (every p would be 1, junk too): no conformal p-value, and the note says why
    assert table.pvalue_conformal is None and "pvalue_conformal" not in table.columns
    assert table.note.startswith("pvalue_conformal is left out: degenerate calibration: 10 of 10")


def test_calibration_sample_sizes_and_switch(anisotropic):
    assert Whitener().fit(anisotropic).n_cal_ == 600  # n <= m: every row
    small = Whitener(calibration_rows=50, calibration_seed=4).fit(anisotropic)
    assert small.n_cal_ == 50
    from whitenclip.moments import Reservoir
    from whitenclip.whitening import calibration_distances

    rows = Reservoir(50, 12, seed=4).update(anisotropic).rows
    np.testing.assert_array_equal(small.calibration_, np.sort(calibration_distances(small, rows)))
    off = Whitener(calibration=False).fit(anisotropic)
    assert off.calibration_ is None and off.n_cal_ is None
    assert Whitener().fit_moments(Moments.from_array(anisotropic)).calibration_ is None  # no rows, no calibration
    with pytest.raises(InputError, match="calibration_rows"):
        Whitener(calibration_rows=0).fit(anisotropic)


def test_streaming_calibration_equals_in_memory(tmp_path, anisotropic):
    from whitenclip.readers.plan import open_embeddings
    from whitenclip.whitening import fit_whitener_streaming

    np.save(tmp_path / "x.npy", anisotropic)
    streamed, _ = fit_whitener_streaming([open_embeddings(tmp_path / "x.npy")], chunk_rows=37, calibration_rows=200)
    direct = Whitener(calibration_rows=200).fit(anisotropic)
    assert streamed.n_cal_ == 200
    np.testing.assert_allclose(streamed.calibration_, direct.calibration_, rtol=1e-10)
    off, _ = fit_whitener_streaming([open_embeddings(tmp_path / "x.npy")], calibration=False)
    assert off.calibration_ is None


def test_calibration_artifact_roundtrip_and_old_artifacts(tmp_path, anisotropic):
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    from whitenclip.whitening import summarize

    wh = Whitener(calibration_rows=100).fit(anisotropic)
    path = wh.save(tmp_path / "w.safetensors")
    back = Whitener.load(path)
    np.testing.assert_array_equal(back.calibration_, wh.calibration_)
    assert back.get_params()["calibration_rows"] == 100 and back.n_cal_ == 100
    meta = back.artifact_metadata()
    assert meta["n_cal"] == 100 and meta["calibration"]["rows_max"] == 100
    assert "calibration" not in back.metadata_
    np.testing.assert_array_equal(score(back, anisotropic[:5])["pvalue_conformal"],
                                  score(wh, anisotropic[:5])["pvalue_conformal"])
    # an artifact written before calibration existed: no tensor, no header keys
    with safe_open(str(path), framework="numpy") as fh:
        header = fh.metadata()
    info = json.loads(header["whitenclip"])
    for key in ("n_cal", "calibration"):
        info.pop(key)
    header["whitenclip"] = json.dumps(info)
    tensors = load_file(str(path))
    tensors.pop("calibration")
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=header)
    old = Whitener.load(tmp_path / "old.safetensors")
    assert old.calibration_ is None and old.n_cal_ is None
    table = score(old, anisotropic[:5])
    assert table.pvalue_conformal is None and "pvalue_conformal" not in table.columns
    assert "no calibration" in table.note
    s = summarize(old, tmp_path / "old.safetensors").to_dict()
    assert s["n_cal"] is None and "no calibration" in s["note"]
    # a tampered calibration tensor is refused
    tensors = load_file(str(path))
    tensors["calibration"] = tensors["calibration"][::-1].copy()
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=header)
    with pytest.raises(InputError, match="calibration"):
        Whitener.load(tmp_path / "bad.safetensors")


def test_summary_is_the_info_object(tmp_path, anisotropic):
    """to_dict() = {"path", **artifact header without the eigenvalue list, "spectrum"} + n_cal."""
    from whitenclip.whitening import spectrum_summary, summarize

    wh = Whitener().fit(anisotropic)
    path = wh.save(tmp_path / "w.safetensors")
    back = Whitener.load(path)
    got = summarize(back, path).to_dict()
    meta = back.artifact_metadata()
    meta.pop("eigenvalues")
    old_info = {"path": str(path), **meta, "spectrum": spectrum_summary(back)}
    for key in set(old_info) - {"created_at"}:
        assert got[key] == old_info[key], key
    assert got["n_cal"] == 600 and "eigenvalues" not in got and "note" not in got
    assert list(got)[0] == "path"


# ---------------------------------------------------------------------------------------
# scikit-learn estimator
# ---------------------------------------------------------------------------------------
def test_sklearn_params_clone_and_repr(anisotropic):
    from sklearn.base import clone

    wh = Whitener(method="zca", shrinkage=0.1, calibration_rows=64)
    assert wh.get_params() == {"method": "zca", "shrinkage": 0.1, "floor": 1e-10, "rank": None, "calibration": True,
                               "calibration_rows": 64, "calibration_seed": 0}
    assert repr(wh) == "Whitener(calibration_rows=64, method='zca', shrinkage=0.1)"
    twin = clone(wh)
    assert twin is not wh and twin.get_params() == wh.get_params() and not hasattr(twin, "W_")
    assert wh.set_params(rank=3) is wh and wh.rank == 3
    bad = Whitener(method="svd", shrinkage=7)  # __init__ stores only: validation happens in fit
    assert bad.method == "svd"
    with pytest.raises(InputError, match="method must be"):
        bad.fit(anisotropic)
    fitted = Whitener().fit(anisotropic)
    assert fitted.n_features_in_ == 12
    assert clone(fitted).get_params() == fitted.get_params() and not hasattr(clone(fitted), "W_")


def test_density_methods_match_scipy_and_sklearn(anisotropic, rng):
    from sklearn.covariance import EmpiricalCovariance

    wh = Whitener(shrinkage=0.05).fit(anisotropic)
    X_new = anisotropic[:40] + rng.normal(0, 1, (40, 12))
    ref = multivariate_normal(wh.mean_, wh.covariance_).logpdf(X_new)
    np.testing.assert_allclose(wh.score_samples(X_new), ref, rtol=1e-10)
    assert wh.score(X_new) == pytest.approx(ref.mean(), rel=1e-10)
    np.testing.assert_allclose(wh.score_samples(X_new), score(wh, X_new)["logpdf"], rtol=1e-13)
    plain = Whitener().fit(anisotropic)
    emp = EmpiricalCovariance().fit(anisotropic)  # ddof=0: distances scale by (n - 1)/n
    np.testing.assert_allclose(plain.mahalanobis(X_new), emp.mahalanobis(X_new) * 599 / 600, rtol=1e-9)


def test_transform_refuses_nan_like_fit(anisotropic):
    wh = Whitener().fit(anisotropic)
    bad = anisotropic[:5].copy()
    bad[3, 1] = np.nan
    with pytest.raises(InputError, match="row 3 holds NaN"):
        wh.transform(bad)
    bad[3, 1] = np.inf
    with pytest.raises(InputError, match="row 3"):
        wh.score_samples(bad)
    assert wh.transform(anisotropic[0]).shape == (1, 12)  # a 1-D row is still one row


def test_pipeline_and_grid_search_over_shrinkage(rng):
    """GridSearchCV picks shrinkage by held-out log-likelihood: heavy shrinkage when n ~ d."""
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    d = 30
    X = rng.standard_normal((60, d)) * np.sqrt(np.linspace(0.5, 1.5, d))  # n = 2d: sample covariance is poor
    pipe = Pipeline([("scale", StandardScaler()), ("white", Whitener())])
    Z = pipe.fit_transform(X)
    np.testing.assert_allclose(np.cov(Z, rowvar=False), np.eye(d), atol=1e-8)
    assert np.isfinite(pipe.score(X))
    grid = GridSearchCV(Whitener(), {"shrinkage": [0.0, 0.3, 0.7, "oas"]}, cv=3).fit(X)
    assert grid.best_params_["shrinkage"] != 0.0
    scores = grid.cv_results_["mean_test_score"]
    assert scores[0] == min(scores)  # no shrinkage has the worst held-out likelihood
    assert grid.best_estimator_.score(X) == pytest.approx(grid.best_estimator_.score_samples(X).mean())


# ---------------------------------------------------------------------------------------
# shrinkage intensities: one public home
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("assume_centered", [False, True])
def test_row_shrinkage_helpers_match_sklearn(anisotropic, assume_centered):
    from sklearn import covariance

    from whitenclip.whitening import ledoit_wolf_shrinkage, oas_shrinkage_of_rows, shrinkage_intensity

    X = anisotropic if not assume_centered else anisotropic - anisotropic.mean(0)
    lw = covariance.ledoit_wolf_shrinkage(X, assume_centered=assume_centered)
    oas = covariance.oas(X, assume_centered=assume_centered)[1]
    assert ledoit_wolf_shrinkage(X, assume_centered=assume_centered) == pytest.approx(lw, rel=1e-10)
    assert oas_shrinkage_of_rows(X, assume_centered=assume_centered) == pytest.approx(oas, rel=1e-10)
    assert shrinkage_intensity(X, "ledoit-wolf", assume_centered=assume_centered) == pytest.approx(lw, rel=1e-10)
    assert shrinkage_intensity(X, "oas", assume_centered=assume_centered) == pytest.approx(oas, rel=1e-10)
    assert shrinkage_intensity(X, None) == 0.0 and shrinkage_intensity(X, 0.25) == 0.25
    with pytest.raises(InputError, match="shrinkage"):
        shrinkage_intensity(X, "ridge")
    with pytest.raises(InputError, match="in \\[0, 1\\]"):
        shrinkage_intensity(X, 1.5)


@pytest.mark.parametrize("check", ["check_no_attributes_set_in_init", "check_parameters_default_constructible",
                                   "check_get_params_invariance", "check_set_params", "check_dont_overwrite_parameters",
                                   "check_transformer_general", "check_estimators_nan_inf", "check_n_features_in",
                                   "check_fit_idempotent", "check_estimators_pickle"])
def test_sklearn_estimator_checks(check):
    from sklearn.utils import estimator_checks

    getattr(estimator_checks, check)("Whitener", Whitener())
