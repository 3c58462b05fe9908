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
    _affine_lstsq,
    embedding_metrics,
    invertible_mlp,
    make_config,
    parse_losses,
    simulate,
)

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
    from whitenclip.stores import read_embeddings
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
