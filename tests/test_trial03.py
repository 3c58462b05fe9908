"""Trial 03 (hostile shell user of 0.3's newer surfaces): one regression test per defect found.

Each command must end with exit 0 and the right output, or exit 2 and one line naming the file,
option or row: never exit 1, a traceback, a hang, or inf/NaN printed.
"""

import os
import re
import threading

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from whitenclip.cli import app
from whitenclip.errors import InputError

runner = CliRunner()
TINY = "openclip:wc-tiny/none"


def run(*args):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code in (0, 2), res.output
    assert "Traceback" not in res.output, res.output
    return res


def refused(*args, match):
    res = run(*args)
    errors = [line for line in res.stderr.splitlines() if line.startswith("whitenclip: error:")]
    assert res.exit_code == 2 and len(errors) == 1 and re.search(match, errors[0]), res.output
    return errors[0]


@pytest.fixture(scope="module")
def tiny():
    from whitenclip.encoders import load_encoder

    return load_encoder(TINY, device="cpu")


def _photos(folder, n=3):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for k in range(n):
        p = folder / f"p{k}.jpg"
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


# --- 1. --num-workers 100000 forked one process per worker (OOM-killed after minutes, orphans left)
def test_num_workers_is_bounded_and_capped_at_the_loader_pieces(tmp_path, tiny, monkeypatch):
    import torch

    from whitenclip.encoders import embed
    from whitenclip.encoders.embedding import MAX_NUM_WORKERS

    assert MAX_NUM_WORKERS == 64
    refused("embed", tmp_path, "-o", tmp_path / "st", "--num-workers", 100000, "--model", TINY,
            match="--num-workers")
    with pytest.raises(InputError, match=r"--num-workers 65: use 0\.\.64"):
        embed(tiny, _photos(tmp_path / "a"), modality="image", num_workers=65)
    seen = []
    real = torch.utils.data.DataLoader

    def loader(*args, **kwargs):
        seen.append(kwargs["num_workers"])
        return real(*args, **{**kwargs, "num_workers": 0, "prefetch_factor": None})

    monkeypatch.setattr(torch.utils.data, "DataLoader", loader)
    ids, X = embed(tiny, _photos(tmp_path / "b"), modality="image", num_workers=64, batch_size=3)
    assert seen == [1] and len(ids) == 3  # 3 images, one loader piece: one worker, not 64
    ids, X = embed(tiny, _photos(tmp_path / "c", 5), modality="image", num_workers=64, batch_size=2)
    assert seen[-1] == 3  # pieces of 2, 2, 1 images


# --- 2. a FIFO named x.jpg inside an image folder hung embed/fit/score forever (both decoders)
@pytest.mark.parametrize("decode", ["cpu", "gpu"])
def test_fifo_named_jpg_is_skipped_not_read(tmp_path, tiny, decode):
    from whitenclip.encoders import embed
    from whitenclip.readers.items import InputSkipWarning, SkipReport

    good = _photos(tmp_path, 1)
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    # were the FIFO opened, this writer would let the read end at EOF (so a regression fails, not hangs)
    writer = threading.Thread(target=lambda: open(fifo, "wb").close(), daemon=True)
    writer.start()
    try:
        skips = SkipReport()
        with pytest.warns(InputSkipWarning, match=r"pipe\.jpg: skipped \(corrupt image: not a regular file"):
            ids, X = embed(tiny, good + [str(fifo)], modality="image", decode=decode, num_workers=0, skips=skips)
        assert ids == good and X.shape == (1, tiny.dim)
        assert skips.messages == [f"{fifo}: skipped (corrupt image: not a regular file (a FIFO))"]
    finally:
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # release the writer thread
        writer.join(5)


# --- 3. encoder specs: odd hub names were "internal error: HFValidationError" (exit 1); every
# spec that cannot load (unknown arch, empty folder, a file, not cached offline, bad device) exit 1
@pytest.mark.parametrize("spec", ["hf:has space/model", "hf:ünïcödé/模型", "hf:a/b/c/d", "hf:org/repo@rev",
                                  "st:" + "a" * 500, "openclip:hf-hub:bad name"])
