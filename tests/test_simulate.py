"""whitenclip simulate: data, metrics, the qualitative InfoNCE > supervised ordering, CLI."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from whitenclip.cli import app  # noqa: E402
from whitenclip.errors import InputError  # noqa: E402
from whitenclip.simulate import (  # noqa: E402
    METRICS,
    RunHistory,
    SimulationResult,
    SyntheticTask,
    embedding_metrics,
    invertible_mlp,
    make_config,
    parse_losses,
    simulate,
)
from whitenclip.simulate.metrics import _affine_lstsq  # noqa: E402

runner = CliRunner()


@pytest.mark.parametrize("kwargs, needle", [
    ({"losses": "infonce,simclr"}, "unknown loss 'simclr'"),
    ({"data": "mnist"}, "unknown data 'mnist'"),
    ({"steps": 0}, "--steps must be a positive integer"),
    ({"dim": -3}, "--dim must be a positive integer"),
    ({"latent_dim": 0}, "--latent-dim must be a positive integer"),
    ({"tau": 0.0}, "--tau must be a positive finite number"),
    ({"tau": float("nan")}, "--tau must be a positive finite number"),
    ({"seeds": 100000}, "--seeds 100000: at most"),
    ({"batch_size": 100000}, "a training step would need"),
    ({"labels": "noisy"}, "unknown labels"),
])
def test_bad_config_is_one_line_input_error(kwargs, needle):
    with pytest.raises(InputError) as e:
        make_config(**kwargs)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_parse_losses_keeps_order_and_drops_repeats():
    assert parse_losses("Supervised, infonce,supervised") == ("supervised", "infonce")


def test_eval_steps_include_zero_and_last():
    assert make_config(steps=500, evals=10).eval_steps == tuple(range(0, 501, 50))
    assert make_config(steps=3, evals=10).eval_steps == (0, 1, 2, 3)


def test_invertible_mlp_is_invertible_and_positives_have_the_stated_noise():
    rng = np.random.default_rng(0)
    g = invertible_mlp(8, rng)
    Z = rng.standard_normal((200, 8))
    # piecewise linear with invertible pieces: finite differences have full-rank Jacobians
    eps = 1e-6
    J = np.stack([(g(Z[:1] + eps * np.eye(8)[j]) - g(Z[:1])) / eps for j in range(8)])[:, 0]
    assert np.linalg.matrix_rank(J) == 8
    task = SyntheticTask("gmm", 16, seed=3)
    z, _ = task.latent(40000, np.random.default_rng(1))
    z_pos = z + np.random.default_rng(2).standard_normal(z.shape) / np.sqrt(task.lam)
    assert np.allclose((z_pos - z).var(0), 1 / np.linspace(5, 25, 16), rtol=0.05)
    x, x_pos, z2, y = task.sample(500, np.random.default_rng(4))
    assert x.shape == x_pos.shape == z2.shape == (500, 16) and y.min() >= 0 and y.max() < 10


def test_latent_regression_and_probe_pieces_are_exact_on_linear_data():
    rng = np.random.default_rng(5)
    E = rng.standard_normal((300, 6))
    B = rng.standard_normal((6, 3))
    T = E @ B + np.array([1.0, -2.0, 0.5])
    coef = _affine_lstsq(E, T)
    assert np.allclose(coef[:-1], B) and np.allclose(coef[-1], [1.0, -2.0, 0.5])


def test_metrics_of_gaussian_rows_match_the_exact_gaussian_reference():
    rng = np.random.default_rng(6)
    n, d = 2000, 64
    F = rng.standard_normal((n, d)) + 20.0  # normalising maps the rows near one point: coordinates stay Gaussian
    from whitenclip.diagnostics import draw_subsets
    subsets = draw_subsets(n, 10, 500, np.random.default_rng(0))
    m = embedding_metrics(F, subsets=subsets, seed=0, F_fit=F, y_fit=np.zeros(n, int), y_eval=np.zeros(n, int),
                          n_classes=2, z_fit=F[:, :3], z_eval=F[:, :3])
    from whitenclip.simulate import gaussian_reference
    ref = gaussian_reference(n, d)
    assert m["w_ad_pass"] == pytest.approx(ref["ad_pass"], abs=0.05)
    assert m["ad_pass"] == pytest.approx(ref["ad_pass"], abs=0.05)
    assert m["probe_acc"] == 1.0 and m["r2"] > 0.9
    assert set(m) == set(METRICS)


def test_summary_is_mean_and_sample_sd_of_final_values():
    cfg = make_config(losses="infonce", steps=2, evals=1, seeds=3)
    runs = []
    for seed, final in enumerate([0.8, 0.9, 1.0]):
        metrics = {k: (None, None) for k in METRICS}
        metrics["ad_pass"] = (0.5, final)
        runs.append(RunHistory("infonce", seed, (0, 2), metrics, 1.0, 1.0))
    res = SimulationResult(cfg, tuple(runs), {"ad_pass": 0.95}, 3.0, 3.0)
    s = res.summary()["infonce"]["ad_pass"]
    assert s["mean"] == pytest.approx(0.9) and s["sd"] == pytest.approx(0.1) and s["initial_mean"] == 0.5
    assert res.summary()["infonce"]["r2"] is None
    json.dumps(res.to_dict(), allow_nan=False)


def test_infonce_becomes_gaussian_and_supervised_does_not():
    """The paper's ordering on a small configuration (seconds): InfoNCE AD pass rises, CE's collapses."""
    cfg = make_config(losses="infonce,supervised", steps=120, seeds=1, n_eval=1000, evals=1, device="cpu")
    res = simulate(cfg)
    inf, sup = (next(r for r in res.runs if r.loss == name) for name in ("infonce", "supervised"))
    assert inf.initial("ad_pass") == sup.initial("ad_pass")  # same encoder at step 0
    assert inf.final("ad_pass") > inf.initial("ad_pass") + 0.15
    assert inf.final("ad_pass") > 0.75
    assert sup.final("ad_pass") < 0.2
    assert inf.final("w_ad_pass") > sup.final("w_ad_pass")


def test_cli_bad_input_exits_2_with_one_line():
    for args in (["--losses", "infonce,nope"], ["--steps", "0"], ["--tau", "-1"], ["--data", "cifar"],
                 ["--seeds", "5000"]):
        r = runner.invoke(app, ["simulate", *args])
        assert r.exit_code == 2, (args, r.output)
        assert r.output.count("whitenclip: error:") == 1


def test_cli_json_html_and_stores_readable_by_other_commands(tmp_path):
    out, emb = tmp_path / "page", tmp_path / "emb"
    r = runner.invoke(app, ["--quiet", "simulate", "--losses", "infonce,untrained", "--steps", "10", "--seeds", "1",
                            "--n-eval", "600", "--evals", "2", "--json", "--out", str(out),
                            "--save-embeddings", str(emb)])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["config"]["eval_steps"] == [0, 5, 10]
    assert {run["loss"] for run in doc["runs"]} == {"infonce", "untrained"}
    assert doc["summary"]["untrained"]["ad_pass"]["mean"] == doc["runs"][1]["metrics"]["ad_pass"][0]
    assert (out / "simulate.html").read_text().count("data:image/png;base64,") == 1
    from whitenclip.readers.plan import read_embeddings
    ids_a, A = read_embeddings([str(emb / "infonce" / "seed0")])
    ids_b, B = read_embeddings([str(emb / "untrained" / "seed0")])
    assert ids_a == ids_b and A.shape == (600, 64)
    assert np.allclose(np.linalg.norm(A, axis=1), 1.0, atol=1e-5)
    meta = json.loads((emb / "infonce" / "seed0" / "meta.json").read_text())
    assert meta["encoder"] == "simulate:infonce" and meta["modality"] == "synthetic" and meta["normalized"] is True
    r = runner.invoke(app, ["entropy", str(emb / "infonce" / "seed0"), "--json", "--knn-dims", "0"])
    assert r.exit_code == 0, r.output
    # a second run into the same directory refuses instead of mixing rows
    r = runner.invoke(app, ["simulate", "--losses", "infonce", "--steps", "1", "--seeds", "1", "--n-eval", "600",
                            "--save-embeddings", str(emb)])
    assert r.exit_code == 2 and "not empty" in r.output


def test_aninfonce_scale_runaway_and_its_fix():
    """README's diagnosis: unnormalised AnInfoNCE grows ||f|| and stalls; the sphere variant does not."""
    cfg = make_config(losses="aninfonce,aninfonce-sphere", steps=60, seeds=1, n_eval=600, evals=1, device="cpu")
    res = simulate(cfg)
    plain, sphere = res.runs
    assert plain.final("norm_mean") > 10 * plain.initial("norm_mean")
    assert max(plain.extra["lambda"]) - min(plain.extra["lambda"]) < 0.1  # Lambda hardly learns
    assert sphere.final("ad_pass") > plain.final("ad_pass") + 0.3


