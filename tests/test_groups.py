"""Grouped references: whole-group calibration samples, leave-one-group-out distances, the
grouped-rows check, group ids through inputs / stores / the CLI, and calibration on real captions."""

from __future__ import annotations

import csv
import json
import tracemalloc
import warnings

import numpy as np
import pytest
from scipy import stats

from whitenclip.errors import InputError, RankDeficiencyWarning
from whitenclip.likelihood import score
from whitenclip.moments import (
    RESERVOIR_MAX_ROWS,
    Reservoir,
    group_keys,
    reservoir_from_tensors,
    reservoir_to_tensors,
)
from whitenclip.whitening import (
    GroupedRowsWarning,
    Whitener,
    calibration_distances,
    grouping_check,
    knn_transitivity,
)


# ---------------------------------------------------------------------------------------
# leave-one-group-out distances against brute-force refits
# ---------------------------------------------------------------------------------------
@pytest.fixture
def grouped(anisotropic):
    """(150, 12) rows in 50 groups of 1-6 rows, three far rows (large leverage)."""
    X = anisotropic[:150].copy()
    X[:3] = X[:3] * 4 - 3 * X.mean(0)
    labels = np.repeat(np.arange(50), np.random.default_rng(3).integers(1, 7, 50))[:150]
    return X, np.r_[labels, np.arange(50, 50 + 150 - labels.size)]


def _logo_refits(X, groups, **params):
    """Brute force: refit without each group, distances of the group's rows."""
    out = np.empty(X.shape[0])
    for g in np.unique(groups):
        inside = groups == g
        wh = Whitener(calibration=False, **params).fit(X[~inside])
        out[inside] = wh.mahalanobis(X[inside])
    return out


@pytest.mark.parametrize("params", [{}, {"method": "zca"}, {"method": "cholesky"}, {"shrinkage": 0.3},
                                    {"shrinkage": 1.0}])
def test_logo_closed_form_equals_refits(grouped, params):
    X, groups = grouped
    wh = Whitener(**params).fit(X, groups=groups)
    got = calibration_distances(wh, X, groups)
    np.testing.assert_allclose(got, _logo_refits(X, groups, **params), rtol=1e-10)
    np.testing.assert_allclose(wh.calibration_, np.sort(got), rtol=1e-12)  # fit samples whole groups: all here
    assert wh.calibration_groups_ == np.unique(groups).size
    # singleton groups are leave-one-out
    np.testing.assert_allclose(calibration_distances(wh, X, np.arange(150)), calibration_distances(wh, X),
                               rtol=1e-10)


def test_logo_estimated_shrinkage_and_truncation_hold_what_they_say(grouped):
    """Ledoit-Wolf / OAS: exact with the intensity held at its full-data value; rank < d: exact for
    the kept subspace held fixed, and conservative (larger) against refits that re-pick it."""
    X, groups = grouped
    for shrinkage in ("oas", "ledoit-wolf"):
        wh = Whitener(shrinkage=shrinkage).fit(X, groups=groups)
        got = calibration_distances(wh, X, groups)
        np.testing.assert_allclose(got, _logo_refits(X, groups, shrinkage=wh.shrinkage_), rtol=1e-10)
        free = _logo_refits(X, groups, shrinkage=shrinkage)
        assert np.median(np.abs(got / free - 1)) < 1e-2
    with pytest.warns(RankDeficiencyWarning):
        wh = Whitener(rank=5, shrinkage=0.2).fit(X, groups=groups)
    got = calibration_distances(wh, X, groups)
    V, s, d = wh.components_, wh.shrinkage_, 12
    fixed = np.empty(150)
    for g in np.unique(groups):
        inside = groups == g
        rest = X[~inside]
        S = np.cov(rest, rowvar=False)
        C = V.T @ ((1 - s) * S + s * np.trace(S) / d * np.eye(d)) @ V
        a = (X[inside] - rest.mean(0)) @ V
        fixed[inside] = np.einsum("ij,ij->i", a @ np.linalg.inv(C), a)
    np.testing.assert_allclose(got, fixed, rtol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankDeficiencyWarning)
        refit = _logo_refits(X, groups, rank=5, shrinkage=0.2)
    assert np.median(got / refit) >= 1 - 1e-9


