"""Captions in parquet / Arrow tables (a string column): read exactly as the CSV of the same table,
through every command that reads raw captions (whitenclip.readers.caption_tables.read_caption_table)."""

import csv
import json
import warnings

import numpy as np
import pytest
from conftest import same_whitener, shared_path
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from whitenclip.cli import app
from whitenclip.errors import InputError
from whitenclip.readers.caption_tables import read_caption_table
from whitenclip.readers.collect import collect_inputs
from whitenclip.readers.items import SkipReport
from whitenclip.readers.plan import read_embeddings
from whitenclip.readers.table import table_kind
from whitenclip.whitening import Whitener

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

TINY = "openclip:wc-tiny/none"  # random weights, seeded: the same vectors in every process
runner = CliRunner()


def run(*args):
    return runner.invoke(app, ["--quiet", *map(str, args)])


def caption_rows():
    """(image, caption, album) rows: 5 captions per image, one blank and one null caption among them."""
    words = ["dog", "cat", "child", "bird", "horse", "boat"]
    out = []
    for i in range(12):
        for k in range(5):
            out.append((f"im{i:02d}.jpg", f"  a {words[(i + k) % 6]} number {i} seen {k} times ", i % 3))
    out[7] = (out[7][0], "   ", out[7][2])  # blank: skipped
    out[23] = (out[23][0], None, out[23][2])  # null: skipped (an empty cell in the CSV)
    out[31] = (out[31][0], "café ✓ naïve", out[31][2])
    return out


def write_csv(path, rows, header=("image", "caption", "album")):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for r in rows:
            w.writerow(["" if v is None else v for v in r])


def arrow_table(rows):
    return pa.table({"image": [r[0] for r in rows], "caption": pa.array([r[1] for r in rows], pa.string()),
                     "album": pa.array([r[2] for r in rows], pa.int64()),
                     "pixels": pa.array([[0.5] * 3] * len(rows), pa.list_(pa.int32()))})  # a column never read


def write_save_to_disk(folder, table, pieces):
    """What datasets.save_to_disk writes: Arrow IPC streams listed in state.json."""
    folder.mkdir()
    names, at = [], 0
    for k, n in enumerate(pieces):
        names.append(f"data-{k:05d}-of-{len(pieces):05d}.arrow")
        with pa.ipc.new_stream(folder / names[-1], table.schema) as w:
            w.write_table(table.slice(at, n), max_chunksize=7)
        at += n
    (folder / "dataset_info.json").write_text(json.dumps({"features": {}}))
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": n} for n in names]}))
    return folder


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """The same caption table as CSV, parquet (row groups of 8), Arrow IPC file and save_to_disk folder."""
    d = tmp_path_factory.mktemp("captables")
    rows = caption_rows()
    table = arrow_table(rows)
    write_csv(d / "caps.csv", rows)
    pq.write_table(table, d / "caps.parquet", row_group_size=8)
    with pa.ipc.new_file(d / "caps.arrow", table.schema) as w:
        w.write_table(table, max_chunksize=11)
    write_save_to_disk(d / "ds", table, [25, len(rows) - 25])
    (d / "parts").mkdir()  # a folder of parquet files, read in natural order (part-2 before part-10)
    for k, (lo, hi) in enumerate([(0, 20), (20, 33), (33, len(rows))]):
        pq.write_table(table.slice(lo, hi - lo), d / "parts" / f"part-{2 + 8 * k}.parquet", row_group_size=6)
    return d


FORMATS = ["caps.parquet", "caps.arrow", "ds", "parts"]


def collect(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return collect_inputs([path], **kw)


# ---------------------------------------------------------------------------------------
# the reader: items, groups and skips of the CSV
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FORMATS)
def test_table_reads_the_items_and_groups_of_the_csv(tables, name):
    ref = collect(tables / "caps.csv", group_column=True)
    got = collect(tables / name, group_column=True)
    assert got.modality == "text" and len(got.items) == 58
    assert got.items == ref.items and got.groups == ref.groups
    assert got.items[0] == "a dog number 0 seen 0 times" and got.groups[:6] == ["im00.jpg"] * 5 + ["im01.jpg"]
    assert "café ✓ naïve" in got.items
    assert got.skips.counts == ref.skips.counts == {"empty caption": 2}
    assert table_kind(tables / name) == "captions"


