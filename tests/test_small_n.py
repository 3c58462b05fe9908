"""Defaults that hold at small n: ``fit --shrinkage auto`` (the default), degenerate calibrations said
(never a silent pvalue_conformal of 1.0), and an image column that cannot group is not the default grouping."""

import csv
import io
import json
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from whitenclip.cli import app
from whitenclip.errors import InputError, RankDeficiencyWarning
from whitenclip.likelihood import pvalue_conformal, score
from whitenclip.whitening import (
    DegenerateCalibrationWarning,
    Whitener,
    auto_shrinkage,
    degenerate_calibration,
    oas_shrinkage_of_rows,
    parse_shrinkage,
)

runner = CliRunner()
D = 64
LAM = np.arange(1, D + 1) ** -1.5  # a CLIP-like power-law spectrum


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def law(seed):
    """Draws from N(0, Q diag(LAM) Q^T) and from the same spectrum in another basis (junk)."""
    rng = np.random.default_rng(seed)
    Q, Q2 = (np.linalg.qr(rng.standard_normal((D, D)))[0] for _ in range(2))

    def draw(m, junk=False):
        return (rng.standard_normal((m, D)) * np.sqrt(LAM)) @ (Q2 if junk else Q).T

    return draw


def tsv(text):
    return list(csv.DictReader(io.StringIO(text), delimiter="\t"))


# --------------------------------------------------------------------------- shrinkage="auto"
def test_auto_rule_picks_oas_below_ten_rows_per_dimension():
    assert auto_shrinkage(5119, 512) == ("oas", "auto: oas, as n = 5119 rows < 10 d = 5120")
    assert auto_shrinkage(5120, 512) == (None, "auto: none, as n = 5120 rows >= 10 d = 5120")
    X = law(0)(200)
    wh = Whitener(shrinkage="auto").fit(X)
    assert wh.shrinkage == "auto" and wh.shrinkage_choice_ == "oas"  # the parameter stays as given (sklearn)
    assert wh.shrinkage_ == pytest.approx(oas_shrinkage_of_rows(X), rel=1e-12) and wh.shrinkage_ > 0.01
    assert wh.artifact_metadata()["shrinkage"] == "oas"
    assert wh.artifact_metadata()["shrinkage_rule"] == "auto: oas, as n = 200 rows < 10 d = 640"
    X = law(1)(640)
    auto, plain = Whitener(shrinkage="auto").fit(X), Whitener().fit(X)
    assert auto.shrinkage_choice_ is None and auto.shrinkage_ == 0.0
    np.testing.assert_array_equal(auto.covariance_, plain.covariance_)  # plentiful rows: the exact covariance
    assert plain.artifact_metadata()["shrinkage_rule"] is None  # the library default stays None


def test_auto_is_for_fit_only():
    assert parse_shrinkage("AUTO", allow_auto=True) == "auto"
    with pytest.raises(InputError, match="got 'auto'"):
        parse_shrinkage("auto")  # mi --shrinkage: no rule for it
    res = run("mi", "x.npy", "y.npy", "--shrinkage", "auto")
    assert res.exit_code == 2 and "--shrinkage must be none, ledoit-wolf, oas or a number" in res.stderr


