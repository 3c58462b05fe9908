"""Embeddings in tables: parquet / Arrow IPC files and folders, through the local reader and the
sharded planner (row groups as pieces, ``--engine dask``), refusals naming file, row group and
row, and ``score -o NAME.parquet``."""

import json
import sys

import numpy as np
import pytest
from conftest import same_whitener
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from whitenclip import engine
from whitenclip.cli import app
from whitenclip.errors import InputError
from whitenclip.readers.plan import discover_shards, open_embeddings, plan_pieces
from whitenclip.whitening import Whitener

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

runner = CliRunner()
D = 6
GROUPS = [[7, 40], [1, 55, 0, 12], [30]]  # rows per row group of each of 3 files (an empty row group too)


def run(*args):
    return runner.invoke(app, [str(a) for a in args])



def rows(n, seed):
    rng = np.random.default_rng(seed)
    return (1.5 + rng.standard_normal((n, D)) * np.geomspace(4, 0.2, D)).astype(np.float32)


def write_parquet(path, X, ids=None, *, groups=None, fixed=False, extra=True):
    emb = (pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), X.shape[1]) if fixed
           else pa.array(list(X), type=pa.list_(pa.from_numpy_dtype(X.dtype))))
    cols = {"id": ids if ids is not None else [f"{path.stem}-{i}" for i in range(len(X))], "emb": emb}
    if extra:
        cols["caption"] = [f"caption {i}" for i in range(len(X))]
    table = pa.table(cols)
    with pq.ParquetWriter(path, table.schema) as w:
        at = 0
        for n in groups or [len(X)]:
            w.write_table(table.slice(at, n), row_group_size=max(n, 1)) if n else w.write_table(table.slice(at, 0))
            at += n
    return table


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """3 parquet files (list<float32> column ``emb``, ids, a caption column), uneven row groups;
    ``all.npy`` holds the same rows in the same order."""
    d = tmp_path_factory.mktemp("tables")
    (d / "parts").mkdir()
    parts, ids = [], []
    for k, groups in enumerate(GROUPS):
        X = rows(sum(groups), k)
        write_parquet(d / "parts" / f"part-{k}.parquet", X, groups=groups, fixed=k == 1)
        parts.append(X)
        ids += [f"part-{k}-{i}" for i in range(len(X))]
    X = np.concatenate(parts)
    np.save(d / "all.npy", X)
    return d, X.astype(np.float64), ids


def test_row_groups_as_written(folder):
    d, _, _ = folder
    meta = pq.ParquetFile(d / "parts" / "part-1.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == GROUPS[1]


def test_folder_reads_the_rows_and_ids_in_order(folder):
    d, X, ids = folder
    src = open_embeddings(d / "parts")
    got_ids, Y = src.read_all()
    assert src.dim == D and src.dtype == "float32" and src.n_rows == len(X)
    np.testing.assert_array_equal(Y, X)
    assert got_ids == ids  # the default id column `id`


def test_fit_parquet_folder_equals_npy(folder, tmp_path):
    d, X, _ = folder
    assert run("fit", d / "all.npy", "-o", tmp_path / "ref.safetensors").exit_code == 0
    res = run("fit", d / "parts", "-o", tmp_path / "tab.safetensors", "--column", "emb", "--id-column", "id")
    assert res.exit_code == 0, res.output
    ref, got = Whitener.load(tmp_path / "ref.safetensors"), Whitener.load(tmp_path / "tab.safetensors")
    assert got.n_samples_ == len(X)
    same_whitener(got, ref)
    np.testing.assert_allclose(got.mean_, X.mean(axis=0), rtol=1e-12)


def test_planner_makes_one_piece_per_row_group(folder):
    d, X, ids = folder
    shards = discover_shards([d / "parts"], column="emb")
    assert [s.kind for s in shards] == ["table"] * 3 and [s.n_rows for s in shards] == [sum(g) for g in GROUPS]
    pieces = plan_pieces(shards, piece_rows=5)  # piece_rows does not cut a row group
    assert [p.n_rows for p in pieces] == [n for g in GROUPS for n in g if n]
    from whitenclip.readers.plan import iter_piece_rows, piece_ids

    got = np.concatenate([Y for p in pieces for _, Y in iter_piece_rows(p, chunk_rows=4)])
    np.testing.assert_array_equal(got, X)
    assert [i for p in pieces for i in piece_ids(p)] == ids


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    blas1 = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    c = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                 silence_logs=50, env=blas1)
    client = distributed.Client(c)
    yield client, c.scheduler_address
    client.close()
    c.close()


