"""Issue 14 re-trial, end to end: each scenario of its sections 1-5 as written, through the CLI.

The promise for every one: exit 0 with the right numbers, or exit 2 with one line naming the file
or row; never exit 1, a traceback, a clobbered input, or inf/NaN printed.
"""

import json
import os
import re
import struct

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from typer.testing import CliRunner

from whitenclip.cli import app
from whitenclip.whitening import Whitener
from whitenclip.writers import StoreWriter

runner = CliRunner()


def run(*args, stdin=None):
    res = runner.invoke(app, [str(a) for a in args], input=stdin)
    assert res.exit_code in (0, 2), res.output
    assert "Traceback" not in res.output, res.output
    if res.exit_code == 2:
        assert len([line for line in res.output.splitlines() if "error" in line]) == 1, res.output
    assert not re.search(r"(?i)(?<![a-z])-?(inf|nan)(?![a-z])", res.stdout), res.stdout
    return res


def refused(*args, match, stdin=None):
    res = run(*args, stdin=stdin)
    assert res.exit_code == 2 and re.search(match, res.output), res.output
    return res


def store(d, n_shards=2, rows=100, dim=8, n_items=None, seed=0):
    rng = np.random.default_rng(seed)
    w = StoreWriter(d, dim=dim, dtype="float32", meta={"n_items": n_shards * rows if n_items is None else n_items})
    for k in range(n_shards):
        w.write_shard(
            [f"{d.name}-{k}-{i}" for i in range(rows)],
            rng.standard_normal((rows, dim)).astype(np.float32),
            (k + 1) * rows,
        )
    return d


def safetensors(path, header, payload=b""):
    raw = (header if isinstance(header, str) else json.dumps(header)).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + payload)