def test_groups_the_others_do_not_span_are_infinite(rng):
    X = rng.standard_normal((30, 20))
    groups = np.repeat(np.arange(3), 10)  # n - k - 1 = 19 <= d: every refit is singular along its group
    with pytest.warns(UserWarning, match="degenerate calibration: 30 of 30 leave-one-group-out distances are inf"):
        wh = Whitener().fit(X, groups=groups)
    assert np.isinf(wh.calibration_).all()


# ---------------------------------------------------------------------------------------
# the reservoir: whole groups, exact merges, memory
# ---------------------------------------------------------------------------------------
def _ids(n, rng):
    return [f"g{k}" for k in np.repeat(np.arange(n), rng.integers(1, 6, n))[:n]]


def test_reservoir_keeps_whole_groups_below_the_threshold(rng):
    X = rng.standard_normal((500, 3))
    groups = _ids(500, rng)
    res = Reservoir(100, 3, seed=7).update(X, groups=groups)
    keys = group_keys(groups, seed=7)
    order = np.argsort(keys, kind="stable")
    # brute force: groups in key order while the running row count stays <= 100
    uniq, counts = np.unique(keys, return_counts=True)
    T = uniq[np.flatnonzero(np.cumsum(counts) <= 100)[-1]]
    want = X[order][keys[order] <= T]
    np.testing.assert_array_equal(res.rows, want)
    assert len(res) <= 100 and res.grouped and res.n_groups == np.unique(keys[keys <= T]).size
    kept = set(map(tuple, res.rows))  # whole groups: a group is in or out with all its rows
    for g in set(groups):
        inside = [tuple(x) in kept for x, h in zip(X, groups) if h == g]
        assert all(inside) or not any(inside)


@pytest.mark.parametrize("size", [1, 7, 100, 1000])
def test_reservoir_merges_exactly_whatever_the_cut_and_order(rng, size):
    X = rng.standard_normal((600, 4))
    groups = _ids(600, rng)
    groups[::7] = [None] * len(groups[::7])  # rows without a group: their own
    whole = Reservoir(size, 4).update(X, groups=groups)
    cuts = np.sort(rng.choice(np.arange(1, 600), 5, replace=False))
    parts = [Reservoir(size, 4).update(X[a:b], start=a, groups=groups[a:b])
             for a, b in zip(np.r_[0, cuts], np.r_[cuts, 600])]
    for perm in (range(len(parts)), reversed(range(len(parts))), rng.permutation(len(parts))):
        merged = None
        for k in perm:
            merged = parts[k] if merged is None else merged.merge(parts[k])
        np.testing.assert_array_equal(merged.rows, whole.rows)
        np.testing.assert_array_equal(merged.keys, whole.keys)
    streamed = Reservoir(size, 4)
    for a in range(0, 600, 13):
        streamed.update(X[a:a + 13], groups=groups[a:a + 13])
    np.testing.assert_array_equal(streamed.rows, whole.rows)
    back = reservoir_from_tensors(reservoir_to_tensors(whole))
    np.testing.assert_array_equal(back.rows, whole.rows)
    assert (back._bound, back.n_seen, back.grouped) == (whole._bound, 600, True)


def test_reservoir_allocates_what_it_holds():
    """Was: an m x d slab at construction (2.3 GB for --calibration-rows 16000000, d = 384 wanted 49 GB)."""
    X = np.random.default_rng(0).standard_normal((2000, 384))
    tracemalloc.start()
    res = Reservoir(RESERVOIR_MAX_ROWS, 384)
    for a in range(0, 2000, 500):
        res.update(X[a:a + 500])
    merged = res.merge(Reservoir(RESERVOIR_MAX_ROWS, 384).update(X[:10], start=5000))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(merged) == 2010 and peak < 4 * 2010 * 384 * 8  # a few copies of the rows held, not of m x d
    with pytest.raises(InputError, match="over the limit"):
        Reservoir(16_000_000, 384)


