"""What commands read: binary files refused, .pt read safely, CSV headers in caption files,
incomplete stores refused, traceable ids across inputs, --modality text, capped skip warnings."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from whitenclip.cli import MAX_SKIP_WARNINGS, app
from whitenclip.errors import InputError
from whitenclip.readers.captions import parse_captions
from whitenclip.readers.items import InputFormatWarning
from whitenclip.readers.plan import open_embeddings, read_embeddings
from whitenclip.sources import EncodeOptions, open_sources
from whitenclip.whitening import Whitener
from whitenclip.writers import StoreWriter

runner = CliRunner()


def run(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


# --------------------------------------------------------------------------- binary and .pt


def test_binary_file_of_unknown_extension_is_refused(tmp_path):
    X = np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32)
    (tmp_path / "emb.bin").write_bytes(X.tobytes())
    res = run("fit", tmp_path / "emb.bin", "-o", tmp_path / "w.safetensors")
    assert res.exit_code == 2, res.output
    assert "emb.bin: binary file of unknown format" in res.stderr and ".npy" in res.stderr
    assert not (tmp_path / "w.safetensors").exists()


def test_pt_tensor_is_read_as_embeddings(tmp_path):
    X = torch.randn(1000, 64, generator=torch.Generator().manual_seed(0))
    torch.save(X, tmp_path / "emb.pt")
    res = run("fit", tmp_path / "emb.pt", "-o", tmp_path / "w.safetensors")
    assert res.exit_code == 0, res.output
    wh = Whitener.load(tmp_path / "w.safetensors")
    ref = Whitener().fit(X.numpy().astype(np.float64))
    assert wh.n_samples_ == 1000 and wh.n_features_ == 64
    np.testing.assert_allclose(wh.mean_, ref.mean_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(wh.eigenvalues_, ref.eigenvalues_, rtol=1e-10)


def test_pt_dict_with_ids(tmp_path):
    X = torch.arange(12, dtype=torch.float64).reshape(4, 3)
    torch.save({"embeddings": X, "ids": ["a", "b", "c", "d"]}, tmp_path / "emb.pth")
    ids, Y = read_embeddings(tmp_path / "emb.pth")
    assert ids == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(Y, X.numpy())


@pytest.mark.parametrize("obj, message", [
    ({"weights": torch.zeros(3, 2)}, "under 'embeddings'"),
    (torch.zeros(5), "2-D"),
    (torch.zeros(4, 2, dtype=torch.int64), "float16/32/64"),
])
def test_pt_other_contents_refused(tmp_path, obj, message):
    torch.save(obj, tmp_path / "bad.pt")
    with pytest.raises(InputError, match=message):
        open_embeddings(tmp_path / "bad.pt")


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_pt_pickled_objects_are_never_unpickled(tmp_path, capsys):
    torch.save({"embeddings": torch.zeros(3, 2), "x": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match="weights_only"):
        open_embeddings(tmp_path / "evil.pt")
    assert "unpickled!" not in capsys.readouterr().out


# --------------------------------------------------------------------------- caption files


FLICKR = (b"image,caption\n1000268201_693b08cb0e.jpg,A child in a pink dress is climbing up a set of stairs .\n"
          b"1000268201_693b08cb0e.jpg,A girl going into a wooden building .\n")


def test_csv_header_in_txt_uses_caption_column():
    with pytest.warns(InputFormatWarning, match="CSV header; reading captions from its 'caption' column"):
        caps = parse_captions(FLICKR, "captions.txt")
    assert caps == ["A child in a pink dress is climbing up a set of stairs .", "A girl going into a wooden building ."]


def test_tsv_header_in_txt():
    with pytest.warns(InputFormatWarning, match="TSV header"):
        caps = parse_captions(b"id\ttext\n1\ta dog\n2\ta cat\n", "c.txt")
    assert caps == ["a dog", "a cat"]


def test_header_without_caption_column_asks_for_column():
    with pytest.raises(InputError, match="--column"):
        parse_captions(b"image,description\nx.jpg,a dog runs\n", "c.txt")


def test_plain_captions_with_commas_are_not_a_header():
    data = b"A dog, a cat and a bird\nTwo people, one umbrella\n"
    assert parse_captions(data, "c.txt") == ["A dog, a cat and a bird", "Two people, one umbrella"]


# --------------------------------------------------------------------------- stores


def _partial_store(directory, n_items=10, done=4, dim=3):
    writer = StoreWriter(directory, dim=dim, meta={"n_items": n_items, "encoder": "minilm", "modality": "text",
                                                   "command": f"whitenclip embed caps.txt -o {directory}"})
    rng = np.random.default_rng(0)
    for start in range(0, done, 2):
        writer.write_shard([f"c{start}", f"c{start + 1}"], rng.standard_normal((2, dim)), start + 2)


@pytest.mark.parametrize("command", [["fit", "{s}", "-o", "{w}"], ["entropy", "{s}"], ["gaussianity-report", "{s}"],
                                     ["mi", "{s}", "{s}"]])
def test_incomplete_store_is_refused_unless_allow_partial(tmp_path, command):
    store = tmp_path / "store"
    _partial_store(store, n_items=10, done=8)
    args = [a.format(s=store, w=tmp_path / "w.safetensors") for a in command]
    res = run(*args)
    assert res.exit_code == 2, res.output
    assert f"{store}: store is incomplete: 8 of 10 items; rerun `whitenclip embed caps.txt -o {store}`" in res.stderr


def test_allow_partial_uses_the_committed_rows(tmp_path):
    store = tmp_path / "store"
    _partial_store(store, n_items=10, done=8)
    res = run("fit", store, "-o", tmp_path / "w.safetensors", "--allow-partial")
    assert res.exit_code == 0, res.output
    assert Whitener.load(tmp_path / "w.safetensors").n_samples_ == 8
    assert open_embeddings(store, allow_partial=True).n_rows == 8


def test_complete_store_needs_no_flag(tmp_path):
    store = tmp_path / "store"
    _partial_store(store, n_items=4, done=4)
    assert open_embeddings(store).n_rows == 4


# --------------------------------------------------------------------------- ids, modality


def test_ids_are_file_and_row_with_several_inputs(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.standard_normal((3, 4)))
    np.save(tmp_path / "b.npy", rng.standard_normal((2, 4)))
    ids, _ = read_embeddings([tmp_path / "a.npy", tmp_path / "b.npy"])
    assert ids == [f"{tmp_path}/a.npy:0", f"{tmp_path}/a.npy:1", f"{tmp_path}/a.npy:2",
                   f"{tmp_path}/b.npy:0", f"{tmp_path}/b.npy:1"]
    assert read_embeddings(tmp_path / "a.npy")[0] == ["0", "1", "2"]  # one input: row numbers
    np.save(tmp_path / "all.npy", rng.standard_normal((50, 4)))
    assert run("fit", tmp_path / "all.npy", "-o", tmp_path / "w.safetensors").exit_code == 0
    res = run("score", tmp_path / "a.npy", tmp_path / "b.npy", "-w", tmp_path / "w.safetensors", "--format", "jsonl")
    assert [json.loads(line)["id"] for line in res.stdout.splitlines()] == ids


def test_modality_text_reads_numeric_lines_as_captions(tmp_path, monkeypatch):
    (tmp_path / "nums.txt").write_text("1 2 3\n4 5 6\n")
    loaded = []

    class FakeEncoder:
        dim, spec, normalize = 4, "fake", False

        def meta(self, modality):
            return {"encoder": "fake", "modality": modality, "normalized": False, "dim": 4}

    monkeypatch.setattr("whitenclip.encoders.load_encoder", lambda *a, **k: loaded.append(a) or FakeEncoder())
    vectors = open_sources([tmp_path / "nums.txt"])
    assert vectors[0].dim == 3  # read as vectors by default
    captions = open_sources([tmp_path / "nums.txt"], EncodeOptions(modality="text"))
    assert captions[0].inputs.items == ["1 2 3", "4 5 6"] and captions[0].inputs.modality == "text"


# --------------------------------------------------------------------------- CLI manners


def test_skip_warnings_are_capped(tmp_path):
    n_bad = MAX_SKIP_WARNINGS + 7
    (tmp_path / "caps.txt").write_text("".join(["\n"] * n_bad) + "a dog runs\na cat sleeps\na bird sings\n")
    res = run("embed", tmp_path / "caps.txt", "-o", tmp_path / "store", "--model", "minilm")
    assert res.exit_code == 0, res.output
    lines = res.stderr.splitlines()
    assert sum("skipped (empty caption)" in ln for ln in lines) == MAX_SKIP_WARNINGS
    assert f"... and 7 more skipped item(s) not shown ({n_bad} in all)" in res.stderr


def test_quiet_after_the_subcommand(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((30, 3)))
    loud = run("fit", tmp_path / "x.npy", "-o", tmp_path / "w.safetensors")
    assert "fitted pca whitener" in loud.stderr
    for args in (["fit", tmp_path / "x.npy", "-o", tmp_path / "w.safetensors", "-q"],
                 ["-q", "fit", tmp_path / "x.npy", "-o", tmp_path / "w.safetensors"]):
        res = run(*args)
        assert res.exit_code == 0 and res.stderr == ""


def test_mi_pairs_with_no_image_found_suggests_image_root(tmp_path):
    from PIL import Image

    imgs = tmp_path / "photos"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    rows = ["image,caption"]
    for i in range(6):
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(imgs / f"p{i}.png")
        rows.append(f"p{i}.png,a photo number {i}")
    (tmp_path / "tables").mkdir()
    table = tmp_path / "tables" / "pairs.csv"
    table.write_text("\n".join(rows) + "\n")
    args = ["mi", "--pairs", table, "--model", "openclip:wc-tiny/none", "--num-workers", "0", "--ksg-dims", "0",
            "--json"]
    res = run(*args)
    assert res.exit_code == 2
    assert "none of the table's images could be embedded" in res.stderr and "--image-root" in res.stderr
    res = run(*args, "--image-root", imgs)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["n"] == 6


# --------------------------------------------------------------------------- issue 14: one store reader, crashes


def _store_1000(directory, rows=200, dim=6):
    """A store whose meta.json says 1000 items with 200 rows committed (a killed embed)."""
    writer = StoreWriter(directory, dim=dim, meta={"n_items": 1000, "command": f"whitenclip embed x -o {directory}"})
    X = np.random.default_rng(3).standard_normal((rows, dim)) + 2.0
    writer.write_shard([f"r{i}" for i in range(rows)], X, rows)
    return X


@pytest.mark.parametrize("command", [
    ["fit", "{s}", "-o", "{t}/w.safetensors"],
    ["moments", "{s}", "-o", "{t}/m.moments.safetensors"],
    ["fit", "{s}", "-o", "{t}/w.safetensors", "--engine", "dask", "--workers", "1"],
    ["fit", "{s}", "-o", "{t}/w.safetensors", "--moments-dir", "{t}/parts"],
    ["entropy", "{s}", "--engine", "dask", "--workers", "1"],
])
def test_incomplete_store_refused_on_the_sharded_path_too(tmp_path, command):
    store = tmp_path / "store"
    _store_1000(store)
    res = run(*[a.format(s=store, t=tmp_path) for a in command])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().splitlines() == [
        f"whitenclip: error: {store}: store is incomplete: 200 of 1000 items; rerun `whitenclip embed x -o {store}` "
        "to finish it (or pass --allow-partial to use the rows it has)"]


def test_allow_partial_honoured_on_the_sharded_path(tmp_path):
    store = tmp_path / "store"
    X = _store_1000(store)
    res = run("fit", store, "-o", tmp_path / "w.safetensors", "--moments-dir", tmp_path / "parts", "--allow-partial")
    assert res.exit_code == 0, res.output
    wh = Whitener.load(tmp_path / "w.safetensors")
    assert wh.n_samples_ == 200
    np.testing.assert_allclose(wh.mean_, X.astype(np.float32).astype(np.float64).mean(axis=0), rtol=1e-10)
    res = run("moments", store, "-o", tmp_path / "m.moments.safetensors", "--allow-partial")
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("meta", [{"n_items": "abc"}, {"dim": "abc"}])
def test_store_meta_of_wrong_type_is_exit_2(tmp_path, meta):
    store = tmp_path / "store"
    _store_1000(store)
    doc = {**json.loads((store / "meta.json").read_text()), **meta}
    (store / "meta.json").write_text(json.dumps(doc))
    for args in (["fit", store, "-o", tmp_path / "w.safetensors"],
                 ["moments", store, "-o", tmp_path / "m.moments.safetensors"]):
        res = run(*args)
        assert res.exit_code == 2, res.output
        assert "meta.json: " in res.stderr and "must be a" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_sparse_pt_is_exit_2_in_score_and_import_wclip(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "ref.npy", rng.standard_normal((60, 4)))
    assert run("fit", tmp_path / "ref.npy", "-o", tmp_path / "w.safetensors").exit_code == 0
    torch.save(torch.eye(4).to_sparse(), tmp_path / "sparse.pt")
    torch.save(torch.zeros(4), tmp_path / "mean_image.pt")
    for args in (["score", tmp_path / "sparse.pt", "-w", tmp_path / "w.safetensors"],
                 ["import-wclip", "--mean", tmp_path / "mean_image.pt", "--matrix", tmp_path / "sparse.pt",
                  "-o", tmp_path / "wc.safetensors", "--n-samples", "100"]):
        res = run(*args)
        assert res.exit_code == 2, res.output
        errors = [line for line in res.stderr.splitlines() if "error" in line]  # torch may warn first
        assert errors == [f"whitenclip: error: {tmp_path / 'sparse.pt'}: holds a sparse tensor (sparse_coo); "
                          "save a dense one" + (" (tensor.to_dense())" if args[0] == "score" else "")]
        assert "Traceback" not in res.output


def test_underscore_number_in_text_vectors_is_exit_2(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "ref.npy", rng.standard_normal((60, 2)))
    assert run("fit", tmp_path / "ref.npy", "-o", tmp_path / "w.safetensors").exit_code == 0
    res = run("score", "-", "-w", tmp_path / "w.safetensors", input="1 2\n1_000 2\n")
    assert res.exit_code == 2, res.output
    assert "<stdin>:2: not a vector of numbers: '1_000 2'" in res.stderr
