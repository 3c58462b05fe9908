"""The sharded path: local and Dask engines, moments/merge-moments, resume, faults, bad shards.

One ``LocalCluster(n_workers=2, threads_per_worker=1)`` serves the whole module; CLI runs reach
it with ``--scheduler``. Equality with today's single-process fit is to 1e-12 relative.
"""

import json
import os
import re

import numpy as np
import pytest
from conftest import rel, same_whitener
from typer.testing import CliRunner

from whitenclip import engine
from whitenclip.cli import app
from whitenclip.errors import InputError
from whitenclip.moments import Moments, MomentsPart
from whitenclip.whitening import Whitener

runner = CliRunner()
SIZES = [0, 1, 97, 13, 250, 40]  # a 0-row shard, a 1-row shard, uneven sizes


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    rng = np.random.default_rng(7)
    d = tmp_path_factory.mktemp("emb")
    (d / "img_emb").mkdir()
    Q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    parts = []
    for i, n in enumerate(SIZES):
        X = (3.0 + (rng.standard_normal((n, 12)) * np.geomspace(5, 0.1, 12)) @ Q.T).astype(np.float32)
        np.save(d / "img_emb" / f"img_emb_{i}.npy", X)
        parts.append(X)
    X = np.concatenate(parts)
    np.save(d / "all.npy", X)
    return d, X.astype(np.float64)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    distributed = pytest.importorskip("distributed")
    marker = tmp_path_factory.mktemp("fault") / "killed"
    marker.write_text("")  # present: fault injection off until a test removes it
    blas1 = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", engine.FAULT_ENV: str(marker)}
    c = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                 silence_logs=50, env=blas1)
    client = distributed.Client(c)
    yield client, c.scheduler_address, marker
    client.close()
    c.close()


def opts(**kw):
    kw.setdefault("piece_rows", 32)
    kw.setdefault("chunk_rows", 10)
    return engine.EngineOptions(**kw)


# ---------------------------------------------------------------------------------------
# local engine
# ---------------------------------------------------------------------------------------
def test_local_engine_equals_one_shot(shards):
    d, X = shards
    part = engine.compute_moments([d / "img_emb"], opts())
    ref = Moments.from_array(X)
    assert part.n == X.shape[0] and part.stats["pieces"] == len(engine.plan([d / "img_emb"], opts())[1])
    assert rel(part.mean, ref.mean) < 1e-12 and rel(part.scatter, ref.scatter) < 1e-12
    wh, _ = engine.fit_whitener([d / "img_emb"], opts(), shrinkage="ledoit-wolf")
    same_whitener(wh, Whitener(shrinkage="ledoit-wolf").fit(X))


def test_fortran_ordered_npy_on_the_sharded_path_equals_local(shards, tmp_path):
    d, X = shards
    np.save(tmp_path / "f.npy", np.asfortranarray(X))
    part = engine.compute_moments([tmp_path / "f.npy"], opts())
    ref = Moments.from_array(X)
    assert part.n == X.shape[0] and part.stats["pieces"] == 1
    assert rel(part.mean, ref.mean) < 1e-12 and rel(part.scatter, ref.scatter) < 1e-12
    assert run("moments", tmp_path / "f.npy", "-o", tmp_path / "f.moments.safetensors").exit_code == 0