def test_impossible_hub_names_exit_2_before_loading(tmp_path, spec):
    line = refused("embed", _photos(tmp_path / "in", 1)[0], "-o", tmp_path / "st", "--model", spec,
                   match=r"is neither a local folder nor a hub repo id")
    assert len(line) < 600  # the 500-character name (quoted twice) is shortened in the message


def test_local_model_paths_name_what_is_wrong(tmp_path, monkeypatch):
    from whitenclip.encoders import hub

    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("{}")
    with pytest.raises(InputError, match=r"cannot load hf:X: .*/empty is empty"):
        hub.hub_location("hf:X", str(tmp_path / "empty"), ("config.json",), "hint")
    with pytest.raises(InputError, match=r"cannot load hf:X: .*/file is a file, not a model folder"):
        hub.hub_location("hf:X", str(tmp_path / "file"), ("config.json",), "hint")
    monkeypatch.setattr(hub, "_hub_offline", lambda: True)
    with pytest.raises(InputError, match="HF_HUB_OFFLINE is set"):
        hub.hub_location("st:org/none", "org/none", ("modules.json",), "hint")


def test_unloadable_openclip_specs_and_devices_are_bad_input(tmp_path):
    from whitenclip.encoders import load_encoder, resolve_device

    with pytest.raises(InputError, match="unknown open_clip architecture 'NoSuchArch'"):
        load_encoder("openclip:NoSuchArch/none", device="cpu")
    with pytest.raises(InputError, match="unknown pretrained tag 'nosuchtag'"):
        load_encoder("openclip:wc-tiny/nosuchtag", device="cpu")
    with pytest.raises(InputError, match=r"checkpoint .* is a directory"):
        load_encoder(f"openclip:wc-tiny@{tmp_path}", device="cpu")
    with pytest.raises(InputError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    refused("simulate", "--device", "foo", "--steps", 1, match="unknown device 'foo'")


# --- 4. mi --pointwise on a deterministic relation printed "mi (in-sample) inf ci -" on stderr, and
# finite per-pair values (about 41 nats, from clipped correlations) on stdout
def test_pointwise_on_a_deterministic_relation_is_refused(tmp_path):
    X = np.random.default_rng(0).standard_normal((300, 4))
    np.save(tmp_path / "x.npy", X)
    res = run("mi", tmp_path / "x.npy", tmp_path / "x.npy", "--pointwise")
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [
        "whitenclip: error: pointwise MI: deterministic relation between X and Y (identical inputs, or a canonical "
        "correlation of 1): every pair's pointwise MI is infinite"]
    assert not re.search(r"(?i)(?<![a-z])-?(inf|nan)(?![a-z])", res.stderr), res.stderr


# --- 5. simulate
def test_simulate_divergence_is_one_line_exit_2(tmp_path):
    line = refused("simulate", "--losses", "aninfonce", "--lr", "1e10", "--steps", 3, "--evals", 1,
                   "--n-eval", 500, "--seeds", 1, "--batch-size", 32, "--device", "cpu",
                   match=r"aninfonce seed 0: training diverged .* --lr 1e\+10 .*; lower --lr or raise --tau")
    assert "FloatingPointError" not in line and "nan" not in line


def test_simulate_dim_1_is_refused_up_front():
    refused("simulate", "--dim", 1, "--device", "cpu", match=r"--dim must be at least 2 .* got 1")


def test_simulate_preset_refuses_the_settings_it_fixes():
    refused("simulate", "--preset", "iclr2026", "--epochs", 1,
            match=r"--preset iclr2026 fixes every setting but --seeds, --device and --threads; drop --epochs$")
    refused("simulate", "--preset", "iclr2026", "--sparsity", "-1", "--mixing", "foo", "--seeds", 2,
            match=r"drop --mixing, --sparsity$")


def test_r2_skips_latent_coordinates_constant_on_the_held_out_rows():
    import warnings

    from whitenclip.simulate import embedding_metrics
    from whitenclip.simulate.metrics import _affine_lstsq, _apply, _subsets

    rng = np.random.default_rng(1)
    F = rng.standard_normal((1000, 4))
    z = np.column_stack([F[:, 0] + 0.1 * rng.standard_normal(1000), F[:, 1], np.zeros(1000)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # 0/0 was a RuntimeWarning and r2 = NaN
        m = embedding_metrics(F[500:], subsets=_subsets(500, 0), seed=0, F_fit=F[:500], z_fit=z[:500],
                              z_eval=z[500:])
    E = F / np.linalg.norm(F, axis=1, keepdims=True)
    pred = _apply(_affine_lstsq(E[:500], z[:500]), E[500:])
    ze = z[500:, :2]
    want = np.mean(1 - ((ze - pred[:, :2]) ** 2).sum(0) / ((ze - ze.mean(0)) ** 2).sum(0))
    assert np.isfinite(m["r2"]) and m["r2"] == pytest.approx(want, rel=1e-12)


# --- 6. -o into a directory that takes no files (/proc) said "directory /proc does not exist"
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs procfs")
def test_output_in_a_directory_that_takes_no_files(tmp_path):
    from whitenclip.outputs import atomic_write

    with pytest.raises(InputError, match=r"^/proc/x\.tsv: cannot create a file in /proc$"):
        with atomic_write("/proc/x.tsv", "w") as fh:
            fh.write("x")


# --- 7. score -o x.parquet --format jsonl silently wrote parquet
def test_parquet_output_refuses_an_explicit_text_format(tmp_path):
    pytest.importorskip("pyarrow")
    from whitenclip.whitening import Whitener

    X = np.random.default_rng(0).standard_normal((50, 3))
    np.save(tmp_path / "q.npy", X)
    Whitener().fit(X).save(tmp_path / "w.safetensors")
    out = tmp_path / "s.PARQUET"
    refused("score", tmp_path / "q.npy", "-w", tmp_path / "w.safetensors", "-o", out, "--format", "jsonl",
            match=r"s\.PARQUET: a \.parquet output is written as parquet; --format jsonl names a text format")
    assert not out.exists()
    assert run("score", tmp_path / "q.npy", "-w", tmp_path / "w.safetensors", "-o", out).exit_code == 0
    assert out.read_bytes()[:4] == b"PAR1"


# --- 8. --decode gpu with a model whose preprocessing has no tensor equivalent exited 1
def test_decode_gpu_without_tensor_preprocessing_is_bad_input(tiny):
    import copy

    from whitenclip.encoders import resolve_decode

    odd = copy.copy(tiny)
    odd.image_transform = lambda im: im  # no Resize/CenterCrop/ToTensor/Normalize to mirror
    with pytest.raises(InputError, match="--decode gpu: the preprocessing of .* has no tensor equivalent"):
        resolve_decode("gpu", odd)
    assert resolve_decode("cpu", odd) == "pil" and resolve_decode("auto", odd) == "pil"
    with pytest.raises(InputError, match="unknown decode 'nvjpeg'"):
        resolve_decode("nvjpeg", odd)


# --- 9. mi: bad --bootstrap/--shrinkage were refused after reading and pairing the inputs (two
# stderr lines: the pairing note, then the error); --shrinkage 2 / nan only inside the estimator
@pytest.mark.parametrize("option, match", [(("--bootstrap", 1), "--bootstrap needs at least 2"),
                                           (("--shrinkage", 2), r"--shrinkage must be .* in \[0, 1\]; got 2$"),
                                           (("--shrinkage", "nan"), r"in \[0, 1\]; got nan$")])
def test_mi_option_values_are_refused_before_reading(tmp_path, option, match):
    rng = np.random.default_rng(0)
    ids = np.array([f"k{i}" for i in range(60)])
    np.savez(tmp_path / "x.npz", embeddings=rng.standard_normal((60, 3)), ids=ids)
    np.savez(tmp_path / "y.npz", embeddings=rng.standard_normal((60, 2)), ids=ids[::-1])
    res = run("mi", tmp_path / "x.npz", tmp_path / "y.npz", *option)
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert re.search(match, res.stderr.strip()), res.stderr


# --- 10. a log line printed before a refusal made exit 2 two lines on stderr
def test_refusals_after_a_log_line_are_alone_on_stderr(tmp_path):
    rng = np.random.default_rng(0)
    ids = np.array([f"k{i}" for i in range(60)])
    np.savez(tmp_path / "x.npz", embeddings=rng.standard_normal((60, 3)), ids=ids)
    np.savez(tmp_path / "y.npz", embeddings=rng.standard_normal((60, 2)), ids=ids[::-1])
    (tmp_path / "g.txt").write_text("a\nb\n")
    res = run("mi", tmp_path / "x.npz", tmp_path / "y.npz", "--groups", tmp_path / "g.txt")
    assert res.exit_code == 2 and res.stderr.strip().count("\n") == 0, res.stderr  # no "rows paired by id" note
    res = run("mi", tmp_path / "x.npz", tmp_path / "y.npz")
    assert res.exit_code == 0 and "rows paired by id" in res.stderr
    store = tmp_path / "emb" / "infonce" / "seed0"
    store.mkdir(parents=True)
    (store / "meta.json").write_text("{}")
    res = run("simulate", "--losses", "infonce", "--steps", 1, "--evals", 1, "--n-eval", 500, "--seeds", 1,
              "--device", "cpu", "--save-embeddings", tmp_path / "emb")
    assert res.exit_code == 2 and res.stderr.strip().splitlines() == [
        f"whitenclip: error: {store}: already exists and is not empty; choose a new --save-embeddings directory"]


# --- 11. mi refusals about one side named "X"/"Y" instead of the file
def test_mi_refusals_name_the_file(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "few.npy", rng.standard_normal((3, 2)))
    np.save(tmp_path / "few_b.npy", rng.standard_normal((3, 2)))
    np.save(tmp_path / "const.npy", np.ones((40, 3)))
    np.save(tmp_path / "ok.npy", rng.standard_normal((40, 2)))
    refused("mi", tmp_path / "few.npy", tmp_path / "few_b.npy",
            match=rf"error: {re.escape(str(tmp_path / 'few.npy'))}: need at least 4 row\(s\)")
    refused("mi", tmp_path / "ok.npy", tmp_path / "const.npy",
            match=rf"error: mi: {re.escape(str(tmp_path / 'const.npy'))}: all directions have zero variance$")


# --- 12. an explicit symlink loop or FIFO named x.jpg said "no such file or directory"; a folder
# scan listed FIFOs named x.jpg (and symlink loops) as images
def _loop_and_fifo(folder):
    folder.mkdir(exist_ok=True)
    os.symlink("loopb.jpg", folder / "loopa.jpg")
    os.symlink("loopa.jpg", folder / "loopb.jpg")
    os.mkfifo(folder / "pipe.jpg")
    return str(folder / "loopa.jpg"), str(folder / "pipe.jpg")


def test_symlink_loop_and_fifo_inputs_are_skipped_with_their_reason(tmp_path):
    loop, fifo = _loop_and_fifo(tmp_path / "bad")
    good = _photos(tmp_path / "ok", 1)[0]
    res = run("embed", good, loop, fifo, "-o", tmp_path / "st", "--model", TINY, "--num-workers", 0)
    assert res.exit_code == 0, res.output
    warned = [line for line in res.stderr.splitlines() if line.startswith("whitenclip: warning:")]
    assert warned == [f"whitenclip: warning: {loop}: skipped (unreadable file: too many levels of symbolic links)",
                      f"whitenclip: warning: {fifo}: skipped (corrupt image: not a regular file (a FIFO))"]
    assert "2 skipped: 1 corrupt image, 1 unreadable file" in res.stderr
    res = run("embed", loop, "-o", tmp_path / "st2", "--model", TINY)
    assert res.exit_code == 2 and "too many levels of symbolic links" in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        f"whitenclip: error: {loop}: nothing usable to embed (1 skipped: 1 unreadable file)")
    refused("embed", fifo, "-o", tmp_path / "st3", "--model", TINY, "--strict",
            match=rf"{re.escape(fifo)}: corrupt image: not a regular file \(a FIFO\) \(strict mode")
    refused("embed", tmp_path / "nope.jpg", "-o", tmp_path / "st4", match=r"nope\.jpg: no such file or directory$")
    assert not (tmp_path / "st2").exists() and not (tmp_path / "st3").exists()


def test_folder_scan_leaves_out_fifos_and_symlink_loops(tmp_path):
    from whitenclip.readers.collect import collect_inputs
    from whitenclip.readers.images import discover_images
    from whitenclip.readers.items import InputSkipWarning, SkipReport

    loop, fifo = _loop_and_fifo(tmp_path)
    good = _photos(tmp_path, 2)
    (tmp_path / "sub").mkdir()
    os.mkfifo(tmp_path / "sub" / "z.png")
    assert discover_images(tmp_path) == good  # nothing to report to: left out quietly
    report = SkipReport()
    with pytest.warns(InputSkipWarning):
        assert discover_images(tmp_path, report) == good
    looped = "(unreadable file: too many levels of symbolic links)"
    piped = "(corrupt image: not a regular file (a FIFO))"
    assert report.messages == [f"{loop}: skipped {looped}", f"{tmp_path / 'loopb.jpg'}: skipped {looped}",
                               f"{fifo}: skipped {piped}", f"{tmp_path / 'sub' / 'z.png'}: skipped {piped}"]
    with pytest.warns(InputSkipWarning):
        inputs = collect_inputs([tmp_path])
    assert inputs.items == good and inputs.skips.counts == {"corrupt image": 2, "unreadable file": 2}
    with pytest.raises(InputError, match=r"loopa\.jpg: unreadable file: too many levels .* \(strict mode"):
        collect_inputs([tmp_path], strict=True)


# --- 13. mi --pairs: one missing image named by 100 rows was "1 skipped"; an empty image cell was
# "corrupt image: Is a directory"; a binary --pairs file gave 20+ warnings then "no column 'image'"
def test_pairs_skip_report_counts_the_table_rows_dropped(tmp_path):
    import json

    from whitenclip.readers.items import InputSkipWarning
    from whitenclip.sources import EncodeOptions, embed_pairs

    _photos(tmp_path, 3)
    rows = ["image,caption"] + [f"gone.jpg,caption {i}" for i in range(100)]
    rows += [f"p{k % 3}.jpg,good caption {k}" for k in range(30)] + [",no image here"]
    table = tmp_path / "pairs.csv"
    table.write_text("\n".join(rows) + "\n")
    with pytest.warns(InputSkipWarning) as rec:
        paired = embed_pairs(table, EncodeOptions(model=TINY, num_workers=0, progress=False))
    assert [str(w.message) for w in rec][0] == f"{table}:132: skipped (empty image path)"
    assert len(paired.ids) == 30 and paired.X.shape[0] == paired.Y.shape[0] == 30
    assert paired.skips.n_pairs_skipped == 101 and paired.skips.n_skipped == 2  # rows; items (a row, an image)
    assert paired.skips.summary() == "101 pairs skipped: 1 empty image path, 1 missing file (100 rows)"
    assert paired.skips.as_dict()["n_pairs_skipped"] == 101
    res = run("mi", "--pairs", table, "--model", TINY, "--num-workers", 0, "--json", "--ksg-dims", 0)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["n"] == 30
    assert "inputs: 101 pairs skipped: 1 empty image path, 1 missing file (100 rows)" in res.stderr
    assert "Is a directory" not in res.stderr


def test_pairs_table_that_is_not_csv_is_one_line(tmp_path):
    np.savez(tmp_path / "x.npz", embeddings=np.arange(5000.0).reshape(1000, 5))
    res = run("mi", "--pairs", tmp_path / "x.npz")
    assert res.exit_code == 2 and res.stderr.strip().splitlines() == [
        f"whitenclip: error: {tmp_path / 'x.npz'}: not a CSV/TSV table (binary file); --pairs reads a CSV/TSV "
        "whose header names the image and caption columns"]
    (tmp_path / "blank.csv").write_text("\nimage,caption\n")
    refused("mi", "--pairs", tmp_path / "blank.csv", match=r"blank\.csv:1: not a CSV/TSV table \(empty header line\)")