def test_dask_fit_and_score_parquet_folder_equal_npy(cluster, folder, tmp_path):
    client, address = cluster
    d, X, ids = folder
    part = engine.compute_moments([d / "parts"], engine.EngineOptions(engine="dask", client=client, column="emb",
                                                                      piece_rows=50))
    assert part.n == len(X) and part.stats.get("pieces") == 5  # row groups coalesced: [7+40] [1] [55] [0+12] [30]
    assert run("fit", d / "all.npy", "-o", tmp_path / "ref.safetensors").exit_code == 0
    res = run("fit", d / "parts", "-o", tmp_path / "dask.safetensors", "--column", "emb", "--engine", "dask",
              "--scheduler", address)
    assert res.exit_code == 0, res.output
    same_whitener(Whitener.load(tmp_path / "dask.safetensors"), Whitener.load(tmp_path / "ref.safetensors"))
    # scores: parquet from the sharded path equals the TSV of the local .npy path (ids from the table)
    res = run("score", d / "parts", "-w", tmp_path / "ref.safetensors", "-o", tmp_path / "s.parquet",
              "--engine", "dask", "--scheduler", address)
    assert res.exit_code == 0, res.output
    ref = run("score", d / "all.npy", "-w", tmp_path / "ref.safetensors")
    lines = [line.split("\t") for line in ref.stdout.splitlines()]
    got = pq.read_table(tmp_path / "s.parquet")
    assert got.column_names == lines[0]
    assert got.column("id").to_pylist() == ids
    want = np.array([[float(v) for v in row[1:]] for row in lines[1:]])
    got_values = np.column_stack([got.column(c).to_numpy() for c in lines[0][1:]])
    np.testing.assert_allclose(got_values, want, rtol=1e-12)


def test_score_parquet_round_trip_local(folder, tmp_path):
    d, X, ids = folder
    assert run("fit", d / "all.npy", "-o", tmp_path / "w.safetensors").exit_code == 0
    res = run("score", d / "parts", "-w", tmp_path / "w.safetensors", "-o", tmp_path / "s.parquet")
    assert res.exit_code == 0, res.output
    tsv = run("score", d / "parts", "-w", tmp_path / "w.safetensors", "--chunk-rows", "7")
    lines = [line.split("\t") for line in tsv.stdout.splitlines()]
    got = pq.read_table(tmp_path / "s.parquet")
    assert got.column_names == lines[0] and got.schema.field("loglik").type == pa.float64()
    assert got.column("id").to_pylist() == [row[0] for row in lines[1:]] == ids
    for k, name in enumerate(lines[0][1:], start=1):
        assert got.column(name).to_pylist() == [float(row[k]) for row in lines[1:]]  # exact: repr round-trips
    assert not list(tmp_path.glob(".s.parquet.*"))  # written atomically: no temporary left


def test_score_parquet_failure_keeps_old_file(folder, tmp_path):
    d, _, _ = folder
    assert run("fit", d / "all.npy", "-o", tmp_path / "w.safetensors").exit_code == 0
    out = tmp_path / "s.parquet"
    out.write_bytes(b"old")
    bad = tmp_path / "bad.parquet"
    write_parquet(bad, np.full((5, D), np.nan, dtype=np.float32))
    res = run("score", bad, "-w", tmp_path / "w.safetensors", "-o", out)
    assert res.exit_code == 2 and out.read_bytes() == b"old"


# ---------------------------------------------------------------------------------------
# refusals: file, row group, row
# ---------------------------------------------------------------------------------------
def _table(values, type_):
    return pa.table({"emb": pa.array(values, type=type_)})


GOOD = [[float(i), 2.0 * i * i] for i in range(17)]  # distinct rows: equal pieces would be one part twice


@pytest.mark.parametrize("bad, why", [
    ([1.0, 2.0, 3.0], "embedding has 3 values, expected 2"),
    (None, "embedding is null"),
    ([1.0, None], "embedding holds a null value"),
])
def test_bad_rows_refused_naming_file_row_group_and_row(cluster, tmp_path, bad, why):
    p = tmp_path / "bad.parquet"
    values = GOOD[:13] + [bad] + GOOD[14:]
    pq.write_table(_table(values, pa.list_(pa.float64())), p, row_group_size=5)
    for extra in ((), ("--engine", "dask", "--scheduler", cluster[1])):
        res = run("moments", p, "-o", tmp_path / "m.moments.safetensors", *extra)
        assert res.exit_code == 2, res.output
        assert f"{p}: row group 2, row 3 (row 13 of the file): {why}" in " ".join(res.output.split())
    res = run("fit", p, "-o", tmp_path / "w.safetensors")
    assert res.exit_code == 2 and "row group 2, row 3" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "w.safetensors").exists()


