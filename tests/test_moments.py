import numpy as np
import pytest

from whitenclip.errors import InputError
from whitenclip.moments import Moments
from whitenclip.whitening import Whitener


def test_one_shot_matches_numpy(anisotropic):
    m = Moments.from_array(anisotropic)
    assert m.n == anisotropic.shape[0]
    np.testing.assert_allclose(m.mean, anisotropic.mean(0), rtol=1e-13)
    np.testing.assert_allclose(m.covariance(ddof=1), np.cov(anisotropic, rowvar=False), rtol=1e-12)
    np.testing.assert_allclose(m.covariance(ddof=0), np.cov(anisotropic, rowvar=False, bias=True), rtol=1e-12)


def test_chunked_equals_one_shot(anisotropic):
    whole = Moments.from_array(anisotropic)
    chunked = Moments(anisotropic.shape[1])
    for lo in range(0, 600, 37):  # uneven chunks, last one short
        chunked.update(anisotropic[lo:lo + 37])
    assert chunked.n == whole.n
    np.testing.assert_allclose(chunked.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(chunked.scatter, whole.scatter, rtol=1e-10)


def test_merge_of_shards_equals_concatenation(anisotropic):
    a, b = anisotropic[:123], anisotropic[123:]
    merged = Moments.from_array(a).merge(Moments.from_array(b))
    whole = Moments.from_array(anisotropic)
    rel = np.abs(merged.scatter - whole.scatter).max() / np.abs(whole.scatter).max()
    assert rel < 1e-10
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-12)
    assert merged.n == whole.n


def test_large_offset_is_stable(rng):
    """Chan's update keeps the variance of data far from the origin (naive sum of squares fails)."""
    X = 1e6 + rng.standard_normal((10_000, 3))
    m = Moments(3)
    for lo in range(0, 10_000, 1000):
        m.update(X[lo:lo + 1000])
    np.testing.assert_allclose(np.diag(m.covariance()), np.var(X, axis=0, ddof=1), rtol=1e-9)


def test_save_load_roundtrip(tmp_path, anisotropic):
    m = Moments.from_array(anisotropic)
    m.save(tmp_path / "m.safetensors")
    back = Moments.load(tmp_path / "m.safetensors")
    assert back.n == m.n
    np.testing.assert_array_equal(back.scatter, m.scatter)
    # shards computed apart combine exactly
    Moments.from_array(anisotropic[:300]).save(tmp_path / "a.safetensors")
    Moments.from_array(anisotropic[300:]).save(tmp_path / "b.safetensors")
    combined = Moments.load(tmp_path / "a.safetensors").merge(Moments.load(tmp_path / "b.safetensors"))
    np.testing.assert_allclose(combined.scatter, m.scatter, rtol=1e-10)


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="dimension 3"):
        Moments(3).update(np.ones((2, 4)))
    with pytest.raises(InputError, match="more than 1"):
        Moments(2).update(np.ones((1, 2))).covariance()
    (tmp_path / "x.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(InputError):
        Moments.load(tmp_path / "x.safetensors")


def test_float32_gram_is_close_on_well_conditioned_data(anisotropic):
    exact = Moments.from_array(anisotropic)
    fast = Moments(anisotropic.shape[1])
    for lo in range(0, 600, 200):
        fast.update(anisotropic[lo:lo + 200], gram="float32")
    np.testing.assert_allclose(fast.mean, exact.mean, rtol=1e-13)  # the mean stays float64
    rel = np.abs(fast.scatter - exact.scatter).max() / np.abs(exact.scatter).max()
    assert 0 < rel < 1e-5
    with pytest.raises(InputError, match="gram must be"):
        Moments(3).update(np.ones((2, 3)), gram="float16")


# ---------------------------------------------------------------------------------------
# MomentsPart: power sums, metadata, input hashes, exact merge
# ---------------------------------------------------------------------------------------
from whitenclip.moments import MomentsPart, shift_power_sums  # noqa: E402


def _power_sums(X):
    Y = X - X.mean(0)
    a = np.sum(Y * Y, axis=1)
    return a @ Y, float(a @ a)


def test_shift_power_sums_closed_form(rng):
    X = rng.standard_normal((50, 4)) * [1, 2, 3, 4] + 5
    Y = X - X.mean(0)
    t, q = _power_sums(X)
    delta = rng.standard_normal(4)
    t2, q2 = shift_power_sums(50, Y.T @ Y, t, q, delta)
    Z = Y - delta
    a = np.sum(Z * Z, axis=1)
    np.testing.assert_allclose(t2, a @ Z, rtol=1e-12)
    assert q2 == pytest.approx(float(a @ a), rel=1e-12)


def _part(X, inputs, **meta):
    p = MomentsPart(X.shape[1], meta).update(X)
    p.inputs = list(inputs)
    return p


def test_part_merge_exact_and_order_independent(anisotropic, rng):
    X = anisotropic
    cuts = [0, 1, 1, 57, 300, 301, 600]  # includes an empty and a one-row part
    parts = [_part(X[a:b], [f"h{i}"]) for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:]))]
    t, q = _power_sums(X)
    results = []
    for order in (range(len(parts)), rng.permutation(len(parts)), rng.permutation(len(parts))):
        m = parts[order[0]]
        for i in order[1:]:
            m = m.merge(parts[i])
        results.append(m)
        assert m.n == 600
        np.testing.assert_allclose(m.mean, X.mean(0), rtol=1e-12)
        np.testing.assert_allclose(m.moments.covariance(), np.cov(X, rowvar=False), rtol=1e-12)
        np.testing.assert_allclose(m.power3, t, rtol=1e-9, atol=1e-9 * np.abs(t).max())
        assert m.power4 == pytest.approx(q, rel=1e-12)
    for r in results[1:]:
        rel = np.abs(r.scatter - results[0].scatter).max() / np.abs(results[0].scatter).max()
        assert rel < 1e-12
        assert r.power4 == pytest.approx(results[0].power4, rel=1e-12)
        assert sorted(r.inputs) == sorted(results[0].inputs)


