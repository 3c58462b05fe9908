"""Writing to the user's paths: atomic for regular files, streamed into devices and FIFOs,
through symlinks, and refused (exit 2, nothing written) where it would destroy an input."""

import os
import signal
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from whitenclip.cli import app
from whitenclip.errors import InputError
from whitenclip.outputs import atomic_write, check_output_dir, check_output_file, check_output_files

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def fitted(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.standard_normal((200, 5)))
    res = run("fit", tmp_path / "x.npy", "-o", tmp_path / "w.safetensors")
    assert res.exit_code == 0, res.output
    return tmp_path


def test_kill_9_mid_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old content\n")
    child = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
from whitenclip.outputs import atomic_write
with atomic_write({str(target)!r}, "w") as fh:
    fh.write("new partial content\\n"); fh.flush()
    print("writing", flush=True)
    time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert target.read_text() == "old content\n"
    assert stat.S_ISREG(os.lstat(target).st_mode)


def test_dev_null_stays_a_character_device(fitted):
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    res = run("score", fitted / "x.npy", "-w", fitted / "w.safetensors", "-o", "/dev/null")
    assert res.exit_code == 0, res.output
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_fifo_is_streamed_into(fitted):
    fifo = fitted / "rows.fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo).read()))
    reader.start()
    res = run("score", fitted / "x.npy", "-w", fitted / "w.safetensors", "-o", fifo)
    reader.join(timeout=60)
    assert res.exit_code == 0, res.output
    lines = got[0].splitlines()
    assert lines[0].startswith("id\tloglik") and len(lines) == 201
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_symlink_target_is_replaced_and_link_kept(fitted):
    real = fitted / "real.tsv"
    real.write_text("old\n")
    link = fitted / "link.tsv"
    link.symlink_to(real)
    res = run("score", fitted / "x.npy", "-w", fitted / "w.safetensors", "-o", link)
    assert res.exit_code == 0, res.output
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text().startswith("id\tloglik") and len(real.read_text().splitlines()) == 201


def test_whitener_through_symlink(fitted):
    real = fitted / "real.safetensors"
    link = fitted / "link.safetensors"
    link.symlink_to(real)
    res = run("fit", fitted / "x.npy", "-o", link)
    assert res.exit_code == 0, res.output
    assert link.is_symlink() and os.readlink(link) == str(real)
    from whitenclip.whitening import Whitener

    ref = Whitener.load(fitted / "w.safetensors")  # the same fit, written to a plain path
    np.testing.assert_array_equal(Whitener.load(real).eigenvalues_, ref.eigenvalues_)


@pytest.mark.parametrize("case", ["directory", "missing-parent", "same-as-input", "same-as-whitener"])
def test_score_output_refused_with_exit_2(fitted, case):
    before = (fitted / "x.npy").read_bytes()
    out = {"directory": fitted, "missing-parent": fitted / "nope" / "s.tsv",
           "same-as-input": fitted / "x.npy", "same-as-whitener": fitted / "w.safetensors"}[case]
    res = run("score", fitted / "x.npy", "-w", fitted / "w.safetensors", "-o", out)
    assert res.exit_code == 2, res.output
    assert str(out) in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert (fitted / "x.npy").read_bytes() == before
    assert not (fitted / "nope").exists()


def test_same_file_through_another_name_is_refused(fitted):
    (fitted / "alias.npy").symlink_to(fitted / "x.npy")
    res = run("score", fitted / "alias.npy", "-w", fitted / "w.safetensors", "-o", fitted / "x.npy")
    assert res.exit_code == 2 and "is also an input" in res.stderr


def test_whitener_name_must_end_in_safetensors(fitted):
    res = run("fit", fitted / "x.npy", "-o", fitted / "w.bin")
    assert res.exit_code == 2 and ".safetensors" in res.stderr
    assert not (fitted / "w.bin").exists()


def test_directory_outputs(fitted):
    res = run("gaussianity-report", fitted / "x.npy", "-o", fitted / "x.npy", "--trials", "1", "--projections", "5")
    assert res.exit_code == 2 and "not a directory" in res.stderr
    res = run("gaussianity-report", fitted / "x.npy", "--out", fitted / "a" / "b", "--projections", "5")
    assert res.exit_code == 2 and "does not exist" in res.stderr
    with pytest.raises(InputError, match="not a directory"):
        check_output_dir(fitted / "x.npy")


