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
    assert wh.log_det_ == pytest.approx(np.log(abs(np.linalg.det(wh.W_))) if method != "pca" else ref.log_det_, rel=1e-9)


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
    with pytest.warns(RankDeficiencyWarning, match="rank at most n-1=9"):
        wh = Whitener().fit(X)
    assert wh.rank_ == 9
    with pytest.warns(UserWarning, match="chi2"):  # n <= rank + 1: no F law
        s = score(wh, rng.standard_normal((5, 40)))
    assert all(np.isfinite(v).all() for v in s.values())


def test_duplicated_rows_are_finite(rng):
    base = rng.standard_normal((6, 10))
    X = np.repeat(base, 50, axis=0)  # 300 rows but only 6 distinct -> rank 5
    with pytest.warns(RankDeficiencyWarning):
        wh = Whitener().fit(X)
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
    from whitenclip.stores import open_embeddings
    from whitenclip.whitening import fit_whitener_streaming

    np.savez(tmp_path / "x.npz", embeddings=anisotropic)
    src = open_embeddings(tmp_path / "x.npz")
    streamed, _ = fit_whitener_streaming([src], shrinkage="ledoit-wolf", chunk_rows=64)
    direct = Whitener(shrinkage="ledoit-wolf").fit(anisotropic)
    assert streamed.shrinkage_ == pytest.approx(direct.shrinkage_, rel=1e-10)
    np.testing.assert_allclose(streamed.eigenvalues_, direct.eigenvalues_, rtol=1e-10)
    np.testing.assert_array_equal(src.read_all()[1], anisotropic)
