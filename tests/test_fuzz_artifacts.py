"""Property-based tests of the artifacts the sharded path reads and writes (issue 14, section 6).

* moments and whitener headers: random types, values and missing keys -> load gives a valid
  object (finite numbers, counts in range) or an InputError, never another exception;
* random shard layouts (0-row, 1-row, uneven shards, pieces cut anywhere): local fit ==
  Dask fit == moments + merge-moments + fit to 1e-10, and any overlap or repeat of parts is
  refused.

Bounded (``derandomize=True``, few examples) and fast: one in-process Dask cluster
(``processes=False``) serves the module.
"""

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file
from typer.testing import CliRunner

from whitenclip import engine
from whitenclip.cli import app
from whitenclip.errors import InputError
from whitenclip.moments import MomentsPart
from whitenclip.whitening import Whitener

MAX_COUNT = 2**53  # counts a float64 holds exactly
_runner = CliRunner()

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
CLI_FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
LAYOUTS = settings(max_examples=15, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8) | st.sampled_from(["1e3", "abc", "-5", "0", "1", "12", "NaN", "1e30", "pca", "float32"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)


def _valid_part_file(tmp: Path, n=40, d=3, calibration=True) -> tuple[dict, dict]:
    """Tensors and header of a valid part (a piece with coverage and a reservoir)."""
    rng = np.random.default_rng(0)
    np.save(tmp / "s.npy", rng.standard_normal((n, d)))
    part = engine.compute_moments([tmp / "s.npy"], engine.EngineOptions(piece_rows=17),
                                  calibration_rows=10 if calibration else 0)
    part.save(tmp / "p.moments.safetensors")
    from whitenclip.readers.safetensors import read_safetensors

    return read_safetensors(tmp / "p.moments.safetensors")


def _write(path, tensors, header):
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path),
              metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in header.items()})


def _check_part(p: MomentsPart):
    assert isinstance(p.n, int) and 0 <= p.n <= MAX_COUNT
    assert np.isfinite(p.mean).all() and np.isfinite(p.scatter).all()
    assert (np.diag(p.scatter) >= 0).all()
    if p.has_power_sums:
        assert np.isfinite(p.power4) and p.power4 >= 0 and np.isfinite(p.power3).all()
    if p.n >= 2:  # whatever loaded must fit (or refuse) cleanly
        try:
            wh = Whitener(shrinkage="ledoit-wolf" if p.has_power_sums else None, calibration=False).fit_moments(
                p.moments, sum_sqnorm4=p.sum_sqnorm4)
        except InputError:
            return
        assert 0.0 <= wh.shrinkage_ <= 1.0 and np.isfinite(wh.W_).all()


@pytest.fixture(scope="module")
def valid_part(tmp_path_factory):
    return _valid_part_file(tmp_path_factory.mktemp("part"))


@CLI_FUZZ
@given(key=st.sampled_from(["n", "d", "meta", "inputs", "coverage", "stats", "power_sums", "extras",
                            "meta.gram", "meta.encoder", "meta.normalized", "stats.pieces", "coverage.rows",
                            "format", "whitenclip"]),
       value=json_values, drop=st.booleans(), tensor=st.sampled_from([None, "power4", "scatter", "mean",
                                                                        "extra.reservoir.state"]),
       scale=st.sampled_from([-1.0, 0.0, 1e-3, 1e300, np.inf]))
def test_fuzzed_moments_headers_load_valid_or_refuse(valid_part, tmp_path, key, value, drop, tensor, scale):
    tensors, header = valid_part
    tensors = {k: np.array(v) for k, v in tensors.items()}
    header = dict(header)
    info = json.loads(header["whitenclip"])
    top, _, sub = key.partition(".")
    if top in ("n", "format", "whitenclip"):
        target = header
    else:
        target = info
    if sub == "rows" and info["coverage"]:
        info["coverage"][0]["rows"] = value
    elif sub:
        if not isinstance(target.get(top), dict):
            target[top] = {}
        if drop:
            target[top].pop(sub, None)
        else:
            target[top][sub] = value
    elif drop:
        target.pop(top, None)
    else:
        target[top] = value if top != "n" or not isinstance(value, (int, float)) else str(value)
    header["whitenclip"] = info if isinstance(info, str) else json.dumps(info)
    if tensor is not None and tensor in tensors:
        t = tensors[tensor]
        tensors[tensor] = (t * scale).astype(t.dtype) if t.dtype.kind == "f" else np.full_like(t, 2**25)
    path = tmp_path / "f.moments.safetensors"
    _write(path, tensors, {k: v for k, v in header.items()})
    # the commands that read it: exit 0 with finite numbers or exit 2 with one line naming the file
    out = tmp_path / "w.safetensors"
    for args in (["fit", path, "-o", out, "--shrinkage", "ledoit-wolf"], ["entropy", path, "--json"],
                 ["merge-moments", path, "-o", tmp_path / "m.moments.safetensors"]):
        r = _runner.invoke(app, [str(a) for a in args])
        assert r.exit_code in (0, 2), (args, r.output)
        if r.exit_code == 2:
            assert r.output.count("error:") == 1 and "internal error" not in r.output, r.output
        else:
            assert "nan" not in r.stdout.lower() and "inf" not in r.stdout.lower()
    try:
        part = MomentsPart.load(path)
    except InputError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        return
    _check_part(part)


