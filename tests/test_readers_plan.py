"""Shard discovery, piece planning from headers, byte-range reads, and bad shards."""

import dataclasses
import json
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

from whitenclip.errors import InputError
from whitenclip.readers.base import Shard
from whitenclip.readers.plan import (
    discover_shards,
    finite_piece_rows,
    iter_piece_rows,
    natural_key,
    piece_ids,
    plan_pieces,
    shard_meta,
)


def _rows(pieces, chunk_rows=7):
    return np.concatenate([X for p in pieces for _, X in iter_piece_rows(p, chunk_rows)])


@pytest.fixture
def emb_dir(tmp_path, rng):
    d = tmp_path / "img_emb"
    d.mkdir()
    arrays = []
    for i, n in enumerate([0, 1, 23, 10, 41, 5, 2, 3, 4, 6, 12]):  # 11 shards: _10 sorts after _9
        X = rng.standard_normal((n, 5)).astype(np.float32)
        np.save(d / f"img_emb_{i}.npy", X)
        arrays.append(X)
    return d, arrays


def test_natural_order_and_exact_bytes(emb_dir):
    d, arrays = emb_dir
    shards = discover_shards([str(d / "*.npy")])
    assert [os.path.basename(s.path) for s in shards] == [f"img_emb_{i}.npy" for i in range(11)]
    assert [s.n_rows for s in shards] == [a.shape[0] for a in arrays]
    pieces = plan_pieces(shards, piece_rows=8)
    assert all(p.n_rows <= 8 for p in pieces)
    assert len({(p.shard.path, p.start) for p in pieces}) == len(pieces)  # a piece crosses no file
    assert [p.index for p in pieces] == list(range(len(pieces)))
    np.testing.assert_array_equal(_rows(pieces), np.concatenate(arrays).astype(np.float64))
    # byte ranges: the .npy header is 128 bytes, rows are 5 float32
    p = next(p for p in pieces if p.start == 8)
    assert (p.byte_start, p.byte_stop) == (p.shard.offset + 8 * 20, p.shard.offset + min(16, p.shard.n_rows) * 20)


def test_directory_and_clip_retrieval_layout(tmp_path, emb_dir):
    d, arrays = emb_dir
    assert [s.path for s in discover_shards([str(d)])] == [s.path for s in discover_shards([str(d / "*.npy")])]
    root = d.parent  # <root>/img_emb/*.npy (+ metadata/metadata_N.parquet)
    shards = discover_shards([str(root)])
    assert len(shards) == 11 and shard_meta(shards)["modality"] == "image"
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    (root / "metadata").mkdir()
    for i, X in enumerate(arrays):
        table = pa.table({"caption": [f"c{i}-{k}" for k in range(len(X))],
                          "key": [f"{i:03d}{k:04d}" for k in range(len(X))]})
        pq.write_table(table, root / "metadata" / f"metadata_{i}.parquet")
    pieces = plan_pieces(discover_shards([str(root)]), piece_rows=4)
    ids = [i for p in pieces for i in piece_ids(p)]
    assert ids[:3] == ["0010000", "0020000", "0020001"]  # "key" column; shard 0 is empty
    assert len(ids) == sum(len(a) for a in arrays)
    pq.write_table(pa.table({"key": ["x"]}), root / "metadata" / "metadata_3.parquet")
    with pytest.raises(InputError, match="metadata_3.parquet: 1 metadata rows for 10"):
        discover_shards([str(root)])


def test_safetensors_and_store_shards(tmp_path, rng):
    X = rng.standard_normal((9, 4))
    save_file({"embeddings": X}, str(tmp_path / "a.safetensors"),
              metadata={"ids": json.dumps([f"r{i}" for i in range(9)]), "modality": "text"})
    [s] = discover_shards([str(tmp_path / "a.safetensors")])
    assert (s.n_rows, s.dim, s.meta["modality"]) == (9, 4, "text")
    pieces = plan_pieces([s], 4)
    np.testing.assert_array_equal(_rows(pieces, 3), X)
    assert piece_ids(pieces[1]) == ["r4", "r5", "r6", "r7"]
    store = tmp_path / "store"
    store.mkdir()
    (store / "meta.json").write_text(json.dumps({"format": "whitenclip-store", "dim": 4, "encoder": "e",
                                                 "activation": "quick_gelu (hf 0123456789ab)"}))
    for k in range(2):
        np.save(store / f"shard-{k:05d}.npy", X[k * 5:(k + 1) * 5].astype(np.float32))
        ids = [f"s{k}{j}" for j in range(len(X[k * 5:(k + 1) * 5]))]
        (store / f"shard-{k:05d}.ids.json").write_text(json.dumps({"ids": ids}))
    np.save(store / "shard-00002.npy", X[:1].astype(np.float32))  # no ids file: not committed, ignored
    shards = discover_shards([str(store)])
    assert len(shards) == 2 and shard_meta(shards)["encoder"] == "e"
    # the activation and model fingerprint travel too (an older store's combined form split)
    meta = shard_meta(shards)
    assert (meta["activation"], meta["encoder_fingerprint"]) == ("quick_gelu", "0123456789ab")
    assert meta["modality"] is None  # recorded by no shard
    other = dataclasses.replace(shards[0], meta={**shards[0].meta, "encoder": "f"})
    with pytest.raises(InputError, match=r'shards disagree on encoder: "e", "f"'):
        shard_meta([shards[0], other])
    expect = [f"s0{j}" for j in range(5)] + [f"s1{j}" for j in range(4)]
    assert [i for p in plan_pieces(shards, 3) for i in piece_ids(p)] == expect