def test_moments_merge_fit_cli_equals_fit(shards, tmp_path):
    d, X = shards
    assert run("fit", d / "all.npy", "-o", tmp_path / "w.safetensors").exit_code == 0
    e = d / "img_emb"
    a = run("moments", e / "img_emb_[0-2].npy", "-o", tmp_path / "a.moments.safetensors", "--piece-rows", 40)
    b = run("moments", e / "img_emb_3.npy", e / "img_emb_4.npy", e / "img_emb_5.npy",
            "-o", tmp_path / "b.moments.safetensors")
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    for order in (("a", "b"), ("b", "a")):
        res = run("merge-moments", *(tmp_path / f"{k}.moments.safetensors" for k in order),
                  "-o", tmp_path / "all.moments.safetensors")
        assert res.exit_code == 0, res.output
        assert run("fit", tmp_path / "all.moments.safetensors", "-o", tmp_path / "wm.safetensors").exit_code == 0
        same_whitener(Whitener.load(tmp_path / "wm.safetensors"), Whitener.load(tmp_path / "w.safetensors"))
    meta = Whitener.load(tmp_path / "wm.safetensors").metadata_
    assert meta["inputs_hash"] == MomentsPart.load(tmp_path / "all.moments.safetensors").input_hash
    # entropy from moments: the same Gaussian estimate as from the rows
    res = run("entropy", tmp_path / "all.moments.safetensors", "--json")
    ref = run("entropy", d / "all.npy", "--json")
    got, want = json.loads(res.stdout), json.loads(ref.stdout)
    assert got["entropy"] == pytest.approx(want["entropy"], rel=1e-10) and got["rank"] == want["rank"]
    assert got["ci_method"] == "gaussian" and got["knn"] is None


def test_merge_refusals_exit_2_naming_the_file(shards, tmp_path, monkeypatch):
    d, X = shards
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "other.npy", X[:, :5])
    run("moments", d / "all.npy", "-o", "a.moments.safetensors")
    run("moments", tmp_path / "other.npy", "-o", "o.moments.safetensors")
    res = run("merge-moments", "a.moments.safetensors", "a.moments.safetensors", "-o", "x.moments.safetensors")
    assert res.exit_code == 2 and "a.moments.safetensors" in res.output and "twice" in res.output
    res = run("merge-moments", "a.moments.safetensors", "o.moments.safetensors", "-o", "x.moments.safetensors")
    assert res.exit_code == 2 and "o.moments.safetensors: moments of dimension 5" in res.output
    a = MomentsPart.load("a.moments.safetensors")
    a.meta["modality"], a.inputs = "image", ["other"]
    a.save("i.moments.safetensors")
    res = run("merge-moments", "a.moments.safetensors", "i.moments.safetensors", "-o", "x.moments.safetensors")
    assert res.exit_code == 2 and "i.moments.safetensors: modality='image'" in " ".join(res.output.split())
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("bad, message", [
    ("nan", r"bad\.npy: row 5 holds NaN or inf"),
    ("dim", r"bad\.npy: rows have dimension 11"),
    ("truncated", r"bad\.npy: truncated at row 2"),
])
def test_bad_shard_exit_2_and_no_output(shards, tmp_path, bad, message):
    d, X = shards
    src = tmp_path / "src"
    src.mkdir()
    np.save(src / "a.npy", X[:30].astype(np.float32))
    Y = X[:9].astype(np.float32)
    if bad == "nan":
        Y[5, 3] = np.nan
        np.save(src / "bad.npy", Y)
    elif bad == "dim":
        np.save(src / "bad.npy", Y[:, :11])
    else:
        np.save(src / "bad.npy", Y)
        os.truncate(src / "bad.npy", 128 + 2 * 48 + 7)
    for cmd in (("fit", src, "-o", tmp_path / "w.safetensors"), ("moments", src, "-o", tmp_path / "m.safetensors")):
        res = run(*cmd)
        assert res.exit_code == 2, res.output
        assert re.search(message, " ".join(res.output.split())), res.output
        assert not cmd[-1].exists()


def test_moments_dir_resumes(shards, tmp_path):
    d, X = shards
    o = opts(moments_dir=tmp_path / "parts")
    first = engine.compute_moments([d / "img_emb"], o)
    saved = sorted(os.listdir(tmp_path / "parts"))
    assert len(saved) == first.stats["pieces"] and first.stats["resumed"] == 0
    os.remove(tmp_path / "parts" / saved[2])  # as if the run died before that piece
    again = engine.compute_moments([d / "img_emb"], o)
    assert again.stats["resumed"] == len(saved) - 1
    np.testing.assert_array_equal(again.scatter, first.scatter)
    assert again.inputs == first.inputs