def test_skips_name_file_row_group_and_row(tables):
    p = tables / "caps.parquet"
    with pytest.warns(UserWarning) as record:
        inp = collect_inputs([p])
    assert inp.skips.messages == [f"{p}: row group 0, row 7 (row 7 of the file): skipped (empty caption)",
                                  f"{p}: row group 2, row 7 (row 23 of the file): skipped (empty caption: null)"]
    assert {str(w.message) for w in record} >= set(inp.skips.messages)
    small = SkipReport()  # chunks of 3 rows inside a row group: rows still counted from the group's start
    with pytest.warns(UserWarning):
        read_caption_table(p, report=small, chunk_rows=3)
    assert small.messages == inp.skips.messages
    first = tables / "ds" / "data-00000-of-00002.arrow"  # rows 0-24 of the table, record batches of 7
    assert collect(tables / "ds").skips.messages[1] == \
        f"{first}: record batch 3, row 2 (row 23 of the file): skipped (empty caption: null)"
    with pytest.raises(InputError, match=r"caps.parquet: row group 0, row 7 \(row 7 of the file\): empty caption"):
        collect_inputs([p], strict=True)


def test_group_options_on_the_command_line(tables, tmp_path):
    def shard_groups(store):
        return [g for k in range(3) for g in json.loads((store / f"shard-{k:05d}.ids.json").read_text())["groups"]]

    for opts in (["--group-column", "album"], ["--no-groups"]):
        for name in ("caps.csv", "caps.parquet"):
            res = run("embed", tables / name, "-o", tmp_path / (name + opts[0]), "--model", TINY, "--shard-items", 20,
                      *opts)
            assert res.exit_code == 0, res.output
        if opts[0] == "--no-groups":
            assert "groups" not in (tmp_path / "caps.parquet--no-groups" / "shard-00000.ids.json").read_text()
        else:
            got = shard_groups(tmp_path / "caps.parquet--group-column")
            assert got == shard_groups(tmp_path / "caps.csv--group-column") and got[:8] == ["0"] * 5 + ["1"] * 3


def test_non_utf8_caption_is_one_skip(tmp_path):
    cells = pa.array([b"fine words", b"bad \xff byte", b"more words"], pa.binary()).view(pa.string())
    p = tmp_path / "raw.parquet"
    pq.write_table(pa.table({"caption": cells}), p)
    with pytest.warns(UserWarning, match=r"row 1 of the file\): skipped \(non-UTF-8 caption: byte 0xff"):
        caps, groups = read_caption_table(p)
    assert caps == ["fine words", "more words"] and groups is None
    with pytest.raises(InputError, match=r"row group 0, row 1 \(row 1 of the file\): non-UTF-8 caption: byte 0xff"):
        read_caption_table(p, report=SkipReport(strict=True))


def test_group_column_choices(tables, tmp_path):
    ref = collect(tables / "caps.csv", group_column="album")
    got = collect(tables / "caps.parquet", group_column="album")  # an int64 column: ids as text
    assert got.groups == ref.groups and set(got.groups) == {"0", "1", "2"}
    assert collect(tables / "caps.parquet", group_column="0").groups == ref_image_groups(tables)  # by index
    assert collect(tables / "caps.parquet").groups is None  # not asked for
    with pytest.warns(UserWarning) as rec:  # the grouping note, and the table's two skipped rows
        collect_inputs([tables / "caps.parquet"], group_column=True)
    assert sum("caps.parquet: grouping captions by its 'image' column" in str(w.message) for w in rec) == 1
    with pytest.raises(InputError, match=r"no column 'photo' .*\(--group-column\)"):
        collect(tables / "caps.parquet", group_column="photo")
    with pytest.raises(InputError, match=r"--group-column 'pixels' holds list<int32>; group ids come from"):
        collect(tables / "caps.parquet", group_column="pixels")


def ref_image_groups(tables):
    return collect(tables / "caps.csv", group_column=True).groups


def test_datasets_image_struct_groups_by_its_path(tmp_path):
    """A datasets Image column (struct<bytes, path>) is the default group column, by path; the
    image bytes are never read."""
    images = pa.array([{"bytes": b"\x89PNG" * 50, "path": f"im{i // 2}.jpg"} for i in range(6)])
    p = tmp_path / "hf.parquet"
    pq.write_table(pa.table({"image": images, "caption": [f"caption {i}" for i in range(6)]}), p)
    with pytest.warns(UserWarning, match=r"hf.parquet: grouping captions by its 'image' column"):
        caps, groups = read_caption_table(p, group_column=True)
    assert caps == [f"caption {i}" for i in range(6)] and groups == ["im0.jpg"] * 2 + ["im1.jpg"] * 2 + ["im2.jpg"] * 2
    pq.write_table(pa.table({"image": pa.array([b"x"] * 2), "caption": ["a", "b"]}), tmp_path / "bin.parquet")
    with pytest.warns(UserWarning, match="its 'image' column holds binary, not image ids: captions are not grouped"):
        assert read_caption_table(tmp_path / "bin.parquet", group_column=True) == (["a", "b"], None)


