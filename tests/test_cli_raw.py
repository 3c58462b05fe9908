"""End-to-end CLI runs on raw inputs: embed (with resume), fit and score straight from
captions (MiniLM, real weights) and images (a tiny random-init open_clip model)."""

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from whitenclip.cli import app
from whitenclip.readers.plan import open_embeddings, read_embeddings
from whitenclip.whitening import Whitener

TINY = "openclip:wc-tiny/none"
runner = CliRunner()


def run(*args, input=None):
    return runner.invoke(app, ["--quiet", *map(str, args)], input=input)


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i in range(10):
        arr = (rng.random((24, 32, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / ("sub" if i % 2 else "") / f"im{i:02d}.{'png' if i % 3 else 'jpg'}")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    return folder


@pytest.fixture
def captions(tmp_path):
    lines = [f"a {c} {a} is {v} near the {p}" for c in ("red", "small", "happy", "old") for a in ("dog", "cat", "child")
             for v in ("running", "sleeping") for p in ("river", "house")]
    path = tmp_path / "caps.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_embed_images_skips_broken_and_resumes(tmp_path, images):
    out = tmp_path / "store"
    res = runner.invoke(app, ["embed", str(images), "-o", str(out), "--model", TINY, "--batch-size", "2",
                              "--shard-items", "4", "--num-workers", "0"])
    assert res.exit_code == 0, res.stderr
    assert "broken.jpg" in res.stderr and "1 skipped" in res.stderr
    ids, X = read_embeddings(out)
    assert X.shape == (10, 32) and all(i.endswith((".png", ".jpg")) for i in ids)
    shards = sorted(out.glob("shard-*.npy"))
    assert len(shards) == 3
    # kill simulation: the last shard never committed -> rerun with the same command resumes
    shards[-1].unlink()
    res = runner.invoke(app, ["embed", str(images), "-o", str(out), "--model", TINY, "--batch-size", "2",
                              "--shard-items", "4", "--num-workers", "0"])
    assert res.exit_code == 0, res.stderr
    assert "resuming after item 8" in res.stderr
    ids2, X2 = read_embeddings(out)
    assert ids2 == ids
    np.testing.assert_allclose(X2, X, rtol=1e-5, atol=1e-6)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["encoder"] == TINY and meta["modality"] == "image" and meta["normalized"] is False
    # same store, other inputs: refused instead of mixing rows
    res = run("embed", images / "sub", "-o", out, "--model", TINY)
    assert res.exit_code == 2 and "items_hash" in res.stderr


def test_embed_strict_fails_on_broken_image(tmp_path, images):
    res = run("embed", images, "-o", tmp_path / "s", "--model", TINY, "--strict", "--num-workers", "0")
    assert res.exit_code == 2 and "broken.jpg" in res.stderr


def test_fit_and_score_captions_with_minilm(tmp_path, captions):
    w = tmp_path / "w.safetensors"
    res = run("fit", captions, "-o", w, "--rank", "40")
    assert res.exit_code == 0, res.stderr
    wh = Whitener.load(w)
    assert wh.metadata_["encoder"] == "minilm" and wh.metadata_["modality"] == "text"
    assert wh.n_features_ == 384 and wh.n_samples_ == 48
    queries = "a small dog is running near the river\nthe quarterly tax filing deadline\tis in april\n"
    res = run("score", "-", "-w", w, input=queries)
    assert res.exit_code == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout), delimiter="\t"))
    assert rows[1]["id"] == "the quarterly tax filing deadline\\tis in april"  # tab escaped in the TSV id
    assert float(rows[0]["loglik"]) > float(rows[1]["loglik"])  # in-domain caption is more likely


def test_fit_save_embeddings_equals_embed_then_fit(tmp_path, captions):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert run("fit", captions, "-o", a, "--save-embeddings", tmp_path / "store").exit_code == 0
    assert open_embeddings(tmp_path / "store").n_rows == 48
    assert run("fit", tmp_path / "store", "-o", b).exit_code == 0
    np.testing.assert_allclose(Whitener.load(a).eigenvalues_, Whitener.load(b).eigenvalues_, rtol=1e-10)


def test_score_refuses_modality_and_dimension_mismatch(tmp_path, captions, images):
    w = tmp_path / "w.safetensors"
    assert run("fit", captions, "-o", w, "--rank", "10").exit_code == 0
    res = run("score", images, "-w", w)
    assert res.exit_code == 2 and "fitted on text embeddings" in res.stderr
    res = run("score", captions, "-w", w, "--model", TINY)
    assert res.exit_code == 2 and "differs from the whitener's encoder" in res.stderr
    np.save(tmp_path / "e.npy", np.ones((3, 7), np.float32))
    res = run("score", tmp_path / "e.npy", "-w", w)
    assert res.exit_code == 2 and "expects 384" in res.stderr


def test_raw_input_bad_cases(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    res = run("fit", empty, "-o", tmp_path / "w.safetensors")
    assert res.exit_code == 2 and "nothing usable" in res.stderr
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"a fine caption here\n\xff\xfe broken bytes\nanother fine caption\n")
    res = run("embed", bad, "-o", tmp_path / "s", "--strict")
    assert res.exit_code == 2 and "bad.txt:2" in res.stderr
    res = run("embed", tmp_path / "nope-dir", "-o", tmp_path / "s2")
    assert res.exit_code == 2 and "nope-dir" in res.stderr
    res = run("embed", bad, "-o", tmp_path / "s3", "--model", "openclip:NoSuchArch/none")
    assert res.exit_code != 0 and "NoSuchArch" in res.stderr and "minilm" in res.stderr


def test_mi_pairs_table_keeps_rows_aligned(tmp_path, images):
    """Each image once, bad images drop their rows on both sides, empty captions are skipped."""
    from whitenclip.sources import EncodeOptions, embed_pairs

    names = sorted(p.relative_to(images).as_posix() for p in images.rglob("*.*"))
    lines = ["image,caption"]
    for k, name in enumerate(names):
        lines += [f"{name},a picture number {k}", f"{name},another view of item {k}"]
    lines.append(f"{names[0]},")  # empty caption
    table = images / "pairs.csv"
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.warns(UserWarning) as rec:
        paired = embed_pairs(table, EncodeOptions(model=TINY, num_workers=0, progress=False))
    assert sorted(str(w.message).split(": skipped ")[-1] for w in rec) == [
        "(empty caption)", "(truncated image: Truncated File Read)"]
    assert len(paired.ids) == 20 and paired.X.shape == (20, 32) and paired.Y.shape == (20, 32)
    assert paired.skips.counts["empty caption"] == 1 and paired.skips.n_skipped == 2  # + broken.jpg
    np.testing.assert_array_equal(paired.X[0], paired.X[1])  # same image, same row vector
    assert names[0] == "broken.jpg"  # its rows are dropped on both sides
    assert paired.ids[:2] == [f"{names[1]} | a picture number 1", f"{names[1]} | another view of item 1"]
    res = run("mi", "--pairs", table, "--model", TINY, "--num-workers", "0", "--json", "--ksg-dims", "0")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["n"] == 20
    res = run("mi", "--pairs", table, "--model", "minilm")
    assert res.exit_code == 2 and "not image" in res.stderr