# ---------------------------------------------------------------------------------------
# dask engine
# ---------------------------------------------------------------------------------------
def test_dask_fit_equals_local(cluster, shards, tmp_path):
    client, address, _ = cluster
    d, X = shards
    local = engine.compute_moments([d / "img_emb"], opts())
    remote = engine.compute_moments([d / "img_emb"], opts(engine="dask", client=client))
    assert remote.n == local.n and remote.inputs == local.inputs
    assert rel(remote.scatter, local.scatter) < 1e-12 and rel(remote.mean, local.mean) < 1e-12
    assert remote.power4 == pytest.approx(local.power4, rel=1e-12)
    # the CLI on the same cluster (--scheduler) equals today's single-process fit
    assert run("fit", d / "all.npy", "-o", tmp_path / "w.safetensors").exit_code == 0
    res = run("fit", d / "img_emb", "-o", tmp_path / "wd.safetensors", "--engine", "dask", "--scheduler", address)
    assert res.exit_code == 0, res.output
    same_whitener(Whitener.load(tmp_path / "wd.safetensors"), Whitener.load(tmp_path / "w.safetensors"))
    res = run("moments", d / "img_emb", "-o", tmp_path / "m.moments.safetensors", "--engine", "dask",
              "--scheduler", address)
    assert res.exit_code == 0, res.output
    assert run("fit", tmp_path / "m.moments.safetensors", "-o", tmp_path / "wm.safetensors").exit_code == 0
    same_whitener(Whitener.load(tmp_path / "wm.safetensors"), Whitener.load(tmp_path / "w.safetensors"))


def test_dask_worker_killed_is_retried(cluster, shards):
    client, _, marker = cluster
    d, X = shards
    expected = engine.compute_moments([d / "img_emb"], opts())
    marker.unlink()  # the next piece task creates it and kills its own worker process
    got = engine.compute_moments([d / "img_emb"], opts(engine="dask", client=client))
    assert marker.exists(), "no worker was killed"
    assert got.inputs == expected.inputs
    assert rel(got.scatter, expected.scatter) < 1e-12 and got.n == expected.n


def test_dask_bad_shard_raises_input_error(cluster, shards, tmp_path):
    client, _, _ = cluster
    d, X = shards
    Y = X[:40].copy()
    Y[33] = np.inf
    np.save(tmp_path / "bad.npy", Y)
    with pytest.raises(InputError, match=r"bad\.npy: row 33 holds NaN"):
        engine.compute_moments([d / "all.npy", tmp_path / "bad.npy"], opts(engine="dask", client=client))


def test_dask_score_in_input_order_and_per_shard(cluster, shards, tmp_path):
    client, address, _ = cluster
    d, X = shards
    assert run("fit", d / "all.npy", "-o", tmp_path / "w.safetensors").exit_code == 0
    local = run("score", d / "img_emb", "-w", tmp_path / "w.safetensors")
    remote = run("score", d / "img_emb", "-w", tmp_path / "w.safetensors", "--engine", "dask", "--scheduler", address)
    plain = run("score", d / "all.npy", "-w", tmp_path / "w.safetensors")
    assert local.exit_code == remote.exit_code == 0, remote.output
    assert local.stdout == remote.stdout
    values = [np.array(line.split("\t")[1:], dtype=float) for line in remote.stdout.splitlines()[1:]]
    expect = [np.array(line.split("\t")[1:], dtype=float) for line in plain.stdout.splitlines()[1:]]
    assert len(values) == len(expect) == X.shape[0]
    np.testing.assert_allclose(np.array(values), np.array(expect), rtol=1e-12)  # same rows, same order
    (tmp_path / "out").mkdir()
    res = run("score", d / "img_emb", "-w", tmp_path / "w.safetensors", "-o", tmp_path / "out", "--engine", "dask",
              "--scheduler", address)
    assert res.exit_code == 0, res.output
    counts = {p: len((tmp_path / "out" / p).read_text().splitlines()) - 1 for p in os.listdir(tmp_path / "out")}
    assert counts == {f"img_emb_{i}.tsv": n for i, n in enumerate(SIZES)}