def test_ledoit_wolf_from_merged_parts_matches_sklearn(anisotropic):
    from sklearn.covariance import ledoit_wolf_shrinkage

    from whitenclip.whitening import ledoit_wolf_shrinkage_from_sums

    X = anisotropic
    m = _part(X[:200], ["a"]).merge(_part(X[200:], ["b"]))
    got = ledoit_wolf_shrinkage_from_sums(m.moments.covariance(ddof=0), m.n, m.sum_sqnorm4)
    assert got == pytest.approx(ledoit_wolf_shrinkage(X), rel=1e-10)


def test_part_refusals(anisotropic):
    X = anisotropic
    a = _part(X[:100], ["a"], encoder="minilm", modality="text", normalized=False)
    for meta, what in [({"encoder": "clip", "modality": "text", "normalized": False}, "encoder"),
                       ({"encoder": "minilm", "modality": "image", "normalized": False}, "modality"),
                       ({"encoder": "minilm", "modality": "text", "normalized": True}, "normalized"),
                       ({"encoder": "minilm", "modality": "text", "normalized": False, "activation": "quick_gelu"},
                        "activation"),
                       ({"encoder": "minilm", "modality": "text", "normalized": False,
                         "encoder_fingerprint": "0123456789ab"}, "encoder_fingerprint")]:
        with pytest.raises(InputError, match=f"b.moments: {what}="):
            a.merge(_part(X[100:], ["b"], **meta), name="b.moments")
    with pytest.raises(InputError, match="dimension 11"):
        a.merge(_part(X[100:, :11], ["c"], encoder="minilm", modality="text", normalized=False), name="c")
    with pytest.raises(InputError, match="given twice"):
        a.merge(_part(X[100:], ["a"], encoder="minilm", modality="text", normalized=False))


def test_part_save_load_roundtrip(tmp_path, anisotropic):
    p = _part(anisotropic, ["x", "y"], encoder="minilm", modality="text", normalized=True)
    p.save(tmp_path / "p.moments.safetensors")
    back = MomentsPart.load(tmp_path / "p.moments.safetensors")
    assert (back.n, back.inputs, back.meta["encoder"], back.meta["normalized"]) == (600, ["x", "y"], "minilm", True)
    np.testing.assert_array_equal(back.scatter, p.scatter)
    np.testing.assert_array_equal(back.power3, p.power3)
    assert back.power4 == p.power4 and back.input_hash == p.input_hash
    # plain Moments reads the part file; a plain Moments file loads as a part without power sums
    np.testing.assert_array_equal(Moments.load(tmp_path / "p.moments.safetensors").mean, p.mean)
    Moments.from_array(anisotropic).save(tmp_path / "old.safetensors")
    old = MomentsPart.load(tmp_path / "old.safetensors")
    assert old.sum_sqnorm4 is None and old.inputs and old.n == 600


# Reservoir: seeded, mergeable bottom-m sample
# ---------------------------------------------------------------------------------------
from whitenclip.moments import Reservoir, row_keys  # noqa: E402


