"""Tests for whitenclip.compare: references (pytorch-fid, clean-fid, prdc, google-research CMMD,
scipy's BH), closed forms, the permutation test's level and power, groups, and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

import whitenclip
from whitenclip.cli import app
from whitenclip.comparison import compare, subsample
from whitenclip.comparison.gaussian import fd_extrapolated, frechet_distance, gaussian_kl
from whitenclip.comparison.items import knn_radii, prdc
from whitenclip.comparison.kernel import cmmd, permutation_test
from whitenclip.likelihood import bh_qvalues


def _features(n, d, rng, shift=0.0):
    A = rng.standard_normal((d, d)) / math.sqrt(d) + np.eye(d)
    return rng.standard_normal((n, d)) @ A + shift


# ---------------------------------------------------------------- Frechet distance


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")  # their sqrtm call
def test_fd_equals_pytorch_fid_and_clean_fid():
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    cleanfid = pytest.importorskip("cleanfid.fid")
    rng = np.random.default_rng(0)
    X, Y = _features(400, 24, rng), _features(300, 24, rng, shift=0.3)
    mu1, s1, mu2, s2 = X.mean(0), np.cov(X, rowvar=False), Y.mean(0), np.cov(Y, rowvar=False)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(fid_score.calculate_frechet_distance(mu1, s1, mu2, s2), rel=1e-6)
    assert ours == pytest.approx(cleanfid.frechet_distance(mu1, s1, mu2, s2), rel=1e-6)
    assert compare(X, Y, n_permutations=9, verdict=False, max_rows=50).queries[0].fd == pytest.approx(ours, rel=1e-12)


def test_fd_singular_covariances_use_the_symmetric_square_root():
    rng = np.random.default_rng(1)
    X, Y = _features(10, 30, rng), _features(12, 30, rng)  # n < d: both covariances singular
    mu1, s1, mu2, s2 = X.mean(0), np.cov(X, rowvar=False), Y.mean(0), np.cov(Y, rowvar=False)
    w, V = np.linalg.eigh(s1)
    A = (V * np.sqrt(np.clip(w, 0, None))) @ V.T
    ev = np.clip(np.linalg.eigvalsh(A @ s2 @ A), 0, None)
    direct = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(ev).sum())
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(direct, rel=1e-9)


def test_fd_inf_removes_the_small_sample_bias():
    """Same law: the plug-in fd is biased upward (~ d/n); fd_inf is near 0 on average and its interval holds 0."""
    rng = np.random.default_rng(2)
    A = rng.standard_normal((20, 20)) / math.sqrt(20) + np.eye(20)
    inf, plug, covered = [], [], 0
    for s in range(12):
        X, Y = rng.standard_normal((400, 20)) @ A, rng.standard_normal((400, 20)) @ A
        out = fd_extrapolated(X, Y, seed=s)
        inf.append(out["fd_inf"])
        plug.append(frechet_distance(X.mean(0), np.cov(X, rowvar=False), Y.mean(0), np.cov(Y, rowvar=False)))
        covered += out["ci"][0] < 0 < out["ci"][1]
    assert np.mean(plug) > 0.6
    assert abs(np.mean(inf)) < 0.15
    assert covered >= 10


def test_fd_inf_is_none_with_a_reason_when_the_fifths_have_fewer_rows_than_the_rank():
    """n = 100, d = 30: fifths of 20 rows have singular covariances, where the 1/n extrapolation is biased
    (the MiniLM null at n = 500, d = 384 read 1.9): no figure, a reason naming the sizes; fd keeps its interval."""
    rng = np.random.default_rng(21)
    X, Y = rng.standard_normal((100, 30)), rng.standard_normal((100, 30))
    out = fd_extrapolated(X, Y, seed=0)
    assert out["fd_inf"] is None and out["ci"] is None and out["rank"] == 30
    assert "fifths it extrapolates from have 20 rows" in out["reason"] and "155 rows per set" in out["reason"]
    q = compare(X, Y, n_permutations=9, verdict=False).queries[0]
    assert q.fd_inf is None and q.fd_inf_ci is None and q.fd_ci[0] < q.fd < q.fd_ci[1]
    assert any(n.startswith("fd_inf: not computed") for n in q.notes)
    ok = fd_extrapolated(rng.standard_normal((160, 30)), rng.standard_normal((160, 30)), seed=0)  # fifths of 32
    assert ok["reason"] is None and ok["fd_inf"] is not None and ok["rank"] == 30


# ---------------------------------------------------------------- KL


def test_kl_plugin_equals_the_closed_form_and_is_unbiased_on_gaussians():
    rng = np.random.default_rng(3)
    d = 4
    A = rng.standard_normal((d, d)) + 2 * np.eye(d)
    S1, S2 = np.eye(d), A @ A.T / 4
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    truth = 0.5 * (np.trace(np.linalg.solve(S2, S1)) + (mu2 - mu1) @ np.linalg.solve(S2, mu2 - mu1) - d
                   + np.linalg.slogdet(S2)[1] - np.linalg.slogdet(S1)[1])
    exact = gaussian_kl(mu1, S1, 10**9, mu2, S2, 10**9)
    assert exact["kl_ref_query_plugin"] == pytest.approx(truth, rel=1e-12)
    assert exact["kl_ref_query"] == pytest.approx(truth, rel=1e-6)
    n, draws = 30, 400
    L1, L2 = np.linalg.cholesky(S1), np.linalg.cholesky(S2)
    plug, unb = [], []
    for _ in range(draws):
        X = rng.standard_normal((n, d)) @ L1.T + mu1
        Y = rng.standard_normal((n, d)) @ L2.T + mu2
        k = gaussian_kl(X.mean(0), np.cov(X, rowvar=False), n, Y.mean(0), np.cov(Y, rowvar=False), n)
        plug.append(k["kl_ref_query_plugin"])
        unb.append(k["kl_ref_query"])
    se = np.std(unb) / math.sqrt(draws)
    assert abs(np.mean(unb) - truth) < 4 * se  # unbiased under Gaussian rows
    assert np.mean(plug) - truth > 4 * se  # the plug-in is biased upward at n = 30, d = 4


def test_kl_rank_deficient_works_in_the_common_subspace():
    rng = np.random.default_rng(4)
    B = rng.standard_normal((3, 8))
    X, Y = rng.standard_normal((50, 3)) @ B, rng.standard_normal((60, 3)) @ B + 0.1
    k = gaussian_kl(X.mean(0), np.cov(X, rowvar=False), 50, Y.mean(0), np.cov(Y, rowvar=False), 60)
    assert k["rank"] == 3 and k["projected"]
    assert np.isfinite(k["kl_ref_query"]) and k["kl_ref_query_plugin"] > 0


# ---------------------------------------------------------------- CMMD


def _cmmd_reference(x, y, sigma=10.0, scale=1000.0):
    """google-research/cmmd distance.mmd in numpy (float64), on L2-normalised rows."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    xs, ys = np.diag(x @ x.T), np.diag(y @ y.T)
    gamma = 1 / (2 * sigma ** 2)
    k_xx = np.mean(np.exp(-gamma * (-2 * x @ x.T + xs[:, None] + xs[None, :])))
    k_xy = np.mean(np.exp(-gamma * (-2 * x @ y.T + xs[:, None] + ys[None, :])))
    k_yy = np.mean(np.exp(-gamma * (-2 * y @ y.T + ys[:, None] + ys[None, :])))
    return scale * (k_xx + k_yy - 2 * k_xy)