@pytest.mark.parametrize("edit, message", [
    (lambda h, t: h.pop("n"), "row count n"),
    (lambda h, t: h.update(n="abc"), "header field n='abc'"),
    (lambda h, t: h.update(n="1e3"), "header field n='1e3'"),
    (lambda h, t: h.update(n=str(10**30)), "must be an integer in"),
    (lambda h, t: h.update(n="-5"), "header field n='-5'"),
    (lambda h, t: t.update(power4=np.array([-1.0])), "power4 = -1 is impossible"),
    (lambda h, t: t.update(power4=t["power4"] * 1e-3), "is impossible"),
    (lambda h, t: t.pop("extra.reservoir.keys"), "calibration sample"),
    (lambda h, t: t.update({"extra.reservoir.state": np.array([2**25, 0, 40, 40, 0], dtype=np.int64)}),
     "size 33554432"),
    (lambda h, t: t.update({"extra.reservoir.state": np.array([3, 0, 40, 40, 0], dtype=np.int64)}),
     "holds 10 rows"),
    (lambda h, t: h.update(whitenclip=json.dumps({**json.loads(h["whitenclip"]), "stats": {"pieces": "x"}})),
     "stats.pieces"),
    (lambda h, t: h.update(whitenclip=json.dumps({**json.loads(h["whitenclip"]), "meta": {"gram": 3}})),
     "meta.gram"),
    (lambda h, t: h.update(whitenclip=json.dumps({**json.loads(h["whitenclip"]), "meta": {"encoder": 3}})),
     "meta.encoder"),
    (lambda h, t: h.update(whitenclip=json.dumps({**json.loads(h["whitenclip"]), "d": "abc"})),
     "header field d="),
    (lambda h, t: h.update(whitenclip="[1, 2]"), "expected a JSON object"),
    (lambda h, t: t.update(scatter=-t["scatter"]), "not a scatter matrix"),
])
def test_moments_header_defects_are_one_line_input_errors(valid_part, tmp_path, edit, message):
    """Section 4 and 2: n missing/"abc"/"1e3"/1e30, negative power4, reservoir keys missing, size 2^25, a
    reservoir smaller than its rows, fields of the wrong type -> InputError naming the file."""
    tensors, header = valid_part
    tensors, header = {k: np.array(v) for k, v in tensors.items()}, dict(header)
    edit(header, tensors)
    path = tmp_path / "bad.moments.safetensors"
    _write(path, tensors, header)
    with pytest.raises(InputError, match=message) as info:
        MomentsPart.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------
# whitener headers
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def valid_whitener(tmp_path_factory):
    from whitenclip.readers.safetensors import read_safetensors

    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("wh") / "w.safetensors"
    Whitener(calibration_rows=20).fit(rng.standard_normal((60, 4))).save(path)
    return read_safetensors(path)


WH_KEYS = ["method", "effective_method", "shrinkage", "shrinkage_intensity", "floor", "rank_requested", "rank",
           "n", "d", "dropped", "calibration", "version"]


@pytest.mark.filterwarnings("ignore")
@FUZZ
@given(key=st.sampled_from(WH_KEYS), value=json_values, drop=st.booleans())
def test_fuzzed_whitener_headers_load_valid_or_refuse(valid_whitener, tmp_path, key, value, drop):
    tensors, header = valid_whitener
    meta = json.loads(header["whitenclip"])
    if drop:
        meta.pop(key, None)
    else:
        meta[key] = value
    path = tmp_path / "w.safetensors"
    _write(path, tensors, {**header, "whitenclip": json.dumps(meta)})
    try:
        wh = Whitener.load(path)
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    assert 1 <= wh.rank_ <= wh.n_features_ and 0.0 <= wh.shrinkage_ <= 1.0
    assert wh.n_samples_ is None or 1 <= wh.n_samples_ <= MAX_COUNT
    from whitenclip import score

    s = score(wh, np.zeros((2, wh.n_features_)))
    assert all(np.isfinite(s[c]).all() for c in ("loglik", "logpdf", "sqnorm", "pvalue"))


@pytest.mark.parametrize("key, value, message", [
    ("method", None, "field method"),
    ("d", "abc", "field d="),
    ("n", "abc", "field n="),
    ("n", 1e30, "field n="),
    ("n", -5, "field n="),
    ("shrinkage_intensity", "x", "shrinkage_intensity"),
    ("shrinkage_intensity", -1687.0, "shrinkage_intensity"),
    ("rank", 0, "field rank=0"),
    ("calibration", {"rows_max": 2**40, "seed": 0}, "field calibration"),
])
def test_whitener_header_defects_are_input_errors(valid_whitener, tmp_path, key, value, message):
    """Section 4: missing method, non-numeric d/n/shrinkage_intensity, rank 0 (was ZeroDivisionError)."""
    tensors, header = valid_whitener
    meta = json.loads(header["whitenclip"])
    if value is None:
        meta.pop(key)
    else:
        meta[key] = value
    path = tmp_path / "w.safetensors"
    _write(path, tensors, {**header, "whitenclip": json.dumps(meta)})
    with pytest.raises(InputError, match=message):
        Whitener.load(path)