def test_dask_gaussianity_report_equals_local(cluster, shards):
    client, address, _ = cluster
    d, X = shards
    args = ("--json", "--trials", "2", "--subset", "50", "--projections", "20", "--seed", "3")
    local = run("gaussianity-report", d / "all.npy", *args)
    remote = run("gaussianity-report", d / "img_emb", *args, "--engine", "dask", "--scheduler", address)
    assert local.exit_code == remote.exit_code == 0, remote.output
    assert json.loads(local.stdout) == json.loads(remote.stdout)


def test_dask_local_cluster_from_cli(shards, tmp_path):
    """--engine dask --workers N starts (and closes) its own LocalCluster."""
    pytest.importorskip("distributed")
    d, X = shards
    res = run("moments", d / "all.npy", "-o", tmp_path / "m.safetensors", "--engine", "dask", "--workers", "1",
              "--piece-rows", "150")
    assert res.exit_code == 0, res.output
    assert "3 piece(s) of at most 150 rows on the dask engine" in res.output
    assert run("fit", tmp_path / "m.safetensors", "-o", tmp_path / "w.safetensors").exit_code == 0
    same_whitener(Whitener.load(tmp_path / "w.safetensors"), Whitener().fit(X))
    res = run("fit", d / "all.npy", "-o", tmp_path / "w1.safetensors", "--engine", "dask")  # one piece: no cluster
    assert res.exit_code == 0 and "one piece: running it in this process" in res.output
    assert run("fit", d / "all.npy", "-o", tmp_path / "x", "--workers", "2").exit_code == 2  # needs --engine dask


def test_sharded_fits_carry_the_conformal_calibration(shards, cluster, tmp_path, monkeypatch):
    """The pieces' reservoirs merge into one sample: with every row kept (n <= m) the calibration
    distances equal the single-process fit's; with a smaller m, `fit --engine dask` and
    `moments` per shard + `merge-moments` + `fit` keep exactly the same sample."""
    d, X = shards
    _, address, _ = cluster
    monkeypatch.chdir(tmp_path)
    ref = Whitener().fit(X)
    assert run("fit", d / "img_emb", "-o", "w.safetensors", "--scheduler", address, "--engine", "dask").exit_code == 0
    got = Whitener.load("w.safetensors").calibration_
    assert got.shape == ref.calibration_.shape == (X.shape[0],)
    np.testing.assert_allclose(got, ref.calibration_, rtol=1e-9)
    # m = 50 of 401 rows: the same 50 rows whichever way the pieces are grouped
    res = run("fit", d / "img_emb", "-o", "w50.safetensors", "--calibration-rows", 50, "--engine", "dask",
              "--scheduler", address)
    assert res.exit_code == 0, res.output
    for i in range(1, len(SIZES)):  # shard 0 is empty: `moments` refuses it, and it holds no rows
        assert run("moments", d / "img_emb" / f"img_emb_{i}.npy", "-o", f"p{i}.moments.safetensors",
                   "--calibration-rows", 50).exit_code == 0
    parts = [f"p{i}.moments.safetensors" for i in (3, 5, 1, 4, 2)]  # any order
    assert run("merge-moments", *parts, "-o", "all.moments.safetensors").exit_code == 0
    assert run("fit", "all.moments.safetensors", "-o", "wm.safetensors", "--calibration-rows", 50).exit_code == 0
    a, b = Whitener.load("w50.safetensors"), Whitener.load("wm.safetensors")
    assert a.calibration_.shape == (50,)
    np.testing.assert_allclose(a.calibration_, b.calibration_, rtol=1e-9)
    # a part without a sample makes the merged sample partial: it is dropped, not used
    assert run("moments", d / "img_emb" / "img_emb_2.npy", "-o", "bare.moments.safetensors",
               "--calibration-rows", 0).exit_code == 0
    parts[parts.index("p2.moments.safetensors")] = "bare.moments.safetensors"
    assert run("merge-moments", *parts, "-o", "mixed.moments.safetensors").exit_code == 0
    assert run("fit", "mixed.moments.safetensors", "-o", "wx.safetensors").exit_code == 0
    assert Whitener.load("wx.safetensors").calibration_ is None


