"""Grouped calibration on the sharded path: groups travel with the pieces.

A store that records groups (``embed`` given groups) and ``.npy`` shards with ``--groups FILE``
give the same leave-one-group-out calibration whichever way they are fitted: the local fit,
``fit --engine dask`` (one in-process ``LocalCluster`` serves the module; CLI runs reach it with
``--scheduler``) and ``moments`` + ``merge-moments`` + ``fit PARTS`` agree to 1e-10 in the
calibration distances, the calibration mode and the group counts; the sample is capped below
the data (whole groups, keyed by group id), and groups span shard and piece boundaries.
"""

import numpy as np
import pytest
from typer.testing import CliRunner

from whitenclip import engine
from whitenclip.cli import app
from whitenclip.moments import MomentsPart, Reservoir
from whitenclip.whitening import Whitener, calibration_distances
from whitenclip.writers import StoreWriter

runner = CliRunner()
D, CAL = 6, 120  # calibration sample capped at 120 of ~330 rows: which groups are kept matters
SPLITS = (0, 97, 210)  # shard boundaries (row positions), cutting through groups


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """~330 rows in 110 groups of 1-5 rows (a group mean plus noise), as a store that records
    the groups and as three .npy shards with a groups file."""
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 6, size=110)
    centres = rng.standard_normal((sizes.size, D)) * np.geomspace(3, 0.5, D)
    X = np.concatenate([c + 0.4 * rng.standard_normal((k, D)) for c, k in zip(centres, sizes)]).astype(np.float32)
    groups = [f"img{g:03d}" for g, k in enumerate(sizes) for _ in range(k)]
    root = tmp_path_factory.mktemp("grouped")
    w = StoreWriter(root / "store", dim=D, meta={"encoder": "e", "modality": "text", "normalized": False})
    bounds = [*SPLITS, X.shape[0]]
    (root / "emb").mkdir()
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        w.write_shard([f"r{j}" for j in range(lo, hi)], X[lo:hi], hi, groups=groups[lo:hi])
        np.save(root / "emb" / f"part_{i}.npy", X[lo:hi])
        (root / f"groups_{i}.txt").write_text("".join(g + "\n" for g in groups[lo:hi]))
    np.save(root / "all.npy", X)
    (root / "groups.txt").write_text("".join(g + "\n" for g in groups))
    return root, X.astype(np.float64), groups


@pytest.fixture(scope="module")
def scheduler():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0",
                                  silence_logs=50) as cluster, distributed.Client(cluster):
        yield cluster.scheduler_address


def fitted(tmp_path, name, *args):
    out = tmp_path / f"{name}.safetensors"
    res = run("fit", *args, "--calibration-rows", CAL, "-o", out)
    assert res.exit_code == 0, res.output
    return Whitener.load(out)


def assert_same_calibration(a, b):
    assert a.calibration_groups_ == b.calibration_groups_ and a.n_cal_ == b.n_cal_
    assert a.calibration_metadata() == b.calibration_metadata() and a.calibration_metadata()["mode"] == "groups"
    np.testing.assert_allclose(a.calibration_, b.calibration_, rtol=1e-10, atol=0)


def reference(X, groups):
    """The calibration a whole-data pass computes: the reservoir of whole groups, each left out."""
    wh = Whitener(calibration_rows=CAL).fit(X)
    res = Reservoir(CAL, D).update(X, groups=groups)
    return np.sort(calibration_distances(wh, res.rows, res.keys)), res


def test_store_groups_local_dask_and_parts_agree(data, scheduler, tmp_path):
    root, X, groups = data
    store = root / "store"
    local = fitted(tmp_path, "local", store)
    want, res = reference(X, groups)
    assert local.calibration_metadata()["mode"] == "groups" and local.calibration_groups_ == res.n_groups
    assert len(res) <= CAL < X.shape[0] and res.n_groups < len(res)  # capped, whole groups of several rows
    np.testing.assert_allclose(local.calibration_, want, rtol=1e-10)
    dask = fitted(tmp_path, "dask", store, "--engine", "dask", "--scheduler", scheduler)
    assert_same_calibration(dask, local)
    parts = tmp_path / "store.moments.safetensors"  # pieces of 40 rows: groups cut across pieces and shards
    assert run("moments", store, "--piece-rows", 40, "--calibration-rows", CAL, "-o", parts).exit_code == 0
    assert MomentsPart.load(parts).calibration_mode == "groups"
    assert_same_calibration(fitted(tmp_path, "parts", parts), local)
    # --no-groups: recorded groups ignored, a sample of rows on both paths
    rows = fitted(tmp_path, "rows", store, "--engine", "dask", "--scheduler", scheduler, "--no-groups")
    assert rows.calibration_metadata()["mode"] == "rows" and rows.calibration_groups_ is None
    assert fitted(tmp_path, "rows_local", store, "--no-groups").calibration_metadata()["mode"] == "rows"