def test_cmmd_equals_the_reference_formula_in_tiles(monkeypatch):
    import whitenclip.comparison.kernel as kernel

    monkeypatch.setattr(kernel, "TILE_ROWS", 64)  # several tiles per side, uneven last tile
    rng = np.random.default_rng(5)
    X, Y = _features(300, 16, rng) + 2, _features(250, 16, rng, shift=0.5) + 2
    out = cmmd(X, Y)
    assert out["cmmd"] == pytest.approx(_cmmd_reference(X, Y), rel=1e-6)
    # unbiased U-statistic: diagonals out
    x = X / np.linalg.norm(X, axis=1, keepdims=True)
    y = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    K = lambda a, b: np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / 200)  # noqa: E731
    kxx, kyy = K(x, x), K(y, y)
    u = (kxx.sum() - 300) / (300 * 299) + (kyy.sum() - 250) / (250 * 249) - 2 * K(x, y).mean()
    assert out["cmmd_unbiased"] == pytest.approx(1000 * u, rel=1e-6)
    assert out["ci"][0] < out["cmmd"] < out["ci"][1]


# ---------------------------------------------------------------- PRDC


def test_prdc_equals_the_prdc_package(monkeypatch, capsys):
    ref = pytest.importorskip("prdc")
    import whitenclip.comparison.items as items

    monkeypatch.setattr(items, "BLOCK_ROWS", 37)
    rng = np.random.default_rng(6)
    real, fake = _features(200, 8, rng), _features(150, 8, rng, shift=0.4)
    want = ref.compute_prdc(real, fake, 5)
    capsys.readouterr()  # compute_prdc prints the set sizes
    got = prdc(real, fake, 5)
    for key in ("precision", "recall", "density", "coverage"):
        assert got[key] == pytest.approx(float(want[key]), abs=1e-12), key
    np.testing.assert_allclose(knn_radii(real, 5), ref.prdc.compute_nearest_neighbour_distances(real, 5), rtol=1e-9)