# ---------------------------------------------------------------------------------------
# issue 14 §1: no data loss on the sharded path
# ---------------------------------------------------------------------------------------
def _score_values(text):
    return np.array([line.split("\t")[1:] for line in text.splitlines()[1:]], dtype=float)


def test_score_dir_names_unique_per_input(cluster, shards, tmp_path):
    """Two inputs holding the same shard names: each keeps its own file (A/..., B/...), all rows kept."""
    _, address, _ = cluster
    d, X = shards
    for k, name in enumerate("AB"):
        (tmp_path / name).mkdir()
        for i in range(2):
            np.save(tmp_path / name / f"shard-0000{i}.npy", X[100 * (2 * k + i):100 * (2 * k + i + 1)])
    np.save(tmp_path / "all.npy", X[:400])
    assert run("fit", d / "all.npy", "-o", tmp_path / "w.safetensors").exit_code == 0
    res = run("score", tmp_path / "A", tmp_path / "B", "-w", tmp_path / "w.safetensors", "--engine", "dask",
              "--scheduler", address, "-o", f"{tmp_path / 'scores'}/")
    assert res.exit_code == 0, res.output
    assert "scored 400 rows" in res.stderr
    files = sorted(p.relative_to(tmp_path / "scores").as_posix() for p in (tmp_path / "scores").rglob("*.tsv"))
    assert files == ["A/shard-00000.tsv", "A/shard-00001.tsv", "B/shard-00000.tsv", "B/shard-00001.tsv"]
    got = np.concatenate([_score_values((tmp_path / "scores" / f).read_text()) for f in files])
    want = _score_values(run("score", tmp_path / "all.npy", "-w", tmp_path / "w.safetensors").stdout)
    np.testing.assert_allclose(got, want, rtol=1e-12)  # A's 200 rows then B's 200 rows, none overwritten
    # the same input twice, or two shards whose names still clash: refused before any work
    res = run("score", tmp_path / "A", tmp_path / "A", "-w", tmp_path / "w.safetensors", "-o", f"{tmp_path}/twice/")
    assert res.exit_code == 2 and "given twice" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    np.save(tmp_path / "A" / "shard-00000.safetensors.npy", X[:3])  # harmless: another stem
    from safetensors.numpy import save_file

    save_file({"embeddings": X[:5].astype(np.float32)}, tmp_path / "A" / "shard-00001.safetensors")
    res = run("score", tmp_path / "A", "-w", tmp_path / "w.safetensors", "-o", f"{tmp_path}/clash/")
    assert res.exit_code == 2 and "clashes" in res.stderr, res.output
    assert not (tmp_path / "twice").exists() and not (tmp_path / "clash").exists()