def test_npy_shards_groups_file_local_dask_and_parts_agree(data, scheduler, tmp_path, monkeypatch):
    root, X, groups = data
    local = fitted(tmp_path, "local", root / "all.npy", "--groups", root / "groups.txt")
    np.testing.assert_allclose(local.calibration_, reference(X, groups)[0], rtol=1e-10)
    dask = fitted(tmp_path, "dask", root / "emb", "--groups", root / "groups.txt", "--engine", "dask",
                  "--scheduler", scheduler)
    assert_same_calibration(dask, local)
    # two `moments` runs (shards 0-1, shard 2), each with its own slice of the groups, then merged
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g01.txt").write_text((root / "groups_0.txt").read_text() + (root / "groups_1.txt").read_text())
    common = ("--piece-rows", 30, "--calibration-rows", CAL)
    assert run("moments", root / "emb/part_0.npy", root / "emb/part_1.npy", "--groups", "g01.txt", *common,
               "-o", "a.moments.safetensors").exit_code == 0
    assert run("moments", root / "emb/part_2.npy", "--groups", root / "groups_2.txt", *common,
               "-o", "b.moments.safetensors").exit_code == 0
    res = run("merge-moments", "a.moments.safetensors", "b.moments.safetensors", "-o", "m.moments.safetensors")
    assert res.exit_code == 0, res.output
    merged = fitted(tmp_path, "merged", "m.moments.safetensors")
    assert_same_calibration(merged, local)
    assert merged.n_samples_ == X.shape[0]


def test_grouped_and_ungrouped_parts_refused(data, tmp_path, monkeypatch):
    root, _, _ = data
    monkeypatch.chdir(tmp_path)
    assert run("moments", root / "emb/part_0.npy", "--groups", root / "groups_0.txt",
               "-o", "g.moments.safetensors").exit_code == 0
    assert run("moments", root / "emb/part_1.npy", "-o", "r.moments.safetensors").exit_code == 0
    assert MomentsPart.load("r.moments.safetensors").calibration_mode == "rows"
    for cmd in (("merge-moments", "g.moments.safetensors", "r.moments.safetensors", "-o", "x.moments.safetensors"),
                ("fit", "g.moments.safetensors", "r.moments.safetensors", "-o", "x.safetensors")):
        res = run(*cmd)
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert res.exit_code == 2 and len(lines) == 1, res.output
        assert "r.moments.safetensors: calibration sample of rows, earlier parts sampled groups" in lines[0]
    assert not (tmp_path / "x.moments.safetensors").exists() and not (tmp_path / "x.safetensors").exists()
    # a part without a calibration sample carries no mode: it merges (the union then has no sample)
    res = run("moments", root / "emb/part_2.npy", "--calibration-rows", 0, "-o", "n.moments.safetensors")
    assert res.exit_code == 0
    assert run("merge-moments", "g.moments.safetensors", "n.moments.safetensors", "-o", "y.moments.safetensors"
               ).exit_code == 0
    # an empty part (n = 0: one SLURM task's empty share, run without --groups) merges with grouped parts
    np.save("empty.npy", np.zeros((0, D), dtype=np.float32))
    assert run("moments", "empty.npy", "-o", "e.moments.safetensors").exit_code == 0
    assert run("merge-moments", "e.moments.safetensors", "g.moments.safetensors", "-o", "z.moments.safetensors"
               ).exit_code == 0
    assert MomentsPart.load("z.moments.safetensors").calibration_mode == "groups"
    assert fitted(tmp_path, "z", "z.moments.safetensors").calibration_metadata()["mode"] == "groups"
    # a tampered mode is refused when read
    part = MomentsPart.load("g.moments.safetensors")
    part.meta["calibration_mode"] = "pairs"
    part.save("t.moments.safetensors")
    res = run("fit", "t.moments.safetensors", "-o", "t.safetensors")
    assert res.exit_code == 2 and "calibration_mode='pairs'" in res.output


def test_groups_file_checks_and_resume_key(data, tmp_path):
    root, X, groups = data
    res = run("fit", root / "emb", "--groups", root / "groups_0.txt", "-o", tmp_path / "x.safetensors")
    assert res.exit_code == 2 and f"{SPLITS[1]} group ids for {X.shape[0]} input rows" in res.output
    res = run("fit", root / "emb", "--group-column", "image", "-o", tmp_path / "x.safetensors")
    assert res.exit_code == 2 and "--groups FILE" in res.output
    # --moments-dir: a part saved by a rows run is not resumed by a grouped run (and vice versa)
    mdir = tmp_path / "parts"
    opts = dict(piece_rows=50, moments_dir=mdir)
    rows = engine.compute_moments([root / "emb"], engine.EngineOptions(**opts), calibration_rows=CAL)
    grouped = engine.compute_moments([root / "emb"], engine.EngineOptions(**opts, groups_file=str(root / "groups.txt")),
                                     calibration_rows=CAL)
    assert rows.calibration_mode == "rows" and grouped.calibration_mode == "groups"
    assert grouped.stats["resumed"] == 0
    again = engine.compute_moments([root / "emb"], engine.EngineOptions(**opts, groups_file=str(root / "groups.txt")),
                                   calibration_rows=CAL)
    assert again.stats["resumed"] == again.stats["pieces"] > 1