@pytest.mark.parametrize("bad, match", [
    ({"state": np.array([2**25, 0, 10, 10], np.int64)}, "size"),
    ({"state": np.array([3, 0, 10, 10], np.int64)}, "holds 5 rows"),
    ({"rows": np.full((5, 2), np.nan)}, "non-finite"),
    ({"keys": np.arange(4, dtype=np.uint64)}, "keys"),
    ({"state": np.array([5, 0], np.int64)}, "fields"),
    ({"bound": np.array([0], np.uint64)}, "bound"),
])
def test_reservoir_tensors_are_validated(bad, match):
    good = reservoir_to_tensors(Reservoir(5, 2).update(np.ones((5, 2)) * np.arange(5)[:, None]))
    with pytest.raises(InputError, match=match):
        reservoir_from_tensors({**good, **bad})
    with pytest.raises(InputError, match="lacks"):
        reservoir_from_tensors({k: v for k, v in good.items() if k != "rows"})


# ---------------------------------------------------------------------------------------
# the grouped-rows check
# ---------------------------------------------------------------------------------------
def _clustered(rng, n_groups, size, d=64, spread=0.3):
    centres = rng.standard_normal((n_groups, d))
    return np.repeat(centres, size, axis=0) + spread * rng.standard_normal((n_groups * size, d))


def test_grouping_check_rule(rng):
    grouped_rows = _clustered(rng, 200, 5)  # each group's rows next to each other, as in caption files
    found = grouping_check(grouped_rows)
    assert found.adjacent_excess > 0.1 and found.adjacent_z > 5 and found.excess > 0.25
    assert found.warning is not None and "--group-column" in found.warning
    assert grouping_check(rng.standard_normal((1000, 64))).warning is None
    # the same rows in random order: exchangeable order, nothing to see (the documented blind spot)
    shuffled = rng.permutation(1000)
    assert grouping_check(grouped_rows[shuffled]).warning is None
    # ... unless the sample knows where each row was in the input
    assert grouping_check(grouped_rows[shuffled], positions=shuffled).warning == found.warning
    # a population of near-duplicates drawn independently (tight clusters, random order): quiet,
    # though its k-NN graph is as clique-like as grouped rows (condition 2 alone would warn)
    population = _clustered(rng, 50, 20)[rng.permutation(1000)]
    assert grouping_check(population).warning is None
    assert knn_transitivity(population) > 0.3 > knn_transitivity(rng.standard_normal((1000, 64)))
    # sorted but independent rows: adjacent rows alike, no cliques
    line = np.sort(rng.standard_normal(1000))[:, None] * np.r_[3.0, np.zeros(63)] + rng.standard_normal((1000, 64))
    ordered = grouping_check(line)
    assert ordered.adjacent_excess > 0.1 and ordered.warning is None
    assert grouping_check(grouped_rows[:40]).transitivity is None  # too few rows to tell
    with pytest.warns(GroupedRowsWarning, match="look grouped"):
        wh = Whitener().fit(grouped_rows)
    assert wh.calibration_warning_ == found.warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", GroupedRowsWarning)
        wh = Whitener().fit(grouped_rows, groups=np.repeat(np.arange(200), 5))  # groups given: no check
    assert wh.calibration_warning_ is None and wh.calibration_groups_ == 200


