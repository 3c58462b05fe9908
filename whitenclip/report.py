"""Rendering of a Gaussianity report: rich terminal summary, JSON, and an HTML page with figures.

Everything here reads the JSON-ready dict returned by
:func:`whitenclip.diagnostics.gaussianity_report`; nothing is recomputed, so a saved
``report.json`` renders the same page again.

Figures (matplotlib, Agg backend, PNG):

* ``qq.png``         QQ plots of a few random projections and of the pooled standardised projections;
* ``sqnorm.png``     histogram of ||w||^2 against the reference law (Beta in-sample, F for new rows);
* ``a2.png``         histogram of per-coordinate A2 (raw and whitened) with the 0.752 pass line;
* ``spectrum.png``   covariance eigen-spectrum on a log scale.

:func:`write_html_report` writes ``report.json``, ``report.html`` (figures embedded as data URIs,
so the page is self-contained) and the PNGs under ``figures/``; every file is written atomically.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

from rich.console import Console
from rich.table import Table

from whitenclip.diagnostics import AD_THRESHOLD
from whitenclip.errors import InputError
from whitenclip.stores import atomic_write


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


def to_json(report: dict, *, indent: int | None = None) -> str:
    """The report as one JSON object (strict: NaN/inf are refused, the report has none)."""
    return json.dumps(report, indent=indent, allow_nan=False, sort_keys=False)


# ---------------------------------------------------------------------------------------
# terminal
# ---------------------------------------------------------------------------------------
def summary_rows(report: dict) -> dict[str, list[tuple[str, ...]]]:
    """Rows of the summary tables (shared by the terminal and the HTML page)."""
    c, p, nm, mv = report["coordinates"], report["projections"], report["norm"], report["multivariate"]
    coords = []
    for kind in ("raw", "whitened"):
        k = c[kind]
        exp = k["expected_pass"]
        coords.append((kind, _num(k["ad_mean"]), f"{_pct(k['ad_pass'])} (exp. {_pct(exp['ad'])})",
                       _num(k["dp_mean"]), f"{_pct(k['dp_pass'])} (exp. {_pct(exp['dp'])})",
                       str(k["constant"]["count"])))
    w, r, rc = nm["whitened"], nm["raw"], nm["raw_centred"]
    norms = [
        ("||x|| raw", _num(r["mean"]), _num(r["std"]), _num(r["cv"]), "", ""),
        ("||x - mean||", _num(rc["mean"]), _num(rc["std"]), _num(rc["cv"]),
         _num(rc.get("reference_cv")) + (f" (chi, d_eff={rc['d_eff']:.1f})" if rc.get("d_eff") else ""),
         _num(rc.get("cv_ratio"))),
        ("||w|| whitened", _num(w["mean"]), _num(w["std"]), _num(w["cv"]),
         f"{_num(w['reference_cv'])} ({w['law'] or 'chi'}; chi {_num(w['chi_cv'])})", _num(w["cv_ratio"])),
    ]
    law = [("law of ||w||^2", w["reference"] if w.get("law") else f"none ({w.get('law_reason', '')})"),
           ("KS distance", f"{_num(w['ks'])} ({_p_eq(w['ks_pvalue'])})" if w["ks"] is not None else "n/a"),
           ("AD distance", _num(w["ad_distance"])),
           ("KS to chi2(d') (n -> inf)", _num(w["chi2_ks"]))]
    sk, ku = mv["skewness"], mv["kurtosis"]
    multi = [
        ("Mardia skewness", f"b1 = {_num(sk.get('b1'))}, stat/df = {_num(sk.get('ratio_to_null'), '.4f')}",
         _p(sk.get("pvalue")), sk.get("method", "") if sk.get("pvalue") is not None else sk.get("reason", "")),
        ("Mardia kurtosis", f"b2 = {_num(ku.get('b2'))}, excess/dim = {_num(ku.get('excess_per_dim'), '+.3f')}",
         _p(ku.get("pvalue")), ku.get("method", "") if ku.get("pvalue") is not None else ku.get("reason", "")),
    ]
    proj = [(str(p["k"]), str(p["rows"]), _num(p["ad_mean"]),
             f"{_pct(p['ad_pass'])} (exp. {_pct(p['expected_pass']['ad'])})", _num(p.get("excess_kurtosis"), "+.3f"))]
    return {"coords": coords, "norms": norms, "law": law, "multi": multi, "proj": proj}


def render_terminal(report: dict, console: Console | None = None) -> None:
    """Print the summary tables and the verdict line to ``console`` (default: stderr)."""
    console = console or Console(stderr=True)
    rows = summary_rows(report)
    wh, pr = report["whitener"], report["protocol"]
    console.print(f"[bold]Gaussianity report[/bold]  n={report['n']}  d={report['d']}  rank={report['rank']}  "
                  f"seed={pr['seed']}")
    console.print(f"whitener: {wh['note']} ({'in-sample' if wh['in_sample'] else 'new rows'})")

    t = Table(title=f"Per-coordinate tests ({pr['trials']} x {pr['subset']} rows; pass: A2 < {AD_THRESHOLD}, "
                    f"DP p > {pr['dp_alpha']})")
    for col in ("coordinates", "AD avg", "AD pass", "DP avg", "DP pass", "constant"):
        t.add_column(col, justify="left" if col == "coordinates" else "right")
    for row in rows["coords"]:
        t.add_row(*row)
    console.print(t)

    t = Table(title="Norm concentration (CV = std / mean)")
    for col in ("norm", "mean", "std", "CV", "Gaussian reference CV", "ratio"):
        t.add_column(col, justify="left" if col in ("norm", "Gaussian reference CV") else "right")
    for row in rows["norms"]:
        t.add_row(*row)
    console.print(t)
    for name, value in rows["law"]:
        console.print(f"  {name}: {value}")

    t = Table(title="Random projections of the centred data")
    for col in ("k", "rows", "AD avg", "AD pass", "mean excess kurtosis"):
        t.add_column(col, justify="right")
    for row in rows["proj"]:
        t.add_row(*row)
    console.print(t)

    t = Table(title="Multivariate (large-sample p-values, valid for n >> d)")
    for col in ("test", "statistic", "p-value", "method"):
        t.add_column(col, justify="right" if col == "p-value" else "left", overflow="fold")
    for row in rows["multi"]:
        t.add_row(*row)
    console.print(t)

    v = report["verdict"]
    colour = {"close to Gaussian": "green", "degenerate": "red"}.get(v["label"], "yellow")
    console.print(f"[bold {colour}]verdict: {v['label']}[/bold {colour}]  ({v['because']})")
    console.print(f"[dim]rule: {v['rule']}[/dim]")
    for note in report.get("notes", []):
        console.print(f"[dim]note: {note}[/dim]")


# ---------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------
def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def make_figures(report: dict) -> dict[str, bytes]:
    """PNG bytes of every figure the report has data for, keyed by file name."""
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg canvas on savefig

    def subplots(nrows=1, ncols=1, figsize=(6.4, 3.6), squeeze=True):
        fig = Figure(figsize=figsize)
        return fig, fig.subplots(nrows, ncols, squeeze=squeeze)

    figs: dict[str, bytes] = {}
    qq = report["projections"].get("qq")
    if qq:
        panels = [{**p, "normal": qq["normal"]} for p in qq["projections"]] + [{"pooled": True, **qq["pooled"]}]
        cols = min(3, len(panels))
        rows = -(-len(panels) // cols)
        fig, axes = subplots(rows, cols, figsize=(3.4 * cols, 3.2 * rows), squeeze=False)
        for ax, panel in zip(axes.flat, panels):
            x, y = np.asarray(panel["normal"]), np.asarray(panel["sample"])
            lim = [min(x.min(), y.min()), max(x.max(), y.max())]
            ax.plot(lim, lim, color="0.6", lw=1)
            ax.plot(x, y, ".", ms=3, color="C3" if panel.get("pooled") else "C0")
            ax.set_title(f"{len(qq['projections']) and report['projections']['tested']} projections pooled"
                         if panel.get("pooled")
                         else f"projection {panel['index']} (A2 = {panel['a2']:.2f})", fontsize=9)
            ax.set_xlabel("normal quantile", fontsize=8)
            ax.set_ylabel("standardised sample quantile", fontsize=8)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        fig.tight_layout()
        figs["qq.png"] = _figure_png(fig)

    h = report["norm"]["whitened"]["histogram"]
    edges = np.asarray(h["edges"])
    centres = 0.5 * (edges[1:] + edges[:-1])
    fig, ax = subplots(figsize=(6.4, 3.6))
    ax.bar(edges[:-1], h["density"], width=np.diff(edges), align="edge", color="C0", alpha=0.6, label="data")
    ax.plot(centres, h["reference_density"], color="C3", lw=2, label=f"reference law ({h['reference']})")
    ax.set_xlabel("||w||^2")
    ax.set_ylabel("density")
    out_share = h.get("outside_range", 0.0)
    ax.set_title(f"Squared whitened norms (rank {report['rank']})"
                 + (f"; {100 * out_share:.1f}% of rows beyond the axis" if out_share > 0.0005 else ""), fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    figs["sqnorm.png"] = _figure_png(fig)

    series = {k: np.array([v for v in report["coordinates"][k]["a2_per_coordinate"] if v is not None])
              for k in ("raw", "whitened")}
    series = {k: v for k, v in series.items() if v.size}
    if series:
        hi = max(v.max() for v in series.values())
        lo = max(min(v.min() for v in series.values()), 1e-3)
        use_log = hi > 20 * max(lo, 0.05)
        bins = np.geomspace(lo, max(hi, AD_THRESHOLD * 1.5), 50) if use_log else np.linspace(0, max(hi, 1.0), 50)
        fig, ax = subplots(figsize=(6.4, 3.6))
        for i, (k, v) in enumerate(series.items()):
            ax.hist(v, bins=bins, alpha=0.55, color=f"C{i}", label=f"{k} ({v.size} coordinates)")
        ax.axvline(AD_THRESHOLD, color="k", ls="--", lw=1.2, label=f"pass threshold {AD_THRESHOLD}")
        if use_log:
            ax.set_xscale("log")
        ax.set_xlabel("A2 (mean over trials)")
        ax.set_ylabel("coordinates")
        ax.set_title("Per-coordinate Anderson-Darling statistic", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        figs["a2.png"] = _figure_png(fig)

    lam = np.asarray(report["spectrum"]["eigenvalues"], dtype=float)
    pos = lam[lam > 0]
    if pos.size:
        fig, ax = subplots(figsize=(6.4, 3.6))
        ax.semilogy(np.arange(1, pos.size + 1), pos, color="C0", lw=1.5)
        if report["rank"] < pos.size:
            ax.axvline(report["rank"] + 0.5, color="C3", ls="--", lw=1, label=f"kept rank {report['rank']}")
            ax.legend(fontsize=8)
        ax.set_xlabel("index (descending)")
        ax.set_ylabel("eigenvalue")
        ax.set_title(f"Covariance eigen-spectrum ({pos.size} positive of {lam.size})", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        figs["spectrum.png"] = _figure_png(fig)
    return figs


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


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    def cell(i: int, c) -> str:
        numeric = i > 0 and re.match(r"^[-+<]?\s*[\d.]", str(c)) is not None
        return f"<td{' class=n' if numeric else ''}>{html.escape(str(c))}</td>"

    body = "".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


_CAPTIONS = {
    "qq.png": "QQ plots: standardised projections of the centred data on random unit directions, and all "
              "projections pooled, against normal quantiles (the grey line is y = x).",
    "sqnorm.png": "Histogram of squared whitened norms against the exact reference law for Gaussian rows.",
    "a2.png": "Per-coordinate Anderson-Darling A2 (mean over trials); coordinates left of the dashed line pass.",
    "spectrum.png": "Eigenvalues of the covariance (log scale).",
}


def render_html(report: dict, figures: dict[str, bytes]) -> str:
    """A self-contained HTML page (figures embedded as base64 PNG data URIs)."""
    rows = summary_rows(report)
    v, wh, pr = report["verdict"], report["whitener"], report["protocol"]
    cls = {"close to Gaussian": "ok", "degenerate": "bad"}.get(v["label"], "warn")
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>whitenclip Gaussianity report</title>", f"<style>{_CSS}</style></head><body>",
        "<h1>Gaussianity report</h1>",
        f"<p>n = {report['n']}, d = {report['d']}, rank = {report['rank']}, seed = {pr['seed']}. "
        f"Whitener: {esc(wh['note'])} ({'in-sample rows' if wh['in_sample'] else 'new rows'}).</p>",
        f"<div class='verdict {cls}'><b>Verdict: {esc(v['label'])}</b><br><span class='muted'>"
        f"{esc(v['because'])}</span></div>",
        f"<p class='muted'>Rule: {esc(v['rule'])}</p>",
        f"<h2>Per-coordinate tests</h2><p class='muted'>{pr['trials']} random subsets of {pr['subset']} rows; "
        f"AD passes when A2 &lt; {AD_THRESHOLD} (fixed), DP when p &gt; {pr['dp_alpha']}; the expected rates are "
        "those of an exact Gaussian under the same protocol (simulated with the same seed).</p>",
        _table(("coordinates", "AD avg", "AD pass", "DP avg", "DP pass", "constant"), rows["coords"]),
        "<h2>Norm concentration</h2>",
        _table(("norm", "mean", "std", "CV", "Gaussian reference CV", "ratio"), rows["norms"]),
        _table(("", "value"), rows["law"]),
        "<h2>Random projections</h2>",
        _table(("k", "rows", "AD avg", "AD pass", "mean excess kurtosis"), rows["proj"]),
        "<h2>Multivariate</h2><p class='muted'>Large-sample p-values, valid for n &gt;&gt; d.</p>",
        _table(("test", "statistic", "p-value", "method"), rows["multi"]),
        "<h2>Figures</h2>",
    ]
    for name, png in figures.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(f"<figure><img alt='{esc(name)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{esc(_CAPTIONS.get(name, name))}</figcaption></figure>")
    if report.get("notes"):
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in report["notes"]) + "</ul>")
    parts.append("<p class='muted'>All figures as numbers: <a href='report.json'>report.json</a>.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html_report(report: dict, out_dir) -> dict[str, Path]:
    """Write ``report.json``, ``report.html`` and ``figures/*.png`` into ``out_dir`` atomically.

    Returns the paths written, keyed by "json", "html" and the figure names.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: --out must be a directory, and this is a file")
    out.mkdir(parents=True, exist_ok=True)
    figures = make_figures(report)
    written: dict[str, Path] = {}
    for name, png in figures.items():
        written[name] = _write(out / "figures" / name, png)
    written["json"] = _write(out / "report.json", (to_json(report, indent=2) + "\n").encode("utf-8"))
    written["html"] = _write(out / "report.html", render_html(report, figures).encode("utf-8"))
    return written


def _write(path: Path, data: bytes) -> Path:
    """Atomic write (temp file + rename)."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return path