@pytest.mark.parametrize("type_, shown", [(pa.list_(pa.int64()), "list<int64>"), (pa.string(), "string")])
def test_non_float_column_refused(tmp_path, type_, shown):
    p = tmp_path / "t.parquet"
    values = [[1, 2]] * 3 if shown != "string" else ["a", "b", "c"]
    pq.write_table(pa.table({"emb": pa.array(values, type=type_), "ok": pa.array([[1.0]] * 3)}), p)
    # moments reads embeddings only (fit/embed read a string column as captions: tests/test_caption_tables.py)
    res = run("moments", p, "-o", tmp_path / "m.moments.safetensors", "--column", "emb")
    assert res.exit_code == 2
    assert f"{p}: column 'emb' holds {shown}, not embeddings" in " ".join(res.output.split())


def test_column_choice(tmp_path):
    p = tmp_path / "two.parquet"
    X = rows(4, 3)
    f32 = pa.list_(pa.float32())
    pq.write_table(pa.table({"a": pa.array(list(X), f32), "b": pa.array(list(2 * X), f32), "name": list("wxyz")}), p)
    with pytest.raises(InputError, match=r"pass --column NAME .*several: a, b"):
        open_embeddings(p)
    ids, Y = open_embeddings(p, column="b", id_column="name").read_all()
    assert ids == list("wxyz") and np.array_equal(Y, 2 * X.astype(np.float64))
    with pytest.raises(InputError, match="no column 'c'"):
        open_embeddings(p, column="c")
    with pytest.raises(InputError, match="no id column 'key'"):
        open_embeddings(p, column="a", id_column="key")
    np.save(tmp_path / "x.npy", X)
    res = run("fit", tmp_path / "x.npy", "-o", tmp_path / "w.safetensors", "--column", "emb")
    assert res.exit_code == 2 and "--column/--id-column" in res.output
    pq.write_table(pa.table({"name": list("ab")}), tmp_path / "none.parquet")
    with pytest.raises(InputError, match="none among name"):
        open_embeddings(tmp_path / "none.parquet")


def test_missing_pyarrow_gives_install_hint(folder, monkeypatch):
    d, _, _ = folder
    for name in [m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow.")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(InputError, match=r"part-0.parquet: .*pip install 'whitenclip\[parquet\]'"):
        open_embeddings(d / "parts" / "part-0.parquet")
    res = run("fit", d / "parts", "-o", d / "never.safetensors")
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and "whitenclip[parquet]" in res.output


# ---------------------------------------------------------------------------------------
# Arrow IPC files and streams, save_to_disk folders
# ---------------------------------------------------------------------------------------
def test_arrow_file_stream_and_save_to_disk_read_the_same_rows(folder, tmp_path):
    d, X, ids = folder
    table = pa.concat_tables([pq.read_table(d / "parts" / f"part-{k}.parquet").cast(
        pq.read_table(d / "parts" / "part-0.parquet").schema) for k in range(3)]).combine_chunks()
    with pa.ipc.new_file(tmp_path / "t.arrow", table.schema) as w:  # IPC file format, 4 record batches
        w.write_table(table, max_chunksize=40)
    ds = tmp_path / "ds"  # what datasets.save_to_disk writes: IPC streams listed in state.json
    ds.mkdir()
    for k, (lo, hi) in enumerate([(0, 90), (90, len(X))]):
        with pa.ipc.new_stream(ds / f"data-0000{k}-of-00002.arrow", table.schema) as w:
            w.write_table(table.slice(lo, hi - lo), max_chunksize=25)
    (ds / "dataset_info.json").write_text(json.dumps({"features": {}}))
    (ds / "state.json").write_text(json.dumps({"_data_files": [{"filename": f"data-0000{k}-of-00002.arrow"}
                                                                for k in range(2)], "_fingerprint": "x"}))
    for path in (tmp_path / "t.arrow", ds):
        got_ids, Y = open_embeddings(path).read_all()
        np.testing.assert_array_equal(Y, X)
        assert got_ids == ids
        shards = discover_shards([path])
        pieces = plan_pieces(shards, 50)  # record batches (40 40 40 25 | 25 25 25 15, 25 25 5) coalesced
        assert [p.n_rows for p in pieces] == ([40, 40, 40, 25] if path == tmp_path / "t.arrow"
                                               else [50, 40, 50, 5])
        part = engine.compute_moments([path], engine.EngineOptions(chunk_rows=7))
        assert part.n == len(X)
        np.testing.assert_allclose(part.mean, X.mean(axis=0), rtol=1e-12)
    dd = tmp_path / "dd"
    (dd / "train").mkdir(parents=True)
    (dd / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))
    with pytest.raises(InputError, match="DatasetDict with splits train"):
        open_embeddings(dd)


