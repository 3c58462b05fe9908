"""Rendering of the Gaussianity report: rich terminal tables, and an HTML page with figures.

Everything here reads a :class:`~whitenclip.diagnostics.GaussianityReport` (or its JSON, e.g. a
saved ``report.json``, rebuilt with ``GaussianityReport.from_dict``); nothing is recomputed.

Each section result contributes through two single-dispatch hooks, registered below per
section class: :func:`section_blocks` (its tables, shared by the terminal and the page) and
:func:`section_figures` (its PNG figures). Adding a section to the report is one
``register`` of each for its class; the page and the terminal loop over ``report.sections``.

Figures (matplotlib, Agg canvas, PNG): ``sqnorm.png`` (||w||^2 against the reference law),
``a2.png`` (per-coordinate A2, raw and whitened), ``qq.png`` (QQ plots of projections),
``spectrum.png`` (covariance eigenvalues, log scale).

``render_html`` writes ``report.json``, ``report.html`` (figures embedded as data URIs, so the
page is self-contained) and the PNGs under ``figures/``; every file is written atomically.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from whitenclip.diagnostics import (
    AD_THRESHOLD,
    Coordinates,
    GaussianityReport,
    Isotropy,
    Multivariate,
    NormConcentration,
    Projections,
    Section,
    Spectrum,
    Verdict,
)
from whitenclip.errors import InputError
from whitenclip.render import (
    figure_png,
    html_div,
    html_figure,
    html_fragment,
    html_table,
    html_text,
    render_html,
    render_table,
    rich_text,
    to_json,
    write_file,
)


@dataclass(frozen=True)
class Block:
    """A titled table of text cells; ``pairs``: (name, value) lines rather than a grid."""

    title: str
    header: tuple[str, ...]
    rows: list[tuple[str, ...]]
    intro: str = ""
    pairs: bool = False


# ---------------------------------------------------------------------------------------
# formatting helpers
# ---------------------------------------------------------------------------------------
def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _num(v, fmt: str = ".3g") -> str:
    return "n/a" if v is None else format(v, fmt)


def _p(v) -> str:
    if v is None:
        return "n/a"
    return "< 1e-300" if v == 0 else format(v, ".3g")


def _p_eq(v) -> str:
    """'p = 0.12', 'p < 1e-300' or 'p n/a'."""
    text = _p(v)
    return f"p {text}" if text.startswith("<") or text == "n/a" else f"p = {text}"


# ---------------------------------------------------------------------------------------
# per-section tables
# ---------------------------------------------------------------------------------------
@functools.singledispatch
def section_blocks(section: Section, report: GaussianityReport) -> list[Block]:
    """The tables of one section (none unless registered for its class)."""
    return []


@section_blocks.register
def _(s: NormConcentration, report) -> list[Block]:
    w, r, rc = s.whitened, s.raw, s.raw_centred
    norms = [
        ("||x|| raw", _num(r["mean"]), _num(r["std"]), _num(r["cv"]), "", ""),
        ("||x - mean||", _num(rc["mean"]), _num(rc["std"]), _num(rc["cv"]),
         _num(rc.get("reference_cv")) + (f" (chi, d_eff={rc['d_eff']:.1f}"
                                         + (", unbiased tr(Sigma^2))" if rc.get("d_eff_estimator") else ")")
                                         if rc.get("d_eff") else ""),
         _num(rc.get("cv_ratio"))),
        ("||w|| whitened (in-sample)", _num(w["mean"]), _num(w["std"]), "n/a", "not testable (equal norms)", "n/a")
        if w.get("untestable") else
        ("||w|| whitened", _num(w["mean"]), _num(w["std"]), _num(w["cv"]),
         f"{_num(w['reference_cv'])} ({w['law'] or 'chi'}; chi {_num(w['chi_cv'])})", _num(w["cv_ratio"])),
    ]
    law = [("law of ||w||^2", w["reference"] if w.get("law") else f"none ({w.get('law_reason', '')})"),
           ("KS distance", f"{_num(w['ks'])} ({_p_eq(w['ks_pvalue'])})" if w["ks"] is not None else "n/a"),
           ("AD distance", _num(w["ad_distance"])),
           ("KS to chi2(d') (n -> inf)", _num(w["chi2_ks"]))]
    if w.get("untestable"):  # n <= rank + 1 in-sample: equal norms, no law to compare with
        law = [("law of ||w||^2", f"not testable ({w['untestable']})")]
    intro = (f"norms over all d={report.d} coordinates; ||x - mean||: against the Gaussian with the same covariance, "
             "CV ~ 1/sqrt(2 d_eff)" + (f"; {rc['d_eff_estimator']} (the sample spectrum gives d_eff="
                                      f"{_num(rc.get('d_eff_sample'), '.1f')}, biased low at n <= d)"
                                      if rc.get("d_eff_estimator") else "")
             + (f"; ||w||: {w['untestable']}" if w.get("untestable") else f"; ||w||: over the {w['rank']} whitened "
                                                                            "coordinates"))
    return [Block("Norm concentration (CV = std / mean)", ("norm", "mean", "std", "CV", "Gaussian reference CV",
                                                          "ratio"), norms, intro=intro),
            Block("Law of the squared whitened norms", ("", "value"), law, pairs=True)]


@section_blocks.register
def _(s: Coordinates, report) -> list[Block]:
    rows = []
    for kind in ("raw", "whitened"):
        k = getattr(s, kind)
        exp = k["expected_pass"]
        label = f"whitened (held-out, {k['trials']} x {k['subset']} rows)" if k.get("basis") else kind
        rows.append((label, _num(k["ad_mean"]), f"{_pct(k['ad_pass'])} (exp. {_pct(exp['ad'])})",
                     _num(k["dp_mean"]), f"{_pct(k['dp_pass'])} (exp. {_pct(exp['dp'])})", str(k["constant"]["count"])))
    pr = report.protocol
    held = s.whitened.get("basis")
    return [Block(f"Per-coordinate tests ({pr.trials} x {pr.subset} rows; pass: A2 < {AD_THRESHOLD}, "
                  f"DP p > {pr.dp_alpha})", ("coordinates", "AD avg", "AD pass", "DP avg", "DP pass", "constant"), rows,
                  intro=f"{pr.trials} random subsets of {pr.subset} rows; AD passes when A2 < {AD_THRESHOLD} (fixed), "
                        f"DP when p > {pr.dp_alpha}; the expected rates are those of an exact Gaussian under the "
                        "same protocol (simulated with the same seed). raw: the d="
                        f"{s.raw['n_coordinates']} input coordinates; "
                        + (f"whitened: {s.whitened.get('untestable') or held}." if held
                           else f"whitened: the {s.whitened['n_coordinates']} coordinates of the whitener."))]


@section_blocks.register
def _(s: Projections, report) -> list[Block]:
    row = (str(s.k), str(s.rows), _num(s.ad_mean), f"{_pct(s.ad_pass)} (exp. {_pct(s.expected_pass['ad'])})",
           _num(s.excess_kurtosis, "+.3f"))
    return [Block("Random projections of the centred data", ("k", "rows", "AD avg", "AD pass", "mean excess kurtosis"),
                  [row])]


@section_blocks.register
def _(s: Multivariate, report) -> list[Block]:
    sk, ku = s.skewness, s.kurtosis
    rows = [
        ("Mardia skewness", f"b1 = {_num(sk.get('b1'))}, stat/df = {_num(sk.get('ratio_to_null'), '.4f')}",
         _p(sk.get("pvalue")), sk.get("method", "") if sk.get("pvalue") is not None else sk.get("reason", "")),
        ("Mardia kurtosis", f"b2 = {_num(ku.get('b2'))}, excess/dim = {_num(ku.get('excess_per_dim'), '+.3f')}",
         _p(ku.get("pvalue")), ku.get("method", "") if ku.get("pvalue") is not None else ku.get("reason", "")),
    ]
    return [Block("Multivariate (large-sample p-values, valid for n >> d)", ("test", "statistic", "p-value", "method"),
                  rows)]


@section_blocks.register
def _(s: Isotropy, report) -> list[Block]:
    rows = []
    for kind in ("raw", "whitened"):
        v = getattr(s, kind)
        rows.append((kind, str(v["dimensions"]), _num(v["participation_ratio"], ".4g"),
                     _num(v["effective_rank"], ".4g"),
                     f"{_pct(v['top_fraction'])} ({v['top_directions']} dir.)"))
    return [Block("Spectrum isotropy (both ranks equal the dimension for an isotropic spectrum)",
                  ("spectrum", "directions", "participation ratio", "effective rank exp(H)",
                   f"variance in top {100 * s.top_share:g}%"), rows,
                  intro="participation ratio = (sum l)^2 / sum l^2; effective rank = exp(H(l / sum l)); "
                        f"{s.source}.")]


@section_blocks.register
def _(s: Verdict, report) -> list[Block]:
    """What the report could not test, one line each (none when everything was tested)."""
    if not s.untested:
        return []
    return [Block("Not tested on these rows", ("part", "why"), [(u["part"], u["reason"]) for u in s.untested],
                  intro="Figures that could not be computed from these rows and why; the verdict uses the others.")]


# ---------------------------------------------------------------------------------------
# terminal
# ---------------------------------------------------------------------------------------
def _print_block(console, b: Block) -> None:
    if b.pairs:
        for name, value in b.rows:
            console.print(rich_text(f"  {name}: {value}"))
        return
    t = Table(title=rich_text(b.title))
    for i, col in enumerate(b.header):
        left = i == 0 or col in ("Gaussian reference CV", "statistic", "method", "why")
        t.add_column(col, justify="left" if left else "right", overflow="fold")
    for row in b.rows:
        t.add_row(*(rich_text(c) for c in row))
    console.print(t)


@render_table.register
def render_report_table(report: GaussianityReport, console) -> None:
    """Print the header, every section's tables and the verdict line on ``console``."""
    wh, pr = report.whitener, report.protocol
    console.print(rich_text("Gaussianity report", "bold") + rich_text(f"  n={report.n}  d={report.d}  "
                                                                     f"rank={report.rank}  seed={pr.seed}"))
    console.print(rich_text(f"whitener: {wh.note} ({'in-sample' if wh.in_sample else 'new rows'})"))
    for s in report.sections:
        for b in section_blocks(s, report):
            _print_block(console, b)
    v = report.section("verdict")
    colour = {"close to Gaussian": "green", "degenerate": "red"}.get(v.label, "yellow")
    console.print(rich_text(f"verdict: {v.label}", f"bold {colour}") + rich_text(f"  ({v.because})"))
    console.print(rich_text(f"rule: {v.rule}", "dim"))
    for note in report.notes:
        console.print(rich_text(f"note: {note}", "dim"))


