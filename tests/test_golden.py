"""JSON outputs of the commands on fixed seeded inputs stay as they were (keys may be added).

The files under tests/golden/ were written by the release before the results/renderer
refactor (issue 9); regenerate them only on purpose: ``WHITENCLIP_REGEN_GOLDEN=1 pytest
tests/test_golden.py``.
"""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from whitenclip.cli import app

GOLDEN = Path(__file__).parent / "golden"
REGEN = bool(os.environ.get("WHITENCLIP_REGEN_GOLDEN"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("golden")
    rng = np.random.default_rng(2024)
    d = 8
    A = rng.standard_normal((d, d))
    X = rng.standard_normal((400, d)) @ A + 3.0
    Y = X[:, :6] @ rng.standard_normal((6, 5)) + rng.standard_normal((400, 5))
    np.save(tmp / "x.npy", X)
    np.save(tmp / "y.npy", Y)
    np.save(tmp / "q.npy", X[:7] * 1.5)
    res = CliRunner().invoke(app, ["fit", str(tmp / "x.npy"), "-o", str(tmp / "w.safetensors")])
    assert res.exit_code == 0, res.output
    return tmp


def _run(args):
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res.stdout


CASES = {
    "gaussianity": lambda t: ["gaussianity-report", t / "x.npy", "--json", "--trials", 3, "--subset", 100,
                              "--projections", 50],
    "gaussianity_w": lambda t: ["gaussianity-report", t / "q.npy", t / "x.npy", "-w", t / "w.safetensors", "--json",
                                "--trials", 2, "--subset", 100, "--projections", 20],
    "entropy": lambda t: ["entropy", t / "x.npy", "--json", "--knn-dims", 4],
    "mi": lambda t: ["mi", t / "x.npy", t / "y.npy", "--json"],
    "score": lambda t: ["score", t / "q.npy", "-w", t / "w.safetensors", "--format", "jsonl"],
    "info": lambda t: ["info", t / "w.safetensors", "--json"],
}

VOLATILE = {"created_at", "path"}  # differ run to run by nature


def _same(old, new, where):
    """Every value of ``old`` is in ``new`` unchanged (floats to 1e-9 relative); new keys are allowed."""
    if isinstance(old, dict):
        assert isinstance(new, dict), where
        for k, v in old.items():
            if k in VOLATILE:
                continue
            assert k in new, f"{where}.{k} disappeared"
            _same(v, new[k], f"{where}.{k}")
    elif isinstance(old, list):
        assert isinstance(new, list) and len(new) == len(old), where
        for i, (a, b) in enumerate(zip(old, new)):
            _same(a, b, f"{where}[{i}]")
    elif isinstance(old, float) and isinstance(new, (int, float)):
        assert math.isclose(old, new, rel_tol=1e-9, abs_tol=1e-12), f"{where}: {old} != {new}"
    else:
        assert old == new, f"{where}: {old!r} != {new!r}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_json_output_unchanged(inputs, name):
    out = _run(CASES[name](inputs))
    new = [json.loads(line) for line in out.splitlines() if line.strip()] if name == "score" else json.loads(out)
    path = GOLDEN / f"{name}.json"
    if REGEN:
        path.write_text(json.dumps(new, indent=1) + "\n")
        pytest.skip("golden file regenerated")
    _same(json.loads(path.read_text()), new, name)
