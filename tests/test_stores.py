import io
import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from whitenclip.errors import InputError
from whitenclip.stores import (
    RowStats,
    StoreWriter,
    atomic_write,
    finite_chunks,
    open_embeddings,
    read_embeddings,
    read_text_vectors,
)


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