# ---------------------------------------------------------------------------------------
# issue 16: encoders, the epoch schedule and --preset iclr2026
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, needle", [
    ({"encoder": "resnet"}, "--encoder: unknown encoder 'resnet'"),
    ({"encoder": "cnn", "data": "gmm"}, "--encoder cnn needs image inputs"),
    ({"mixing": "flow"}, "--mixing: unknown mixing"),
    ({"sparsity": 1.0}, "--sparsity must be in (0, 1)"),
    ({"sparsity": 0.0}, "--sparsity must be in (0, 1)"),
    ({"train_size": 1000}, "--train-size needs --epochs"),
    ({"eval_epochs": "0,1"}, "--eval-epochs needs --epochs"),
    ({"steps": 10, "epochs": 2}, "--steps and --epochs exclude each other"),
    ({"epochs": 0}, "--epochs must be a positive integer"),
    ({"epochs": 5, "train_size": 100}, "smaller than --batch-size 256"),
    ({"epochs": 5, "eval_epochs": "0,6"}, "epoch 6 is outside 0..5"),
    ({"epochs": 5, "eval_epochs": "0,two"}, "'two' is not an integer epoch"),
    ({"epochs": 5, "eval_epochs": ","}, "give at least one epoch"),
    ({"data": "digits", "epochs": 5, "train_size": 5000}, "digits has 1198 training images"),
])
def test_bad_schedule_or_encoder_is_one_line_input_error(kwargs, needle):
    with pytest.raises(InputError) as e:
        make_config(**kwargs)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_epoch_schedule_steps_and_eval_steps():
    cfg = make_config(epochs=3, train_size=600, batch_size=256, eval_epochs="3,1")
    assert cfg.steps_per_epoch == 2 and cfg.steps == 6  # the partial batch (88 rows) is dropped
    assert cfg.eval_epochs == (0, 1, 3) and cfg.eval_steps == (0, 2, 6)
    assert make_config(epochs=10, evals=2, train_size=256).eval_epochs == (0, 5, 10)
    assert make_config(data="digits", epochs=1).train_size == 1198
    assert make_config().steps == 500 and make_config().steps_per_epoch is None  # the step schedule is unchanged
    assert make_config(data="digits").encoder == "cnn" and make_config().encoder == "mlp"


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from whitenclip.simulate import parse_eval_epochs  # noqa: E402


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(1, 300), st.lists(st.integers(-5, 320), min_size=1, max_size=8))
def test_parse_eval_epochs_property(epochs, values):
    spec = " , ".join(str(v) for v in values)
    if all(0 <= v <= epochs for v in values):
        assert parse_eval_epochs(spec, epochs) == tuple(sorted(set(values) | {0}))
        assert parse_eval_epochs(values, epochs) == parse_eval_epochs(spec, epochs)
    else:
        with pytest.raises(InputError) as e:
            parse_eval_epochs(spec, epochs)
        assert "outside 0.." in str(e.value) and "\n" not in str(e.value)