def test_column_kind_by_arrow_type(tmp_path):
    X = [[1.0, 2.0], [3.0, 4.0]]
    mixed = tmp_path / "mixed.parquet"
    pq.write_table(pa.table({"caption": ["a b", "c d"], "emb": pa.array(X, pa.list_(pa.float32()))}), mixed)
    assert table_kind(mixed) == "embeddings"  # a table of embeddings with their captions beside: as before
    assert table_kind(mixed, "caption") == "captions" and table_kind(mixed, "emb") == "embeddings"
    large = tmp_path / "large.arrow"
    t = pa.table({"id": [1, 2], "text": pa.array(["x y", "z"], pa.large_string())})
    with pa.ipc.new_file(large, t.schema) as w:
        w.write_table(t)
    assert table_kind(large) == "captions" and read_caption_table(large) == (["x y", "z"], None)
    only = tmp_path / "only.parquet"
    pq.write_table(pa.table({"url": ["a", "b"]}), only)  # the only column, as for a one-column CSV
    assert read_caption_table(only) == (["a", "b"], None)
    two = tmp_path / "two.parquet"
    pq.write_table(pa.table({"Caption": ["a"], "caption": ["b"]}), two)
    with pytest.raises(InputError, match=r"several caption columns \(Caption, caption\); pass --column NAME"):
        table_kind(two)
    none = tmp_path / "none.parquet"
    pq.write_table(pa.table({"url": ["a"], "alt": ["b"], "n": [1]}), none)
    with pytest.raises(InputError, match=r"pass --column NAME: no caption column .*string columns: url, alt"):
        table_kind(none)


def test_other_column_types_refused_in_one_line(tables, tmp_path):
    for cmd, out in (("embed", tmp_path / "s"), ("fit", tmp_path / "w.safetensors")):
        res = run(cmd, tables / "caps.parquet", "-o", out, "--column", "album", "--model", TINY)
        assert res.exit_code == 2, res.output
        assert res.output.strip().splitlines() == [
            f"whitenclip: error: {tables / 'caps.parquet'}: column 'album' holds int64, not embeddings (list<float>; "
            "here: none) nor captions (string; here: image, caption)"]
    assert not (tmp_path / "s").exists() and not (tmp_path / "w.safetensors").exists()


def test_id_column_of_a_caption_table_gives_each_caption_its_id(tables, tmp_path):
    # --id-column was refused for captions; it now reads each caption's id, as from the CSV of the table
    kept = [r[0] for r in caption_rows() if r[1] is not None and r[1].strip()]
    for name in ("caps.csv", "caps.parquet"):
        with pytest.warns(UserWarning, match="skipped") as rec:  # the blank and the null caption
            got = collect_inputs([tables / name], id_column="image")
        assert len(rec) == 2
        assert got.ids == kept and len(got.items) == len(kept) == 58
    res = run("fit", tables / "caps.parquet", "-o", tmp_path / "w.safetensors", "--id-column", "image", "--model", TINY)
    assert res.exit_code == 0, res.output


def test_sharded_path_says_captions_need_embedding(tables, tmp_path):
    res = run("fit", tables / "caps.parquet", "--column", "caption", "-o", tmp_path / "w.safetensors",
              "--moments-dir", tmp_path / "m")
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert "column 'caption' holds string, not embeddings" in res.output and "whitenclip embed" in res.output


