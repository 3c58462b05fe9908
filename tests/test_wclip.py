"""Import of the W-CLIP paper's released ViT-L/14 whitening matrices (../shared; skipped when absent)."""

import numpy as np
import pytest
import torch
from conftest import shared_path
from typer.testing import CliRunner

from whitenclip import Whitener, score
from whitenclip.cli import app
from whitenclip.errors import InputError, RankDeficiencyWarning
from whitenclip.whitening import import_wclip, whitener_from_matrix


def paper_loglik(x, mean, W):
    """The paper's formula, in float64: -0.5 * (d log 2 pi + ||(x - mean) @ W||^2)."""
    w = (x - mean) @ W
    return -0.5 * (W.shape[0] * np.log(2 * np.pi) + np.sum(w**2, axis=1))


@pytest.mark.parametrize("modality", ["image", "text"])
def test_imported_scores_equal_paper_formula(tmp_path, modality):
    root = shared_path("wclip-vitl14")
    mean_pt, w_pt = root / f"mean_{modality}_L14.pt", root / f"w_mat_{modality}_L14.pt"
    out = tmp_path / "w.safetensors"
    res = CliRunner().invoke(app, ["import-wclip", "--mean", str(mean_pt), "--matrix", str(w_pt), "-o", str(out),
                                   "--modality", modality, "--n-samples", "5000"])
    assert res.exit_code == 0, res.stderr
    assert "decades" in res.stderr
    wh = Whitener.load(out)
    mean = torch.load(mean_pt, weights_only=True).double().numpy()
    W = torch.load(w_pt, weights_only=True).double().numpy()
    rng = np.random.default_rng(0)
    # rows around the mean at the scale the covariance implies for the well-conditioned directions
    x = mean + rng.standard_normal((64, 768)) @ np.diag(np.full(768, 0.05))
    got = score(wh, x)["loglik"]
    np.testing.assert_allclose(got, paper_loglik(x, mean, W), rtol=1e-6)
    cond = wh.metadata_["conditioning"]
    assert wh.metadata_["modality"] == modality and wh.metadata_["normalized"] is False
    if modality == "text":  # measured: near-singular covariance, eigenvalues down to ~1e-9
        assert cond["lambda_min"] < 1e-8 and cond["n_degenerate"] > 0
        assert "numerically singular" in res.stderr
    else:  # the image spectrum spans about 6 decades
        assert 5.5 < cond["decades"] < 7.5 and cond["n_degenerate"] == 0


def test_recovered_eigenstructure_is_consistent():
    """For a W-CLIP-form W = V diag(lambda^-1/2), recovery gives back lambda, V and Sigma."""
    rng = np.random.default_rng(3)
    d = 8
    V, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = np.geomspace(5, 1e-3, d)
    W = V / np.sqrt(lam)
    wh = whitener_from_matrix(np.zeros(d), W, n_samples=100)
    np.testing.assert_allclose(wh.eigenvalues_, lam, rtol=1e-10)
    np.testing.assert_allclose(wh.covariance_, (V * lam) @ V.T, rtol=1e-8, atol=1e-12)
    assert wh.log_det_ == pytest.approx(-0.5 * np.sum(np.log(lam)), rel=1e-12)
    x = rng.standard_normal((4, d))
    np.testing.assert_allclose(wh.inverse_transform(wh.transform(x)), x, atol=1e-10)


def test_import_rejects_non_tensor_files(tmp_path):
    torch.save({"a": 1, "b": "x"}, tmp_path / "dict.pt")
    torch.save(torch.zeros(4), tmp_path / "mean.pt")
    with pytest.raises(InputError, match="expected a tensor"):
        import_wclip(tmp_path / "mean.pt", tmp_path / "dict.pt", modality="image")
    torch.save(torch.zeros(3, 3), tmp_path / "w.pt")
    with pytest.raises(InputError, match="shape"):
        import_wclip(tmp_path / "mean.pt", tmp_path / "w.pt", modality="image")
    torch.save(torch.zeros(4, 4), tmp_path / "w0.pt")
    with pytest.raises(InputError, match="singular"):
        import_wclip(tmp_path / "mean.pt", tmp_path / "w0.pt", modality="image")
    (tmp_path / "evil.pt").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="evil.pt"):
        import_wclip(tmp_path / "mean.pt", tmp_path / "evil.pt", modality="image")