# ---------------------------------------------------------------------------------------
# property: any row-group layout and chunk size reads the rows in order
# ---------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None, derandomize=True)
@given(groups=st.lists(st.integers(0, 9), min_size=1, max_size=5), chunk=st.integers(1, 11), fixed=st.booleans(),
       dtype=st.sampled_from(["float16", "float32", "float64"]))
def test_any_layout_reads_rows_in_order(tmp_path_factory, groups, chunk, fixed, dtype):
    n = sum(groups)
    X = np.arange(max(n, 1) * 3, dtype=dtype).reshape(-1, 3)[:n]
    p = tmp_path_factory.mktemp("prop") / "t.parquet"
    write_parquet(p, X, [str(i) for i in range(n)], groups=groups, fixed=fixed, extra=False)
    if n == 0:
        with pytest.raises(InputError, match="zero rows"):
            open_embeddings(p)
        return
    src = open_embeddings(p)
    assert src.dtype == dtype
    chunks = list(src.iter_chunks(chunk))
    assert all(len(c[0]) == len(c[1]) <= chunk for c in chunks)
    np.testing.assert_array_equal(np.concatenate([c[1] for c in chunks]), X.astype(np.float64))
    assert [i for c in chunks for i in c[0]] == [str(i) for i in range(n)]


def test_image_folder_with_parquet_is_not_a_table(tmp_path):
    """img2dataset output: 00000.parquet beside 00000/ holding the images stays images to embed."""
    from whitenclip.readers.items import is_table_path

    (tmp_path / "00000").mkdir()
    (tmp_path / "00000" / "a.jpg").write_bytes(b"")
    write_parquet(tmp_path / "00000.parquet", rows(3, 0))
    assert not is_table_path(tmp_path)
    (tmp_path / "00000" / "a.jpg").unlink()
    (tmp_path / "00000").rmdir()
    (tmp_path / "_SUCCESS").write_text("")  # Spark's marker is ignored
    assert is_table_path(tmp_path)


def test_moments_dir_resumes_table_pieces(folder, tmp_path):
    """--moments-dir keeps one part per piece (row groups coalesced up to --piece-rows) and a rerun loads
    them all (content hash of the rows)."""
    d, X, _ = folder
    args = ("moments", d / "parts", "--column", "emb", "--moments-dir", tmp_path / "parts", "--piece-rows", "50")
    assert run(*args, "-o", tmp_path / "a.moments.safetensors").exit_code == 0
    res = run(*args, "-o", tmp_path / "b.moments.safetensors")
    assert res.exit_code == 0 and "resumed 5 of 5 piece(s)" in res.output  # [7+40] [1] [55] [0+12] [30]
    from whitenclip.moments import MomentsPart

    a, b = (MomentsPart.load(tmp_path / f"{k}.moments.safetensors") for k in "ab")
    assert a.n == b.n == len(X) and np.array_equal(a.scatter, b.scatter)


def test_mi_reads_two_columns_of_one_table(tmp_path):
    """mi X X --x-column image_emb --y-column text_emb equals mi on the same rows as .npy files."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((400, 5)).astype(np.float32)
    Y = (X @ rng.standard_normal((5, 4)) + rng.standard_normal((400, 4))).astype(np.float32)
    p = tmp_path / "both.parquet"
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(400)],
                             "image_emb": pa.array(list(X), pa.list_(pa.float32())),
                             "text_emb": pa.array(list(Y), pa.list_(pa.float32()))}), p)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", Y)
    ref = run("mi", tmp_path / "x.npy", tmp_path / "y.npy", "--json")
    got = run("mi", p, p, "--x-column", "image_emb", "--y-column", "text_emb", "--json")
    assert ref.exit_code == 0 and got.exit_code == 0, got.output
    want, have = json.loads(ref.stdout), json.loads(got.stdout)
    assert have["n"] == want["n"] == 400
    np.testing.assert_allclose([have["mi"], *have["ci"]], [want["mi"], *want["ci"]], rtol=1e-12)
    res = run("mi", p, p, "--x-column", "text_emb", "--y-column", "image_emb", "--json")  # MI is symmetric
    assert json.loads(res.stdout)["mi"] == pytest.approx(want["mi"], rel=1e-10)
    refusals = {("mi", p, p): "both.parquet: pass --x-column NAME to name the embedding column",
                ("mi", p, p, "--x-column", "image_emb"): "pass --y-column NAME",
                ("mi", tmp_path / "x.npy", tmp_path / "y.npy", "--y-column", "a"): "y.npy: --y-column/--id-column name",
                ("mi", "--pairs", p, "--x-column", "a"): "--pairs takes --image-col and --text-col"}
    for args, message in refusals.items():
        res = run(*args)
        assert res.exit_code == 2 and message in " ".join(res.output.split()), (args, res.output)
