"""`mi`: one pairing rule (by id when both sides carry real ids, by row when a side's ids are its
captions, --pair-by to choose), raw captions as X Y, and cross-checks that cannot invent information
(the KSG check on held-out canonical variates; entropy figures that say which dims they are over)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from whitenclip.errors import InputError, RankDeficiencyWarning
from whitenclip.information import GaussianEntropy, GaussianMI, pair_rows


def _correlated(n, rho, seed):
    """X, Y (n, p) with canonical correlations ``rho`` (identity mixing) and the closed-form MI
    ``-0.5 * sum log(1 - rho_i^2)``."""
    rng = np.random.default_rng(seed)
    z1, z2 = rng.standard_normal((n, rho.size)), rng.standard_normal((n, rho.size))
    return z1, rho * z1 + np.sqrt(1 - rho**2) * z2, -0.5 * float(np.log1p(-rho**2).sum())


def _cli(*args):
    from typer.testing import CliRunner

    from whitenclip.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _json(res):
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _write_table(path, X, ids=None):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    cols = {"emb": pa.array(list(X), pa.list_(pa.float64()))}
    if ids is not None:
        cols = {"key": ids, **cols}
    pq.write_table(pa.table(cols), path)


def _write_store(directory, X, ids, modality):
    """A store directory as `embed` writes it (ids: the items, i.e. the captions of a caption store)."""
    from whitenclip.writers import StoreWriter

    writer = StoreWriter(directory, dim=X.shape[1], meta={"encoder": "toy", "modality": modality})
    writer.write_shard(list(ids), X.astype(np.float32), len(ids))


# ---------------------------------------------------------------- pairing rule


def test_permuted_integer_ids_pair_by_id_and_give_the_unpermuted_mi(tmp_path):
    """A table whose ids are 0..n-1 carries real ids: a permuted copy pairs by id (MI ~ closed form),
    with --id-column as without it; the old rule took them for row numbers and paired by position
    (MI 0, "no detectable dependence")."""
    X, Y, truth = _correlated(600, np.array([0.9, 0.8, 0.5]), seed=1)
    perm = np.random.default_rng(2).permutation(600)
    _write_table(tmp_path / "x.parquet", X, ids=list(range(600)))
    _write_table(tmp_path / "y.parquet", Y[perm], ids=[int(i) for i in perm])
    _write_table(tmp_path / "y_same.parquet", Y, ids=list(range(600)))
    ref = _json(_cli("mi", tmp_path / "x.parquet", tmp_path / "y_same.parquet", "--id-column", "key", "--json"))
    res = _cli("mi", tmp_path / "x.parquet", tmp_path / "y.parquet", "--id-column", "key", "--json")
    out = _json(res)
    assert out["mi"] == pytest.approx(ref["mi"], rel=1e-9) and out["detectable"] is True
    assert out["mi"] == pytest.approx(truth, abs=0.1)  # 1.4 nats
    assert "paired by id" in res.stderr
    # --pair-by row pairs by position: the permutation destroys the dependence
    shuffled = _json(_cli("mi", tmp_path / "x.parquet", tmp_path / "y.parquet", "--id-column", "key",
                          "--pair-by", "row", "--json"))
    assert shuffled["detectable"] is False and abs(shuffled["mi"]) < 0.05


def test_caption_ids_pair_by_row_and_pair_by_id_pairs_by_caption(tmp_path):
    """Two caption stores (ids = their captions, which differ) pair row i with row i, with a note;
    the old rule refused them ("carry different ids")."""
    X, Y, truth = _correlated(400, np.array([0.9, 0.7]), seed=3)
    _write_store(tmp_path / "a", X, [f"caption one of image {i}" for i in range(400)], "text")
    _write_store(tmp_path / "b", Y, [f"caption two of image {i}" for i in range(400)], "text")
    res = _cli("mi", tmp_path / "a", tmp_path / "b", "--json")
    out = _json(res)
    assert out["detectable"] is True and out["mi"] == pytest.approx(truth, abs=0.12)
    assert "ids are its captions: rows paired by position" in res.stderr
    # --pair-by id pairs by caption text: these differ, so it is refused naming the first one
    res = _cli("mi", tmp_path / "a", tmp_path / "b", "--pair-by", "id")
    assert res.exit_code == 2 and "different ids" in res.output and "'caption one of image 0'" in res.output
    # image stores carry real ids (their paths): paired by id, reordered
    perm = np.random.default_rng(4).permutation(400)
    _write_store(tmp_path / "img", X, [f"img/{i}.jpg" for i in range(400)], "image")
    _write_store(tmp_path / "img2", Y[perm], [f"img/{i}.jpg" for i in perm], "image")
    res = _cli("mi", tmp_path / "img", tmp_path / "img2", "--json")
    assert _json(res)["mi"] == pytest.approx(out["mi"], rel=1e-6) and "paired by id" in res.stderr


def test_pair_by_id_is_refused_when_a_side_has_no_ids(tmp_path):
    X, Y, _ = _correlated(100, np.array([0.8]), seed=5)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", Y)
    res = _cli("mi", tmp_path / "x.npy", tmp_path / "y.npy", "--pair-by", "id")
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert "--pair-by id" in res.output and "x.npy has no ids" in res.output and "Traceback" not in res.output
    res = _cli("mi", tmp_path / "x.npy", tmp_path / "y.npy", "--pair-by", "sideways")
    assert res.exit_code == 2


def test_pair_rows_rule():
    X = np.arange(4.0)[:, None]
    Y = X[::-1] * 10
    ids, rev = ["0", "1", "2", "3"], ["3", "2", "1", "0"]
    # integer ids declared real: by id (the old heuristic took 0..n-1 for row numbers)
    assert pair_rows(ids, X, rev, Y, kinds=("ids", "ids"))[3] == "id"
    assert np.array_equal(pair_rows(ids, X, rev, Y, kinds=("ids", "ids"))[2], X * 10)
    assert pair_rows(ids, X, rev, Y)[3] == "row"  # kinds unknown: 0..n-1 still reads as row numbers
    # a side whose ids are its captions: by row, whatever the ids
    caps = ["a dog", "a cat", "a car", "a cup"]
    _, _, Y2, how = pair_rows(caps, X, ["x", "y", "z", "w"], Y, kinds=("captions", "ids"))
    assert how == "row" and np.array_equal(Y2, Y)
    assert pair_rows(caps, X, caps[::-1], Y, kinds=("captions", "captions"), pair_by="id")[3] == "id"
    with pytest.raises(InputError, match="--pair-by id: Y has no ids"):
        pair_rows(ids, X, ids, Y, kinds=("ids", "none"), pair_by="id")
    assert pair_rows(ids, X, rev, Y, kinds=("ids", "ids"), pair_by="row")[3] == "row"


# ---------------------------------------------------------------- the KSG check


def test_ksg_check_reads_zero_on_independent_pairs_near_the_rank():
    """n = 300, 150 + 150 dims, Y independent of X: the in-sample top canonical variates are correlated
    by construction (the old check read ~4 nats of KSG "information"); the held-out check reads ~0,
    inside its permutation noise, and is not detectable."""
    rng = np.random.default_rng(6)
    scale = 1.0 / np.arange(1, 151)
    X, Y = rng.standard_normal((300, 150)) * scale, rng.standard_normal((300, 150)) * scale
    with pytest.warns(RankDeficiencyWarning, match="kept rank 146 of 150"):
        res = GaussianMI(ci=None).fit(X, Y).result()
    assert res.detectable is False
    ksg = res.ksg
    assert ksg is not None and ksg.dims == 2 and ksg.n == 300
    assert abs(ksg.mi) < 0.1 and abs(ksg.gaussian_mi) < 0.05  # in-sample variates: ~4 and ~7 nats
    assert ksg.detectable is False and ksg.pvalue > 0.05 and ksg.permutations == 19
    assert ksg.null_ci[0] <= ksg.mi <= ksg.null_ci[1] + 0.02
    row = _ksg_row(res)
    assert "no detectable dependence (the estimate lies within the noise" in row
    assert f"{ksg.mi:.4g}" not in row  # a within-noise estimate is not printed as a figure


def test_ksg_check_finds_real_dependence_and_matches_the_closed_form():
    """Two canonical correlations (0.8, 0.6) in 2 + 2 dims at n = 2000: the held-out KSG and Gaussian
    figures both come close to the closed form 0.734 nats and are detected."""
    X, Y, truth = _correlated(2000, np.array([0.8, 0.6]), seed=7)
    res = GaussianMI(ci=None).fit(X, Y).result()
    assert res.ksg.detectable is True and res.ksg.pvalue == pytest.approx(1 / 20)
    assert res.ksg.gaussian_mi == pytest.approx(truth, abs=0.06)
    assert res.ksg.mi == pytest.approx(truth, abs=0.1)
    assert res.ksg.null_ci[1] < 0.05


def test_ksg_check_is_skipped_with_the_reason_without_folds():
    X, Y, _ = _correlated(16, np.array([0.9]), seed=8)  # fewer than 4 rows per fold
    res = GaussianMI(ci=None).fit(X, Y).result()
    assert res.ksg is None and res.ksg_skipped.startswith("skipped: the KSG check runs on held-out")
    assert "too few rows" in res.ksg_skipped and "KSG check" in _ksg_row(res)
    off = GaussianMI(ci=None, folds=0).fit(*_correlated(200, np.array([0.9]), seed=8)[:2]).result()
    assert off.ksg is None and "folds=0" in off.ksg_skipped


def _ksg_row(result):
    from whitenclip.render.information import mi_rows

    return "\n".join(f"{k}: {v}" for k, v in mi_rows(result) if k.startswith("KSG"))


# ---------------------------------------------------------------- entropy: which dims


def test_entropy_figures_name_their_dimensions():
    """The Gaussian entropy is over the kept rank, the k-NN check over the top PCs: the table and the
    JSON say so (the old table printed them side by side without the dims)."""
    from whitenclip.render.information import entropy_rows

    rng = np.random.default_rng(9)
    X = rng.standard_normal((60, 80)) * np.linspace(3, 1, 80)  # n < d: kept rank 57 of 80
    with pytest.warns(RankDeficiencyWarning, match="kept rank 57 of 80"):
        res = GaussianEntropy(knn_dims=4).fit(X).result()
    rows = dict(entropy_rows(res))
    assert rows["entropy (Gaussian, bias-corrected, over r = 57 dims)"] == f"{res.entropy:.6g}"
    assert "k-NN over the top 4 principal components" in rows
    assert "over the top 4 principal components" in rows["compare"] and "r = 57 dims" in rows["compare"]
    out = res.to_dict()
    assert out["over"] == "Gaussian over r = 57 of 80 dims (the kept rank)" and out["n_features"] == 80
    assert out["knn"]["over"] == "k-NN over the top 4 principal components" and out["knn"]["dims"] == 4


# ---------------------------------------------------------------- real captions (shared data)


def _flickr_caption_files(tmp_path):
    import csv

    from conftest import shared_path

    by_image: dict = {}
    with open(shared_path("flickr8k", "captions.csv"), newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            by_image.setdefault(row["image"], []).append(row["caption"])
    first = [caps[0] for caps in by_image.values()]
    second = [caps[1] for caps in by_image.values()]
    for name, lines in (("cap1.txt", first), ("cap2.txt", second)):
        (tmp_path / name).write_text("".join(f"{c}\n" for c in lines), encoding="utf-8")
    return len(first)


def test_flickr_caption_stores_pair_by_row_dependent_and_shuffled(tmp_path):
    """Captions 1 and 2 of the 300 Flickr8k images, MiniLM caption stores: dependence detected;
    one side shuffled: no detectable dependence and no KSG figure beyond noise."""
    n = _flickr_caption_files(tmp_path)
    try:
        from whitenclip import load_encoder

        load_encoder("minilm", device="cpu")
    except Exception as exc:  # pragma: no cover - the offline model is a dependency
        pytest.skip(f"minilm unavailable: {exc}")
    for name in ("cap1", "cap2"):
        res = _cli("embed", tmp_path / f"{name}.txt", "-o", tmp_path / name, "--quiet")
        assert res.exit_code == 0, res.output
    from whitenclip.readers.plan import read_embeddings

    ids, Y = read_embeddings(tmp_path / "cap2")  # the same store, rows (and their caption ids) shuffled
    perm = np.random.default_rng(1).permutation(n)
    _write_store(tmp_path / "cap2_shuffled", Y[perm], [ids[i] for i in perm], "text")
    dep = _json(_cli("mi", tmp_path / "cap1", tmp_path / "cap2", "--json"))
    assert dep["n"] == n == 300 and dep["detectable"] is True and dep["headline"] == "cross-fitted"
    assert dep["headline_mi"] > 3 and dep["ksg"]["detectable"] is True and dep["ksg"]["mi"] > 0.5
    null = _json(_cli("mi", tmp_path / "cap1", tmp_path / "cap2_shuffled", "--json"))
    assert null["detectable"] is False and null["note"].startswith("no detectable dependence")
    assert null["ksg"]["detectable"] is False and null["ksg"]["pvalue"] > 0.05
    assert null["ksg"]["mi"] <= null["ksg"]["null_ci"][1] and abs(null["ksg"]["mi"]) < 0.1
    assert math.isfinite(null["ksg"]["gaussian_mi"]) and abs(null["ksg"]["gaussian_mi"]) < 0.1


def test_mi_reads_raw_caption_files(tmp_path):
    """`mi cap1.txt cap2.txt` embeds the captions with the default text model (minilm), as fit does;
    the old mi refused them ("not a vector of numbers")."""
    _flickr_caption_files(tmp_path)
    lines = (tmp_path / "cap1.txt").read_text(encoding="utf-8").splitlines()[:60]
    (tmp_path / "a.txt").write_text("".join(f"{c}\n" for c in lines), encoding="utf-8")
    lines = (tmp_path / "cap2.txt").read_text(encoding="utf-8").splitlines()[:60]
    (tmp_path / "b.txt").write_text("".join(f"{c}\n" for c in lines), encoding="utf-8")
    try:
        from whitenclip import load_encoder

        load_encoder("minilm", device="cpu")
    except Exception as exc:  # pragma: no cover
        pytest.skip(f"minilm unavailable: {exc}")
    res = _cli("mi", tmp_path / "a.txt", tmp_path / "b.txt", "--json", "--ksg-dims", "0")
    out = _json(res)
    assert out["n"] == 60 and "a.txt's ids are its captions: rows paired by position" in res.stderr
    np.save(tmp_path / "b.npy", np.random.default_rng(10).standard_normal((60, 3)))
    # embeddings on one side, raw captions (embedded with --model) on the other: paired by row
    res = _cli("mi", tmp_path / "a.txt", tmp_path / "b.npy", "--model", "minilm", "--json", "--ksg-dims", "0")
    assert _json(res)["n"] == 60 and _json(res)["rank_y"] == 3
    res = _cli("mi", tmp_path / "b.npy", tmp_path / "b.npy", "--model", "minilm")
    assert res.exit_code == 2 and "--model applies to raw images or captions" in res.output


def test_mi_embeds_raw_images_and_captions_with_model(tmp_path):
    """Images (ids: their paths) beside captions (ids: the captions) pair by row, both embedded with --model
    (a tiny random-init open_clip); two image folders carry different path ids: paired by id, so refused
    with the way out (--pair-by row)."""
    from PIL import Image

    rng = np.random.default_rng(11)
    for folder in ("imgs", "imgs2"):
        (tmp_path / folder).mkdir()
        for i in range(30):
            Image.fromarray((rng.random((20, 24, 3)) * 255).astype(np.uint8)).save(tmp_path / folder / f"im{i:02d}.png")
    (tmp_path / "caps.txt").write_text("".join(f"photo number {i} of a thing\n" for i in range(30)))
    tiny = "openclip:wc-tiny/none"
    res = _cli("mi", tmp_path / "imgs", tmp_path / "caps.txt", "--model", tiny, "--num-workers", "0", "--json",
               "--ksg-dims", "0")
    out = _json(res)
    assert out["n"] == 30 and "caps.txt's ids are its captions: rows paired by position" in res.stderr
    res = _cli("mi", tmp_path / "imgs", tmp_path / "imgs2", "--model", tiny, "--num-workers", "0")
    assert res.exit_code == 2 and "carry different ids" in res.output and "im00.png" in res.output
    assert "--pair-by row: by position" in " ".join(res.output.split())


def test_in_sample_figures_are_labelled_biased_when_the_cross_fitted_estimate_is_the_headline():
    """Independent pairs near the rank: the plug-in MI and the in-sample canonical correlations are large by
    construction (~0.99); they are printed only under a label saying so, never as bare figures."""
    from whitenclip.render.information import mi_rows

    rng = np.random.default_rng(6)
    X, Y = rng.standard_normal((200, 60)), rng.standard_normal((200, 60))
    res = GaussianMI(ci=None).fit(X, Y).result()
    assert res.headline == "cross-fitted" and res.mi_plugin > 5 and res.canonical_correlations[0] > 0.8
    labels = dict(mi_rows(res))
    assert "mi (plug-in, in-sample: biased upward at this n)" in labels
    assert "top canonical correlations (in-sample)" in labels and "mi (plug-in)" not in labels
    many = GaussianMI(ci=None).fit(rng.standard_normal((2000, 4)), rng.standard_normal((2000, 4))).result()
    assert many.headline == "in-sample" and "mi (plug-in)" in dict(mi_rows(many))
