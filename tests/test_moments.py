import numpy as np
import pytest

from whitenclip.errors import InputError
from whitenclip.moments import Moments


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
                       ({"encoder": "minilm", "modality": "text", "normalized": True}, "normalized")]:
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
