"""Tests for whitenclip.report: terminal summary, JSON and the HTML page with figures."""

import base64
import io
import json
import re

import numpy as np
import pytest
from rich.console import Console

from whitenclip.diagnostics import gaussianity_report
from whitenclip.errors import InputError
from whitenclip.report import render_html, render_terminal, to_json, write_html_report

KW = dict(trials=2, subset=300, projections=40, seed=1)


@pytest.fixture(scope="module")
def report():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 8)) @ np.diag(np.arange(1.0, 9.0))
    X[:, 5] = 2.0  # a constant coordinate
    return gaussianity_report(X, **KW)


@pytest.fixture(scope="module")
def degenerate_report():
    return gaussianity_report(np.random.default_rng(1).standard_normal((12, 20)), **KW)


def terminal_text(rep) -> str:
    buf = io.StringIO()
    render_terminal(rep, Console(file=buf, width=160, color_system=None))
    return buf.getvalue()


def test_terminal_summary(report):
    text = terminal_text(report)
    c = report["coordinates"]["raw"]
    for needle in ("Per-coordinate tests", "AD pass", "DP pass", "Norm concentration", "Random projections",
                   "Mardia skewness", "Mardia kurtosis", f"verdict: {report['verdict']['label']}", "rule:",
                   f"{100 * c['ad_pass']:.1f}% (exp. {100 * c['expected_pass']['ad']:.1f}%)", "fitted Whitener"):
        assert needle in text, needle


def test_terminal_summary_of_degenerate_report(degenerate_report):
    text = terminal_text(degenerate_report)
    assert "verdict: degenerate" in text and "n/a" in text


def test_json_round_trip(report):
    text = to_json(report)
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == report


def test_html_report_files(report, tmp_path):
    out = tmp_path / "rep"
    written = write_html_report(report, out)
    assert set(written) >= {"json", "html", "qq.png", "sqnorm.png", "a2.png", "spectrum.png"}
    for path in written.values():
        assert path.is_file() and path.stat().st_size > 0
    assert json.loads((out / "report.json").read_text()) == report
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temp files
    html = (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    refs = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", html)
    assert refs
    images = 0
    for ref in refs:
        if ref.startswith("data:image/png;base64,"):
            assert base64.b64decode(ref.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
            images += 1
        else:  # anything else is a relative file that exists beside the page
            assert not re.match(r"^[a-z]+:", ref) and (out / ref).is_file(), ref
    assert images == 4
    for needle in ("Verdict", report["verdict"]["label"], "Per-coordinate tests", "Mardia"):
        assert needle in html


def test_html_of_degenerate_report(degenerate_report, tmp_path):
    written = write_html_report(degenerate_report, tmp_path)
    assert written["html"].is_file()
    assert "degenerate" in written["html"].read_text()


def test_html_escapes_text(report):
    rep = json.loads(json.dumps(report))
    rep["notes"] = ["<script>alert(1)</script>"]
    html = render_html(rep, {})
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_out_must_be_a_directory(report, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError):
        write_html_report(report, f)


def test_cli_gaussianity_report(tmp_path):
    from typer.testing import CliRunner

    from whitenclip.cli import app

    X = np.random.default_rng(3).standard_normal((800, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["gaussianity-report", str(tmp_path / "x.npy"), "--json", "--out", str(out),
                                   "--trials", "2", "--subset", "300", "--projections", "30", "--seed", "5"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["n"] == 800 and rep["protocol"]["seed"] == 5 and rep["projections"]["k"] == 30
    assert rep["whitener"]["fitted_on_input"] is True
    assert (out / "report.html").is_file() and json.loads((out / "report.json").read_text()) == rep
    bad = CliRunner().invoke(app, ["gaussianity-report", str(tmp_path / "missing.npy")])
    assert bad.exit_code == 2
