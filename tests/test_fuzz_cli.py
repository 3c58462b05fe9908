"""Property-based tests of the numeric CLI options (issue 14, sections 2, 4, 5 and 6).

For every size/count option of ``fit``, ``score``, ``moments`` and ``entropy`` (and the float
options beside them), any value a user can type -- huge or negative integers, floats, nan/inf,
words -- gives exit 0 with finite, correct numbers, or exit 2 with one line on stderr naming the
option; never exit 1, an "internal error" or a traceback. Bounded: a fixed seed
(``derandomize=True``), a few dozen examples per command, tiny inputs; the file runs in ~20 s.
"""

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from whitenclip.cli import app, out_of_memory_hint
from whitenclip.whitening import Whitener

runner = CliRunner()
N, D = 40, 4

# the options fuzzed, per command (--bootstrap is left out: a legal huge B is slow, not wrong)
OPTIONS = {
    "fit": ["--floor", "--rank", "--chunk-rows", "--calibration-rows", "--batch-size", "--num-workers", "--shrinkage"],
    "score": ["--chunk-rows", "--batch-size", "--num-workers"],
    "moments": ["--piece-rows", "--chunk-rows", "--calibration-rows"],
    "entropy": ["--knn-dims", "--seed"],
}
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

VALUES = st.one_of(
    st.integers(min_value=1, max_value=64).map(str),  # plausible values, so that exit 0 is exercised too
    st.floats(min_value=0.0, max_value=1.0).map(repr),
    st.sampled_from([-(2 ** 63), -1, 0, 1, 2, 3, 5, 39, 40, 41, 2 ** 31, 2 ** 63, 10 ** 30]).map(str),
    st.integers(min_value=-(10 ** 24), max_value=10 ** 24).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e3", "0.5", "1_000", "0x10", "", " ", "1,5", "ledoit-wolf", "oas",
                     "none", "-0", "+7"]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6),
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    X = np.random.default_rng(0).standard_normal((N, D)) * np.array([3.0, 1.0, 0.5, 0.1]) + 1.0
    np.save(d / "x.npy", X)
    res = runner.invoke(app, ["fit", str(d / "x.npy"), "-o", str(d / "w.safetensors")])
    assert res.exit_code == 0, res.output
    return d, X


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_exit_0_or_one_line_2(res, args):
    assert "Traceback" not in res.output and "internal error" not in res.output, (args, res.output)
    assert res.exit_code in (0, 2), (args, res.exit_code, res.output, res.exception)
    if res.exit_code == 2:
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("whitenclip: error: "), (args, res.stderr)
        assert res.stdout == "", (args, res.stdout)


def finite_rows(text):
    rows = [line.split("\t") for line in text.splitlines()[1:]]
    values = np.array([r[1:5] for r in rows], dtype=float)
    return len(rows), bool(np.isfinite(values).all())


@FUZZ
@given(st.sampled_from(sorted(OPTIONS)), st.data())
def test_numeric_options_exit_0_or_2_with_one_line(data, command, draw):
    d, X = data
    names = draw.draw(st.lists(st.sampled_from(OPTIONS[command]), min_size=1, max_size=2, unique=True))
    opts = [f"{name}={draw.draw(VALUES, label=name)}" for name in names]
    out = {"fit": d / "f.safetensors", "moments": d / "m.moments.safetensors"}.get(command)
    for stale in (d / "f.safetensors", d / "m.moments.safetensors"):
        stale.unlink(missing_ok=True)
    args = {"fit": ("fit", d / "x.npy", "-o", out),
            "score": ("score", d / "x.npy", "-w", d / "w.safetensors"),
            "moments": ("moments", d / "x.npy", "-o", out),
            "entropy": ("entropy", d / "x.npy", "--json")}[command]
    res = run(*args, *opts)
    event(f"{command} exit {res.exit_code}")
    assert_exit_0_or_one_line_2(res, opts)
    if res.exit_code == 2:
        said = res.stderr.replace("_", "-")
        assert any(name.lstrip("-") in said for name in names), (opts, res.stderr)  # names the option
        if out is not None:
            assert not out.exists()  # nothing written by a refused run
        return
    if command == "fit":
        wh = Whitener.load(out)
        assert wh.n_samples_ == N and np.isfinite(wh.W_).all() and np.isfinite(wh.mean_).all()
        np.testing.assert_allclose(wh.mean_, X.mean(0), rtol=1e-12)
    elif command == "score":
        n, finite = finite_rows(res.stdout)
        assert n == N and finite
    elif command == "moments":
        from whitenclip.moments import MomentsPart

        part = MomentsPart.load(out)
        assert part.n == N
        np.testing.assert_allclose(part.mean, X.mean(0), rtol=1e-12)
    else:
        got = json.loads(res.stdout)
        assert math.isfinite(got["entropy"]) and got["n"] == N


# ---------------------------------------------------------------------------------------
# the reproductions, as plain regression tests
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, option", [
    (("score", "{x}", "-w", "{w}", "--chunk-rows", "-1"), "--chunk-rows"),   # was: "scored 0 rows", exit 0
    (("score", "{x}", "-w", "{w}", "--chunk-rows", "0"), "--chunk-rows"),    # was: internal error, exit 1
    (("moments", "{x}", "-o", "{m}", "--chunk-rows", "-1"), "--chunk-rows"),  # was: "a part given twice?"
    (("moments", "{x}", "-o", "{m}", "--piece-rows", "0"), "--piece-rows"),
    (("fit", "{x}", "-o", "{m}", "--rank", "0"), "--rank"),
    (("fit", "{x}", "-o", "{m}", "--engine", "dask", "--workers", "0"), "--workers"),
    (("fit", "{x}", "-o", "{m}", "--engine", "dask", "--workers", "100000"), "--workers"),  # not 1e5 processes
    (("fit", "{x}", "-o", "{m}", "--rank", str(2 ** 63)), "--rank"),  # was: a whitener its loader refuses
    (("fit", "{x}", "-o", "{m}", "--engine", "dask", "--scheduler", "foo://x"), "--scheduler"),  # was: exit 1
    (("score", "{x}", "-w", "{w}", "--engine", "dask", "--scheduler", "foo://x"), "--scheduler"),
    (("entropy", "{x}", "--seed", "-1"), "--seed"),                            # was: internal error
])
def test_bad_sizes_exit_2_one_line(data, args, option):
    d, _ = data
    paths = {"x": d / "x.npy", "w": d / "w.safetensors", "m": d / "bad.moments.safetensors"}
    res = run(*(a.format(**paths) for a in args))
    assert_exit_0_or_one_line_2(res, args)
    assert res.exit_code == 2 and option in res.stderr
    assert not paths["m"].exists()


def test_out_of_memory_hint_names_chunk_rows_only_where_it_exists(data, monkeypatch):
    from whitenclip import cli

    assert "--chunk-rows" in out_of_memory_hint(cli.score) and "--chunk-rows" in out_of_memory_hint(cli.fit)
    for command in (cli.info, cli.merge_moments_cmd, cli.mi, cli.entropy, cli.import_wclip_cmd):
        assert "--chunk-rows" not in out_of_memory_hint(command)

    def no_memory(*a, **k):
        raise MemoryError

    d, _ = data
    monkeypatch.setattr("whitenclip.whitening.summarize", no_memory)
    res = run("info", d / "w.safetensors")
    assert res.exit_code == 1 and "out of memory" in res.stderr and "--chunk-rows" not in res.stderr