def test_ill_conditioned_import_warns(tmp_path):
    W = np.diag(np.geomspace(1, 1e-12, 6))
    with pytest.warns(RankDeficiencyWarning, match="numerically singular"):
        torch.save(torch.from_numpy(W), tmp_path / "w.pt")
        torch.save(torch.zeros(6, dtype=torch.float64), tmp_path / "m.pt")
        import_wclip(tmp_path / "m.pt", tmp_path / "w.pt", modality="text")


def test_modality_is_inferred_from_file_names_or_asked_for(tmp_path):
    from whitenclip.whitening import infer_modality

    assert infer_modality("x/mean_image_L14.pt", "x/w_mat_image_L14.pt") == "image"
    assert infer_modality("mean_TEXT.pt", "w.pt") == "text"
    assert infer_modality("images/mean.pt", "images/w.pt") is None  # folders do not count
    assert infer_modality("mean_image.pt", "w_text.pt") is None  # both: cannot tell
    d = 4
    for name in ("image", "text"):
        torch.save(torch.zeros(d, dtype=torch.float64), tmp_path / f"mean_{name}.pt")
        torch.save(torch.eye(d, dtype=torch.float64), tmp_path / f"w_mat_{name}.pt")
        wh = import_wclip(tmp_path / f"mean_{name}.pt", tmp_path / f"w_mat_{name}.pt")
        assert wh.metadata_["modality"] == name and wh.calibration_ is None
    torch.save(torch.zeros(d, dtype=torch.float64), tmp_path / "m.pt")
    torch.save(torch.eye(d, dtype=torch.float64), tmp_path / "w.pt")
    with pytest.raises(InputError, match="cannot tell the modality"):
        import_wclip(tmp_path / "m.pt", tmp_path / "w.pt")
    assert import_wclip(tmp_path / "m.pt", tmp_path / "w.pt", modality="text").metadata_["modality"] == "text"
    with pytest.raises(InputError, match="image or text"):
        import_wclip(tmp_path / "m.pt", tmp_path / "w.pt", modality="audio")
    with pytest.warns(UserWarning, match="file names say image"):
        wh = import_wclip(tmp_path / "mean_image.pt", tmp_path / "w_mat_image.pt", modality="text")
    assert wh.metadata_["modality"] == "text"


def test_import_refuses_complex_or_nonfinite_tensors_naming_their_file(tmp_path):
    torch.save(torch.zeros(4), tmp_path / "mean_image.pt")
    torch.save(torch.eye(4), tmp_path / "w_mat_image.pt")
    torch.save(torch.full((4,), float("nan")), tmp_path / "mean_nan_image.pt")
    torch.save(torch.eye(4, dtype=torch.complex64), tmp_path / "w_complex_image.pt")
    torch.save(torch.eye(4).bool(), tmp_path / "w_bool_image.pt")
    import fractions

    torch.save([fractions.Fraction(1, 3)], tmp_path / "w_pickle_image.pt")
    assert import_wclip(tmp_path / "mean_image.pt", tmp_path / "w_mat_image.pt").rank_ == 4
    cases = {("mean_nan_image.pt", "w_mat_image.pt"): r"mean_nan_image.pt: holds nan at index \(0,\); expected finite",
             ("mean_image.pt", "w_complex_image.pt"): r"w_complex_image.pt: holds a complex64 tensor; expected real",
             ("mean_image.pt", "w_bool_image.pt"): r"w_bool_image.pt: holds a bool tensor",
             ("mean_image.pt", "w_pickle_image.pt"): r"w_pickle_image.pt: not a loadable torch tensor file "
                                                     r"\(Unsupported global: GLOBAL fractions.Fraction was not an "
                                                     r"allowed global by default\)$"}
    for (mean, matrix), message in cases.items():
        with pytest.raises(InputError, match=message) as err:
            import_wclip(tmp_path / mean, tmp_path / matrix)
        assert "\x1b" not in str(err.value) and "weights_only=False" not in str(err.value)