# ---------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------
def _subplots(nrows=1, ncols=1, figsize=(6.4, 3.6), squeeze=True):
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg canvas on savefig

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


@functools.singledispatch
def section_figures(section: Section, report: GaussianityReport) -> dict[str, tuple[bytes, str]]:
    """PNG figures of one section: {file name: (png bytes, caption)} (none unless registered)."""
    return {}


@section_figures.register
def _(s: NormConcentration, report) -> dict:
    import numpy as np

    few = bool(s.whitened.get("untestable")) and bool(s.raw_centred.get("histogram"))
    h = s.raw_centred["histogram"] if few else s.whitened["histogram"]
    edges = np.asarray(h["edges"])
    centres = 0.5 * (edges[1:] + edges[:-1])
    fig, ax = _subplots()
    ax.bar(edges[:-1], h["density"], width=np.diff(edges), align="edge", color="C0", alpha=0.6, label="data")
    ax.plot(centres, h["reference_density"], color="C3", lw=2, label=f"reference law ({h['reference']})")
    ax.set_xlabel("||x - mean||^2" if few else "||w||^2")
    ax.set_ylabel("density")
    out_share = h.get("outside_range") or 0.0
    ax.set_title((f"Squared centred norms (all {report.d} coordinates)" if few
                  else f"Squared whitened norms (rank {report.rank})")
                 + (f"; {100 * out_share:.1f}% of rows beyond the axis" if out_share > 0.0005 else ""), fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    if few:
        caption = (f"Histogram of ||x - mean||^2 over all d={report.d} coordinates against the moment-matched scaled "
                   "chi-square of a Gaussian with the same covariance (d_eff from an unbiased tr(Sigma^2)); the "
                   f"in-sample whitened norms are all equal at n={report.n} <= rank+1.")
    else:
        caption = (f"Histogram of squared whitened norms (rank {report.rank}, "
                   f"{'in-sample rows' if report.whitener.in_sample else 'new rows'}) against the exact reference law "
                   "for Gaussian rows.")
    return {"sqnorm.png": (figure_png(fig), caption)}


@section_figures.register
def _(s: Coordinates, report) -> dict:
    import numpy as np

    series = {k: np.array([v for v in getattr(s, k)["a2_per_coordinate"] if v is not None])
              for k in ("raw", "whitened")}
    series = {k: v for k, v in series.items() if v.size}
    if not series:
        return {}
    hi = max(v.max() for v in series.values())
    lo = max(min(v.min() for v in series.values()), 1e-3)
    use_log = hi > 20 * max(lo, 0.05)
    bins = np.geomspace(lo, max(hi, AD_THRESHOLD * 1.5), 50) if use_log else np.linspace(0, max(hi, 1.0), 50)
    fig, ax = _subplots()
    held = s.whitened.get("basis")
    for i, (k, v) in enumerate(series.items()):
        name = "whitened (held-out)" if k == "whitened" and held else k
        ax.hist(v, bins=bins, alpha=0.55, color=f"C{i}", label=f"{name} ({v.size} coordinates)")
    ax.axvline(AD_THRESHOLD, color="k", ls="--", lw=1.2, label=f"pass threshold {AD_THRESHOLD}")
    if use_log:
        ax.set_xscale("log")
    ax.set_xlabel("A2 (mean over trials)")
    ax.set_ylabel("coordinates")
    ax.set_title("Per-coordinate Anderson-Darling statistic", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    whitened = (f"whitened: {held} (A2 of each coordinate index averaged over the folds)" if held
                else f"whitened: the {s.whitened['n_coordinates']} coordinates of the whitener")
    return {"a2.png": (figure_png(fig), "Per-coordinate Anderson-Darling A2 (mean over trials); coordinates left "
                                         f"of the dashed line pass. raw: the d={s.raw['n_coordinates']} input "
                                         f"coordinates over {s.raw['subset']} rows per trial; {whitened}.")}


@section_figures.register
def _(s: Projections, report) -> dict:
    import numpy as np

    qq = s.qq
    if not qq:
        return {}
    panels = [{**p, "normal": qq["normal"]} for p in qq["projections"]] + [{"pooled": True, **qq["pooled"]}]
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = _subplots(rows, cols, figsize=(3.4 * cols, 3.2 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        x, y = np.asarray(panel["normal"]), np.asarray(panel["sample"])
        lim = [min(x.min(), y.min()), max(x.max(), y.max())]
        ax.plot(lim, lim, color="0.6", lw=1)
        ax.plot(x, y, ".", ms=3, color="C3" if panel.get("pooled") else "C0")
        ax.set_title(f"{s.tested} projections pooled" if panel.get("pooled")
                     else f"projection {panel['index']} (A2 = {panel['a2']:.2f})", fontsize=9)
        ax.set_xlabel("normal quantile", fontsize=8)
        ax.set_ylabel("standardised sample quantile", fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    return {"qq.png": (figure_png(fig), "QQ plots: standardised projections of the centred data on random unit "
                                         f"directions of all d={report.d} coordinates ({s.rows} rows; no whitening, "
                                         "valid at any n), and all projections pooled, against normal quantiles (the "
                                         "grey line is y = x).")}


@section_figures.register
def _(s: Spectrum, report) -> dict:
    import numpy as np

    lam = np.asarray(s.eigenvalues, dtype=float)
    pos = lam[lam > 0]
    if not pos.size:
        return {}
    fig, ax = _subplots()
    ax.semilogy(np.arange(1, pos.size + 1), pos, color="C0", lw=1.5)
    if report.rank < pos.size:
        ax.axvline(report.rank + 0.5, color="C3", ls="--", lw=1, label=f"kept rank {report.rank}")
        ax.legend(fontsize=8)
    ax.set_xlabel("index (descending)")
    ax.set_ylabel("eigenvalue")
    ax.set_title(f"Covariance eigen-spectrum ({pos.size} positive of {lam.size})", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return {"spectrum.png": (figure_png(fig), f"Eigenvalues of the covariance (log scale): {s.source}.")}


# ---------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em} td,th{border:1px solid #ddd;padding:.3em .6em}
th{background:#f4f4f4;text-align:left} td.n{text-align:right;font-variant-numeric:tabular-nums}
.verdict{padding:.7em 1em;border-radius:6px;font-size:1.1em;margin:1em 0}
.ok{background:#e6f4ea;border:1px solid #8c8} .warn{background:#fff4e0;border:1px solid #db8}
.bad{background:#fde8e8;border:1px solid #d88} .muted{color:#666;font-size:.88em}
figure{margin:1em 0} figure img{max-width:100%;border:1px solid #eee} figcaption{color:#555;font-size:.9em}
"""


def _numeric(i: int, c) -> bool:
    return i > 0 and re.match(r"^[-+<]?\s*[\d.]", str(c)) is not None


def report_body(report: GaussianityReport, figures: dict[str, dict[str, tuple[bytes, str]]],
                level: int = 1) -> list[str]:
    """The report's HTML elements (title at ``<h{level}>``, sections one level below), for the
    page and the notebook fragment; ``figures[section key]`` = {name: (png, caption)} (data URIs)."""
    esc = html_text
    h1, h2 = f"h{level}", f"h{level + 1}"
    v, wh, pr = report.section("verdict"), report.whitener, report.protocol
    cls = {"close to Gaussian": "ok", "degenerate": "bad"}.get(v.label, "warn")
    parts = [
        f"<{h1}>Gaussianity report</{h1}>",
        f"<p>n = {report.n}, d = {report.d}, rank = {report.rank}, seed = {pr.seed}. "
        f"Whitener: {esc(wh.note)} ({'in-sample rows' if wh.in_sample else 'new rows'}).</p>",
        f"<div class='verdict {cls}'><b>Verdict: {esc(v.label)}</b><br><span class='muted'>"
        f"{esc(v.because)}</span></div>",
        f"<p class='muted'>Rule: {esc(v.rule)}</p>",
    ]
    for s in report.sections:
        for b in section_blocks(s, report):
            parts.append(f"<{h2}>{esc(b.title)}</{h2}>")
            if b.intro:
                parts.append(f"<p class='muted'>{esc(b.intro)}</p>")
            parts.append(html_table(b.header, b.rows, _numeric))
        parts += [html_figure(name, png, caption) for name, (png, caption) in figures.get(s.key, {}).items()]
    if report.notes:
        parts.append(f"<{h2}>Notes</{h2}><ul>" + "".join(f"<li>{esc(n)}</li>" for n in report.notes) + "</ul>")
    return parts


def html_page(report: GaussianityReport, figures: dict[str, dict[str, tuple[bytes, str]]]) -> str:
    """A self-contained HTML page (``report.html``); ``figures[section key]`` = {name: (png, caption)}."""
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             "<title>whitenclip Gaussianity report</title>", f"<style>{_CSS}</style></head><body>",
             *report_body(report, figures),
             "<p class='muted'>All figures as numbers: <a href='report.json'>report.json</a>.</p>",
             "</body></html>"]
    return "\n".join(parts)


@render_html.register
def render_report_html(report: GaussianityReport, out_dir: Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.html`` and ``figures/*.png`` into ``out_dir`` atomically.

    Returns the paths written, keyed by "json", "html" and the figure names.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: --output must be a directory, and this is a file")
    out.mkdir(exist_ok=True)  # its parent must exist (checked by outputs.check_output_dir)
    (out / "figures").mkdir(exist_ok=True)
    figures = {s.key: section_figures(s, report) for s in report.sections}
    written: dict[str, Path] = {}
    for per_section in figures.values():
        for name, (png, _) in per_section.items():
            written[name] = write_file(out / "figures" / name, png)
    written["json"] = write_file(out / "report.json", (to_json(report, indent=2) + "\n").encode("utf-8"))
    written["html"] = write_file(out / "report.html", html_page(report, figures).encode("utf-8"))
    return written


@html_fragment.register
def _(report: GaussianityReport) -> str:
    """The report as a notebook fragment (no page, no page-wide CSS), every section's figures inline."""
    return html_div(*report_body(report, {s.key: section_figures(s, report) for s in report.sections}, level=3))


__all__ = ["Block", "html_page", "render_report_html", "render_report_table", "report_body", "section_blocks",
           "section_figures"]