def test_epochs_visit_every_training_row_once_per_epoch():
    from whitenclip.simulate.data import _train_set
    from whitenclip.simulate.training import _Run

    cfg = make_config(data="binary", encoder="linear", mixing="none", latent_dim=16, epochs=2, train_size=40,
                      batch_size=8, losses="infonce", seeds=1, device="cpu")
    task = SyntheticTask("binary", 16, 0, mixing="none", sparsity=cfg.sparsity)
    train = _train_set(cfg, 0, task)
    run = _Run(cfg, "infonce", 0, task, 16, train=train)
    rows = np.concatenate([run._next_rows() for _ in range(cfg.steps_per_epoch)])
    assert sorted(rows.tolist()) == list(range(40))
    second = np.concatenate([run._next_rows() for _ in range(cfg.steps_per_epoch)])
    assert sorted(second.tolist()) == list(range(40)) and not np.array_equal(rows, second)


def test_linear_encoder_is_a_bias_free_matrix_and_binary_rows_are_never_empty():
    import torch

    from whitenclip.simulate import make_encoder

    net = make_encoder(make_config(encoder="linear", dim=8, latent_dim=5), 5)
    params = dict(net.named_parameters())
    assert list(params) == ["0.weight"] and params["0.weight"].shape == (8, 5)
    x = torch.randn(3, 5)
    assert torch.allclose(net(2 * x), 2 * net(x)) and torch.allclose(net(x), x @ params["0.weight"].T)
    digits = make_encoder(make_config(data="digits", encoder="linear", dim=8), 1)
    assert digits(torch.zeros(2, 1, 8, 8)).shape == (2, 8)
    task = SyntheticTask("binary", 200, seed=1, mixing="none", sparsity=0.01)
    z, _ = task.latent(20000, np.random.default_rng(0))
    assert z.sum(1).min() >= 1 and set(np.unique(z)) == {0.0, 1.0}
    # Bernoulli(p) plus one forced bit: E[#ones] = 1 + (k - 1) p (the forced bit may land on a 1)
    assert z.sum(1).mean() == pytest.approx(1 + 199 * 0.01, rel=0.03)
    x, x_pos = task.views(z[:5], np.random.default_rng(1))
    assert np.array_equal(x, z[:5]) and not np.array_equal(x_pos, x)  # mixing none: x = z


