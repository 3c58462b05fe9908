"""Tests for whitenclip.render.gaussianity: terminal tables, JSON and the HTML page with figures."""

import base64
import dataclasses
import io
import json
import re

import numpy as np
import pytest
from rich.console import Console

from whitenclip.diagnostics import SECTIONS, GaussianityReport, Section, gaussianity_report
from whitenclip.errors import InputError
from whitenclip.render import render, write_html
from whitenclip.render.gaussianity import Block, section_blocks

KW = dict(trials=2, subset=300, projections=40, seed=1)


@pytest.fixture(scope="module")
def report():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 8)) @ np.diag(np.arange(1.0, 9.0))
    X[:, 5] = 2.0  # a constant coordinate
    return gaussianity_report(X, **KW)


@pytest.fixture(scope="module")
def degenerate_report():
    # rank 1 (every row a multiple of one vector): degenerate at any n (n <= d alone is not)
    return gaussianity_report(np.random.default_rng(1).standard_normal((6, 1)) * np.linspace(1, 2, 20), **KW)


def terminal_text(rep) -> str:
    buf = io.StringIO()
    render(rep, "table", console=Console(file=buf, width=200, color_system=None))
    return buf.getvalue()


def test_terminal_summary(report):
    text = terminal_text(report)
    c = report.coordinates.raw
    iso = report.isotropy
    for needle in ("Per-coordinate tests", "AD pass", "DP pass", "Norm concentration", "Random projections",
                   "Mardia skewness", "Mardia kurtosis", f"verdict: {report.verdict.label}", "rule:",
                   f"{100 * c['ad_pass']:.1f}% (exp. {100 * c['expected_pass']['ad']:.1f}%)", "fitted Whitener",
                   "Spectrum isotropy", f"{iso.raw['participation_ratio']:.4g}", f"{iso.raw['effective_rank']:.4g}",
                   f"{100 * iso.raw['top_fraction']:.1f}% (1 dir.)",
                   f"KS distance: {report.norm.whitened['ks']:.3g}"):
        assert needle in text, needle


def test_terminal_summary_of_degenerate_report(degenerate_report):
    text = terminal_text(degenerate_report)
    assert "verdict: degenerate" in text and "n/a" in text


def test_json_round_trip(report):
    buf = io.StringIO()
    render(report, "json", stream=buf)
    text = buf.getvalue()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == report.to_dict()
    assert GaussianityReport.from_dict(json.loads(text)) == report


def test_html_report_files(report, tmp_path):
    out = tmp_path / "rep"
    written = write_html(report, out)
    assert set(written) == {"json", "html", "qq.png", "sqnorm.png", "a2.png", "spectrum.png"}
    for path in written.values():
        assert path.is_file() and path.stat().st_size > 0
    assert json.loads((out / "report.json").read_text()) == report.to_dict()
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
    iso = report.isotropy.whitened
    for needle in ("Verdict", report.verdict.label, "Per-coordinate tests", "Mardia", "Spectrum isotropy",
                   f"<td class=n>{iso['participation_ratio']:.4g}</td>"):
        assert needle in html, needle


def test_saved_json_renders_the_same_page(report, tmp_path):
    write_html(report, tmp_path / "a")
    saved = GaussianityReport.from_dict(json.loads((tmp_path / "a" / "report.json").read_text()))
    write_html(saved, tmp_path / "b")
    assert (tmp_path / "a" / "report.html").read_text() == (tmp_path / "b" / "report.html").read_text()


def test_html_of_degenerate_report(degenerate_report, tmp_path):
    written = write_html(degenerate_report, tmp_path)
    assert "degenerate" in written["html"].read_text()


def test_html_escapes_text(report, tmp_path):
    rep = dataclasses.replace(report, notes=("<script>alert(1)</script>",))
    html = write_html(rep, tmp_path)["html"].read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_out_must_be_a_directory(report, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError):
        write_html(report, f)


def test_every_section_has_a_renderer_hook(report):
    """Sections other than the spectrum (a figure) and the verdict (the headline) contribute tables."""
    for s in report.sections:
        blocks = section_blocks(s, report)
        assert all(isinstance(b, Block) for b in blocks)
        assert bool(blocks) == (s.key not in ("spectrum", "verdict")), s.key
    assert {s.key for s in report.sections} == {cls.key for cls in SECTIONS}


def test_new_section_renders_through_its_hook(report):
    """A section registered in the hook shows up in the terminal with no other change."""

    @dataclasses.dataclass(frozen=True)
    class Extra(Section):
        key = "extra"
        value: float

    @section_blocks.register
    def _(s: Extra, rep):
        return [Block("Extra section", ("name", "value"), [("value", f"{s.value:.2f}")])]

    rep = dataclasses.replace(report, sections=report.sections + (Extra(3.25),))
    assert rep.to_dict()["extra"] == {"value": 3.25}
    text = terminal_text(rep)
    assert "Extra section" in text and "3.25" in text


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
    assert rep["isotropy"]["whitened"]["participation_ratio"] == pytest.approx(6.0, rel=1e-9)
    assert (out / "report.html").is_file() and json.loads((out / "report.json").read_text()) == rep
    bad = CliRunner().invoke(app, ["gaussianity-report", str(tmp_path / "missing.npy")])
    assert bad.exit_code == 2


def test_cli_recognises_its_fit_rows(tmp_path):
    """`gaussianity-report X -w W` where W was fitted on X uses the in-sample (Beta) law."""
    from typer.testing import CliRunner

    from whitenclip.cli import app

    X = (np.random.default_rng(4).standard_normal((500, 5)) @ np.diag([3, 2, 1, 1, 0.5]) + 1).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    fit = CliRunner().invoke(app, ["fit", str(tmp_path / "x.npy"), "-o", str(tmp_path / "w.safetensors")])
    assert fit.exit_code == 0, fit.output
    res = CliRunner().invoke(app, ["gaussianity-report", str(tmp_path / "x.npy"), "-w", str(tmp_path / "w.safetensors"),
                                   "--json", "--trials", "2", "--subset", "200", "--projections", "20"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["whitener"]["in_sample"] is True and rep["norm"]["whitened"]["law"] == "beta"
    assert rep["whitener"]["in_sample_basis"] == "input hash of the fitted moments matches"