# ---------------------------------------------------------------------------------------
# calibration under a known law: Gaussian rows in random groups of 1-5
# ---------------------------------------------------------------------------------------
def test_grouped_gaussian_pvalues_are_uniform():
    """Rows x = u_g + e (group effect u_g shared by the 1-5 rows of group g, both Gaussian); new rows
    come from new groups. Leave-one-group-out p-values are uniform (KS); leave-one-out ones are not
    (siblings left in the fit make reference distances too small, so new rows look far)."""
    rng = np.random.default_rng(11)
    d, fits, per_fit = 8, 40, 25
    logo, loo = [], []
    for _ in range(fits):
        sizes = rng.integers(1, 6, 60)
        labels = np.repeat(np.arange(sizes.size), sizes)
        u = rng.standard_normal((sizes.size, d)) * 1.5
        X = u[labels] + rng.standard_normal((labels.size, d))
        new = rng.standard_normal((per_fit, d)) * 1.5 + rng.standard_normal((per_fit, d))
        logo.append(score(Whitener().fit(X, groups=labels), new)["pvalue_conformal"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GroupedRowsWarning)
            loo.append(score(Whitener().fit(X), new)["pvalue_conformal"])
    logo, loo = np.concatenate(logo), np.concatenate(loo)
    assert stats.kstest(logo, "uniform").pvalue > 0.01
    assert abs(np.mean(logo < 0.05) - 0.05) < 0.02
    assert stats.kstest(loo, "uniform").pvalue < 1e-3 and np.mean(loo < 0.05) > 0.07
    # random groups on independent rows: still uniform
    p = np.concatenate([score(Whitener().fit(rng.standard_normal((200, d)), groups=rng.integers(0, 80, 200)),
                              rng.standard_normal((per_fit, d)))["pvalue_conformal"] for _ in range(fits)])
    assert stats.kstest(p, "uniform").pvalue > 0.01


# ---------------------------------------------------------------------------------------
# the artifact, info, and group ids through sources, stores and the CLI
# ---------------------------------------------------------------------------------------
def test_artifact_and_info_record_the_calibration_mode(tmp_path, rng):
    import io

    from rich.console import Console

    from whitenclip.render import render
    from whitenclip.whitening import summarize

    X = _clustered(rng, 60, 5, d=10, spread=0.2)
    wh = Whitener().fit(X, groups=np.repeat(np.arange(60), 5))
    wh.save(tmp_path / "g.safetensors")
    back = Whitener.load(tmp_path / "g.safetensors")
    assert back.calibration_groups_ == 60 and back.calibration_warning_ is None
    s = summarize(back, tmp_path / "g.safetensors")
    assert (s.calibration_mode, s.n_groups) == ("groups", 60)
    assert s.to_dict()["calibration"]["mode"] == "groups"
    buf = io.StringIO()
    render(s, "table", console=Console(file=buf, width=250))
    assert "leave-one-group-out: 300 rows in 60 groups" in buf.getvalue()
    with pytest.warns(GroupedRowsWarning):
        rows = Whitener().fit(X)
    rows.save(tmp_path / "r.safetensors")
    s = summarize(Whitener.load(tmp_path / "r.safetensors"))
    assert s.calibration_mode == "rows" and s.n_groups is None and "look grouped" in s.warning
    buf = io.StringIO()
    render(s, "table", console=Console(file=buf, width=250))
    assert "leave-one-out: 300 rows" in buf.getvalue() and "warning: reference rows look grouped" in buf.getvalue()


def test_groups_file_store_groups_and_streaming_fit(tmp_path, rng):
    from whitenclip.readers.plan import open_embeddings
    from whitenclip.sources import EncodeOptions, open_sources
    from whitenclip.whitening import fit_whitener_streaming
    from whitenclip.writers import StoreWriter

    X = _clustered(rng, 80, 5, d=10, spread=0.2)
    labels = [f"img{k}" for k in np.repeat(np.arange(80), 5)]
    np.save(tmp_path / "a.npy", X[:150])
    np.save(tmp_path / "b.npy", X[150:])
    (tmp_path / "groups.txt").write_text("\n".join(labels) + "\n")
    sources = open_sources([tmp_path / "a.npy", tmp_path / "b.npy"], EncodeOptions(groups_file=tmp_path / "groups.txt"))
    assert sources[0].groups == labels[:150] and sources[1].groups == labels[150:]
    streamed, _ = fit_whitener_streaming(sources, chunk_rows=37)
    direct = Whitener().fit(X, groups=labels)
    assert streamed.calibration_groups_ == direct.calibration_groups_ == 80
    np.testing.assert_allclose(streamed.calibration_, direct.calibration_, rtol=1e-10)
    (tmp_path / "short.txt").write_text("\n".join(labels[:-1]) + "\n")
    with pytest.raises(InputError, match="399 group ids for 400 input rows"):
        open_sources([tmp_path / "a.npy", tmp_path / "b.npy"], EncodeOptions(groups_file=tmp_path / "short.txt"))
    # a store records the groups it was written with; --no-groups drops them
    X = X.astype(np.float32).astype(np.float64)
    direct = Whitener().fit(X, groups=labels)
    w = StoreWriter(tmp_path / "store", dim=10, dtype="float32", meta={"n_items": 400})
    w.write_shard([str(i) for i in range(250)], X[:250], 250, groups=labels[:250])
    w.write_shard([str(i) for i in range(250, 400)], X[250:], 400, groups=labels[250:])
    assert open_embeddings(tmp_path / "store").groups == labels
    (store,) = open_sources([tmp_path / "store"], EncodeOptions(group_column=True))
    fitted, _ = fit_whitener_streaming([store])
    np.testing.assert_allclose(fitted.calibration_, direct.calibration_, rtol=1e-10)
    (plain,) = open_sources([tmp_path / "store"], EncodeOptions(group_column=False))
    assert plain.groups is None
    with pytest.raises(InputError, match="--group-column names a column"):
        open_sources([tmp_path / "store"], EncodeOptions(group_column="image"))


def test_cli_groups_options(tmp_path, rng):
    from typer.testing import CliRunner

    from whitenclip.cli import app

    X = _clustered(rng, 80, 5, d=10, spread=0.2)
    np.save(tmp_path / "x.npy", X)
    (tmp_path / "g.txt").write_text("\n".join(str(k) for k in np.repeat(np.arange(80), 5)) + "\n")
    run = CliRunner().invoke
    r = run(app, ["fit", str(tmp_path / "x.npy"), "-o", str(tmp_path / "W.safetensors"), "--groups",
                  str(tmp_path / "g.txt")])
    assert r.exit_code == 0, r.output
    info = json.loads(run(app, ["info", str(tmp_path / "W.safetensors"), "--json"]).stdout)
    assert info["calibration"]["mode"] == "groups" and info["calibration"]["n_groups"] == 80
    r = run(app, ["fit", str(tmp_path / "x.npy"), "-o", str(tmp_path / "R.safetensors")])
    assert r.exit_code == 0 and "look grouped" in r.output and "--groups FILE" in r.output
    info = json.loads(run(app, ["info", str(tmp_path / "R.safetensors"), "--json"]).stdout)
    assert info["calibration"]["mode"] == "rows" and "look grouped" in info["calibration"]["warning"]
    for bad, msg in ([["--groups", str(tmp_path / "g.txt"), "--no-groups"], "contradicts"],
                     [["--calibration-rows", "16000000"], "1048576"]):
        r = run(app, ["fit", str(tmp_path / "x.npy"), "-o", str(tmp_path / "B.safetensors"), *bad])
        assert r.exit_code == 2 and msg in r.output


# ---------------------------------------------------------------------------------------
# real data: MiniLM captions of Flickr8k (../shared; skipped when absent)
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flickr(tmp_path_factory):
    """Embeds 5900 captions once (~20 s on 2 quiet cores): all 5 captions of 600 images (a CSV of the
    first 200 goes through the captions pipeline with its default image-column groups and a store),
    one caption of each of 500 other images (held out) and of 2400 more (1-caption references).
    Caption positions are drawn at random: Flickr8k's five positions are not exchangeable."""
    from conftest import flickr_captions_by_image

    from whitenclip.encoders import embed, load_encoder
    from whitenclip.sources import EncodeOptions, embed_to_store, open_sources

    by = flickr_captions_by_image()
    images = sorted(im for im in by if len(by[im]) == 5)
    rng = np.random.default_rng(17)
    order = rng.permutation(len(images))
    grp, held, single = ([images[i] for i in order[a:b]] for a, b in ((0, 600), (600, 1100), (1100, 3500)))
    single_pos = rng.integers(0, 5, len(single))
    held_pos = rng.integers(0, 5, len(held))
    tmp = tmp_path_factory.mktemp("flickr")
    with open(tmp / "captions.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "caption"])
        w.writerows((im, c) for im in grp[:200] for c in by[im])
    with pytest.warns(UserWarning, match="grouping captions by its 'image' column"):
        sources = open_sources([tmp / "captions.csv"], EncodeOptions(model="minilm", device="cpu", progress=False,
                                                                     group_column=True))
    (store,) = embed_to_store(sources, tmp / "store")
    enc = load_encoder("minilm", device="cpu")
    rest = [c for im in grp[200:] for c in by[im]] + [by[im][p] for im, p in zip(held, held_pos)] \
        + [by[im][p] for im, p in zip(single, single_pos)]
    _, E = embed(enc, rest, modality="text")
    E = E.astype(np.float64)
    X200 = store.read_all()[1]
    return {"store": store, "grouped": np.concatenate([X200, E[:2000]]),
            "labels": [im for im in grp for _ in range(5)], "held": E[2000:2500], "single": E[2500:]}


def _flag_rate(wh, held):
    return float(np.mean(score(wh, held)["pvalue_conformal"] < 0.05))


def test_flickr8k_grouped_reference_is_calibrated(flickr, capsys):
    """5 captions of 200 images (n = 1000), groups from the CSV's image column by default: the
    leave-one-group-out calibration flags 3-7% of captions of other images; leave-one-out flagged
    9-13% here (15.2% in the issue's draw) and the check says the rows look grouped. Same at n = 3000."""
    from whitenclip.whitening import fit_whitener_streaming

    assert flickr["store"].groups == flickr["labels"][:1000]  # recorded in the store by embed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankDeficiencyWarning)  # 3 of MiniLM's 384 coordinates are constant
        wh, _ = fit_whitener_streaming([flickr["store"]])
        with pytest.warns(GroupedRowsWarning):
            loo = Whitener().fit(flickr["grouped"][:1000])
        wh3 = Whitener().fit(flickr["grouped"], groups=flickr["labels"])
        with pytest.warns(GroupedRowsWarning):
            loo3 = Whitener().fit(flickr["grouped"])
    assert wh.n_cal_ == 1000 and wh.calibration_groups_ == 200
    got = {"n=1000 groups": _flag_rate(wh, flickr["held"]), "n=1000 rows": _flag_rate(loo, flickr["held"]),
           "n=3000 groups": _flag_rate(wh3, flickr["held"]), "n=3000 rows": _flag_rate(loo3, flickr["held"])}
    with capsys.disabled():
        print("\nFlickr8k 5 captions per image, pvalue_conformal < 0.05 on 500 other images: "
              + ", ".join(f"{k} {v:.3f}" for k, v in got.items()))
    assert 0.03 <= got["n=1000 groups"] <= 0.07 and 0.03 <= got["n=3000 groups"] <= 0.07
    assert got["n=1000 rows"] > 0.08  # what the leave-one-out calibration did


def test_flickr8k_one_caption_per_image_stays_calibrated_and_quiet(flickr, capsys):
    got = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankDeficiencyWarning)
        warnings.simplefilter("error", GroupedRowsWarning)  # independent rows: no grouped-rows warning
        for n in (400, 800, 1600, 2400):
            got[n] = _flag_rate(Whitener().fit(flickr["single"][:n]), flickr["held"])
    with capsys.disabled():
        print("\nFlickr8k 1 caption per image, pvalue_conformal < 0.05 on 500 other images: "
              + ", ".join(f"n={n} {v:.3f}" for n, v in got.items()))
    assert all(0.03 <= v <= 0.07 for v in got.values())