def test_standardised_norm_cv_and_per_feature_rates_match_scipy():
    import warnings

    import scipy.stats

    from whitenclip.diagnostics import chi_cv, draw_subsets
    from whitenclip.simulate import feature_pass_rates, standardised_norm_cv

    rng = np.random.default_rng(3)
    F = rng.standard_normal((700, 6)) * np.array([1, 2, 3, 4, 5, 6]) + 7.0
    F[:, 5] = rng.laplace(size=700) ** 3  # one clearly non-normal feature
    want = scipy.stats.variation(np.linalg.norm(scipy.stats.zscore(F, axis=0), axis=1))
    assert standardised_norm_cv(F) == pytest.approx(want, rel=1e-12)
    G = rng.standard_normal((50000, 64)) * 5 + 1
    assert standardised_norm_cv(G) == pytest.approx(chi_cv(64), abs=0.002)  # the exact-Gaussian value
    subsets = draw_subsets(700, 4, 500, np.random.default_rng(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scipy >= 1.17 asks for a p-value method; we use A2 only
        a2 = np.array([[scipy.stats.anderson(F[idx, j], "norm").statistic for j in range(6)] for idx in subsets])
    p = np.array([[scipy.stats.normaltest(F[idx, j]).pvalue for j in range(6)] for idx in subsets])
    got = feature_pass_rates(F, subsets)
    assert got["ad_pass_feature"] == pytest.approx(np.mean(a2.mean(0) < 0.752))
    assert got["dp_pass_feature"] == pytest.approx(np.mean(p.mean(0) > 0.05))
    assert a2.mean(0)[5] > 5 and got["ad_pass_feature"] <= 5 / 6  # the cubed Laplace feature fails


def test_exact_gaussian_reference_under_the_preset_protocol():
    """Per (subset, feature) an exact Gaussian passes ~95%; one verdict per feature (A2 averaged over
    10 subsets of 500 of 5000 rows) passes 100%: the paper's "100% features normal"."""
    from whitenclip.simulate import gaussian_reference

    ref = gaussian_reference(5000, 64)
    assert ref["ad_pass"] == pytest.approx(0.95, abs=0.01) and ref["dp_pass"] == pytest.approx(0.95, abs=0.01)
    assert ref["ad_mean"] == pytest.approx(0.39, abs=0.02) and ref["dp_mean"] == pytest.approx(0.5, abs=0.02)
    assert ref["ad_pass_feature"] == 1.0 and ref["dp_pass_feature"] == 1.0
    assert ref["z_norm_cv"] == pytest.approx(0.0886, abs=1e-4)


def _fake_preset_results():
    from whitenclip.simulate import PRESET_DIGITS, PRESET_SYNTHETIC, gaussian_reference

    results = {}
    for data in ("laplace", "gmm", "binary", "digits"):
        base = PRESET_DIGITS if data == "digits" else {**PRESET_SYNTHETIC, "data": data}
        cfg = make_config(**{**base, "seeds": 2, "device": "cpu"})
        runs = []
        for loss in cfg.losses:
            for seed in range(2):
                metrics = {k: (None, None, None) for k in METRICS}
                metrics["ad_pass"] = (0.2 + seed * 0.1, 0.5, 0.9 + 0.02 * seed)
                runs.append(RunHistory(loss, seed, cfg.eval_steps, metrics, 1.0, 1.0))
        results[data] = SimulationResult(cfg, tuple(runs), gaussian_reference(cfg.n_eval if data != "digits"
                                                                               else 599, cfg.dim), 1.0, 1.0)
    return results


def test_compare_puts_published_beside_mean_and_sd_over_seeds():
    from whitenclip.render import render
    from whitenclip.simulate import compare

    cmp = compare(_fake_preset_results())
    assert cmp.measured["binary_e0"]["ad_pass"]["mean"] == pytest.approx(0.25)
    assert cmp.measured["binary_e50"]["ad_pass"]["mean"] == pytest.approx(0.5)
    assert cmp.measured["binary_e100"]["ad_pass"]["sd"] == pytest.approx(0.02 / np.sqrt(2))
    assert cmp.checks["binary_e0_ad_pass_at_most_0.5"] and cmp.checks["binary_e100_ad_pass_at_least_0.85"]
    assert cmp.checks["gmm_final_ad_pass_within_0.05_of_gaussian"]
    doc = json.loads(json.dumps(cmp.to_dict(), allow_nan=False))
    assert doc["published"]["binary_e0"]["ad_pass"] == 0.30 and doc["published"]["contrastive"]["ad_pass"] == 0.961
    assert doc["measured"]["laplace"]["ad_pass"]["values"] == pytest.approx([0.9, 0.92])
    assert any("Bernoulli(0.008)" in c for c in doc["choices"])
    import io
    buf = io.StringIO()
    render(cmp, "table", stream=buf)
    text = buf.getvalue()
    assert "published" in text and "0.910±0.014" in text and "Binary E100" in text


def test_cli_epoch_schedule_runs_and_preset_options_are_checked():
    r = runner.invoke(app, ["--quiet", "simulate", "--data", "binary", "--encoder", "linear", "--mixing", "none",
                            "--latent-dim", "64", "--sparsity", "0.02", "--epochs", "2", "--train-size", "512",
                            "--eval-epochs", "2", "--losses", "infonce", "--seeds", "1", "--n-eval", "600",
                            "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["config"]["eval_steps"] == [0, 4] and doc["config"]["eval_epochs"] == [0, 2]
    assert doc["config"]["encoder"] == "linear" and len(doc["runs"][0]["metrics"]["ad_pass"]) == 2
    for args, needle in ((["--preset", "iclr2025"], "unknown preset"), (["--preset", "iclr2026", "--seeds", "1"],
                                                                        "at least 2"),
                         (["--preset", "iclr2026", "-o", "x"], "not supported"),
                         (["--encoder", "cnn"], "needs image inputs"), (["--train-size", "900"], "needs --epochs"),
                         (["--epochs", "2", "--eval-epochs", "0,3"], "outside 0..2"),
                         (["--steps", "5", "--epochs", "2"], "exclude each other")):
        r = runner.invoke(app, ["simulate", *args])
        assert r.exit_code == 2, (args, r.output)
        assert r.output.count("whitenclip: error:") == 1 and needle in r.output, (args, r.output)


def test_preset_pipeline_end_to_end_at_smoke_sizes():
    """The whole preset (3 synthetic laws, linear encoder; digits CNN, two losses) at toy sizes."""
    from whitenclip.simulate import preset_configs, run_preset

    configs = preset_configs("iclr2026", seeds=2, device="cpu", smoke=True)
    assert configs["binary"].encoder == "linear" and configs["binary"].mixing == "none"
    assert configs["digits"].encoder == "cnn" and configs["laplace"].eval_epochs == (0, 1, 2)
    full = preset_configs("iclr2026", seeds=3)
    assert full["binary"].eval_epochs == (0, 50, 100) and full["binary"].steps == 100 * (5000 // 256)
    res = run_preset(configs=configs)
    for key in ("laplace", "gmm", "binary_e0", "binary_e100", "supervised", "contrastive"):
        assert len(res.measured[key]["ad_pass"]["values"]) == 2
    # epoch 0 is the untrained linear map: the same for every column of a seed's binary run
    binary = next(r for r in res.results if r.config.data == "binary")
    assert res.measured["binary_e0"]["ad_pass"]["values"] == [r.metrics["ad_pass"][0] for r in binary.runs]
    doc = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert set(doc["results"]) == {"laplace", "gmm", "binary", "digits"} and doc["wall_seconds"] > 0