@pytest.mark.parametrize("n", [-5, 0, 10**30, 2.5, True])
def test_imported_whitener_refuses_bad_n_samples(n):
    from whitenclip.whitening import whitener_from_matrix

    with pytest.raises(InputError, match="n_samples"):
        whitener_from_matrix(np.zeros(3), np.eye(3), n_samples=n)
    assert whitener_from_matrix(np.zeros(3), np.eye(3), n_samples=5).n_samples_ == 5


def test_import_wclip_cli_refuses_negative_n_samples(tmp_path):
    torch = pytest.importorskip("torch")
    from typer.testing import CliRunner

    from whitenclip.cli import app

    torch.save(torch.zeros(3), tmp_path / "mean_image.pt")
    torch.save(torch.eye(3), tmp_path / "w_mat_image.pt")
    out = tmp_path / "w.safetensors"
    r = CliRunner().invoke(app, ["import-wclip", "--mean", str(tmp_path / "mean_image.pt"), "--matrix",
                                 str(tmp_path / "w_mat_image.pt"), "-o", str(out), "--n-samples", "-5"])
    assert r.exit_code == 2 and "n-samples" in r.output.replace("_", "-") and not out.exists()


# ---------------------------------------------------------------------------------------
# shard layouts: local fit == dask fit == moments + merge-moments + fit; overlaps refused
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as c:
        yield c


def _same(a: Whitener, b: Whitener, tol=1e-10):
    assert a.n_samples_ == b.n_samples_ and a.rank_ == b.rank_
    scale = np.abs(b.covariance_).max()
    assert np.abs(a.mean_ - b.mean_).max() <= tol * max(np.abs(b.mean_).max(), 1.0)
    assert np.abs(a.covariance_ - b.covariance_).max() <= tol * scale
    # the precision W W^T inherits the covariance's condition number
    assert np.abs(a.W_ @ a.W_.T - b.W_ @ b.W_.T).max() <= tol * b.condition_number_ * np.abs(b.W_ @ b.W_.T).max()


@pytest.mark.filterwarnings("ignore")
@LAYOUTS
@given(sizes=st.lists(st.sampled_from([0, 1, 2, 5, 13, 31]), min_size=1, max_size=4).filter(lambda s: sum(s) >= 8),
       cuts=st.lists(st.integers(1, 40), min_size=4, max_size=4), seed=st.integers(0, 2**16),
       order=st.randoms(use_true_random=False))
def test_shard_layouts_fit_alike_and_overlaps_are_refused(client, sizes, cuts, seed, order):
    rng = np.random.default_rng(seed)
    d = 5
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mix = rng.standard_normal((d, d))
        blocks, paths = [], []
        for i, n in enumerate(sizes):
            X = 2.0 + rng.standard_normal((n, d)) @ mix
            np.save(tmp / f"shard_{i}.npy", X)
            blocks.append(X)
            paths.append(tmp / f"shard_{i}.npy")
        X = np.concatenate(blocks)
        local = Whitener(calibration=False).fit(X)
        kw = dict(calibration=False)
        dask, _ = engine.fit_whitener(paths, engine.EngineOptions(engine="dask", client=client, piece_rows=cuts[0],
                                                                  chunk_rows=7), **kw)
        _same(dask, local)
        files = []  # one moments file per shard, each cut into pieces of its own size
        for i, p in enumerate(paths):
            part = engine.compute_moments([p], engine.EngineOptions(piece_rows=cuts[i % 4], chunk_rows=3))
            part.save(tmp / f"m{i}.moments.safetensors")
            files.append(tmp / f"m{i}.moments.safetensors")
        order.shuffle(files)
        merged = engine.merge_moment_files(files)
        merged.save(tmp / "all.moments.safetensors")
        via_files, _ = engine.fit_whitener([tmp / "all.moments.safetensors"], engine.EngineOptions(), **kw)
        _same(via_files, local)
        # the same rows again, cut elsewhere, or a part repeated: refused
        full = [i for i, n in enumerate(sizes) if n]
        i = full[seed % len(full)]
        again = engine.compute_moments([paths[i]], engine.EngineOptions(piece_rows=cuts[(i + 1) % 4] + 1))
        again.save(tmp / "again.moments.safetensors")
        with pytest.raises(InputError, match="counted twice"):
            engine.merge_moment_files([*files, tmp / "again.moments.safetensors"])
        with pytest.raises(InputError, match="counted twice"):
            engine.merge_moment_files([tmp / "all.moments.safetensors", tmp / f"m{i}.moments.safetensors"])
        with pytest.raises(InputError, match="counted twice|given twice"):  # a part repeated
            engine.merge_moment_files([*files, tmp / f"m{i}.moments.safetensors"])