def _bottom_m(n, m, seed):
    """Brute force: positions of the m smallest keys, in key order."""
    return np.argsort(row_keys(np.arange(n), seed))[:m]


@pytest.mark.parametrize("m", [1, 7, 250, 600, 1000])
def test_reservoir_keeps_the_m_smallest_keys_whatever_the_chunking(anisotropic, rng, m):
    expected = anisotropic[_bottom_m(600, m, 3)]
    one = Reservoir(m, 12, seed=3).update(anisotropic)
    np.testing.assert_array_equal(one.rows, expected)
    chunked, lo = Reservoir(m, 12, seed=3), 0
    while lo < 600:
        step = int(rng.integers(1, 90))
        chunked.update(anisotropic[lo:lo + step])
        lo += step
    np.testing.assert_array_equal(chunked.rows, expected)
    assert len(one) == min(m, 600) and one.n_seen == chunked.n_seen == 600


def test_reservoir_merge_of_two_halves_equals_one_pass_exactly(anisotropic):
    whole = Reservoir(100, 12, seed=5).update(anisotropic)
    a = Reservoir(100, 12, seed=5).update(anisotropic[:217])
    b = Reservoir(100, 12, seed=5).update(anisotropic[217:], start=217)
    for merged in (a.merge(b), b.merge(a)):  # order-independent
        np.testing.assert_array_equal(merged.rows, whole.rows)
        np.testing.assert_array_equal(merged.keys, whole.keys)
        assert merged.n_seen == 600
    # many shards, merged as a tree in shuffled order
    cuts = [0, 50, 51, 300, 420, 600]
    parts = [Reservoir(100, 12, seed=5).update(anisotropic[lo:hi], start=lo) for lo, hi in zip(cuts, cuts[1:])]
    tree = parts[3].merge(parts[0]).merge(parts[4].merge(parts[2]).merge(parts[1]))
    np.testing.assert_array_equal(tree.rows, whole.rows)


def test_reservoir_is_a_uniform_sample(rng):
    """Each position is kept with probability m/n (over seeds), and different seeds differ."""
    n, m, seeds = 200, 20, 2000
    X = np.arange(n, dtype=np.float64)[:, None]
    counts = np.zeros(n)
    for seed in range(seeds):
        counts[Reservoir(m, 1, seed=seed).update(X).rows[:, 0].astype(int)] += 1
    freq = counts / seeds
    se = np.sqrt(0.1 * 0.9 / seeds)
    assert np.abs(freq - m / n).max() < 5 * se
    assert abs(np.corrcoef(np.arange(n), freq)[0, 1]) < 0.2  # no drift along the stream
    assert not np.array_equal(Reservoir(m, 1, seed=1).update(X).rows, Reservoir(m, 1, seed=2).update(X).rows)


def test_reservoir_copies_rows_and_checks_inputs():
    X = np.ones((5, 2))
    r = Reservoir(3, 2).update(X)
    X[:] = 7.0  # the caller reuses its chunk (the streaming fit centres it in place)
    assert (r.rows == 1.0).all()
    with pytest.raises(InputError, match="dimension 2"):
        r.update(np.ones((2, 3)))
    with pytest.raises(InputError, match="cannot merge"):
        r.merge(Reservoir(3, 2, seed=1))
    with pytest.raises(InputError, match="size must be"):
        Reservoir(0, 2)


# ---------------------------------------------------------------------------------------
# issue 14: what a part covers, huge values, empty parts, header numbers, option caps
# ---------------------------------------------------------------------------------------
import shutil  # noqa: E402

from typer.testing import CliRunner  # noqa: E402

from whitenclip import engine  # noqa: E402
from whitenclip.cli import app  # noqa: E402

_runner = CliRunner()


def cli(*args):
    return _runner.invoke(app, [str(a) for a in args])


