"""Progress off a terminal, caption ids from an id column, `embed -o NAME.npy`, and `info` on stores
and moments files (whitenclip.progress, inputs/tables id columns, stores.write_npy / describe_embeddings)."""

import csv
import json
import re
import sys

import numpy as np
import pytest
from conftest import shared_path
from typer.testing import CliRunner

from whitenclip import progress as progress_mod
from whitenclip.cli import app
from whitenclip.encoders import embed_items, load_encoder
from whitenclip.readers.collect import collect_inputs

TINY = "openclip:wc-tiny/none"  # random weights, seeded: the same vectors in every process
runner = CliRunner()
LINE = re.compile(r"^embedding texts: (\d+)/40 \((\d+)%\), [\d.,]+ items/s, elapsed \d+:\d\d, eta \d+:\d\d$")

WORDS = ["dog", "cat", "child", "bird", "horse", "boat", "tree", "car"]
CAPTIONS = [f"a {WORDS[i % 8]} and a {WORDS[(3 * i) % 8]} number {i}" for i in range(40)]


def run(*args):
    return runner.invoke(app, [*map(str, args)])


@pytest.fixture(scope="module")
def tiny():
    return load_encoder(TINY)


@pytest.fixture(scope="module")
def captions_csv(tmp_path_factory):
    """image,caption CSV: 4 images x 3 captions, then one caption repeated word for word under another image
    (as Flickr8k's duplicate captions): 13 rows, ids repeat, rows must stay distinct."""
    d = tmp_path_factory.mktemp("idcol")
    rows = [(f"im{i}.jpg", f"a {WORDS[i]} seen {k} times") for i in range(4) for k in range(3)]
    rows.append(("im9.jpg", rows[0][1]))  # the same caption as row 0, another image
    with open(d / "caps.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "caption"])
        w.writerows(rows)
    return d / "caps.csv", rows


@pytest.fixture(scope="module")
def whitener(captions_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("w") / "w.safetensors"
    res = run("-q", "fit", captions_csv[0], "-o", out, "--model", TINY, "--no-groups")
    assert res.exit_code == 0, res.output
    return out


# --------------------------------------------------------------------------- progress


def test_embedding_progress_prints_lines_when_stderr_is_a_file(tiny, tmp_path, monkeypatch):
    # stderr redirected to a file (nohup, SLURM): the old code printed nothing at all, however long the run
    now = [0.0]

    def clock():  # 5 s per call: a line at every 15 s (the default cadence)
        now[0] += 5.0
        return now[0]

    monkeypatch.setattr(progress_mod, "clock", clock)
    log = tmp_path / "stderr.log"
    with open(log, "w") as fh:
        monkeypatch.setattr(sys, "stderr", fh)
        chunks = list(embed_items(tiny, CAPTIONS, modality="text", progress=True, batch_size=4))
    assert sum(len(ids) for ids, _, _ in chunks) == 40
    lines = log.read_text().splitlines()
    regular = [m for m in map(LINE.match, lines[:-1])]
    assert regular and all(regular), lines
    counts = [int(m.group(1)) for m in regular]
    assert counts == sorted(counts) and all(c % 4 == 0 for c in counts)  # whole batches, in order
    assert [int(m.group(2)) for m in regular] == [round(100 * c / 40) for c in counts]
    assert 2 <= len(regular) <= 4  # every third batch (15 s / 5 s), not one per batch
    assert re.match(r"^embedding texts: 40/40 \(100%\), [\d.,]+ items/s, done in \d+:\d\d$", lines[-1]), lines[-1]


def test_embedding_progress_is_silent_when_disabled_or_short(tiny, tmp_path, monkeypatch):
    log = tmp_path / "stderr.log"
    with open(log, "w") as fh:
        monkeypatch.setattr(sys, "stderr", fh)
        monkeypatch.setattr(progress_mod, "clock", iter(range(0, 10 ** 6, 100)).__next__)  # 100 s per batch
        list(embed_items(tiny, CAPTIONS, modality="text", progress=False, batch_size=4))  # --quiet
        monkeypatch.setattr(progress_mod, "clock", lambda: 7.0)  # the whole run within one interval
        list(embed_items(tiny, CAPTIONS, modality="text", progress=True, batch_size=4))
    assert log.read_text() == ""


def test_cli_progress_lines_off_a_terminal_and_none_with_quiet(captions_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("WHITENCLIP_PROGRESS_SECONDS", "0")  # a line per batch
    res = run("embed", captions_csv[0], "-o", tmp_path / "s", "--model", TINY, "--batch-size", "4", "--no-groups")
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("embedding texts: ")]
    assert [ln.split(",")[0] for ln in lines] == ["embedding texts: 4/13 (31%)", "embedding texts: 8/13 (62%)",
                                                  "embedding texts: 12/13 (92%)", "embedding texts: 13/13 (100%)"]
    assert "eta" in lines[0] and "items/s" in lines[0] and "done in" in lines[-1]
    quiet = run("embed", captions_csv[0], "-o", tmp_path / "q", "--model", TINY, "--batch-size", "4", "--no-groups",
                "-q")
    assert quiet.exit_code == 0 and quiet.output == ""


def test_simulate_progress_lines_off_a_terminal(monkeypatch):
    from whitenclip.simulate.runner import _progress_bar

    now = [0.0]

    def clock():
        now[0] += 10.0
        return now[0]

    monkeypatch.setattr(progress_mod, "clock", clock)
    board = _progress_bar()  # stderr is not a terminal under pytest
    assert isinstance(board, progress_mod.LineBoard)
    import io

    board.stream = out = io.StringIO()
    task = board.add_task("infonce seed 0", total=6)
    for _ in range(6):
        board.update(task, advance=1)
    board.stop()
    expected = ["infonce seed 0: 2/6 (33%), 0.1 steps/s, elapsed 0:20, eta 0:40",  # 15 s cadence (a fake clock)
                "infonce seed 0: 4/6 (67%), 0.1 steps/s, elapsed 0:40, eta 0:20",
                "infonce seed 0: 6/6 (100%), 0.1 steps/s, done in 1:00"]
    assert out.getvalue().splitlines() == expected


# --------------------------------------------------------------------------- ids


def test_score_id_column_gives_one_row_per_caption_with_its_image(captions_csv, whitener):
    path, rows = captions_csv
    res = run("score", path, "-w", whitener, "--id-column", "image")  # was refused: "raw captions ... own ids"
    assert res.exit_code == 0, res.output
    out = [ln.split("\t") for ln in res.output.splitlines() if "\t" in ln]
    assert out[0][:2] == ["id", "loglik"]
    assert [r[0] for r in out[1:]] == [img for img, _ in rows]  # 13 rows in file order, duplicates kept
    by_caption = run("score", path, "-w", whitener)
    plain = [ln.split("\t") for ln in by_caption.output.splitlines() if "\t" in ln][1:]
    assert [r[0] for r in plain] == [cap for _, cap in rows]
    assert [r[1:] for r in out[1:]] == [r[1:] for r in plain]  # the same scores, row for row
    assert out[1][1:] == out[13][1:]  # the repeated caption: two rows, two ids, the same score


def test_id_column_refusals_are_one_line(captions_csv, whitener, tmp_path):
    path, _ = captions_csv
    res = run("score", path, "-w", whitener, "--id-column", "album")
    assert res.exit_code == 2 and res.output.strip().splitlines() == [
        f"whitenclip: error: {path}: no column 'album' in header ['image', 'caption'] (--id-column)"]
    txt = tmp_path / "caps.txt"
    txt.write_text("a dog\na cat\n")
    res = run("score", txt, "-w", whitener, "--id-column", "image")
    assert res.exit_code == 2 and "needs a CSV/TSV captions file with a header" in res.output
    blank = tmp_path / "blank.csv"
    blank.write_text("image,caption\nim1.jpg,a dog\n,a cat\n")
    res = run("score", blank, "-w", whitener, "--id-column", "image")
    assert res.exit_code == 2 and res.output.strip() == f"whitenclip: error: {blank}:3: empty id (--id-column image)"


def test_flickr8k_duplicate_captions_stay_distinct_rows_with_their_image_ids():
    path = shared_path("flickr8k", "all_captions.txt")
    with pytest.warns(UserWarning, match="is a CSV header"):
        got = collect_inputs([path], id_column="image")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert got.ids == [r["image"] for r in rows] and len(got.items) == len(rows) == 40455
    assert len(got.items) - len(set(got.items)) >= 75  # repeated captions: rows kept, not merged


# --------------------------------------------------------------------------- embed -o NAME.npy


def test_embed_to_npy_writes_one_file_with_ids_beside_it(captions_csv, whitener, tmp_path):
    path, rows = captions_csv
    out = tmp_path / "out.npy"
    res = run("-q", "embed", path, "-o", out, "--model", TINY, "--id-column", "image")
    assert res.exit_code == 0, res.output
    assert out.is_file() and not out.is_dir()  # the old code made a folder named out.npy
    X = np.load(out, allow_pickle=False)
    assert X.shape == (13, 32) and X.dtype == np.float32
    doc = json.loads((tmp_path / "out.ids.json").read_text())
    assert doc["ids"] == [img for img, _ in rows] and doc["groups"] == doc["ids"]  # image column: the groups
    assert doc["meta"]["encoder"] == TINY and doc["meta"]["modality"] == "text"
    scored = run("score", out, "-w", whitener)
    ids = [ln.split("\t")[0] for ln in scored.output.splitlines() if "\t" in ln][1:]
    assert ids == [img for img, _ in rows]  # score NAME.npy gets the ids back
    direct = run("score", path, "-w", whitener, "--id-column", "image")
    assert [ln for ln in scored.output.splitlines() if "\t" in ln] == \
        [ln for ln in direct.output.splitlines() if "\t" in ln]
    half = run("-q", "embed", path, "-o", tmp_path / "half.npy", "--model", TINY, "--dtype", "float16")
    assert half.exit_code == 0 and np.load(tmp_path / "half.npy").dtype == np.float16
    assert json.loads((tmp_path / "half.ids.json").read_text())["ids"] == [cap for _, cap in rows]


def test_embed_to_npy_drops_skipped_images_from_the_header(tmp_path):
    from PIL import Image

    d = tmp_path / "img"
    d.mkdir()
    rng = np.random.default_rng(0)
    for k in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(d / f"p{k}.png")
    (d / "p2b.png").write_bytes(b"not an image")
    res = run("-q", "embed", d, "-o", tmp_path / "im.npy", "--model", TINY, "--num-workers", "0")
    assert res.exit_code == 0, res.output
    assert "p2b.png: skipped (corrupt image" in res.output
    X = np.load(tmp_path / "im.npy", allow_pickle=False)  # header written for 6 rows, rewritten for 5
    assert X.shape == (5, 32) and np.isfinite(X).all()
    ids = json.loads((tmp_path / "im.ids.json").read_text())["ids"]
    assert ids == [str(d / f"p{k}.png") for k in (0, 1, 2, 3, 4)]


@pytest.mark.parametrize("name, why", [("x.npz", "embed writes a store directory or one NAME.npy file"),
                                       ("x.npy/", "a name ending in .npy is written as one file")])
def test_embed_refuses_file_names_it_cannot_write(captions_csv, tmp_path, name, why):
    res = run("embed", captions_csv[0], "-o", f"{tmp_path}/{name}", "--model", TINY)
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and why in res.output
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- info


def test_info_describes_a_store_and_a_moments_file(captions_csv, tmp_path):
    path, _ = captions_csv
    store = tmp_path / "store"
    assert run("-q", "embed", path, "-o", store, "--model", TINY, "--shard-items", "5").exit_code == 0
    res = run("info", store, "--json")  # the old code: "store: not a regular file"
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    assert {k: got[k] for k in ("kind", "n_rows", "dim", "dtype", "shards", "ids", "n_groups", "n_items",
                                "complete")} == {"kind": "store", "n_rows": 13, "dim": 32, "dtype": "float32",
                                                 "shards": 3, "ids": "recorded", "n_groups": 5, "n_items": 13,
                                                 "complete": True}
    assert got["encoder"]["encoder"] == TINY and got["command"].startswith("whitenclip embed ")
    table = run("info", store)
    assert table.exit_code == 0 and "store" in table.output and "13" in table.output and TINY in table.output
    moments = tmp_path / "m.moments.safetensors"
    assert run("-q", "moments", store, "-o", moments).exit_code == 0
    got = json.loads(run("info", moments, "--json").output)
    assert (got["n"], got["d"], got["pieces"], got["calibration_mode"]) == (13, 32, 3, "groups")
    assert got["calibration_rows"] == 13 and got["power_sums"] is True
    assert "moments" in run("info", moments).output


def test_fit_and_score_of_an_embeddings_file_report_long_reads(tmp_path, monkeypatch):
    X = np.random.default_rng(0).standard_normal((3000, 4))
    np.save(tmp_path / "x.npy", X)
    monkeypatch.setenv("WHITENCLIP_PROGRESS_SECONDS", "0")  # a line per chunk
    res = run("fit", tmp_path / "x.npy", "-o", tmp_path / "w.safetensors", "--chunk-rows", "1000")
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith(f"reading {tmp_path / 'x.npy'}: ")]
    assert [ln.split(": ", 1)[1].split(")")[0] + ")" for ln in lines] == ["1,000/3,000 (33%)", "2,000/3,000 (67%)",
                                                                          "3,000/3,000 (100%)"]
    fields = ("rows/s, elapsed", ", eta ")  # the line's format, not a timing
    assert all(f in lines[0] for f in fields) and "done in" in lines[-1]
    quiet = run("-q", "score", tmp_path / "x.npy", "-w", tmp_path / "w.safetensors", "--chunk-rows", "1000",
                "-o", tmp_path / "s.tsv")
    assert quiet.exit_code == 0 and quiet.output == ""


def test_info_refuses_a_file_it_cannot_describe_in_one_line(captions_csv):
    path, _ = captions_csv
    res = run("info", path)  # was: "not a readable .safetensors file (header of 7017... bytes ...)"
    assert res.exit_code == 2 and res.output.strip().splitlines() == [
        f"whitenclip: error: {path}: info describes whiteners and moments files (.safetensors), store directories "
        "and embeddings files (.npy, .npz, .safetensors, .pt, .h5, parquet/Arrow); this is none of them"]