def header_of(path):
    b = path.read_bytes()
    return json.loads(b[8 : 8 + struct.unpack("<Q", b[:8])[0]])["__metadata__"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    d = tmp_path_factory.mktemp("t14")
    np.save(d / "s.npy", np.random.default_rng(1).standard_normal((500, 8)))
    assert run("fit", d / "s.npy", "-o", d / "w.safetensors").exit_code == 0
    assert run("moments", d / "s.npy", "-o", d / "m.moments.safetensors").exit_code == 0
    return d


# ----------------------------------------------------------------------------- 1. data loss
def test_1_score_two_stores_with_the_same_shard_names_into_one_dir(ws, tmp_path):
    a, b = store(tmp_path / "A"), store(tmp_path / "B", seed=1)
    res = run("score", a, b, "-w", ws / "w.safetensors", "--engine", "dask", "-o", f"{tmp_path / 'scores'}/")
    files = [f for f in (tmp_path / "scores").rglob("*") if f.is_file()]
    assert res.exit_code == 0 and len(files) == 4
    assert sum(len(f.read_text().splitlines()) - 1 for f in files) == 400


def test_1_score_into_the_folder_of_its_input_never_overwrites_it(ws, tmp_path):
    (tmp_path / "tv").mkdir()
    np.savetxt(tmp_path / "tv" / "vecs.tsv", np.ones((5, 8)), delimiter="\t")
    before = (tmp_path / "tv" / "vecs.tsv").read_bytes()
    refused(
        "score",
        tmp_path / "tv" / "vecs.tsv",
        "-w",
        ws / "w.safetensors",
        "--engine",
        "dask",
        "-o",
        f"{tmp_path / 'tv'}/",
        match="vecs.tsv: is also an input",
    )
    assert (tmp_path / "tv" / "vecs.tsv").read_bytes() == before


def test_1_moments_dir_never_reuses_a_piece_rewritten_with_the_same_size_and_mtime(tmp_path):
    (tmp_path / "sh").mkdir()
    rng = np.random.default_rng(2)
    np.save(tmp_path / "sh" / "a.npy", rng.normal(0.0, 1, (300, 4)))
    np.save(tmp_path / "sh" / "b.npy", rng.normal(0.05, 1, (300, 4)))
    md, w = tmp_path / "md", tmp_path / "w.safetensors"
    assert run("fit", tmp_path / "sh", "--moments-dir", md, "-o", w).exit_code == 0
    st = os.stat(tmp_path / "sh" / "b.npy")
    np.save(tmp_path / "sh" / "b.npy", rng.normal(5.3, 1, (300, 4)))  # what cp -p / rsync -a leave
    os.utime(tmp_path / "sh" / "b.npy", ns=(st.st_atime_ns, st.st_mtime_ns))
    res = run("fit", tmp_path / "sh", "--moments-dir", md, "-o", w)
    assert res.exit_code == 0 and "resumed 1 of 2" in res.output
    want = np.concatenate([np.load(tmp_path / "sh" / f) for f in ("a.npy", "b.npy")]).mean(axis=0)
    np.testing.assert_allclose(Whitener.load(w).mean_, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("command", ["fit", "score", "moments"])
def test_1_trailing_slash_output_never_becomes_a_file(ws, tmp_path, command):
    extra = {"fit": [], "score": ["-w", ws / "w.safetensors"], "moments": []}[command]
    refused(command, ws / "s.npy", *extra, "-o", f"{tmp_path / 'newdir'}/", match="trailing slash names a directory")
    assert not (tmp_path / "newdir").exists()


def test_1_moments_dir_inside_an_input_is_refused(tmp_path):
    (tmp_path / "sh").mkdir()
    np.save(tmp_path / "sh" / "a.npy", np.random.default_rng(0).standard_normal((50, 4)))
    for md in ("sh", "sh/parts"):
        refused(
            "fit",
            tmp_path / "sh",
            "--moments-dir",
            tmp_path / md,
            "-o",
            tmp_path / "w.safetensors",
            match="--moments-dir .*(is|lies inside) the input folder",
        )


# ----------------------------------------------------------------------------- 2. silent numbers
@pytest.mark.parametrize(
    "args",
    [
        ["moments", "-o", "x.moments.safetensors"],
        ["fit", "--engine", "dask", "-o", "x.safetensors"],
        ["fit", "--moments-dir", "md", "-o", "x.safetensors"],
        ["entropy", "--engine", "dask"],
    ],
)
def test_2_incomplete_store_is_refused_on_every_path(tmp_path, args):
    d = store(tmp_path / "inc", n_items=1000)
    args = [str(tmp_path / a) if a.startswith(("x.", "md")) else a for a in args]
    refused(args[0], d, *args[1:], match="store is incomplete: 200 of 1000 items")


def test_2_two_cuts_of_one_file_are_refused_by_merge_moments(ws, tmp_path):
    a, b = tmp_path / "a.moments.safetensors", tmp_path / "b.moments.safetensors"
    assert run("moments", ws / "s.npy", "--piece-rows", "100", "-o", a).exit_code == 0
    assert run("moments", ws / "s.npy", "-o", b).exit_code == 0
    refused("merge-moments", a, b, "-o", tmp_path / "ab.moments.safetensors", match="counted twice")


@pytest.mark.parametrize("layout", ["short offsets", "overlap"])
@pytest.mark.parametrize(
    "args",
    [
        ["moments", "-o", "{t}/x.moments.safetensors"],
        ["fit", "--engine", "dask", "-o", "{t}/x.safetensors"],
        ["fit", "-o", "{t}/x.safetensors"],
    ],
)
def test_2_safetensors_data_offsets_are_validated_on_every_path(tmp_path, layout, args):
    X = np.ones((200, 8), np.float32).tobytes()
    second = ("I32", [800], [3200, 6400]) if layout == "short offsets" else ("F32", [800], [0, 3200])
    first = [0, 3200] if layout == "short offsets" else [0, 6400]
    safetensors(
        tmp_path / "e.safetensors",
        {
            "embeddings": {"dtype": "F32", "shape": [200, 8], "data_offsets": first},
            "other": dict(zip(("dtype", "shape", "data_offsets"), second)),
        },
        X,
    )
    refused(
        args[0],
        tmp_path / "e.safetensors",
        *[a.format(t=tmp_path) for a in args[1:]],
        match="e.safetensors: not a readable .safetensors file",
    )


@pytest.mark.parametrize(
    "args",
    [
        ["score", "-w", "{w}", "--chunk-rows", "-1"],
        ["score", "-w", "{w}", "--chunk-rows", "0"],
        ["moments", "--chunk-rows", "-1", "-o", "{t}/z.moments.safetensors"],
    ],
)
def test_2_size_options_are_validated(ws, tmp_path, args):
    refused(
        args[0],
        ws / "s.npy",
        *[a.format(w=ws / "w.safetensors", t=tmp_path) for a in args[1:]],
        match="Invalid value for '--chunk-rows'",
    )


@pytest.mark.parametrize("scale", [1e20, 1e-25])
def test_2_fast_gram_is_scale_safe(tmp_path, scale):
    X = np.random.default_rng(3).standard_normal((300, 6)) @ np.diag([3, 2, 1, 0.5, 0.2, 0.1])
    np.save(tmp_path / "x.npy", X * scale)
    res = run("fit", tmp_path / "x.npy", "--fast-gram", "-o", tmp_path / "w.safetensors")
    assert res.exit_code == 0 and "constant" not in res.output
    got = np.sort(Whitener.load(tmp_path / "w.safetensors").eigenvalues_) / scale**2
    np.testing.assert_allclose(got, np.sort(np.linalg.eigvalsh(np.cov(X.T))), rtol=1e-4)


def test_2_huge_rows_are_refused_naming_file_and_row_and_no_moments_file_is_written(tmp_path, ws):
    X = np.random.default_rng(4).standard_normal((50, 8))
    X[7] *= 1e200
    np.save(tmp_path / "h.npy", X)
    refused("moments", tmp_path / "h.npy", "-o", tmp_path / "h.moments.safetensors", match=r"h.npy: row 7 ")
    assert not (tmp_path / "h.moments.safetensors").exists()
    for args in (
        ["fit", "-o", tmp_path / "x.safetensors"],
        ["entropy"],
        ["gaussianity-report"],
        ["score", "-w", ws / "w.safetensors"],
        ["score", "-w", ws / "w.safetensors", "--engine", "dask"],
    ):
        res = refused(args[0], tmp_path / "h.npy", *args[1:], match=r"h.npy: row 7 ")
        assert not res.stdout  # the score header never reaches stdout before the error


def test_2_impossible_moments_headers_are_refused(ws, tmp_path):
    md = header_of(ws / "m.moments.safetensors")
    t = load_file(ws / "m.moments.safetensors")
    save_file({**t, "power4": -np.abs(t["power4"])}, tmp_path / "neg.moments.safetensors", metadata=md)
    refused(
        "fit",
        tmp_path / "neg.moments.safetensors",
        "--shrinkage",
        "ledoit-wolf",
        "-o",
        tmp_path / "x.safetensors",
        match="neg.moments.safetensors: power4 = .* is impossible",
    )
    save_file(t, tmp_path / "n30.moments.safetensors", metadata={**md, "n": str(10**30)})
    refused(
        "fit", tmp_path / "n30.moments.safetensors", "-o", tmp_path / "x.safetensors", match="n30.moments.safetensors"
    )


def test_2_mi_of_identical_or_deterministic_inputs_and_bootstrap(tmp_path):
    rng = np.random.default_rng(5)
    np.save(tmp_path / "a.npy", rng.standard_normal((400, 8)))
    np.save(tmp_path / "x10.npy", rng.standard_normal((10, 50)))
    for f in ("a.npy", "x10.npy"):
        res = run("mi", tmp_path / f, tmp_path / f)
        assert res.exit_code == 0 and "deterministic" in res.output and "no detectable" not in res.output
    refused("mi", tmp_path / "a.npy", tmp_path / "a.npy", "--bootstrap", "1", match="at least 2 resamples")
    store(tmp_path / "ia", n_shards=1)
    store(tmp_path / "ib", n_shards=1)
    refused("mi", tmp_path / "ia", tmp_path / "ib", match="'ia-0-0' .* is not in")


# ----------------------------------------------------------------------------- 3. memory (bounded options)
def test_3_calibration_rows_is_capped(ws, tmp_path):
    refused(
        "moments",
        ws / "s.npy",
        "--calibration-rows",
        "16000000",
        "-o",
        tmp_path / "c.moments.safetensors",
        match="--calibration-rows",
    )


# ----------------------------------------------------------------------------- 4. crashes
def test_4_crafted_headers_are_one_line_exit_2(ws, tmp_path):
    safetensors(tmp_path / "list.safetensors", "[1, 2, 3]")
    safetensors(tmp_path / "str.safetensors", json.dumps({"embeddings": "abc"}))
    for f in ("list", "str"):
        for args in (["fit", "-o", tmp_path / "x.safetensors"], ["moments", "-o", tmp_path / "x.moments.safetensors"]):
            refused(args[0], tmp_path / f"{f}.safetensors", *args[1:], match=f"{f}.safetensors: not a readable")
    d = store(tmp_path / "st", n_shards=1, rows=20)
    for bad in ({"n_items": "abc"}, {"n_items": float("nan")}, {"dim": "abc"}):
        meta = json.loads((d / "meta.json").read_text())
        (d / "meta.json").write_text(json.dumps({**meta, **bad}))
        for args in (["fit", "-o", tmp_path / "x.safetensors"], ["entropy", "--engine", "dask"]):
            refused(args[0], d, *args[1:], match="meta.json: '(n_items|dim)' must be")
        (d / "meta.json").write_text(json.dumps(meta))
    wmd = header_of(ws / "w.safetensors")
    wt = load_file(ws / "w.safetensors")
    for field, value in (("method", None), ("d", "abc"), ("n", "abc"), ("shrinkage_intensity", "abc"), ("rank", 0)):
        doc = json.loads(wmd["whitenclip"])
        doc.pop(field) if value is None else doc.update({field: value})
        save_file(wt, tmp_path / "bad.safetensors", metadata={**wmd, "whitenclip": json.dumps(doc)})
        refused("score", ws / "s.npy", "-w", tmp_path / "bad.safetensors", match=f"bad.safetensors: .*{field}")
    mmd, mt = header_of(ws / "m.moments.safetensors"), load_file(ws / "m.moments.safetensors")
    for n in (None, "abc", "1e3"):
        md = {k: v for k, v in mmd.items() if k != "n"} | ({} if n is None else {"n": n})
        save_file(mt, tmp_path / "bad.moments.safetensors", metadata=md)
        refused(
            "fit",
            tmp_path / "bad.moments.safetensors",
            "-o",
            tmp_path / "x.safetensors",
            match="bad.moments.safetensors",
        )
    save_file(
        {k: v for k, v in mt.items() if k != "extra.reservoir.keys"}, tmp_path / "bad.moments.safetensors", metadata=mmd
    )
    refused(
        "fit", tmp_path / "bad.moments.safetensors", "-o", tmp_path / "x.safetensors", match="bad.moments.safetensors"
    )
    refused(
        "fit",
        ws / "s.npy",
        "--engine",
        "dask",
        "--scheduler",
        "foo://x",
        "-o",
        tmp_path / "x.safetensors",
        match="--scheduler foo://x",
    )


def test_4_sparse_pt_in_score_and_import_wclip(ws, tmp_path):
    import torch

    torch.save(torch.randn(20, 8).to_sparse(), tmp_path / "sparse.pt")
    refused("score", tmp_path / "sparse.pt", "-w", ws / "w.safetensors", match="sparse.pt: holds a sparse tensor")
    torch.save(torch.randn(8), tmp_path / "mean_image.pt")
    torch.save(torch.randn(8, 8).to_sparse(), tmp_path / "w_image.pt")
    refused(
        "import-wclip",
        "--mean",
        tmp_path / "mean_image.pt",
        "--matrix",
        tmp_path / "w_image.pt",
        "-o",
        tmp_path / "x.safetensors",
        "--n-samples",
        "10",
        match="w_image.pt: holds a sparse tensor",
    )


# ----------------------------------------------------------------------------- 5. smaller
def test_5_an_empty_shard_is_an_empty_part_that_merges_as_the_identity(ws, tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 8)))
    e, f, ef = (tmp_path / f"{n}.moments.safetensors" for n in ("e", "f", "ef"))
    assert run("moments", tmp_path / "empty.npy", "-o", e).exit_code == 0
    assert run("moments", ws / "s.npy", "-o", f).exit_code == 0
    assert run("merge-moments", e, f, "-o", ef).exit_code == 0
    assert run("fit", ef, "-o", tmp_path / "ef.safetensors").exit_code == 0
    a, b = Whitener.load(tmp_path / "ef.safetensors"), Whitener.load(ws / "w.safetensors")
    np.testing.assert_allclose(a.W_, b.W_, rtol=0, atol=1e-10)
    refused("fit", e, "-o", tmp_path / "x.safetensors", match="got 0")


def test_5_bad_npy_magic_and_text_vector_digits(ws, tmp_path):
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPX\x01\x00" + b"v" * 200)
    for extra in ([], ["--engine", "dask"]):
        res = refused(
            "fit", tmp_path / "bad.npy", *extra, "-o", tmp_path / "x.safetensors", match="bad.npy: not a .npy file"
        )
        assert "object" not in res.output
    (tmp_path / "v.txt").write_text("1 2 3 4 5 6 7 8\n1_000 2 3 4 5 6 7 8\n")
    refused("score", tmp_path / "v.txt", "-w", ws / "w.safetensors", match=r"v.txt:2: not a vector of numbers")