def test_missing_pyarrow_one_line(tables, monkeypatch):
    import sys

    for name in [m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow.")]:
        monkeypatch.setitem(sys.modules, name, None)
    res = run("embed", tables / "caps.parquet", "-o", tables / "never", "--model", TINY)
    assert res.exit_code == 2 and res.output.strip().splitlines() == [
        f"whitenclip: error: {tables / 'caps.parquet'}: reading parquet/Arrow tables needs pyarrow: "
        "pip install 'whitenclip[parquet]'"]


# ---------------------------------------------------------------------------------------
# the commands: same ids, embeddings, artifacts and reports as from the CSV
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def csv_runs(tables, tmp_path_factory):
    """embed / fit of the CSV (the reference)."""
    d = tmp_path_factory.mktemp("csvruns")
    assert run("embed", tables / "caps.csv", "-o", d / "store", "--model", TINY, "--shard-items", 20).exit_code == 0
    assert run("fit", tables / "caps.csv", "-o", d / "w.safetensors", "--model", TINY,
               "--calibration-rows", 30).exit_code == 0
    return d


@pytest.mark.parametrize("name", FORMATS)
def test_embed_gives_the_ids_and_vectors_of_the_csv(tables, csv_runs, tmp_path, name):
    res = run("embed", tables / name, "-o", tmp_path / "store", "--model", TINY, "--shard-items", 20,
              "--column", "caption")
    assert res.exit_code == 0, res.output
    ids, X = read_embeddings(tmp_path / "store")
    ref_ids, ref_X = read_embeddings(csv_runs / "store")
    assert ids == ref_ids and len(ids) == 58 and ids[0] == "a dog number 0 seen 0 times"
    assert np.array_equal(X, ref_X) and X.shape == (58, 32)
    groups = [json.loads((tmp_path / "store" / f"shard-{k:05d}.ids.json").read_text()).get("groups") for k in range(3)]
    ref = [json.loads((csv_runs / "store" / f"shard-{k:05d}.ids.json").read_text()).get("groups") for k in range(3)]
    assert groups == ref and groups[0][:6] == ["im00.jpg"] * 5 + ["im01.jpg"]


@pytest.mark.parametrize("name", FORMATS)
def test_fit_gives_the_artifact_of_the_csv(tables, csv_runs, tmp_path, name):
    res = run("fit", tables / name, "-o", tmp_path / "w.safetensors", "--model", TINY, "--calibration-rows", "30")
    assert res.exit_code == 0, res.output
    a, b = Whitener.load(tmp_path / "w.safetensors"), Whitener.load(csv_runs / "w.safetensors")
    same_whitener(a, b, tol=1e-12)
    assert np.max(np.abs(a.mean_ - b.mean_)) <= 1e-12 and np.max(np.abs(a.W_ - b.W_)) <= 1e-12
    assert a.n_samples_ == 58 and a.calibration_groups_ == b.calibration_groups_ == 6  # 30 rows: 6 whole images
    assert np.array_equal(a.calibration_, b.calibration_)


def test_score_report_and_entropy_of_the_csv(tables, csv_runs):
    w = csv_runs / "w.safetensors"
    for cmd, *opts in (["score", "-w", w], ["entropy", "--json", "--knn-dims", 0, "--model", TINY],
                       ["gaussianity-report", "-w", w, "--json", "--subset", 20, "--projections", 20, "--trials", 2]):
        ref, got = (run(cmd, tables / name, *opts) for name in ("caps.csv", "caps.parquet"))
        assert ref.exit_code == 0 and got.exit_code == 0, (ref.output, got.output)
        assert got.stdout == ref.stdout and len(got.stdout) > 100
    rows = list(csv.DictReader(run("score", tables / "caps.parquet", "-w", w).stdout.splitlines(), delimiter="\t"))
    assert len(rows) == 58 and rows[0]["id"] == "a dog number 0 seen 0 times"


# ---------------------------------------------------------------------------------------
# property: any small string table reads as the CSV written from it
# ---------------------------------------------------------------------------------------
# "\r" is left out: the CSV reader folds "\r\n" inside a quoted field into "\n" (a table keeps it).
CELL = st.one_of(st.none(), st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), max_size=8),
                 st.sampled_from(["", " ", "\t", "a b", "é ✓", "x,y", '"q"', "\n z \n"]))


@settings(derandomize=True, deadline=None, max_examples=60)
@given(rows=st.lists(st.tuples(CELL, CELL), max_size=12), group=st.sampled_from([None, True, "image"]),
       row_group=st.integers(1, 5))
def test_any_string_table_reads_as_its_csv(tmp_path_factory, rows, group, row_group):
    d = tmp_path_factory.mktemp("prop")
    table = pa.table({"image": pa.array([r[0] for r in rows], pa.string()),
                      "caption": pa.array([r[1] for r in rows], pa.string())})
    pq.write_table(table, d / "t.parquet", row_group_size=row_group)
    write_csv(d / "t.csv", rows, header=("image", "caption"))
    outcomes = []
    for p in (d / "t.parquet", d / "t.csv"):
        try:
            inp = collect(p, group_column=group)
            outcomes.append((inp.items, inp.groups, dict(inp.skips.counts)))
        except InputError as exc:
            assert "\n" not in str(exc)
            outcomes.append("refused")
    assert outcomes[0] == outcomes[1]
    kept = [(i, c.strip()) for i, c in rows if c is not None and c.strip()]
    if kept:
        assert outcomes[0][0] == [c for _, c in kept]
        if group:
            assert outcomes[0][1] in ([(i or "").strip() or None for i, _ in kept], None)
    else:
        assert outcomes[0] == "refused"  # nothing usable to embed


# ---------------------------------------------------------------------------------------
# real data: Flickr8k's 40k captions
# ---------------------------------------------------------------------------------------
def test_flickr8k_parquet_reads_as_the_csv(tmp_path):
    src = shared_path("flickr8k", "all_captions.txt")
    with open(src, newline="", encoding="utf-8") as fh:
        records = list(csv.DictReader(fh))
    pq.write_table(pa.table({"image": [r["image"] for r in records], "caption": [r["caption"] for r in records]}),
                   tmp_path / "flickr.parquet", row_group_size=10_000)
    ref = collect(src, group_column=True)
    got = collect(tmp_path / "flickr.parquet", group_column=True)
    assert len(got.items) == len(records) == 40455
    assert got.items == ref.items and got.groups == ref.groups and len(set(got.groups)) == 8091
