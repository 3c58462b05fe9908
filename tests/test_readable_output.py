"""Output a person reads (first-hour issue, item 9): the demo prints loglik and pvalue_conformal to 3
significant digits (never the Gaussian pvalue), and a benchmark's --quick smoke run gives no target
verdicts (its figures say nothing about the targets). ``entropy`` naming its dimensions is tested in
tests/test_mi_pairing.py."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_demo_columns_show_loglik_and_conformal_pvalue_to_three_digits(tmp_path):
    scores = tmp_path / "scores.tsv"
    scores.write_text("id\tloglik\tlogpdf\tsqnorm\tpvalue\tpvalue_conformal\n"
                      "A cat on a mat.\t-465.1132189072696\t1.5\t2.5\t0.999999999999861\t0.9892526868282929\n"
                      "The the the.\t-8537.2\t1.5\t2.5\t0.0\t0.00024993751562109475\n", encoding="utf-8")
    out = subprocess.run(["make", "-s", "--no-print-directory", "--eval", "demo-columns: ; @$(DEMO_COLUMNS) $(F)",
                          "demo-columns", f"F={scores}"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    assert [[c.strip() for c in r] for r in rows] == [["-465", "0.989", "A cat on a mat."],
                                                      ["-8540", "0.00025", "The the the."]]
    assert "0.99999" not in out  # the Gaussian pvalue is not shown


def _bench_core():
    spec = importlib.util.spec_from_file_location("bench_core_for_test", ROOT / "benchmarks" / "bench_core.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_benchmark_runs_give_no_target_verdicts(monkeypatch):
    bench = _bench_core()
    assert bench.verdict(False) == "MISSED" and bench.verdict(True, "yes", "NO") == "yes"
    monkeypatch.setattr(bench, "QUICK", True)
    assert {bench.verdict(False), bench.verdict(True), bench.verdict(False, "yes", "NO")} == {"-"}
    assert bench.verdict(None) == "info"