def test_overlapping_row_ranges_of_one_file_are_refused_however_cut(tmp_path, anisotropic):
    """`moments s --piece-rows 100`, `moments s`, `merge-moments a b` gave n = 1000 from 500 rows."""
    from whitenclip.readers.base import Piece
    from whitenclip.readers.plan import discover_shards, plan_pieces

    X = anisotropic[:500].astype(np.float32)
    s, a, b, ab = (tmp_path / n for n in ("s.npy", "a.moments.safetensors", "b.moments.safetensors",
                                          "ab.moments.safetensors"))
    np.save(s, X)
    assert cli("moments", s, "--piece-rows", 100, "-o", a).exit_code == 0
    assert cli("moments", s, "-o", b).exit_code == 0
    r = cli("merge-moments", a, b, "-o", ab)
    assert r.exit_code == 2 and "counted twice" in r.output and str(s) in r.output and not ab.exists()
    shutil.copy(s, tmp_path / "copy.npy")  # a copy holds the same rows
    r = cli("moments", tmp_path / "copy.npy", "--piece-rows", 64, "-o", tmp_path / "c.moments.safetensors")
    assert r.exit_code == 0
    r = cli("merge-moments", a, tmp_path / "c.moments.safetensors", "-o", ab)
    assert r.exit_code == 2 and "counted twice" in r.output
    # disjoint pieces of one file merge exactly; a piece overlapping them does not
    [shard] = discover_shards([s])
    parts = [engine.piece_moments(p, meta={}) for p in plan_pieces([shard], 128)]
    merged = parts[0]
    for p in parts[1:]:
        merged = merged.merge(p)
    assert merged.n == 500 and [c["rows"] for c in merged.coverage] == [[0, 128], [128, 256], [256, 384], [384, 500]]
    np.testing.assert_allclose(merged.mean, X.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(merged.moments.covariance(), np.cov(X.astype(np.float64), rowvar=False), rtol=1e-10)
    for lo, hi in [(100, 200), (0, 1), (499, 500), (127, 129)]:
        with pytest.raises(InputError, match="counted twice"):
            merged.merge(engine.piece_moments(Piece(shard, 9, lo, hi), meta={}))


def test_huge_values_are_refused_naming_file_and_row_never_written(tmp_path, rng):
    """|x| ~ 1e200 gave an inf/NaN scatter written to a moments file; fit/entropy/report crashed."""
    X = rng.standard_normal((50, 4))
    X[17] *= 1e200
    big = tmp_path / "big.npy"
    np.save(big, X)
    out = tmp_path / "big.moments.safetensors"
    for args in (["moments", big, "-o", out], ["moments", big, "--fast-gram", "-o", out],
                 ["fit", big, "-o", tmp_path / "w.safetensors"], ["entropy", big], ["gaussianity-report", big],
                 ["fit", big, "--engine", "dask", "-o", tmp_path / "w.safetensors"]):
        r = cli(*args)
        assert r.exit_code == 2, (args, r.output)
        assert "internal error" not in r.output and "row 17" in r.output, (args, r.output)
    assert not out.exists() and not (tmp_path / "w.safetensors").exists()
    with pytest.raises(InputError, match="row 17"):
        MomentsPart(4).update(X)
    with pytest.raises(InputError, match="a.npy: row 27"):
        Moments(4).update(X, origin=("a.npy", 10))


@pytest.mark.parametrize("scale", [1e20, 1e-25, 1e35])
def test_float32_gram_is_scale_safe(anisotropic, scale):
    """--fast-gram: ~1e20 overflowed float32 to inf, ~1e-25 underflowed to 'every coordinate is constant'."""
    X = anisotropic * scale
    exact = Moments.from_array(X)
    for got in (Moments(12).update(X, gram="float32"), MomentsPart(12, {"gram": "float32"}).update(X).moments):
        assert np.isfinite(got.scatter).all()
        assert np.abs(got.scatter - exact.scatter).max() <= 1e-5 * np.abs(exact.scatter).max()
    wh = Whitener(calibration=False).fit_moments(Moments(12).update(X, gram="float32"))
    assert wh.rank_ == 12


def test_cli_fast_gram_on_tiny_and_huge_values(tmp_path, anisotropic):
    for scale in (1e20, 1e-25):
        np.save(tmp_path / "x.npy", (anisotropic * scale).astype(np.float32))
        r = cli("moments", tmp_path / "x.npy", "--fast-gram", "-o", tmp_path / "x.moments.safetensors")
        assert r.exit_code == 0, r.output
        part = MomentsPart.load(tmp_path / "x.moments.safetensors")
        ref = Moments.from_array((anisotropic * scale).astype(np.float32))
        assert np.abs(part.scatter - ref.scatter).max() <= 1e-5 * np.abs(ref.scatter).max()
        r = cli("fit", tmp_path / "x.npy", "--fast-gram", "-o", tmp_path / "w.safetensors")
        assert r.exit_code == 0 and "constant" not in r.output, r.output


def test_a_non_finite_part_is_never_written(tmp_path, anisotropic):
    p = MomentsPart(12).update(anisotropic)
    p.power4 = float("inf")
    with pytest.raises(InputError, match="NaN or inf"):
        p.save(tmp_path / "p.moments.safetensors")
    m = Moments.from_array(anisotropic)
    m.scatter[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN or inf"):
        m.save(tmp_path / "p.moments.safetensors")
    assert not (tmp_path / "p.moments.safetensors").exists()


def test_empty_shard_gives_an_empty_part_that_merges_as_the_identity(tmp_path, anisotropic):
    """A SLURM task whose shard is empty: `moments` writes n = 0; merging it changes nothing; fit refuses
    only an empty total."""
    e, s = tmp_path / "e.npy", tmp_path / "s.npy"
    np.save(e, np.zeros((0, 12), dtype=np.float32))
    np.save(s, anisotropic.astype(np.float32))
    em, sm, esm = (tmp_path / f"{n}.moments.safetensors" for n in ("e", "s", "es"))
    assert cli("moments", e, "-o", em, "--calibration-rows", 50).exit_code == 0
    assert cli("moments", s, "-o", sm, "--calibration-rows", 50).exit_code == 0
    assert MomentsPart.load(em).n == 0
    r = cli("merge-moments", em, sm, "-o", esm)
    assert r.exit_code == 0, r.output
    a, b = MomentsPart.load(esm), MomentsPart.load(sm)
    assert a.n == b.n == 600
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.scatter, b.scatter)
    assert a.power4 == b.power4 and "reservoir" in a.extras
    np.testing.assert_array_equal(a.extras["reservoir"]["rows"], b.extras["reservoir"]["rows"])
    r = cli("fit", em, "-o", tmp_path / "w.safetensors")
    assert r.exit_code == 2 and "got 0" in r.output
    assert cli("fit", esm, "-o", tmp_path / "w.safetensors").exit_code == 0


def test_calibration_rows_is_capped_with_a_clear_message(tmp_path, anisotropic):
    np.save(tmp_path / "s.npy", anisotropic)
    for cmd in ("moments", "fit"):
        r = cli(cmd, tmp_path / "s.npy", "-o", tmp_path / "o.safetensors", "--calibration-rows", 16_000_000)
        assert r.exit_code == 2 and "--calibration-rows" in r.output and not (tmp_path / "o.safetensors").exists()


def _crafted(tmp_path, anisotropic, **edit):
    """A valid part file with header fields replaced (``n``) or tensors replaced (others)."""
    import json

    from safetensors.numpy import save_file

    from whitenclip.readers.safetensors import read_safetensors

    np.save(tmp_path / "s.npy", anisotropic)
    assert cli("moments", tmp_path / "s.npy", "-o", tmp_path / "ok.moments.safetensors").exit_code == 0
    tensors, header = read_safetensors(tmp_path / "ok.moments.safetensors")
    for k, v in edit.items():
        if k in header:
            header[k] = v if isinstance(v, str) else json.dumps(v)
        else:
            tensors[k] = v
    out = tmp_path / "bad.moments.safetensors"
    save_file(tensors, str(out), metadata=header)
    return out


@pytest.mark.parametrize("power4", [-5.0, 1e300])
def test_impossible_power4_is_refused_not_an_intensity_out_of_range(tmp_path, anisotropic, power4):
    """power4 < 0 gave a Ledoit-Wolf intensity of -1687 and exit 0; power4 above (tr S)^2 (a sum of
    squares of non-negative terms cannot exceed the square of their sum) gave intensity 1.0."""
    bad = _crafted(tmp_path, anisotropic, power4=np.array([power4]))
    r = cli("fit", bad, "--shrinkage", "ledoit-wolf", "-o", tmp_path / "w.safetensors")
    assert r.exit_code == 2 and "power4" in r.output and not (tmp_path / "w.safetensors").exists()


@pytest.mark.parametrize("n", ["1e30", str(10**30), "abc", "1e3", "-3"])
def test_absurd_counts_are_refused(tmp_path, anisotropic, n):
    """n = 1e30 was fitted; "abc"/"1e3" crashed (internal error)."""
    bad = _crafted(tmp_path, anisotropic, n=n)
    for args in (["fit", bad, "-o", tmp_path / "w.safetensors"],
                 ["merge-moments", bad, "-o", tmp_path / "m.safetensors"]):
        r = cli(*args)
        assert r.exit_code == 2 and "header field n=" in r.output and "internal error" not in r.output


def test_crafted_reservoir_size_is_refused_before_allocation(tmp_path, anisotropic):
    """Two 71 KB parts with a reservoir size of 2^25 made merge-moments use 4.8 GB."""
    bad = _crafted(tmp_path, anisotropic, **{"extra.reservoir.state": np.array([2**25, 0, 600, 600], dtype=np.int64)})
    r = cli("merge-moments", bad, bad, "-o", tmp_path / "m.moments.safetensors")
    assert r.exit_code == 2 and "33554432" in r.output