def test_score_dir_never_writes_over_an_input(tmp_path):
    """`score tv/vecs.tsv --engine dask -o tv/` would write tv/vecs.tsv: refused, the input intact."""
    rng = np.random.default_rng(3)
    tv = tmp_path / "tv"
    tv.mkdir()
    X = rng.standard_normal((50, 4))
    np.save(tmp_path / "x.npy", X)
    assert run("fit", tmp_path / "x.npy", "-o", tmp_path / "w.safetensors").exit_code == 0
    (tv / "vecs.tsv").write_text("".join(" ".join(f"{v:.6f}" for v in row) + "\n" for row in X[:20]))
    before = (tv / "vecs.tsv").read_bytes()
    for out in (tv, f"{tv}/", f"{tmp_path}/tv/../tv/"):
        res = run("score", tv / "vecs.tsv", "-w", tmp_path / "w.safetensors", "--engine", "dask", "-o", out)
        assert res.exit_code == 2, res.output
        assert "vecs.tsv: is also an input" in res.stderr and len(res.stderr.strip().splitlines()) == 1
        assert (tv / "vecs.tsv").read_bytes() == before
    # and the whitener is protected too: a shard named like it
    (tmp_path / "ws").mkdir()
    np.save(tmp_path / "ws" / "w.npy", X[:10])
    (tmp_path / "ws" / "w.tsv").symlink_to(tmp_path / "w.safetensors")
    res = run("score", tmp_path / "ws", "-w", tmp_path / "ws" / "w.tsv", "-o", tmp_path / "ws")
    assert res.exit_code == 2 and "is also an input" in res.stderr, res.output


def _rewrite_keeping_size_and_mtime(path, Y):
    st = os.stat(path)
    np.save(path, Y)
    assert os.path.getsize(path) == st.st_size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # what `cp -p` and `rsync -a` do


def test_moments_dir_reuses_a_piece_only_when_its_bytes_match(tmp_path):
    rng = np.random.default_rng(5)
    src = tmp_path / "src"
    src.mkdir()
    X1, X2, B = rng.standard_normal((60, 6)) * 0.1, rng.standard_normal((60, 6)) + 2.67, rng.standard_normal((30, 6))
    np.save(src / "a.npy", X1)
    np.save(src / "b.npy", B)
    o = opts(moments_dir=tmp_path / "parts", piece_rows=25)
    first = engine.compute_moments([src], o)
    assert first.stats["resumed"] == 0 and first.mean == pytest.approx(np.concatenate([X1, B]).mean(0))
    # new content, same size and mtime: every piece of a.npy is recomputed, b.npy's reused
    _rewrite_keeping_size_and_mtime(src / "a.npy", X2)
    again = engine.compute_moments([src], o)
    np.testing.assert_allclose(again.mean, np.concatenate([X2, B]).mean(0), rtol=1e-12)
    np.testing.assert_allclose(again.scatter, Moments.from_array(np.concatenate([X2, B])).scatter, rtol=1e-10)
    assert again.stats["resumed"] == 2  # b.npy's 2 pieces
    assert len(os.listdir(tmp_path / "parts")) == first.stats["pieces"]  # stale parts replaced, not piled up
    # the same bytes, touched: still resumed (size and mtime are not the evidence; the bytes are)
    os.utime(src / "b.npy")
    assert engine.compute_moments([src], o).stats["resumed"] == first.stats["pieces"]
    # through the CLI: the rerun fits the new mean
    res = run("fit", src / "a.npy", "-o", tmp_path / "w.safetensors", "--moments-dir", tmp_path / "p2",
              "--engine", "dask")
    assert res.exit_code == 0, res.output
    _rewrite_keeping_size_and_mtime(src / "a.npy", X1)
    res = run("fit", src / "a.npy", "-o", tmp_path / "w.safetensors", "--moments-dir", tmp_path / "p2",
              "--engine", "dask")
    assert res.exit_code == 0 and "resumed" not in res.stderr, res.output
    np.testing.assert_allclose(Whitener.load(tmp_path / "w.safetensors").mean_, X1.mean(0), rtol=1e-12)


def test_piece_content_hash_equals_the_hash_taken_while_reading(shards, tmp_path):
    d, X = shards
    np.savez(tmp_path / "z.npz", embeddings=X[:30])
    np.save(tmp_path / "f.npy", np.asfortranarray(X[:30]))
    for inp in (d / "img_emb", tmp_path / "z.npz", tmp_path / "f.npy"):
        _, pieces = engine.plan([inp], opts())
        for p in pieces:
            part = engine.piece_moments(p, meta={}, chunk_rows=7)
            assert engine.piece_content_hash(p, chunk_rows=5) == part.inputs[0]