def test_plan_is_headers_only_and_refuses_bad_shards(tmp_path, rng):
    good = rng.standard_normal((6, 3)).astype(np.float32)
    np.save(tmp_path / "a.npy", good)
    np.save(tmp_path / "b.npy", rng.standard_normal((4, 2)).astype(np.float32))
    with pytest.raises(InputError, match=r"b\.npy: rows have dimension 2, but earlier shards have 3"):
        discover_shards([str(tmp_path / "a.npy"), str(tmp_path / "b.npy")])
    # truncated: header says 6 rows, file holds 3.5 rows
    raw = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(raw[:128 + 3 * 12 + 6])
    with pytest.raises(InputError, match=r"t\.npy: truncated at row 3"):
        discover_shards([str(tmp_path / "t.npy")])
    np.save(tmp_path / "f.npy", np.asfortranarray(good))  # rows are not byte ranges: one whole piece
    (fortran,) = discover_shards([str(tmp_path / "f.npy")])
    assert (fortran.kind, fortran.n_rows, fortran.dim) == ("whole", 6, 3)
    assert [(p.start, p.stop) for p in plan_pieces([fortran], 4)] == [(0, 6)]
    np.testing.assert_array_equal(_rows(plan_pieces([fortran], 4), 4), good)
    np.save(tmp_path / "o.npy", np.array([[None, 1]], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="never unpickled"):
        discover_shards([str(tmp_path / "o.npy")])
    with pytest.raises(InputError, match="matches no file"):
        discover_shards([str(tmp_path / "nothing*.npy")])


def test_nonfinite_row_names_shard_and_row(tmp_path, rng):
    X = rng.standard_normal((20, 3))
    X[13, 1] = np.nan
    np.save(tmp_path / "n.npy", X)
    [p0, p1] = plan_pieces(discover_shards([str(tmp_path / "n.npy")]), 10)
    assert sum(x.shape[0] for _, x, _ in finite_piece_rows(p0, 4)) == 10
    with pytest.raises(InputError, match=r"n\.npy: row 13 holds NaN"):
        list(finite_piece_rows(p1, 4))
    dropped = [0]
    kept = list(finite_piece_rows(p1, 4, drop_nonfinite=True, dropped=dropped))
    assert dropped == [1] and sum(x.shape[0] for _, x, _ in kept) == 9


def test_read_time_truncation_is_caught(tmp_path, rng):
    np.save(tmp_path / "a.npy", rng.standard_normal((8, 2)))
    [s] = discover_shards([str(tmp_path / "a.npy")])
    os.truncate(tmp_path / "a.npy", s.offset + 5 * 16)  # shrunk after planning
    with pytest.raises(InputError, match=r"a\.npy: truncated at row 5"):
        list(iter_piece_rows(plan_pieces([s], 8)[0], 3))


def test_plan_pieces_sizes():
    s = Shard("x.npy", 10, 2, "<f8", 128)
    assert [(p.start, p.stop) for p in plan_pieces([s, Shard("y.npy", 0, 2, "<f8", 128), s], 4)] == [
        (0, 4), (4, 8), (8, 10), (0, 4), (4, 8), (8, 10)]
    assert natural_key("a_10.npy") > natural_key("a_9.npy")
    with pytest.raises(InputError):
        plan_pieces([s], 0)


def test_corrupt_metadata_parquet_is_one_input_error(tmp_path, emb_dir):
    """A clip-retrieval metadata parquet that pyarrow cannot read (ArrowInvalid) names the file."""
    pytest.importorskip("pyarrow")
    from typer.testing import CliRunner

    from whitenclip.cli import app

    d, _ = emb_dir
    (d.parent / "metadata").mkdir()
    (d.parent / "metadata" / "metadata_2.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    with pytest.raises(InputError, match=r"metadata_2\.parquet: not a readable parquet file"):
        discover_shards([str(d.parent)])
    res = CliRunner().invoke(app, ["moments", str(d.parent), "-o", str(tmp_path / "m.moments.safetensors")])
    assert res.exit_code == 2, res.output
    assert "metadata_2.parquet: not a readable parquet file" in res.stderr and "Traceback" not in res.output


def test_store_shards_read_through_the_store_reader(tmp_path, rng):
    """The sharded path reads n_items, dim and dtype from meta.json as the local path does."""
    from whitenclip.writers import StoreWriter

    w = StoreWriter(tmp_path / "s", dim=3, meta={"n_items": 10})
    w.write_shard(["a", "b"], rng.standard_normal((2, 3)), 2)
    with pytest.raises(InputError, match="store is incomplete: 2 of 10 items"):
        discover_shards([str(tmp_path / "s")])
    [s] = discover_shards([str(tmp_path / "s")], allow_partial=True)
    assert piece_ids(plan_pieces([s])[0]) == ["a", "b"]
    (tmp_path / "s" / "shard-00000.ids.json").write_text(json.dumps({"ids": ["a"], "items_end": 2}))
    with pytest.raises(InputError, match="1 ids for 2 rows"):
        piece_ids(plan_pieces(discover_shards([str(tmp_path / "s")], allow_partial=True))[0])


def test_one_planner_for_both_engines(tmp_path, rng):
    """Every format is planned once: the shards the local reader opens (``open_embeddings``) are the
    ones the Dask engine ships (``discover_shards``), and reading their pieces gives the same ids and
    rows as the local reader, for .npy (with ids beside it), stored and compressed .npz,
    .safetensors, .pt, HDF5, text vectors, a store and a folder of parquet files."""
    import torch

    from whitenclip.readers.plan import open_embeddings
    from whitenclip.writers import StoreWriter, write_npy

    X = rng.standard_normal((30, 4)).astype(np.float32)
    ids = [f"r{i}" for i in range(30)]
    paths = []
    write_npy(tmp_path / "a.npy", [(ids, X, None)], dim=4, max_rows=30)
    np.savez(tmp_path / "b.npz", embeddings=X, ids=np.array(ids))
    np.savez_compressed(tmp_path / "c.npz", embeddings=X)
    save_file({"embeddings": X}, str(tmp_path / "d.safetensors"), metadata={"ids": json.dumps(ids)})
    torch.save({"embeddings": torch.from_numpy(X), "ids": ids}, tmp_path / "e.pt")
    (tmp_path / "f.txt").write_text("\n".join(" ".join(map(str, row)) for row in X.astype(np.float64)))
    w = StoreWriter(tmp_path / "store", dim=4)
    w.write_shard(ids[:12], X[:12], 12)
    w.write_shard(ids[12:], X[12:], 30)
    paths += [tmp_path / n for n in ("a.npy", "b.npz", "c.npz", "d.safetensors", "e.pt", "f.txt", "store")]
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "g.h5", "w") as f:
        f.create_dataset("embeddings", data=X, chunks=(7, 4), compression="gzip")
        f.create_dataset("ids", data=np.array(ids, dtype="S3"))
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    (tmp_path / "tables").mkdir()
    for k in range(3):
        pq.write_table(pa.table({"emb": pa.array(list(X[k * 10:(k + 1) * 10]), pa.list_(pa.float32()))}),
                       tmp_path / "tables" / f"part-{k}.parquet", row_group_size=4)
    paths += [tmp_path / "g.h5", tmp_path / "tables"]
    for path in paths:
        src = open_embeddings(path)
        assert src.shards == discover_shards([path]), path
        local_ids, local_X = src.read_all()
        pieces = plan_pieces(discover_shards([path]), piece_rows=8)
        got = np.concatenate([X for p in pieces for _, X in iter_piece_rows(p, 5)])
        np.testing.assert_array_equal(got, local_X)
        np.testing.assert_allclose(local_X, X, rtol=1e-6)
        assert [i for p in pieces for i in piece_ids(p)] == local_ids, path
        kind = {"c.npz": "whole", "e.pt": "whole", "f.txt": "whole", "g.h5": "rows", "tables": "table"}
        assert {s.kind for s in src.shards} == {kind.get(path.name, "raw")}, path  # raw: byte ranges
