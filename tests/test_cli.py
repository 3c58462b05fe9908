"""End-to-end runs of the core commands: fit, score, info, import-wclip, and every bad input."""

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import multivariate_normal
from typer.testing import CliRunner

from whitenclip.cli import app
from whitenclip.whitening import Whitener

runner = CliRunner()


def run(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


@pytest.fixture
def ref_file(tmp_path, anisotropic):
    path = tmp_path / "ref.npy"
    np.save(path, anisotropic.astype(np.float32))
    return path


@pytest.fixture
def whitener_file(tmp_path, ref_file):
    out = tmp_path / "w.safetensors"
    res = run("fit", ref_file, "-o", out)
    assert res.exit_code == 0, res.output
    return out


def parse_tsv(text):
    return list(csv.DictReader(io.StringIO(text), delimiter="\t"))


def test_fit_then_score_tsv_matches_scipy(whitener_file, ref_file, anisotropic):
    res = run("score", ref_file, "-w", whitener_file)
    assert res.exit_code == 0, res.stderr
    rows = parse_tsv(res.stdout)
    assert list(rows[0]) == ["id", "loglik", "logpdf", "sqnorm", "pvalue", "pvalue_conformal"]
    assert len(rows) == 600 and rows[5]["id"] == "5"
    X = anisotropic.astype(np.float32).astype(np.float64)
    ref = multivariate_normal(X.mean(0), np.cov(X, rowvar=False)).logpdf(X[:10])
    np.testing.assert_allclose([float(r["logpdf"]) for r in rows[:10]], ref, rtol=1e-8)
    # conformal p-value: (1 + #{calibration distances >= s}) / (n_cal + 1), from the artifact's distances
    cal = Whitener.load(whitener_file).calibration_
    assert cal.shape == (600,)  # n <= calibration rows: every reference row calibrates
    s = np.array([float(r["sqnorm"]) for r in rows[:10]])
    want = (1 + (cal[None, :] >= s[:, None]).sum(axis=1)) / (cal.size + 1)
    np.testing.assert_allclose([float(r["pvalue_conformal"]) for r in rows[:10]], want, rtol=1e-12)
    assert "scored 600 rows" in res.stderr


def test_score_formats_and_output_file(tmp_path, whitener_file, ref_file):
    jl = run("score", ref_file, "-w", whitener_file, "--format", "jsonl").stdout.splitlines()
    first = json.loads(jl[0])
    assert set(first) == {"id", "loglik", "logpdf", "sqnorm", "pvalue", "pvalue_conformal"}
    cs = list(csv.DictReader(io.StringIO(run("score", ref_file, "-w", whitener_file, "-f", "csv").stdout)))
    assert float(cs[0]["loglik"]) == pytest.approx(first["loglik"], rel=1e-15)
    out = tmp_path / "scores.tsv"
    assert run("score", ref_file, "-w", whitener_file, "-o", out).exit_code == 0
    assert len(out.read_text().splitlines()) == 601


def test_score_stdin_vectors(whitener_file, anisotropic):
    lines = "\n".join(" ".join(map(str, row)) for row in anisotropic[:3].astype(np.float32).astype(float))
    as_json = "\n".join(json.dumps(row.tolist()) for row in anisotropic[:3].astype(np.float32).astype(float))
    a = parse_tsv(run("score", "-", "-w", whitener_file, input=lines + "\n").stdout)
    b = parse_tsv(run("score", "-", "-w", whitener_file, input=as_json + "\n").stdout)
    assert len(a) == 3 and [r["loglik"] for r in a] == [r["loglik"] for r in b]


def test_fit_options_are_recorded(tmp_path, ref_file):
    out = tmp_path / "z.safetensors"
    res = run("fit", ref_file, "-o", out, "--method", "zca", "--shrinkage", "ledoit-wolf", "--rank", "8")
    assert res.exit_code == 0, res.stderr
    assert "rank capped at 8" in res.stderr
    wh = Whitener.load(out)
    assert (wh.method, wh.shrinkage, wh.rank_) == ("zca", "ledoit-wolf", 8)
    assert 0 < wh.shrinkage_ < 1


def test_info_json_and_table(whitener_file):
    res = run("info", whitener_file, "--json")
    info = json.loads(res.stdout)
    assert info["n"] == 600 and info["d"] == 12 and info["rank"] == 12
    spec = info["spectrum"]
    assert spec["condition_number"] == pytest.approx(spec["lambda_max"] / spec["lambda_min_kept"])
    table = run("info", whitener_file)
    assert table.exit_code == 0 and "condition_number" in table.stdout


def test_drop_nonfinite(tmp_path, whitener_file, anisotropic):
    X = anisotropic.copy()
    X[3, 0] = np.nan
    np.save(tmp_path / "bad.npy", X)
    res = run("score", tmp_path / "bad.npy", "-w", whitener_file)
    assert res.exit_code == 2 and "bad.npy: row 3" in res.stderr
    res = run("score", tmp_path / "bad.npy", "-w", whitener_file, "--drop-nonfinite")
    assert res.exit_code == 0 and len(parse_tsv(res.stdout)) == 599
    assert "skipped 1 non-finite" in res.stderr


@pytest.mark.parametrize("case", ["missing", "empty", "zero_rows", "one_row", "pickled", "truncated_st",
                                  "dim_mismatch", "foreign_whitener", "stdin_text"])
def test_bad_input_exits_2_with_one_line(tmp_path, whitener_file, anisotropic, case):
    from safetensors.numpy import save_file

    p = tmp_path / "in.npy"
    args, stdin = ["fit", p, "-o", tmp_path / "o.safetensors"], None
    if case == "empty":
        p.write_bytes(b"")
    elif case == "zero_rows":
        np.save(p, np.zeros((0, 12)))
    elif case == "one_row":
        np.save(p, anisotropic[:1])
    elif case == "pickled":
        np.save(p, np.array([object()], dtype=object), allow_pickle=True)
    elif case == "truncated_st":
        p = tmp_path / "in.safetensors"
        save_file({"embeddings": anisotropic}, str(p))
        p.write_bytes(p.read_bytes()[:200])
        args[1] = p
    elif case == "dim_mismatch":
        np.save(p, anisotropic[:, :5])
        args = ["score", p, "-w", whitener_file]
    elif case == "foreign_whitener":
        np.save(p, anisotropic)
        save_file({"W": np.eye(3)}, str(tmp_path / "foreign.safetensors"))
        args = ["score", p, "-w", tmp_path / "foreign.safetensors"]
    elif case == "stdin_text":
        args, stdin = ["score", "-", "-w", whitener_file], "0.1 0.2\nnot numbers\n"
    res = run(*args, input=stdin)
    assert res.exit_code == 2, (case, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("whitenclip: error: "), res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "o.safetensors").exists()


def test_real_entry_point_exit_codes(tmp_path):
    missing = subprocess.run([sys.executable, "-m", "whitenclip.cli", "fit", str(tmp_path / "nope.npy"), "-o",
                              str(tmp_path / "w.safetensors")], capture_output=True, text=True)
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"whitenclip: error: {tmp_path / 'nope.npy'}: no such file or directory"
    usage = subprocess.run([sys.executable, "-m", "whitenclip.cli", "fit"], capture_output=True, text=True)
    assert usage.returncode == 2


def test_version_is_the_package_version():
    import importlib.metadata

    import whitenclip

    r = run("--version")
    assert r.exit_code == 0 and r.stdout == f"whitenclip {whitenclip.__version__}\n"
    assert importlib.metadata.version("whitenclip") == whitenclip.__version__