def test_moments_dir_inside_an_input_is_refused(shards, tmp_path):
    d, X = shards
    src = tmp_path / "emb"
    src.mkdir()
    np.save(src / "a.npy", X[:40])
    np.save(src / "b.npy", X[40:90])
    for cmd, mdir in [(("fit", src, "-o", tmp_path / "w.safetensors"), src),
                      (("fit", src, "-o", tmp_path / "w.safetensors"), src / "parts"),
                      (("moments", src / "a.npy", "-o", tmp_path / "m.moments.safetensors"), src),
                      (("moments", f"{src}/*.npy", "-o", tmp_path / "m.moments.safetensors"), src),
                      (("entropy", src, "--json"), src / "parts" / "deeper")]:
        res = run(*cmd, "--moments-dir", mdir)
        assert res.exit_code == 2, res.output
        assert "--moments-dir" in res.stderr and "outside the inputs" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
        assert sorted(os.listdir(src)) == ["a.npy", "b.npy"]  # nothing written into the input
        assert not (tmp_path / "w.safetensors").exists()
    (tmp_path / "file").write_text("x")
    res = run("fit", src, "-o", tmp_path / "w.safetensors", "--moments-dir", tmp_path / "file")
    assert res.exit_code == 2 and "not a directory" in res.stderr
    # a folder beside the inputs is fine, and later runs on the input folder still work
    assert run("fit", src, "-o", tmp_path / "w.safetensors", "--moments-dir", tmp_path / "parts").exit_code == 0
    assert run("fit", src, "-o", tmp_path / "w2.safetensors").exit_code == 0


@pytest.mark.parametrize("address", ["foo://x", "tcp://", "host-without-port", "tcp://h:99999"])
def test_bad_scheduler_address_exit_2_one_line(shards, tmp_path, address):
    d, X = shards
    res = run("fit", d / "img_emb", "-o", tmp_path / "w.safetensors", "--engine", "dask", "--scheduler", address)
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "--scheduler" in res.stderr
    assert "internal error" not in res.stderr


def test_score_writes_nothing_to_stdout_before_its_first_row(shards, tmp_path):
    """A run that fails before its first row leaves stdout empty (no orphan header)."""
    d, X = shards
    assert run("fit", d / "all.npy", "-o", tmp_path / "w.safetensors").exit_code == 0
    Y = X[:20].copy()
    Y[0, 0] = np.nan
    (tmp_path / "bad").mkdir()
    np.save(tmp_path / "bad" / "a.npy", Y)
    for extra in ((), ("--engine", "dask")):
        for inp in (tmp_path / "bad" / "a.npy", tmp_path / "bad"):
            res = run("score", inp, "-w", tmp_path / "w.safetensors", *extra)
            assert res.exit_code == 2 and re.search(r"row 0\b.*holds NaN", res.stderr), res.output
            assert res.stdout == ""
    # a sharded run with no rows at all still prints its header (success with 0 rows)
    res = run("score", d / "img_emb" / "img_emb_0.npy", "-w", tmp_path / "w.safetensors", "--engine", "dask")
    assert res.exit_code == 0 and res.stdout.startswith("id\tloglik") and len(res.stdout.splitlines()) == 1