# ---------------------------------------------------------------- permutation test


def test_permutation_test_holds_its_level_and_has_power():
    """200 null splits of one pool: rejected at 0.05 in 2-9%; a shifted law: always rejected."""
    rng = np.random.default_rng(7)
    pool = np.abs(rng.standard_t(3, size=(2000, 8))) + 0.5  # heavy-tailed, not Gaussian
    rejected = 0
    for s in range(200):
        idx = np.random.default_rng(s).permutation(2000)[:80]
        r = permutation_test(pool[idx[:40]], pool[idx[40:]], n_permutations=99, features=48, seed=s)
        rejected += r["pvalue"] <= 0.05
    assert 4 <= rejected <= 18
    shifted = permutation_test(pool[:200], pool[200:400] + np.r_[1.0, np.zeros(7)], n_permutations=99, seed=0)
    assert shifted["pvalue"] == pytest.approx(0.01)


def test_group_permutation_respects_groups():
    """Rows of a group share a random effect: the row-wise test rejects far too often; permuting whole
    groups holds the level (and every permutation keeps groups whole)."""
    rng_pool = np.random.default_rng(8)
    centres = rng_pool.standard_normal((400, 6)) * 2
    pool = np.repeat(centres, 5, axis=0) + 0.3 * rng_pool.standard_normal((2000, 6)) + 5
    gid = np.repeat(np.arange(400), 5).astype(str)
    row_rej = grp_rej = 0
    for s in range(60):
        g = np.random.default_rng(s).permutation(400)
        a, b = np.isin(gid.astype(int), g[:20]), np.isin(gid.astype(int), g[20:40])
        row_rej += permutation_test(pool[a], pool[b], n_permutations=49, features=48, seed=s)["pvalue"] <= 0.05
        grp_rej += permutation_test(pool[a], pool[b], groups_x=gid[a], groups_y=gid[b], n_permutations=49,
                                    features=48, seed=s)["pvalue"] <= 0.05
    assert row_rej >= 15
    assert grp_rej <= 9