def test_unwritable_location(tmp_path):
    if os.geteuid() == 0:
        target = "/proc/whitenclip-test.safetensors"  # not writable even for root
        with pytest.raises(InputError, match="/proc"):
            with atomic_write(target):
                pass
    else:
        d = tmp_path / "ro"
        d.mkdir(mode=0o500)
        with pytest.raises(InputError, match="permission denied"):
            check_output_file(d / "w.safetensors")


def test_import_wclip_refuses_to_overwrite_its_input(tmp_path):
    import torch

    torch.save(torch.zeros(4), tmp_path / "mean_image.pt")
    matrix = tmp_path / "w_mat_image.safetensors"  # a torch file under an artifact's name: only samefile stops it
    torch.save(torch.eye(4), matrix)
    before = matrix.read_bytes()
    res = run("import-wclip", "--mean", tmp_path / "mean_image.pt", "--matrix", matrix, "-o", matrix)
    assert res.exit_code == 2 and "is also an input" in res.stderr
    assert matrix.read_bytes() == before


def test_kill_mid_run_keeps_old_scores(fitted):
    """End to end: a score killed while writing leaves the previous output as it was."""
    out = fitted / "scores.tsv"
    out.write_text("previous\n")
    big = np.random.default_rng(1).standard_normal((400_000, 5))
    np.save(fitted / "big.npy", big)
    child = subprocess.Popen([sys.executable, "-m", "whitenclip.cli", "score", str(fitted / "big.npy"), "-w",
                              str(fitted / "w.safetensors"), "-o", str(out), "--chunk-rows", "1000"],
                             stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.startswith(".scores.tsv.") for p in fitted.iterdir()):
        time.sleep(0.02)
    child.kill()
    child.wait(timeout=30)
    assert out.read_text() == "previous\n"


def test_trailing_slash_names_a_directory(fitted):
    """`-o newdir/` never writes a file named `newdir`: commands writing one file refuse it (exit 2,
    one line, nothing created); `score` on the sharded path creates it as its per-shard folder."""
    x, w = fitted / "x.npy", fitted / "w.safetensors"
    for cmd in (("fit", x), ("moments", x), ("score", x, "-w", w), ("merge-moments", fitted / "m.moments.safetensors"),
                ("import-wclip", "--mean", x, "--matrix", x)):
        if cmd[0] == "merge-moments":
            assert run("moments", x, "-o", cmd[1]).exit_code == 0
        res = run(*cmd, "-o", f"{fitted}/newdir/")
        assert res.exit_code == 2, (cmd, res.output)
        assert "trailing slash names a directory" in res.stderr and len(res.stderr.strip().splitlines()) == 1
        assert not (fitted / "newdir").exists()
    res = run("score", x, "-w", w, "--engine", "dask", "-o", f"{fitted}/newdir/")
    assert res.exit_code == 0, res.output
    assert (fitted / "newdir").is_dir() and len((fitted / "newdir" / "x.tsv").read_text().splitlines()) == 201
    res = run("score", x, "-w", w, "--engine", "dask", "-o", f"{fitted}/nope/newdir/")  # parent must exist
    assert res.exit_code == 2 and "does not exist" in res.stderr and not (fitted / "nope").exists()


def test_check_output_files_by_name_and_samefile(tmp_path):
    a = tmp_path / "a.tsv"
    a.write_text("input\n")
    (tmp_path / "link.tsv").symlink_to(a)
    assert check_output_files([tmp_path / "o1.tsv", tmp_path / "o2.tsv"], inputs=[a]) == [tmp_path / "o1.tsv",
                                                                                         tmp_path / "o2.tsv"]
    for outputs, inputs, message in [
        ([f"{tmp_path}/sub/../a.tsv"], [a], "is also an input"),            # name equality, spelled otherwise
        ([tmp_path / "link.tsv"], [a], "is also an input"),                  # samefile through a link
        ([tmp_path / "future.tsv"], [tmp_path / "future.tsv"], "is also an input"),  # by name, not there yet
        ([tmp_path / "o.tsv", f"{tmp_path}/./o.tsv"], [], "written twice"),
        ([tmp_path], [], "is a directory"),
        ([tmp_path / "a.tsv" / "sub" / "o.tsv"], [], "is not a directory"),
    ]:
        with pytest.raises(InputError, match=message):
            check_output_files(outputs, inputs=inputs)
    assert a.read_text() == "input\n"