@pytest.mark.parametrize(("n", "lo", "hi", "junk"), [(D // 2, 0.005, 0.05, 0.75), (D, 0.035, 0.065, 0.97),
                                                      (2 * D, 0.035, 0.065, 0.99)])
def test_auto_holds_the_level_and_flags_junk_at_small_n(n, lo, hi, junk):
    """Mean over 10 reference draws: held-out share with pvalue_conformal < 0.05 near 5% (at n = 32,
    p-values move in steps of 1/33, so the share is about 1/33), and rows of another law flagged;
    without shrinkage the same fits gave 0.0 and 0.0 at n = d/2 and d (every p-value 1.0)."""
    level, flagged = [], []
    for seed in range(10):
        draw = law(seed)
        wh = Whitener(shrinkage="auto").fit(draw(n))
        assert wh.calibration_degenerate_ is None and np.isfinite(wh.calibration_).all()
        level.append(np.mean(pvalue_conformal(wh.mahalanobis(draw(2000)), wh.calibration_) < 0.05))
        flagged.append(np.mean(pvalue_conformal(wh.mahalanobis(draw(300, junk=True)), wh.calibration_) < 0.05))
    assert lo <= np.mean(level) <= hi and np.mean(flagged) >= junk


def test_fit_default_at_n_below_d(tmp_path):
    """The issue's first experiment: n < d rows, default `fit`, then `score`: held-out rows keep the
    level, junk rows get small p-values (the old default gave 1.0 to every row)."""
    draw = law(3)
    np.save(tmp_path / "ref.npy", draw(48))
    np.save(tmp_path / "new.npy", np.concatenate([draw(1000), draw(200, junk=True)]))
    res = run("fit", tmp_path / "ref.npy", "-o", tmp_path / "w.safetensors")
    assert res.exit_code == 0, res.stderr
    assert "shrinkage auto: oas, as n = 48 rows < 10 d = 640 (intensity 0.1" in res.stderr
    assert "warning" not in res.stderr and "n < 5 d" not in res.stderr
    info = json.loads(run("info", tmp_path / "w.safetensors", "--json").stdout)
    assert (info["shrinkage"], info["shrinkage_rule"]) == ("oas", "auto: oas, as n = 48 rows < 10 d = 640")
    assert info["rank"] == D and info["calibration"]["n_infinite"] == 0 and info["calibration"]["warning"] is None
    res = run("score", tmp_path / "new.npy", "-w", tmp_path / "w.safetensors")
    p = np.array([float(r["pvalue_conformal"]) for r in tsv(res.stdout)])
    assert np.mean(p[:1000] < 0.05) <= 0.06 and 0.4 <= np.mean(p[:1000]) <= 0.6  # held out: about uniform
    assert np.mean(p[1000:] < 0.05) >= 0.8
    assert "degenerate" not in res.stderr and "left out" not in res.stderr  # the conformal column is kept


def test_sharded_fit_from_moments_applies_auto_too(tmp_path):
    np.save(tmp_path / "ref.npy", law(4)(100))
    assert run("moments", tmp_path / "ref.npy", "-o", tmp_path / "m.moments.safetensors").exit_code == 0
    res = run("fit", tmp_path / "m.moments.safetensors", "-o", tmp_path / "w.safetensors")
    assert res.exit_code == 0, res.stderr
    assert "shrinkage auto: oas, as n = 100 rows < 10 d = 640" in res.stderr
    wh = Whitener.load(tmp_path / "w.safetensors")
    assert wh.shrinkage_choice_ == "oas" and wh.calibration_degenerate_ is None and np.isfinite(wh.calibration_).all()


# --------------------------------------------------------------------------- degenerate calibration
def test_explicit_none_keeps_the_old_fit_and_says_the_calibration_is_degenerate(tmp_path):
    draw = law(5)
    np.save(tmp_path / "ref.npy", draw(48))
    np.save(tmp_path / "new.npy", np.concatenate([draw(5), 100 * draw(5, junk=True)]))
    res = run("fit", tmp_path / "ref.npy", "-o", tmp_path / "w.safetensors", "--shrinkage", "none")
    assert res.exit_code == 0, res.stderr
    said = ("degenerate calibration: 48 of 48 leave-one-out distances are infinite (the other rows do not span the "
            "ones left out: too few rows for the rank, without shrinkage), so no row could get pvalue_conformal "
            "below 1; refit with shrinkage (--shrinkage auto or oas) or more rows")
    assert f"whitenclip: warning: {said}" in res.stderr and "n < 5 d" in res.stderr
    assert "shrinkage auto:" not in res.stderr
    res = run("info", tmp_path / "w.safetensors", "--json")
    info = json.loads(res.stdout)
    assert (info["shrinkage"], info["shrinkage_intensity"], info["shrinkage_rule"]) == (None, 0.0, None)
    assert info["rank"] == 47
    cal = info["calibration"]
    assert (cal["n_infinite"], cal["degenerate"], cal["warning"]) == (48, said, said)
    assert res.stderr.count("\n") == 1 and "degenerate calibration: 48 of 48" in res.stderr
    table = run("info", tmp_path / "w.safetensors")
    assert "(no groups), DEGENERATE" in table.stdout and "warning: degenerate calibration: 48 of 48" in table.stdout
    res = run("score", tmp_path / "new.npy", "-w", tmp_path / "w.safetensors", "--format", "jsonl")
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(rows) == 10 and all("pvalue_conformal" not in r for r in rows)  # never a silent 1.0
    assert f"w.safetensors: pvalue_conformal is left out: {said}" in res.stderr
    res = run("score", tmp_path / "new.npy", "-w", tmp_path / "w.safetensors", "--quiet")
    assert res.stdout.splitlines()[0] == "id\tloglik\tlogpdf\tsqnorm\tpvalue" and "left out" in res.stderr


def test_rows_the_others_cannot_span_are_infinite_exactly():
    """n = d (rank n - 1) and n = d + 1 without shrinkage: the other rows' covariance is singular, every
    distance is +inf (round-off gave finite 1e12-size ones at n = d); from n = d + 2 they are finite."""
    draw = law(6)
    for n in (D, D + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RankDeficiencyWarning)
            with pytest.warns(DegenerateCalibrationWarning, match=f"{n} of {n} leave-one-out distances"):
                wh = Whitener().fit(draw(n))
        assert np.isinf(wh.calibration_).all() and wh.calibration_degenerate_
    wh = Whitener().fit(draw(D + 2))
    assert np.isfinite(wh.calibration_).all() and wh.calibration_degenerate_ is None


def test_one_group_holding_most_rows_is_degenerate(tmp_path):
    draw = law(7)
    X = draw(700)
    with pytest.warns(DegenerateCalibrationWarning, match=r"one group holds 700 of the 700 calibration rows \(1 group\)"
                      r": most distances are measured with it left out"):
        wh = Whitener().fit(X, groups=["all"] * 700)
    assert np.isinf(wh.calibration_).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateCalibrationWarning)
        table = score(wh, draw(3))
    assert table.pvalue_conformal is None and "one group holds 700" in table.note
    big = ["big"] * 400 + [f"g{i}" for i in range(300)]
    majority = r"one group holds 400 of the 700 calibration rows \(301 groups\)"
    with pytest.warns(DegenerateCalibrationWarning, match=majority):
        wh = Whitener().fit(X, groups=big)
    assert wh.calibration_largest_group_ == 400 and np.isfinite(wh.calibration_).all()
    fine = ["big"] * 300 + [f"g{i}" for i in range(400)]
    assert Whitener().fit(X, groups=fine).calibration_degenerate_ is None
    np.save(tmp_path / "ref.npy", X)
    (tmp_path / "one.txt").write_text("a\n" * 700)
    res = run("fit", tmp_path / "ref.npy", "-o", tmp_path / "w.safetensors", "--groups", tmp_path / "one.txt")
    assert res.exit_code == 0 and "whitenclip: warning: degenerate calibration: one group holds 700" in res.stderr
    info = json.loads(run("info", tmp_path / "w.safetensors", "--json").stdout)
    assert info["calibration"]["largest_group"] == 700 and "one group holds 700" in info["calibration"]["warning"]
    res = run("score", tmp_path / "ref.npy", "-w", tmp_path / "w.safetensors")
    assert "pvalue_conformal" not in res.stdout.splitlines()[0] and "one group holds 700" in res.stderr


