import io
import json
import re
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from whitenclip.errors import InputError
from whitenclip.outputs import atomic_write
from whitenclip.readers.plan import open_embeddings, read_embeddings, read_text_vectors
from whitenclip.readers.rows import RowStats, finite_chunks
from whitenclip.writers import StoreWriter


@pytest.fixture
def X(rng):
    return rng.standard_normal((50, 6))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_npy_memory_mapped_and_chunked(tmp_path, X, dtype):
    np.save(tmp_path / "x.npy", X.astype(dtype))
    src = open_embeddings(tmp_path / "x.npy")
    assert (src.n_rows, src.dim, src.dtype) == (50, 6, dtype)
    chunks = list(src.iter_chunks(chunk_rows=16))
    assert [c[1].shape[0] for c in chunks] == [16, 16, 16, 2]
    assert chunks[1][0][0] == "16"  # ids default to the row index
    assert all(c[1].dtype == np.float64 for c in chunks)
    np.testing.assert_array_equal(np.concatenate([c[1] for c in chunks]), X.astype(dtype).astype(np.float64))


def test_npz_with_ids(tmp_path, X):
    ids = np.array([f"item-{i}" for i in range(50)])
    np.savez(tmp_path / "x.npz", embeddings=X, ids=ids)
    got_ids, got = read_embeddings(tmp_path / "x.npz")
    assert got_ids[:2] == ["item-0", "item-1"]
    np.testing.assert_array_equal(got, X)


def test_safetensors_with_ids_and_meta(tmp_path, X):
    ids = [f"cap {i}" for i in range(50)]
    save_file({"embeddings": X.astype(np.float32)}, str(tmp_path / "x.safetensors"),
              metadata={"ids": json.dumps(ids), "encoder": "minilm", "modality": "text"})
    src = open_embeddings(tmp_path / "x.safetensors")
    assert src.meta["encoder"] == "minilm"
    got_ids, got = src.read_all()
    assert got_ids == ids
    np.testing.assert_allclose(got, X, rtol=1e-6)