def test_report_dir_never_writes_over_an_input(fitted):
    """`gaussianity-report DIR/report.json -o DIR` would replace its own input: refused, input intact."""
    X = np.load(fitted / "x.npy")
    (fitted / "report.json").write_text("".join(" ".join(f"{v:.6f}" for v in row) + "\n" for row in X))
    before = (fitted / "report.json").read_bytes()
    res = run("gaussianity-report", fitted / "report.json", "-o", fitted, "--trials", "1", "--projections", "5")
    assert res.exit_code == 2 and "report.json: is also an input" in res.stderr, res.output
    assert (fitted / "report.json").read_bytes() == before and not (fitted / "report.html").exists()


@pytest.mark.parametrize("where", ["is", "inside", "contains"])
def test_embed_store_overlapping_an_input_is_refused_before_any_work(tmp_path, where):
    """``embed -o store/``: a store folder that is, lies inside, or contains an input (or the
    --groups file) is refused in one line before any model is loaded or file written."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "caps.txt").write_text("a dog\na cat\n")
    out = {"is": data, "inside": data / "store", "contains": tmp_path}[where]
    given = data / "caps.txt" if where == "contains" else data
    before = sorted(os.listdir(tmp_path)), sorted(os.listdir(data))
    res = run("embed", given, "-o", f"{out}/", "--model", "openclip:NoSuchArch/none")
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1 and "input" in res.output, res.output
    assert (sorted(os.listdir(tmp_path)), sorted(os.listdir(data))) == before
    res = run("embed", tmp_path / "caps2.txt", "-o", data, "--groups", data / "caps.txt")  # the groups file too
    assert res.exit_code == 2 and "contains the input" in res.output, res.output


def test_fit_save_embeddings_inside_an_input_folder_is_refused(tmp_path):
    (tmp_path / "caps.txt").write_text("a dog\na cat\n")
    res = run("fit", tmp_path / "caps.txt", "-o", tmp_path / "w.safetensors", "--save-embeddings", tmp_path)
    assert res.exit_code == 2 and "--save-embeddings" in res.output and "contains the input" in res.output, res.output
    assert not (tmp_path / "w.safetensors").exists()


@pytest.mark.parametrize("page, emb", [("emb", "emb"), ("emb/infonce/seed0", "emb"), ("page", "page/simulate.json")])
def test_simulate_page_folder_overlapping_the_stores_is_refused_before_training(tmp_path, page, emb):
    """``simulate -o DIR --save-embeddings EMB``: DIR may not be, lie inside, or contain EMB (the
    page would land in a store, or a store where the page's files go), refused before training."""
    (tmp_path / "emb" / "infonce").mkdir(parents=True)
    (tmp_path / "page").mkdir()
    res = run("simulate", "--steps", "100000", "-o", tmp_path / page, "--save-embeddings", tmp_path / emb)
    assert res.exit_code == 2, res.output
    assert "--save-embeddings folder" in res.output and res.output.count("\n") == 1, res.output
    assert not any((tmp_path / "emb" / "infonce").iterdir()) and not any((tmp_path / "page").iterdir())


def test_a_file_name_that_is_not_utf8_keeps_its_bytes_in_tsv_and_is_refused_by_parquet(tmp_path):
    """TSV to a file writes a non-UTF-8 file name's bytes (as stdout does, surrogateescape); parquet
    strings must be UTF-8, so ``-o x.parquet`` is one line naming the id (was: exit 1, UnicodeEncodeError)."""
    pytest.importorskip("pyarrow")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    photo = sorted(p for p in os.listdir("data/images") if p.endswith(".jpg"))[0]
    for name in (b"plain.jpg", b"caf\xe9.jpg"):
        (imgs / os.fsdecode(name)).write_bytes(open(os.path.join("data/images", photo), "rb").read())
    model = ["--model", "openclip:wc-tiny/none", "--num-workers", "0"]
    assert run("fit", "data/images", *model, "-o", tmp_path / "w.safetensors").exit_code == 0
    score = ["score", imgs, "-w", tmp_path / "w.safetensors", "--num-workers", "0"]
    res = run(*score, "-o", tmp_path / "s.tsv")
    assert res.exit_code == 0, res.output
    rows = (tmp_path / "s.tsv").read_bytes().splitlines()
    names = [os.fsencode(imgs / "caf\udce9.jpg"), os.fsencode(imgs / "plain.jpg")]
    assert [r.split(b"\t")[0] for r in rows] == [b"id", *names]
    res = run(*score, "-o", tmp_path / "s.parquet")
    assert res.exit_code == 2 and not (tmp_path / "s.parquet").exists()
    assert "is not valid UTF-8 and parquet strings must be" in " ".join(res.output.split())
