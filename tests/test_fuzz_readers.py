"""Property-based tests of the embedding readers (issue 14, section 6).

Generated inputs: safetensors headers and payloads (random JSON, shapes, dtypes, offsets), ``.npy``
headers, ``.npz`` members, HDF5 files (datasets, layouts, ids, truncation), store ``meta.json``
documents and text vectors. For every reader, local
(:func:`~whitenclip.readers.plan.read_embeddings`) and sharded (:func:`~whitenclip.readers.plan.discover_shards`
+ :func:`~whitenclip.readers.plan.finite_piece_rows`): either exactly the rows an independent oracle
decodes from the bytes (finite), or an :class:`InputError` of one line naming the file; never
another exception. A few crafted files also go through the CLI in a subprocess whose address space
is capped (``RLIMIT_AS``): exit 0 or exit 2 with one line, within the stated memory bound.

Bounded: ``derandomize=True`` and few examples; the whole file runs in about 10 s.
"""

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from whitenclip.errors import InputError
from whitenclip.readers.plan import (
    discover_shards,
    finite_piece_rows,
    piece_ids,
    plan_pieces,
    read_embeddings,
    read_text_vectors,
)
from whitenclip.validation import MAX_ABS
from whitenclip.writers import StoreWriter

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

SIZES = {"F16": 2, "F32": 4, "F64": 8, "I32": 4, "U8": 1, "BF16": 2, "I64": 8}
FLOATS = {"F16": "<f2", "F32": "<f4", "F64": "<f8"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6) | st.sampled_from(["abc", "NaN", "1e3", "float32", "F32", "embeddings"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


# --------------------------------------------------------------------------- the property, for every reader
def local_rows(path, **kw):
    return read_embeddings(path, **kw)[1]


def sharded_rows(path, piece_rows=3, **kw):
    pieces = plan_pieces(discover_shards([path], **kw), piece_rows)
    parts = [X for p in pieces for _, X, _ in finite_piece_rows(p, chunk_rows=2)]
    return np.concatenate(parts) if parts else None


def outcome(read, path, **kw):
    """The reader's rows, or the InputError it raised (checked: one line naming the file)."""
    try:
        return read(path, **kw)
    except InputError as exc:
        msg = str(exc)
        assert "\n" not in msg and Path(path).name in msg, msg
        return exc
    # any other exception fails the test with its traceback


def check(got, expect):
    """``expect`` None: the input is bad, an InputError is required. Else the exact rows, unless a
    value exceeds :data:`~whitenclip.validation.MAX_ABS` (the readers refuse such rows, naming them)."""
    if expect is not None and expect.size:
        finite = expect[np.isfinite(expect)]
        if finite.size and np.abs(finite).max() > MAX_ABS:
            assert isinstance(got, InputError) and "too large" in str(got), f"accepted a huge value: {got!r}"
            return
    event("refused" if expect is None else "read")  # --hypothesis-show-statistics: both kinds occur
    if expect is None:
        assert isinstance(got, InputError), f"accepted a bad input: {got!r}"
    else:
        assert not isinstance(got, InputError), f"refused a good input: {got}"
        if got is None:  # the sharded path: 0 rows
            assert expect.shape[0] == 0
        else:
            np.testing.assert_array_equal(got, expect)


# --------------------------------------------------------------------------- safetensors
@st.composite
def safetensors_files(draw):
    """(file bytes, expected rows for the local path, expected rows for the sharded path)."""
    if draw(st.integers(0, 9)) == 0:  # an arbitrary JSON header
        header = draw(json_values)
        raw = json.dumps(header).encode()
        return len(raw).to_bytes(8, "little") + raw + draw(st.binary(max_size=64)), None, None
    names = draw(st.lists(st.sampled_from(["embeddings", "junk", "x"]), min_size=1, max_size=3, unique=True))
    entries, payload, pos = {}, b"", 0
    for name in names:
        chosen = name == "embeddings" or len(names) == 1
        dtype = draw(st.sampled_from(["F32", "F16", "F64"] * (3 if chosen else 1) + list(SIZES) + ["XX"]))
        shape = draw(st.tuples(st.integers(0, 5), st.integers(0, 4)).map(list) if chosen and draw(st.booleans())
                     else st.lists(st.integers(0, 5), min_size=1, max_size=3)
                     | st.sampled_from([[4, 3], [1, 1], [0, 3], [3, 0], [-1, 2]]))
        nbytes = SIZES.get(dtype, 4) * int(np.prod(shape)) if all(v >= 0 for v in shape) else 8
        if dtype in FLOATS and draw(st.integers(0, 3)):
            vals = draw(st.lists(st.floats(-1e4, 1e4, width=16 if dtype == "F16" else 32),
                                 min_size=nbytes // SIZES[dtype], max_size=nbytes // SIZES[dtype]))
            data = np.asarray(vals, dtype=FLOATS[dtype]).tobytes()
        else:
            data = draw(st.binary(min_size=nbytes, max_size=nbytes))
        gap = draw(st.sampled_from([0, 0, 0, 4]))
        begin, end = pos + gap, pos + gap + len(data)
        payload += b"\0" * gap + data
        pos = end
        mutate = draw(st.sampled_from(["none"] * 12 + ["begin", "end", "swap", "huge", "type"]))
        if mutate == "begin":
            begin += draw(st.sampled_from([-4, -1, 1, 4]))
        elif mutate == "end":
            end += draw(st.sampled_from([-4, -1, 1, 4]))
        elif mutate == "swap":
            begin, end = end, begin
        elif mutate == "huge":
            end = 2**62
        offsets = [begin, end] if mutate != "type" else draw(json_values)
        entries[name] = {"dtype": dtype, "shape": shape, "data_offsets": offsets}
    meta = {}
    if draw(st.booleans()):
        n = entries.get("embeddings", next(iter(entries.values())))["shape"][0]
        ids = st.lists(st.text(max_size=3), min_size=max(n, 0), max_size=max(n, 0))
        meta["ids"] = json.dumps(draw(ids | ids | st.lists(st.text(max_size=3), max_size=6) | json_values))
    if draw(st.integers(0, 7)) == 0:
        meta["format"] = draw(st.sampled_from(["whitenclip-whitener", "whitenclip-moments", "other"]))
    if draw(st.integers(0, 7)) == 0:
        meta["bad"] = draw(json_values)  # metadata values must be strings
    header = {**entries, "__metadata__": meta} if meta else entries
    raw = json.dumps(header).encode()
    cut = draw(st.sampled_from([0] * 12 + [-1, -7, 3]))
    payload = payload[:len(payload) + cut] if cut < 0 else payload + b"\1" * cut
    blob = len(raw).to_bytes(8, "little") + raw + payload
    return blob, *oracle_safetensors(entries, meta, payload)


def oracle_safetensors(entries, meta, payload):
    """What a correct reader must return (local, sharded), decoded independently; None = refuse."""
    spans = []
    for t in entries.values():
        offs, shape = t["data_offsets"], t["shape"]
        if not (isinstance(offs, list) and len(offs) == 2 and all(type(v) is int for v in offs)):
            return None, None
        if not all(type(v) is int and v >= 0 for v in shape) or not 0 <= offs[0] <= offs[1] <= len(payload):
            return None, None
        if t["dtype"] in SIZES and offs[1] - offs[0] != SIZES[t["dtype"]] * int(np.prod(shape)):
            return None, None
        spans.append(offs)
    spans = sorted(s for s in spans if s[1] > s[0])
    if any(b[0] < a[1] for a, b in zip(spans, spans[1:])):
        return None, None
    if not all(isinstance(v, str) for v in meta.values()) or meta.get("format", "").startswith("whitenclip-"):
        return None, None
    key = "embeddings" if "embeddings" in entries else (next(iter(entries)) if len(entries) == 1 else None)
    if key is None or entries[key]["dtype"] not in FLOATS or len(entries[key]["shape"]) != 2:
        return None, None
    (n, d), (b, e) = entries[key]["shape"], entries[key]["data_offsets"]
    if d == 0:
        return None, None
    if "ids" in meta:
        ids = json.loads(meta["ids"])
        if not isinstance(ids, list) or len(ids) != n:
            return None, None
    X = np.frombuffer(payload[b:e], dtype=FLOATS[entries[key]["dtype"]]).reshape(n, d).astype(np.float64)
    if not np.isfinite(X).all():
        return None, None
    return (X if n else None), X


@FUZZ
@given(case=safetensors_files())
def test_safetensors_readers(case):
    blob, expect_local, expect_sharded = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.safetensors"
        path.write_bytes(blob)
        check(outcome(local_rows, path), expect_local)
        check(outcome(sharded_rows, path), expect_sharded)


# --------------------------------------------------------------------------- .npy headers
@st.composite
def npy_files(draw):
    descr = draw(st.sampled_from(["<f4", "<f8", "<f2", ">f4", "<i4", "|O", "<c8", "<U3", "zz"]))
    shape = draw(st.lists(st.integers(0, 4), min_size=1, max_size=3).map(tuple)
                 | st.sampled_from([(3, 2), (1, 5), (0, 2), (-1, 2), (2 ** 40, 2), (3, "a")]))
    fortran = draw(st.booleans())
    header = repr({"descr": descr, "fortran_order": fortran, "shape": shape})
    if draw(st.integers(0, 7)) == 0:
        header = draw(st.sampled_from(["{", "[1, 2]", "{'descr': '<f4'}", "__import__('os')", header[:-3]]))
    version = draw(st.sampled_from([(1, 0)] * 4 + [(2, 0), (3, 0), (9, 9)]))
    raw = (header + " " * (16 - (len(header) + 11) % 16)).encode("latin1") + b"\n"
    length = len(raw).to_bytes(2 if version == (1, 0) else 4, "little")
    magic = draw(st.sampled_from([b"\x93NUMPY"] * 8 + [b"\x93NUMPX", b"PK\x03\x04xx"]))
    try:
        dtype = np.dtype(descr)
        count = int(np.prod(shape)) if all(type(v) is int and v >= 0 for v in shape) else 0
    except TypeError:
        dtype, count = np.dtype("<f4"), 0
    if dtype.kind == "f" and count < 10**6 and draw(st.booleans()):
        data = np.asarray(draw(st.lists(st.floats(-1e4, 1e4, width=16), min_size=count, max_size=count)), dtype)
        data = data.tobytes()
    else:
        data = draw(st.binary(min_size=min(count * dtype.itemsize, 64), max_size=min(count * dtype.itemsize, 64)))
    data = data[:len(data) - draw(st.sampled_from([0] * 6 + [1, 4]))]
    blob = magic + bytes(version) + length + raw + data
    good = (magic == b"\x93NUMPY" and version in ((1, 0), (2, 0)) and raw.decode("latin1").startswith("{'descr'")
            and "fortran_order" in header and dtype.kind == "f" and descr != "zz" and len(shape) == 2
            and all(type(v) is int and v >= 0 for v in shape) and shape[1] > 0
            and len(data) >= count * dtype.itemsize)
    if not good:
        return blob, None, None
    X = np.frombuffer(data[:count * dtype.itemsize], dtype).reshape(shape, order="F" if fortran else "C")
    X = X.astype(np.float64)
    if not np.isfinite(X).all():
        return blob, None, None
    return blob, (X if shape[0] else None), X  # a Fortran-ordered array is one whole-file piece when sharded


@FUZZ
@given(case=npy_files())
def test_npy_readers(case):
    blob, expect_local, expect_sharded = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.npy"
        path.write_bytes(blob)
        check(outcome(local_rows, path), expect_local)
        check(outcome(sharded_rows, path), expect_sharded)


# --------------------------------------------------------------------------- .npz members
@FUZZ
@given(n=st.integers(0, 5), d=st.integers(0, 3), dtype=st.sampled_from(["<f4", "<f8", "<f2", ">f8", ">f4", "<i4"]),
       compressed=st.booleans(), fortran=st.booleans(), key=st.sampled_from(["embeddings", "embeddings", "x"]),
       extra=st.booleans(), ids=st.sampled_from(["none", "good"] * 3 + ["short", "2d"]),
       cut=st.sampled_from([0] * 8 + [1, 50]))
def test_npz_readers(n, d, dtype, compressed, fortran, key, extra, ids, cut):
    X = (np.arange(n * d, dtype=np.float64).reshape(n, d) / 3).astype(dtype)
    arrays = {key: np.asfortranarray(X) if fortran else X}
    if extra:
        arrays["other"] = np.ones(2)
    if ids != "none":
        arrays["ids"] = {"good": np.array([f"r{i}" for i in range(n)]), "short": np.array(["a"] * (n + 1)),
                         "2d": np.zeros((n, 2))}[ids]
    good = (("embeddings" in arrays or not extra) and np.dtype(dtype).kind == "f" and n > 0 and d > 0
            and ids in ("none", "good") and not cut)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.npz"
        (np.savez_compressed if compressed else np.savez)(path, **arrays)
        if cut:
            path.write_bytes(path.read_bytes()[:-cut])
        expect = X.astype(np.float64) if good else None
        check(outcome(local_rows, path), expect)
        check(outcome(sharded_rows, path), expect)


# --------------------------------------------------------------------------- HDF5 (whitenclip/readers/hdf5.py)
@FUZZ
@given(n=st.integers(0, 5), d=st.integers(0, 3), ndim=st.sampled_from([2] * 6 + [1, 3]),
       dtype=st.sampled_from(["<f4", "<f8", "<f2", ">f8", ">f4", "<i4", "|u1"]), layout=st.sampled_from(
           ["contiguous", "chunked", "gzip"]), name=st.sampled_from(["embeddings", "embeddings", "x"]),
       extra=st.sampled_from([None, None, "other2d", "other1d", "group"]),
       ids=st.sampled_from(["none", "str", "bytes", "int"] * 2 + ["short", "float", "2d", "nonutf8"]),
       cut=st.sampled_from([0] * 8 + [1, 200]), garbage=st.booleans() | st.just(False))
def test_hdf5_readers(n, d, ndim, dtype, layout, name, extra, ids, cut, garbage):
    """The new format's fuzz strategy: dataset name, shape, dtype, storage layout, extra datasets and
    groups, ids of every kind, truncation and non-HDF5 bytes; local and sharded readers give the rows
    or one line naming the file."""
    h5py = __import__("pytest").importorskip("h5py")
    X = (np.arange(n * d, dtype=np.float64).reshape(n, d) / 3).astype(dtype)
    data = X if ndim == 2 else (X.reshape(-1) if ndim == 1 else X.reshape(n, d, 1))
    root = {name: data, **({"other": np.ones((2, 2) if extra == "other2d" else 2)} if extra in ("other2d", "other1d")
                           else {})}
    matrices = [k for k, v in root.items() if v.ndim == 2]  # the oracle: 'embeddings', else the only 2-D dataset
    chosen = root["embeddings"] if "embeddings" in root else (root[matrices[0]] if len(matrices) == 1 else None)
    rows = chosen.shape[0] if chosen is not None and chosen.ndim else -1
    good = (chosen is not None and chosen.dtype.kind == "f" and chosen.ndim == 2 and min(chosen.shape) > 0
            and (ids == "none" or (ids in ("str", "bytes", "int") and rows == n)) and not cut and not garbage)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.h5"
        with h5py.File(path, "w") as f:
            kw = {} if layout == "contiguous" or not data.size else {
                "chunks": tuple(max(1, s) for s in data.shape), "compression": "gzip" if layout == "gzip" else None}
            f.create_dataset(name, data=data, **kw)
            if extra == "other2d":
                f.create_dataset("other", data=np.ones((2, 2)))
            elif extra == "other1d":
                f.create_dataset("other", data=np.ones(2))
            elif extra == "group":
                f.create_group("g").create_dataset("embeddings", data=np.ones((2, 2)))
            values = {"str": [f"r{i}" for i in range(n)], "bytes": [f"r{i}".encode() for i in range(n)],
                      "int": list(range(n)), "short": [b"a"] * (n + 1), "float": np.arange(n) / 2,
                      "2d": np.zeros((n, 2)), "nonutf8": [b"\xff"] * n}.get(ids)
            if values is not None:
                text = h5py.string_dtype() if ids == "str" else ("S4" if ids in ("bytes", "short", "nonutf8") else None)
                f.create_dataset("ids", data=np.array(values, dtype=text) if len(values) else np.zeros(0, text or "i8"),
                                 dtype=text)
        if cut:
            path.write_bytes(path.read_bytes()[:-cut])
        if garbage:
            path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)))
        expect = chosen.astype(np.float64) if good else None
        check(outcome(local_rows, path), expect)
        check(outcome(sharded_rows, path), expect)
        if good and ids != "none":
            expect_ids = [str(v) if ids != "bytes" else v.decode() for v in values]
            assert read_embeddings(path)[0] == expect_ids
            pieces = plan_pieces(discover_shards([path]), 2)
            assert [i for p in pieces for i in piece_ids(p)] == expect_ids


# --------------------------------------------------------------------------- store meta.json
ROWS, DIM = 6, 3
STORE_X = np.arange(ROWS * DIM, dtype=np.float32).reshape(ROWS, DIM) / 7


@FUZZ
def often(good, bad=json_values):
    """Mostly one of the ``good`` values, sometimes any JSON value."""
    return st.one_of(st.sampled_from(good), st.sampled_from(good), st.sampled_from(good), bad)


@given(meta=st.fixed_dictionaries({
    "format": often(["whitenclip-store"] * 4 + ["other"]),
    "dim": often([DIM] * 6 + [4, 0, -3, True, "abc", "3", 3.0]),
}, optional={
    "n_items": often([ROWS] * 4 + [1000, 2, 0, -1, "abc", float("nan"), 6.0, None, True]),
    "dtype": often(["float32"] * 4 + ["float16", "int8", 3]),
}), allow_partial=st.booleans())
def test_store_meta_readers(meta, allow_partial):
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        w = StoreWriter(store, dim=DIM)
        w.write_shard([f"i{k}" for k in range(4)], STORE_X[:4], 4)
        w.write_shard([f"i{k}" for k in range(4, ROWS)], STORE_X[4:], ROWS)
        (store / "meta.json").write_text(json.dumps(meta))
        dim, n_items, dtype = meta.get("dim"), meta.get("n_items", ROWS), meta.get("dtype", "float32")
        good = (meta.get("format") == "whitenclip-store" and type(dim) is int and dim == DIM
                and type(n_items) is int and (n_items == ROWS or allow_partial and n_items > ROWS)
                and dtype == "float32")
        expect = STORE_X.astype(np.float64) if good else None
        check(outcome(local_rows, store, allow_partial=allow_partial), expect)
        check(outcome(sharded_rows, store, allow_partial=allow_partial), expect)


# --------------------------------------------------------------------------- text vectors
good_numbers = st.one_of(st.floats(-1e6, 1e6).map(repr), st.integers(-10**6, 10**6).map(str),
                         st.floats(-1e6, 1e6).map(lambda v: f"{v:.3e}"))
bad_numbers = st.sampled_from(["1_000", "\u0661\u0662", "0x10", "--1", "1e", "abc", "true", "1.2.3", "\u00bd"])


@FUZZ
@given(lines=st.lists(st.lists(st.one_of(good_numbers, good_numbers, good_numbers, bad_numbers),
                               min_size=1, max_size=4), min_size=1, max_size=4),
       sep=st.sampled_from([" ", ",", ", ", "\t", "json"]))
def test_text_vector_reader(lines, sep):
    text = "\n".join("[" + ", ".join(ln) + "]" if sep == "json" else sep.join(ln) for ln in lines) + "\n"
    try:
        got = read_text_vectors(text.splitlines(keepends=True), "vec.txt").read_all()[1]
    except InputError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("vec.txt:")
        bad = not all(plain_number(t) for ln in lines for t in ln) or len({len(ln) for ln in lines}) > 1
        assert bad, f"refused good vectors: {exc}"
        return
    assert all(plain_number(t) for ln in lines for t in ln), "read a malformed number"
    np.testing.assert_array_equal(got, [[float(t) for t in ln] for ln in lines])


def plain_number(token: str) -> bool:
    """The oracle: an ASCII JSON number (so not ``1_000``, ``0x10``, non-ASCII digits or ``true``)."""
    try:
        value = json.loads(token)
    except ValueError:
        return False
    return token.isascii() and isinstance(value, (int, float)) and not isinstance(value, bool)


# --------------------------------------------------------------------------- memory bound, through the CLI
LIMIT_MIB = 48
"""Address space allowed beyond what the CLI holds after its imports and a BLAS warm-up (MiB)."""

CAPPED = f"""
import resource, sys
from whitenclip.cli import main

def run(args):
    print("@@", args, file=sys.stderr, flush=True)
    sys.argv = ["whitenclip", *args.split("\\t")]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    print("@@ exit", code, file=sys.stderr, flush=True)

argv = sys.argv[1:]
cap = argv.index("--cap")
for args in argv[:cap]:  # warm-up on a tiny file: imports and native buffers before the cap
    run(args)
vm = next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmSize")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + ({LIMIT_MIB} << 20), vm + ({LIMIT_MIB} << 20)))
for args in argv[cap + 1:]:
    run(args)
"""


def _crafted(tmp: Path) -> list[str]:
    """Files whose headers promise far more than the file holds, and a 96 MiB file that must stream."""
    hdr = json.dumps({"embeddings": {"dtype": "F32", "shape": [2**40, 768], "data_offsets": [0, 2**40 * 768 * 4]}})
    (tmp / "huge.safetensors").write_bytes(len(hdr).to_bytes(8, "little") + hdr.encode() + b"\0" * 64)
    npy = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000000, 768), }"
    npy = (npy + " " * (63 - len(npy) % 64) + "\n").encode()
    (tmp / "huge.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(npy).to_bytes(2, "little") + npy + b"\0" * 64)
    deep = b"[" * 100000 + b"]" * 100000
    (tmp / "deep.safetensors").write_bytes(len(deep).to_bytes(8, "little") + deep)
    with zipfile.ZipFile(tmp / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as zf:  # declares 572 GiB, holds 64 bytes
        zf.writestr("embeddings.npy", (tmp / "huge.npy").read_bytes())
    from safetensors.numpy import save_file

    X = np.random.default_rng(0).standard_normal((98304, 256), dtype=np.float32)
    save_file({"embeddings": X}, str(tmp / "ok.safetensors"))
    return ["ok.safetensors", "huge.safetensors", "huge.npy", "deep.safetensors", "bomb.npz"]


def test_crafted_files_through_the_cli_within_a_memory_bound(tmp_path):
    """`fit` (local path) and `moments` (sharded path) of each file, under RLIMIT_AS = address space
    after import + 48 MiB: exit 0, or exit 2 with one line naming the file; never a traceback. The
    96 MiB safetensors file fits in that bound only because it is read in chunks."""
    np.save(tmp_path / "tiny.npy", np.random.default_rng(1).standard_normal((300, 256)))
    runs = []
    for name in ["tiny.npy", *_crafted(tmp_path)]:
        f = str(tmp_path / name)
        runs.append(("\t".join(["fit", f, "-o", f"{f}.w.safetensors", "--no-calibration", "--chunk-rows", "256"]),
                     name))
        runs.append(("\t".join(["moments", f, "-o", f"{f}.moments.safetensors", "--calibration-rows", "0",
                                "--chunk-rows", "256"]), name))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "MALLOC_ARENA_MAX": "1"}  # no 64 MiB arena reservations per thread under the cap
    argv = [runs[0][0], runs[1][0], "--cap", *[r for r, _ in runs[2:]]]
    res = subprocess.run([sys.executable, "-c", CAPPED, *argv], capture_output=True, text=True, env=env, timeout=300)
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    blocks = res.stderr.split("@@ ")[1:]
    assert len(blocks) == 2 * len(runs), res.stderr[-3000:]
    for (args, name), body, end in zip(runs, blocks[0::2], blocks[1::2]):
        code = int(end.split()[1])
        lines = [ln for ln in body.splitlines()[1:] if ln.startswith("whitenclip: error")]
        if name in ("tiny.npy", "ok.safetensors"):
            assert code == 0, (args, body)
        else:
            assert code == 2 and len(lines) == 1 and name in lines[0], (args, body)