# ---------------------------------------------------------------------------------------
# issue 17 §3: fitting with few rows per dimension
# ---------------------------------------------------------------------------------------
def test_fit_notes_few_rows_per_dimension_once(tmp_path):
    """n < 5 d without shrinkage: one note on stderr (local and sharded paths), and its claims hold on a
    known law: ranking by loglik still separates shifted rows, and oas gives the better held-out density."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(11)
    d = 40
    scale = np.geomspace(3.0, 0.05, d)
    X = rng.standard_normal((44, d)) * scale  # n = 1.1 d
    np.save(tmp_path / "few.npy", X)
    np.save(tmp_path / "many.npy", rng.standard_normal((6 * d, d)) * scale)
    for extra in ((), ("--engine", "dask")):  # --shrinkage none: the default (auto) shrinks here, without a note
        res = run("fit", tmp_path / "few.npy", "-o", tmp_path / "w.safetensors", "--shrinkage", "none", *extra)
        assert res.exit_code == 0 and res.stderr.count("note: 44 rows for 40 dimensions (n < 5 d)") == 1
        assert "ranking rows by loglik still works" in res.stderr and "--shrinkage oas" in res.stderr
        for quiet in (("--shrinkage", "oas"), ()):
            src = "few.npy" if quiet else "many.npy"
            res = run("fit", tmp_path / src, "-o", tmp_path / "w.safetensors", *extra, *quiet)
            assert res.exit_code == 0 and "note:" not in res.stderr
    held = rng.standard_normal((200, d)) * scale
    odd = rng.standard_normal((200, d)) * scale[::-1]  # the same variances, in other directions
    none, oas = Whitener().fit(X), Whitener(shrinkage="oas").fit(X)
    labels = np.r_[np.ones(200), np.zeros(200)]
    assert roc_auc_score(labels, -none.mahalanobis(np.r_[held, odd])) > 0.95
    assert oas.score_samples(held).mean() > none.score_samples(held).mean() + 100  # measured: -41 vs -500


# ---------------------------------------------------------------------------------------
# a format added as one module (whitenclip/readers/hdf5.py): every path equals the .npy one
# ---------------------------------------------------------------------------------------
def test_hdf5_equals_npy_on_fit_moments_and_dask(cluster, shards, tmp_path):
    """The same float32 rows in a chunked, gzip-compressed HDF5 dataset (with an ids dataset) and in
    a .npy: ``fit``, ``moments`` and ``--engine dask`` (pieces of 32 rows read on the workers) agree
    to 1e-12 relative, and the ids come from the file."""
    h5py = pytest.importorskip("h5py")
    client, address, _ = cluster
    d, X = shards
    with h5py.File(tmp_path / "all.h5", "w") as f:
        f.create_dataset("embeddings", data=np.load(d / "all.npy"), chunks=(50, 12), compression="gzip")
        f.create_dataset("ids", data=[f"r{i}" for i in range(len(X))])
    h5, npy = tmp_path / "all.h5", d / "all.npy"
    for name, src in (("npy", npy), ("h5", h5)):
        assert run("fit", src, "-o", tmp_path / f"w-{name}.safetensors").exit_code == 0
        assert run("moments", src, "-o", tmp_path / f"m-{name}.moments.safetensors").exit_code == 0
    same_whitener(Whitener.load(tmp_path / "w-h5.safetensors"), Whitener.load(tmp_path / "w-npy.safetensors"))
    a, b = (MomentsPart.load(tmp_path / f"m-{n}.moments.safetensors") for n in ("h5", "npy"))
    assert a.n == b.n == len(X) and rel(a.mean, b.mean) < 1e-12 and rel(a.scatter, b.scatter) < 1e-12
    res = run("moments", h5, "-o", tmp_path / "m-dask.moments.safetensors", "--engine", "dask", "--scheduler", address,
              "--piece-rows", "100")
    assert res.exit_code == 0, res.output
    c = MomentsPart.load(tmp_path / "m-dask.moments.safetensors")
    assert c.n == len(X) and rel(c.mean, b.mean) < 1e-12 and rel(c.scatter, b.scatter) < 1e-12
    wh, _ = engine.fit_whitener([h5], opts(engine="dask", client=client), shrinkage="ledoit-wolf")
    same_whitener(wh, Whitener(shrinkage="ledoit-wolf").fit(X))
    assert len(engine.plan([h5], opts())[1]) == -(-len(X) // 32)  # row ranges, not one whole-file piece
    res = run("score", h5, "-w", tmp_path / "w-npy.safetensors")
    assert res.exit_code == 0 and res.output.splitlines()[1].startswith("r0\t"), res.output[:200]