def test_a_degenerate_artifact_written_before_the_check_is_said_on_loading(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wh = Whitener().fit(law(8)(30))
    wh.calibration_degenerate_ = wh.calibration_warning_ = None  # as the old code wrote it
    wh.save(tmp_path / "old.safetensors")
    back = Whitener.load(tmp_path / "old.safetensors")
    assert back.calibration_degenerate_.startswith("degenerate calibration: 30 of 30")
    assert back.calibration_warning_ == back.calibration_degenerate_
    res = run("info", tmp_path / "old.safetensors", "--json")
    assert json.loads(res.stdout)["calibration"]["warning"].startswith("degenerate calibration: 30 of 30")
    assert "degenerate calibration" in res.stderr


def test_degenerate_rule():
    assert degenerate_calibration(np.r_[np.ones(297), np.full(3, np.inf)]) is None  # 1%: p down to 0.013
    assert "4 of 300 leave-one-out" in degenerate_calibration(np.r_[np.ones(296), np.full(4, np.inf)])
    assert "leave-one-group-out" in degenerate_calibration(np.r_[np.ones(96), np.full(4, np.inf)], largest_group=5)
    assert degenerate_calibration(np.ones(10), largest_group=5) is None  # half: not most
    # shrinkage keeps every leave-one-out covariance invertible: finite at n = d / 2
    wh = Whitener(shrinkage=0.1).fit(law(9)(D // 2))
    assert np.isfinite(wh.calibration_).all() and wh.calibration_degenerate_ is None


# --------------------------------------------------------------------------- default grouping
@pytest.mark.parametrize(("cells", "said"), [(["a.jpg"] * 4, "holds one value ('a.jpg') for 4 captions"),
                                             ([""] * 4, "holds only empty cells for 4 captions")])
def test_an_image_column_that_cannot_group_is_not_the_default_grouping(cells, said):
    from whitenclip.readers.captions import parse_caption_groups
    from whitenclip.readers.items import InputFormatWarning

    data = ("image,caption\n" + "".join(f"{c},caption {i}\n" for i, c in enumerate(cells))).encode()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        caps, groups = parse_caption_groups(data, "c.csv", group_column=True)
    assert caps == [f"caption {i}" for i in range(4)] and groups is None
    assert [str(w.message) for w in rec] == [
        f"c.csv: its 'image' column {said}: not used to group them (every caption its own group; --group-column "
        "NAME groups by it all the same)"]
    assert all(w.category is InputFormatWarning for w in rec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse_caption_groups(data, "c.csv", group_column="image")[1] == [c or None for c in cells]


def test_a_table_image_column_that_cannot_group_is_not_the_default_grouping(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from whitenclip.readers.caption_tables import read_caption_table

    pq.write_table(pa.table({"image": pa.array([None] * 3, pa.string()), "caption": ["x", "y", "z"]}),
                   tmp_path / "null.parquet")
    with pytest.warns(UserWarning) as rec:
        assert read_caption_table(tmp_path / "null.parquet", group_column=True) == (["x", "y", "z"], None)
    assert [str(w.message) for w in rec] == [
        f"{tmp_path / 'null.parquet'}: its 'image' column holds only empty cells for 3 captions: not used to group "
        "them (every caption its own group; --group-column NAME groups by it all the same)"]
    pq.write_table(pa.table({"image": ["a", "b", "a"], "caption": ["x", "y", "z"]}), tmp_path / "two.parquet")
    with pytest.warns(UserWarning, match="two.parquet: grouping captions by its 'image' column"):
        assert read_caption_table(tmp_path / "two.parquet", group_column=True) == (["x", "y", "z"], ["a", "b", "a"])


def test_a_fit_just_above_the_rank_notes_its_conservative_calibration(tmp_path):
    """n = d + 5 without shrinkage: finite leave-one-out distances, but heavy-tailed: said in the note."""
    np.save(tmp_path / "ref.npy", law(10)(D + 5))
    res = run("fit", tmp_path / "ref.npy", "-o", tmp_path / "w.safetensors", "--shrinkage", "none")
    assert res.exit_code == 0 and "warning" not in res.stderr
    assert "with n - r = 5 rows beyond the rank, pvalue_conformal is far too conservative" in res.stderr
    res = run("fit", tmp_path / "ref.npy", "-o", tmp_path / "w.safetensors")  # auto: oas, no note
    assert "shrinkage auto: oas, as n = 69 rows < 10 d = 640" in res.stderr and "note:" not in res.stderr