def test_text_vectors_formats():
    text = "1 2 3\n\n4,5,6\n[7, 8, 9]\n"
    src = read_text_vectors(io.StringIO(text), "<stdin>")
    np.testing.assert_array_equal(src.read_all()[1], [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    with pytest.raises(InputError, match="<stdin>:2: not a vector of numbers"):
        read_text_vectors(io.StringIO("1 2\nhello world\n"), "<stdin>")
    with pytest.raises(InputError, match="<stdin>:2: vector has 3 values, expected 2"):
        read_text_vectors(io.StringIO("1 2\n1 2 3\n"), "<stdin>")


def test_store_writer_resume_and_read(tmp_path, X):
    meta = {"encoder": "openclip:tiny/none", "modality": "image", "normalized": False}
    w = StoreWriter(tmp_path / "s", dim=6, meta=meta)
    assert w.resume_item == 0
    w.write_shard([f"a{i}" for i in range(20)], X[:20], items_end=21)  # one item was skipped
    # a crash leaves a stray ids file and a temp file: both ignored and cleaned on reopen
    (tmp_path / "s" / "shard-00001.ids.json").write_text('{"ids": [], "items_end": 99}')
    (tmp_path / "s" / ".shard-00001.npy.x.tmp").write_bytes(b"junk")
    w2 = StoreWriter(tmp_path / "s", dim=6, meta=meta)
    assert w2.resume_item == 21 and w2.n_rows == 20
    w2.write_shard([f"b{i}" for i in range(30)], X[20:], items_end=51)
    ids, got = read_embeddings(tmp_path / "s")
    assert len(ids) == 50 and ids[20] == "b0"
    np.testing.assert_allclose(got, X, rtol=1e-6)
    assert open_embeddings(tmp_path / "s").meta["modality"] == "image"
    with pytest.raises(InputError, match="existing store has encoder"):
        StoreWriter(tmp_path / "s", dim=6, meta={**meta, "encoder": "minilm"})


def test_nonfinite_rows_named_or_dropped(tmp_path, X):
    X = X.copy()
    X[7, 1] = np.nan
    X[30, 0] = np.inf
    np.save(tmp_path / "x.npy", X)
    with pytest.raises(InputError, match=r"x.npy: row 7 \(id '7'\) holds NaN or inf"):
        read_embeddings(tmp_path / "x.npy")
    stats = RowStats()
    with pytest.warns(UserWarning, match="skipped 2 row"):
        rows = list(finite_chunks(open_embeddings(tmp_path / "x.npy"), drop_nonfinite=True, stats=stats))
    assert stats.dropped_nonfinite == 2 and stats.kept == 48
    assert "7" not in rows[0][0]


def test_bad_files(tmp_path, X):
    with pytest.raises(InputError, match="no such file"):
        open_embeddings(tmp_path / "missing.npy")
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        open_embeddings(tmp_path / "empty.npy")
    np.save(tmp_path / "zero.npy", np.zeros((0, 4), dtype=np.float32))
    with pytest.raises(InputError, match="zero rows"):
        open_embeddings(tmp_path / "zero.npy")
    np.save(tmp_path / "obj.npy", np.array([{"evil": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="never unpickled"):
        open_embeddings(tmp_path / "obj.npy")
    np.save(tmp_path / "ints.npy", np.ones((3, 3), dtype=np.int64))
    with pytest.raises(InputError, match="float16/32/64"):
        open_embeddings(tmp_path / "ints.npy")
    np.save(tmp_path / "vec.npy", np.ones(3))
    with pytest.raises(InputError, match="2-D"):
        open_embeddings(tmp_path / "vec.npy")
    save_file({"embeddings": X}, str(tmp_path / "x.safetensors"))
    data = (tmp_path / "x.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.safetensors: not a readable"):
        open_embeddings(tmp_path / "cut.safetensors")


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as fh:
            fh.write("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_uses_normal_permissions(tmp_path):
    import os
    with atomic_write(tmp_path / "f.bin") as fh:
        fh.write(b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o666 & ~mask


# --------------------------------------------------------------------------- issue 14: one validated reader


def st_bytes(header, payload: bytes = b"") -> bytes:
    """A .safetensors file from a header (any JSON value) and a payload, written by hand."""
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + payload


def both_readers(path):
    """(local rows, sharded rows) of one embeddings file, or the InputError each raised."""
    from whitenclip.readers.plan import discover_shards, iter_piece_rows, plan_pieces

    out = []
    for read in (lambda: read_embeddings(path)[1],
                 lambda: np.concatenate([X for p in plan_pieces(discover_shards([path]), 7)
                                         for _, X in iter_piece_rows(p, 5)])):
        try:
            out.append(read())
        except InputError as exc:
            out.append(exc)
    return out


def test_safetensors_data_offsets_are_respected_by_both_paths(tmp_path, rng):
    X = rng.standard_normal((20, 8)).astype(np.float32)
    junk = np.arange(10, dtype=np.int32)
    header = {"junk": {"dtype": "I32", "shape": [10], "data_offsets": [0, 40]},
              "embeddings": {"dtype": "F32", "shape": [20, 8], "data_offsets": [40, 680]}}
    (tmp_path / "a.safetensors").write_bytes(st_bytes(header, junk.tobytes() + X.tobytes()))
    local, sharded = both_readers(tmp_path / "a.safetensors")
    np.testing.assert_array_equal(local, X)
    np.testing.assert_array_equal(sharded, X)


@pytest.mark.parametrize("header, needle", [
    # [20, 8] F32 needs 640 bytes; the offsets give 320 and an I32 tensor follows (the sharded path read it as rows)
    ({"embeddings": {"dtype": "F32", "shape": [20, 8], "data_offsets": [0, 320]},
      "junk": {"dtype": "I32", "shape": [80], "data_offsets": [320, 640]}}, "needs 640 bytes"),
    ({"embeddings": {"dtype": "F32", "shape": [20, 8], "data_offsets": [0, 640]},
      "junk": {"dtype": "I32", "shape": [80], "data_offsets": [320, 640]}}, "overlap"),
    ({"embeddings": {"dtype": "F32", "shape": [20, 8], "data_offsets": [0, 640]}}, "past the end"),
    ({"embeddings": {"dtype": "F32", "shape": [20, 8], "data_offsets": [640, 0]}}, "data_offsets"),
    ({"embeddings": {"dtype": "F32", "shape": [20, -8], "data_offsets": [0, 640]}}, "shape"),
    ({"embeddings": {"dtype": "F32", "shape": [20, 8], "data_offsets": [0, 640]}, "__metadata__": {"a": 1}},
     "__metadata__"),
    ([1, 2, 3], "JSON list"),
    ({"embeddings": "abc"}, "JSON str"),
])
def test_bad_safetensors_headers_refused_by_both_paths(tmp_path, header, needle):
    payload = np.zeros(160 if needle != "past the end" else 100, np.float32).tobytes()
    (tmp_path / "b.safetensors").write_bytes(st_bytes(header, payload))
    for got in both_readers(tmp_path / "b.safetensors"):
        assert isinstance(got, InputError), got
        assert "b.safetensors: not a readable .safetensors file" in str(got) and needle in str(got)


def test_npy_bad_magic_is_named_as_such(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((3, 2)))
    data = bytearray((tmp_path / "x.npy").read_bytes())
    data[1:6] = b"NUMPX"
    (tmp_path / "x.npy").write_bytes(bytes(data))
    with pytest.raises(InputError, match="bad magic string") as err:
        open_embeddings(tmp_path / "x.npy")
    assert "unpickled" not in str(err.value)


def test_text_vector_with_underscore_digits_is_refused():
    from whitenclip.readers.text import parse_vector_line

    assert parse_vector_line("1_000 2") is None and parse_vector_line("[1, true]") is None
    assert parse_vector_line('[1, "2"]') is None and parse_vector_line("\u0661\u0662 3") is None
    with pytest.raises(InputError, match="<stdin>:2: not a vector of numbers: '1_000 2'"):
        read_text_vectors(io.StringIO("1 2\n1_000 2\n"), "<stdin>")


def test_safetensors_local_read_streams_in_chunks(tmp_path):
    """The local path reads a safetensors tensor chunk by chunk: peak RSS grows by about one
    chunk, not by the file (it loaded the whole tensor before)."""
    import subprocess
    import sys

    n, d = 16384, 768  # 48 MiB of float32
    X = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)
    save_file({"embeddings": X}, str(tmp_path / "big.safetensors"))
    expect = float(X.astype(np.float64).sum())
    del X
    # VmHWM: this process's peak RSS (getrusage's ru_maxrss would include the forked pytest's)
    code = f"""
import numpy as np
from whitenclip.readers.plan import open_embeddings
def hwm():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
src = open_embeddings({str(tmp_path / 'big.safetensors')!r})
before = hwm()
total = sum(float(X.sum()) for _, X in src.iter_chunks(256))
print((hwm() - before) // 1024, total)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    grown_mib, total = int(out[0]), float(out[1])
    assert total == pytest.approx(expect, rel=1e-9)
    assert grown_mib < 16, f"peak RSS grew by {grown_mib} MiB reading a 48 MiB file in 1.5 MiB chunks"


def test_npz_members_stream_and_compressed_bombs_are_refused(tmp_path, monkeypatch):
    from whitenclip.readers import npz

    X = np.random.default_rng(1).standard_normal((40, 5))
    ids = np.array([f"r{i}" for i in range(40)])
    np.savez(tmp_path / "plain.npz", embeddings=X, ids=ids)
    np.savez_compressed(tmp_path / "small.npz", embeddings=X, ids=ids)
    for name in ("plain.npz", "small.npz"):
        src = open_embeddings(tmp_path / name)
        chunks = list(src.iter_chunks(16))
        assert [len(c[0]) for c in chunks] == [16, 16, 8]
        np.testing.assert_array_equal(np.concatenate([c[1] for c in chunks]), X)
        assert chunks[2][0][0] == "r32"
    assert open_embeddings(tmp_path / "plain.npz").shards[0].kind == "raw"  # read in place, by byte ranges
    np.savez_compressed(tmp_path / "bomb.npz", embeddings=np.zeros((4096, 64)))  # 2 MiB of zeros in ~2 KiB
    monkeypatch.setattr(npz, "NPZ_INFLATE_LIMIT", 1 << 20)
    with pytest.raises(InputError, match=r"bomb\.npz: member 'embeddings\.npy' would inflate to .* limit"):
        open_embeddings(tmp_path / "bomb.npz")
    np.savez(tmp_path / "bad_ids.npz", embeddings=X, ids=ids[:3])
    with pytest.raises(InputError, match="bad_ids.npz: 'ids' of shape"):
        open_embeddings(tmp_path / "bad_ids.npz")
    (tmp_path / "notzip.npz").write_bytes(b"\x93NUMPY not a zip")
    with pytest.raises(InputError, match="notzip.npz: not a readable .npz file"):
        open_embeddings(tmp_path / "notzip.npz")


def _store(directory, meta, rows=20, dim=4):
    StoreWriter(directory, dim=dim, meta={"encoder": "e"})
    w = StoreWriter(directory, dim=dim)
    X = np.random.default_rng(2).standard_normal((rows, dim))
    w.write_shard([f"i{k}" for k in range(rows)], X, rows)
    doc = json.loads((directory / "meta.json").read_text())
    doc.update(meta)
    (directory / "meta.json").write_text(json.dumps(doc).replace('"NaN"', "NaN"))
    return X


@pytest.mark.parametrize("meta, needle", [
    ({"n_items": "abc"}, "'n_items' must be a non-negative integer"),
    ({"n_items": "NaN"}, "'n_items' must be a non-negative integer, got nan"),
    ({"n_items": 2.5}, "'n_items' must be a non-negative integer"),
    ({"dim": "abc"}, "'dim' must be a positive integer"),
    ({"dim": 5}, "shard has dimension 4, store says 5"),
    ({"dtype": "int8"}, "'dtype' must be one of"),
    ({"n_items": 5}, "shards cover 20 items, but meta.json says n_items = 5"),
    ({"n_items": 1000}, "store is incomplete: 20 of 1000 items"),
])
def test_bad_store_meta_refused_by_both_paths(tmp_path, meta, needle):
    from whitenclip.readers.plan import discover_shards

    _store(tmp_path / "s", meta)
    with pytest.raises(InputError, match=re.escape(needle)):
        open_embeddings(tmp_path / "s")
    with pytest.raises(InputError, match=re.escape(needle)):
        discover_shards([tmp_path / "s"])


def test_partial_store_allowed_on_both_paths(tmp_path):
    from whitenclip.readers.plan import discover_shards

    X = _store(tmp_path / "s", {"n_items": 1000})
    np.testing.assert_allclose(open_embeddings(tmp_path / "s", allow_partial=True).read_all()[1], X, rtol=1e-6)
    [shard] = discover_shards([tmp_path / "s"], allow_partial=True)
    assert shard.n_rows == 20


@pytest.mark.parametrize("bad", [None, [1], 1.5, True])
def test_null_or_nested_ids_are_refused_naming_the_row(tmp_path, bad):
    import torch

    X = np.zeros((3, 2), dtype=np.float32)
    ids = ["a", bad, "c"]
    st = tmp_path / "x.safetensors"
    save_file({"embeddings": X}, str(st), metadata={"ids": json.dumps(ids)})
    pt = tmp_path / "x.pt"
    torch.save({"embeddings": torch.from_numpy(X), "ids": ids}, str(pt))
    for path in (st, pt):
        with pytest.raises(InputError, match=r"id of row 1 is .*ids must be strings or integers"):
            open_embeddings(path)
    ok = tmp_path / "ok.safetensors"
    save_file({"embeddings": X}, str(ok), metadata={"ids": json.dumps(["a", 7, "c"])})
    assert open_embeddings(ok).read_all()[0] == ["a", "7", "c"]


@pytest.mark.parametrize("command", [["entropy"], ["gaussianity-report"], ["mi", "{f}"], ["score", "-w", "{w}"]])
def test_huge_rows_on_the_local_row_path_name_the_file_and_row(tmp_path, command):
    """|x| ~ 1e200 (finite) read through ``finite_chunks``: exit 2 naming the file and the row (not "X: row i")."""
    from typer.testing import CliRunner

    from whitenclip.cli import app

    rng = np.random.default_rng(0)
    np.save(tmp_path / "ok.npy", rng.standard_normal((100, 4)))
    res = CliRunner().invoke(app, ["fit", str(tmp_path / "ok.npy"), "-o", str(tmp_path / "w.safetensors")])
    assert res.exit_code == 0, res.output
    X = rng.standard_normal((100, 4))
    X[57, 2] = -1e200
    f = tmp_path / "big.npy"
    np.save(f, X)
    args = [a.format(f=f, w=tmp_path / "w.safetensors") for a in command]
    res = CliRunner().invoke(app, [args[0], str(f), *args[1:]])
    assert res.exit_code == 2, res.output
    assert f"{f}: row 57 (id '57') holds |x| = 1e+200" in res.output and res.output.count("\n") == 1, res.output


def test_huge_row_beside_a_dropped_nonfinite_row_keeps_its_file_row_number(tmp_path):
    from whitenclip.readers.plan import discover_shards, finite_piece_rows, open_embeddings, plan_pieces
    from whitenclip.readers.rows import finite_chunks

    X = np.ones((10, 3))
    X[2, 0], X[7, 1] = np.nan, 1e60
    np.save(tmp_path / "x.npy", X)
    with pytest.raises(InputError, match=r"x.npy: row 7 \(id '7'\) holds \|x\| = 1e\+60"):
        list(finite_chunks(open_embeddings(tmp_path / "x.npy"), drop_nonfinite=True))
    with pytest.raises(InputError, match=r"x.npy: row 7 holds \|x\| = 1e\+60"):
        for piece in plan_pieces(discover_shards([str(tmp_path / "x.npy")])):
            list(finite_piece_rows(piece, drop_nonfinite=True))


@pytest.mark.parametrize("command", [["score", "{f}", "-w", "{w0}"], ["fit", "{f}", "-o", "{w}"],
                                     ["fit", "{f}", "--engine", "dask", "-o", "{w}"]])
def test_sparse_pt_is_refused_in_one_line_without_torchs_warning(tmp_path, command):
    """torch warns "Validating sparse tensor invariants" while loading a sparse tensor with
    weights_only=True; the user sees only the one error line naming the file."""
    import torch
    from typer.testing import CliRunner

    from whitenclip.cli import app

    torch.save(torch.randn(20, 4).to_sparse(), tmp_path / "sparse.pt")
    np.save(tmp_path / "ok.npy", np.random.default_rng(0).standard_normal((20, 4)))
    w0 = tmp_path / "w0.safetensors"
    assert CliRunner().invoke(app, ["fit", str(tmp_path / "ok.npy"), "-o", str(w0)]).exit_code == 0
    args = [a.format(f=tmp_path / "sparse.pt", w=tmp_path / "w.safetensors", w0=w0) for a in command]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1 and "sparse.pt: holds a sparse tensor" in res.output, res.output


@pytest.mark.parametrize("damage", ["ids", "groups"])
def test_sharded_reader_refuses_a_store_shard_whose_ids_do_not_match_its_rows(tmp_path, damage):
    """90 ids (or groups) for a 100-row shard: refused by the local reader and, the same way, by the
    sharded one (which used to fit such a store without a word)."""
    from whitenclip.readers.plan import discover_shards

    d = tmp_path / "store"
    w = StoreWriter(d, dim=4, dtype="float32", meta={"n_items": 200})
    rng = np.random.default_rng(0)
    for k in range(2):
        w.write_shard([f"{k}-{i}" for i in range(100)], rng.standard_normal((100, 4)).astype(np.float32), 100 * (k + 1),
                      groups=[str(i // 5) for i in range(100)])
    doc = json.loads((d / "shard-00001.ids.json").read_text())
    doc[damage] = doc[damage][:90]
    (d / "shard-00001.ids.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"shard-00001.ids.json: .*(90 ids for 100 rows|list of 100 ids)"):
        read_embeddings(d)
    with pytest.raises(InputError, match=r"shard-00001.ids.json: .*(90 ids for 100 rows|list of 100 ids)"):
        discover_shards([str(d)])


def test_other_formats_given_as_safetensors_are_named(tmp_path):
    from whitenclip.readers.safetensors import parse_safetensors_header

    np.save(tmp_path / "a.npy", np.zeros((3, 4)))
    np.savez(tmp_path / "b.npz", x=np.zeros(3))
    (tmp_path / "c.pt").write_bytes(b"\x80\x02" + b"\x00" * 20)
    (tmp_path / "d.bin").write_bytes(b"hello")
    expect = {"a.npy": "its first bytes are those of a NumPy .npy file",
              "b.npz": "its first bytes are those of a zip archive",
              "c.pt": "its first bytes are those of a Python pickle",
              "d.bin": r"not a readable .safetensors file \(shorter than its 8-byte header length\)"}
    for name, message in expect.items():
        with pytest.raises(InputError, match=message):
            parse_safetensors_header(tmp_path / name)


def test_hdf5_without_h5py_is_one_line(tmp_path, monkeypatch):
    """An HDF5 input where h5py is not installed: one line naming the file and the extra to install."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("embeddings", data=np.ones((3, 2)))
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with pytest.raises(InputError, match=r"x\.h5: reading HDF5 files needs h5py: pip install 'whitenclip\[hdf5\]'$"):
        open_embeddings(tmp_path / "x.h5")