def test_subsample_keeps_whole_groups():
    X = np.arange(100.0)[:, None]
    groups = [str(i // 4) for i in range(100)]
    S, g = subsample(X, groups, 30, np.random.default_rng(0))
    assert S.shape[0] <= 30 and S.shape[0] % 4 == 0
    assert all(g.count(k) == 4 for k in set(g))


# ---------------------------------------------------------------- items


def test_bh_qvalues_equal_scipy():
    stats = pytest.importorskip("scipy.stats")
    if not hasattr(stats, "false_discovery_control"):
        pytest.skip("scipy < 1.11")
    p = np.random.default_rng(9).uniform(size=500) ** 3
    np.testing.assert_allclose(bh_qvalues(p), stats.false_discovery_control(p), rtol=1e-12)


def test_flagged_items_are_the_out_of_law_rows():
    rng = np.random.default_rng(10)
    ref, q = rng.standard_normal((2000, 5)), rng.standard_normal((200, 5))
    q[:10] += 6.0
    ids = [f"row{i}" for i in range(200)]
    res = compare(ref, q, query_ids=ids, n_permutations=19, verdict=False, fdr=0.1).queries[0]
    flagged = {item["id"] for item in res.flagged}
    assert {f"row{i}" for i in range(10)} <= flagged
    assert len(flagged - {f"row{i}" for i in range(10)}) <= 3


def test_flagged_items_hold_at_fewer_reference_rows_than_dimensions():
    """n_ref < d (a first experiment): the reference whitener shrinks as `fit`'s default does, so the
    calibration is not degenerate and junk query rows are flagged (with the library's unshrunk default
    every leave-one-out distance is infinite and nothing could be flagged)."""
    rng = np.random.default_rng(11)
    scales = 1.0 / np.arange(1, 257)
    ref = rng.standard_normal((200, 256)) * scales
    q = rng.standard_normal((30, 256)) * scales
    q[:5] += 3.0 * rng.standard_normal((5, 256))
    res = compare(ref, q, query_ids=[f"q{i}" for i in range(30)], n_permutations=19, verdict=False, fdr=0.1)
    query = res.queries[0]
    assert any("shrinkage auto: oas" in n for n in query.notes)
    assert not any("degenerate" in n for n in query.notes)
    assert {f"q{i}" for i in range(5)} <= {item["id"] for item in query.flagged}


def test_negative_bias_corrected_kl_is_not_shown_as_a_divergence():
    from whitenclip.render.compare import _kl

    assert _kl(-0.28) == "~0 (estimate -0.28 < 0)" and _kl(63.53) == "63.53" and _kl(None) == "-"


# ---------------------------------------------------------------- API and CLI


def test_compare_ranks_queries_and_runs_from_moments():
    from whitenclip.moments import Moments

    rng = np.random.default_rng(11)
    ref = rng.standard_normal((400, 6))
    near, far = rng.standard_normal((300, 6)) + 0.1, rng.standard_normal((300, 6)) + 1.0
    r = whitenclip.compare(ref, [far, near], names=["r", "far", "near"], n_permutations=19, verdict=False)
    assert [q.name for q in r.queries] == ["far", "near"] and [q.rank for q in r.queries] == [2, 1]
    m = compare(Moments.from_array(ref), Moments.from_array(far), verdict=False).queries[0]
    assert m.fd == pytest.approx(r.queries[0].fd, rel=1e-9)
    assert m.kl_ref_query == pytest.approx(r.queries[0].kl_ref_query, rel=1e-9)
    assert m.cmmd is None and m.pvalue is None and m.fd_inf is None


def test_cli_json_one_object_per_query_in_order(tmp_path):
    rng = np.random.default_rng(12)
    paths = []
    for name, shift in (("ref", 0.0), ("q_far", 1.0), ("q_near", 0.0)):
        p = tmp_path / f"{name}.npy"
        np.save(p, rng.standard_normal((120, 5)) + shift)
        paths.append(str(p))
    out = CliRunner().invoke(app, ["compare", *paths, "--json", "--permutations", "19", "--no-verdict"])
    assert out.exit_code == 0, out.output
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [d["name"] for d in lines] == paths[1:]
    for d in lines:
        for key in ("fd", "cmmd", "pvalue", "n_ref", "n_query", "fd_inf_ci", "cmmd_ci", "assumes"):
            assert key in d
        assert d["n_ref"] == 120 and d["n_query"] == 120
    assert lines[0]["rank"] == 2 and lines[1]["rank"] == 1
    assert lines[0]["pvalue"] == pytest.approx(0.05)


def test_cli_table_escapes_names_and_refuses_bad_input(tmp_path):
    rng = np.random.default_rng(13)
    ref, q = tmp_path / "[bold]ref.npy", tmp_path / "q.npy"
    np.save(ref, rng.standard_normal((60, 4)))
    np.save(q, rng.standard_normal((60, 3)))
    out = CliRunner().invoke(app, ["compare", str(ref), str(q), "--no-verdict"])
    assert out.exit_code == 2
    assert "dimension 3" in out.output and "Traceback" not in out.output
    np.save(q, rng.standard_normal((60, 4)))
    out = CliRunner().invoke(app, ["compare", str(ref), str(q), "--no-verdict", "--permutations", "9"])
    assert out.exit_code == 0, out.output
    assert "[bold]ref.npy" in out.stdout


def test_score_fdr_adds_bh_qvalues_of_the_conformal_pvalues(tmp_path):
    stats = pytest.importorskip("scipy.stats")
    if not hasattr(stats, "false_discovery_control"):
        pytest.skip("scipy < 1.11")
    rng = np.random.default_rng(14)
    ref, q = tmp_path / "ref.npy", tmp_path / "q.npy"
    np.save(ref, rng.standard_normal((300, 4)))
    np.save(q, np.concatenate([rng.standard_normal((40, 4)), rng.standard_normal((5, 4)) + 5]))
    w = tmp_path / "w.safetensors"
    assert CliRunner().invoke(app, ["fit", str(ref), "-o", str(w), "-q"]).exit_code == 0
    out = CliRunner().invoke(app, ["score", str(q), "-w", str(w), "--fdr", "0.1", "-f", "jsonl"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    p = np.array([r["pvalue_conformal"] for r in rows])
    np.testing.assert_allclose([r["qvalue"] for r in rows], stats.false_discovery_control(p), rtol=1e-12)
    assert all(r["qvalue"] <= 0.1 for r in rows[40:])
    assert "rows have qvalue <= 0.1" in out.stderr
    bad = CliRunner().invoke(app, ["score", str(q), "-w", str(w), "--fdr", "1.5"])
    assert bad.exit_code == 2 and "--fdr must be in (0, 1)" in bad.output


def test_cli_compares_moments_files_with_fd_and_kl_only(tmp_path):
    rng = np.random.default_rng(15)
    ref, q = tmp_path / "ref.npy", tmp_path / "q.npy"
    X, Y = rng.standard_normal((200, 4)), rng.standard_normal((150, 4)) + 0.5
    np.save(ref, X)
    np.save(q, Y)
    m = tmp_path / "ref.moments.safetensors"
    assert CliRunner().invoke(app, ["moments", str(ref), "-o", str(m), "-q"]).exit_code == 0
    out = CliRunner().invoke(app, ["compare", str(m), str(q), "--json", "--no-verdict"])
    assert out.exit_code == 0, out.output
    d = json.loads(out.stdout)
    want = frechet_distance(X.mean(0), np.cov(X, rowvar=False), Y.mean(0), np.cov(Y, rowvar=False))
    assert d["fd"] == pytest.approx(want, rel=1e-9)
    assert d["kl_ref_query"] is not None and d["cmmd"] is None and d["pvalue"] is None
    assert any("moments only" in n for n in d["notes"])


def test_notebook_fragment_escapes_names():
    rng = np.random.default_rng(16)
    r = compare(rng.standard_normal((40, 3)), rng.standard_normal((40, 3)), names=["<b>ref", "q<script>"],
                n_permutations=9, verdict=False)
    page = r._repr_html_()
    assert "&lt;script&gt;" in page and "<script>" not in page and "&lt;b&gt;ref" in page
    assert page.startswith("<div") and "fd (95% CI)" in page
