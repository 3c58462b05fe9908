"""Renderers of :class:`whitenclip.simulate.SimulationResult` (the paper-like table and the curves page)
and of :class:`whitenclip.simulate.PaperComparison` (``--preset``: the published table beside ours).

The tables have one row per loss and one column per metric, each cell ``mean ± sd`` over seeds
at the final step (``@0``: the mean at step 0), and a last row (``Gaussian``) with what an exact
Gaussian scores under the same protocol. The HTML page plots every metric against the
training step (mean over seeds, a band of ± sd), figures embedded as PNG data URIs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

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
from whitenclip.simulate import PaperComparison, SimulationResult

# terminal tables: (title, [(metric key, header)]); cells are mean ± sd over seeds at the last step
TABLES = (
    ("raw coordinates of the L2-normalised embedding",
     (("ad_mean", "AD mean"), ("ad_pass", "AD pass"), ("dp_mean", "DP mean p"), ("dp_pass", "DP pass"))),
    ("whitened coordinates",
     (("w_ad_mean", "AD mean"), ("w_ad_pass", "AD pass"), ("w_dp_mean", "DP mean p"), ("w_dp_pass", "DP pass"))),
    ("norms", (("norm_cv", "CV ||f(x)||"), ("w_norm_cv", "CV ||w||"), ("rank", "rank"))),
    ("along training and downstream",
     (("ad_pass@0", "AD pass @0"), ("w_ad_pass@0", "w AD pass @0"), ("r2", "latent R2"), ("probe_acc", "probe acc"))),
)
_REF_KEYS = {"ad_mean": "ad_mean", "ad_pass": "ad_pass", "dp_mean": "dp_mean", "dp_pass": "dp_pass",
             "w_ad_mean": "ad_mean", "w_ad_pass": "ad_pass", "w_dp_mean": "dp_mean", "w_dp_pass": "dp_pass",
             "w_norm_cv": "w_norm_cv", "ad_pass@0": "ad_pass", "w_ad_pass@0": "ad_pass"}

CURVES = (("ad_pass", "AD pass (raw coordinates)"), ("w_ad_pass", "AD pass (whitened)"),
          ("dp_pass", "DP pass (raw)"), ("w_dp_pass", "DP pass (whitened)"), ("norm_cv", "norm CV of f(x)"),
          ("w_norm_cv", "norm CV (whitened)"), ("r2", "latent R2 (held out)"), ("probe_acc", "linear probe accuracy"),
          ("train_loss", "training loss"))


def _fmt(v: float) -> str:
    if float(v).is_integer() and abs(v) >= 10:
        return f"{int(v)}"
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3f}"


def _cell(stat, key: str) -> str:
    if stat is None:
        return "-"
    if key.endswith("@0"):
        return "-" if stat["initial_mean"] is None else _fmt(stat["initial_mean"])
    if stat["n"] > 1:
        return f"{_fmt(stat['mean'])}±{stat['sd']:.2f}"
    return _fmt(stat["mean"])


def table_rows(result: SimulationResult) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(title, header, rows)`` of each paper-like table (rows = losses, then the exact-Gaussian row)."""
    summary = result.summary()
    ref = result.reference
    out = []
    for title, cols in TABLES:
        header = ["loss"] + [h for _, h in cols]
        rows = [[loss] + [_cell(stats[k.removesuffix("@0")], k) for k, _ in cols] for loss, stats in summary.items()]
        gauss = [ref.get(_REF_KEYS[k]) if k in _REF_KEYS else None for k, _ in cols]
        rows.append(["Gaussian"] + ["-" if v is None else _fmt(v) for v in gauss])
        out.append((title, header, rows))
    return out


def _caption(result: SimulationResult) -> str:
    c = result.config
    enc = c.encoder.upper() if c.encoder in ("mlp", "cnn") else c.encoder
    data = (f"digits (8x8, {enc})" if c.data == "digits"
            else f"{c.data} latent k={c.latent_dim} ({enc}{', x = z' if c.mixing == 'none' else ''})")
    sched = f"{c.steps} steps" if c.epochs is None else f"{c.epochs} epochs of {c.train_size} rows ({c.steps} steps)"
    return (f"{data}, dim {c.dim}, {sched}, batch {c.batch_size}, tau {c.tau}, {c.seeds} seed(s); "
            f"mean ± sd over seeds at the last step; {result.wall_seconds:.0f} s wall, "
            f"{result.cpu_seconds:.0f} s CPU")


@render_table.register
def _(result: SimulationResult, console) -> None:
    from rich import box
    from rich.table import Table

    console.print("simulate: " + _caption(result), soft_wrap=True, markup=False, highlight=False)
    for title, header, rows in table_rows(result):
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
        for i, h in enumerate(header):
            table.add_column(h, justify="left" if i == 0 else "right", no_wrap=True)
        for row in rows:
            table.add_row(*row, style="dim" if row[0] == "Gaussian" else None)
        console.print(table)
    if result.stores:
        console.print(rich_text(f"embeddings saved: {len(result.stores)} stores, e.g. "
                                f"{next(iter(result.stores.values()))}"), soft_wrap=True)


def make_curves(result: SimulationResult) -> dict[str, bytes]:
    """PNG bytes of the metric-versus-step figure, one panel per metric, one line per loss."""
    import numpy as np
    from matplotlib.figure import Figure

    steps = np.asarray(result.config.eval_steps)
    panels = [(k, t) for k, t in CURVES if any(r.metrics[k][-1] is not None for r in result.runs)]
    cols = 3
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    ref = result.reference
    for ax, (key, title) in zip(axes.flat, panels):
        for loss in result.config.losses:
            runs = [r for r in result.runs if r.loss == loss]
            vals = np.array([[np.nan if v is None else v for v in r.metrics[key]] for r in runs], dtype=float)
            if np.isnan(vals).all():
                continue
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(vals, axis=0)
                sd = np.nanstd(vals, axis=0)
            line, = ax.plot(steps, mean, marker="o", ms=3, label=loss)
            if len(runs) > 1:
                ax.fill_between(steps, mean - sd, mean + sd, color=line.get_color(), alpha=0.15)
        target = {"ad_pass": "ad_pass", "w_ad_pass": "ad_pass", "dp_pass": "dp_pass", "w_dp_pass": "dp_pass",
                  "w_norm_cv": "w_norm_cv"}.get(key)
        if target and ref.get(target) is not None:
            ax.axhline(ref[target], color="grey", ls="--", lw=1, label="Gaussian")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    return {"curves.png": figure_png(fig, dpi=90)}


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1300px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:0.9em}td,th{border:1px solid #ccc;padding:3px 7px}"
        "td.n{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#666}img{max-width:100%}")


def page_body(result: SimulationResult, figures: dict[str, bytes], heads: tuple[str, str] = ("h1", "h3")) -> list[str]:
    """The HTML elements of ``result`` (``heads``: the title's and the tables' heading tags), shared by
    the page and the notebook fragment."""
    esc = html_text
    h1, h3 = heads
    tables = [f"<{h3}>{esc(title)}</{h3}>{html_table(header, rows)}" for title, header, rows in table_rows(result)]
    parts = [f"<{h1}>InfoNCE and the Gaussian: training curves</{h1}>",
             f"<p>{esc(_caption(result))}.</p>",
             *tables,
             "<p class='muted'>Coordinates of the L2-normalised embedding of held-out rows; whitened = PCA whitener "
             "fitted on them. AD pass: A2 &lt; 0.752; DP pass: p &gt; 0.05 (10 subsets of 500 rows). "
             "The dashed line is what an exact Gaussian scores under the same protocol.</p>"]
    parts += [html_figure(name, png, "Metric versus training step: mean over seeds, band = ± sd.")
              for name, png in figures.items()]
    return parts


def page(result: SimulationResult, figures: dict[str, bytes]) -> str:
    """The self-contained HTML page of ``result`` (``simulate.html``)."""
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             "<title>whitenclip simulate</title>", f"<style>{_CSS}</style></head><body>",
             *page_body(result, figures),
             "<p class='muted'>All numbers: <a href='simulate.json'>simulate.json</a>.</p></body></html>"]
    return "\n".join(parts)


@html_fragment.register
def _(result: SimulationResult) -> str:
    """The curves and tables as a notebook fragment (scoped CSS, no page), the curves inline."""
    return html_div(*page_body(result, make_curves(result), ("h3", "h4")))


@render_html.register
def _(result: SimulationResult, out_dir: Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(exist_ok=True)  # its parent must exist (outputs.check_output_dir)
    figures = make_curves(result)
    return {"json": write_file(out / "simulate.json", (to_json(result) + "\n").encode("utf-8")),
            "html": write_file(out / "simulate.html", page(result, figures).encode("utf-8"))}


# ---------------------------------------------------------------------------------------
# --preset: published beside measured
# ---------------------------------------------------------------------------------------
def _pm(stat) -> str:
    if stat is None:
        return "-"
    return f"{stat['mean']:.3f}±{stat['sd']:.3f}" if stat.get("values") and len(stat["values"]) > 1 \
        else f"{stat['mean']:.3f}"


def comparison_rows(result: PaperComparison) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)``: per metric a ``published`` row and an ``ours`` row (mean ± sd over seeds),
    one column per paper column, and the exact-Gaussian reference (synthetic protocol) last."""
    header = ["metric", "source"] + [title for _k, title, *_ in result.columns] + ["Gaussian"]
    ref = result.reference["synthetic"]
    rows = []
    for metric, label, pub_key in result.rows:
        if pub_key is not None:
            rows.append([label, "published"] + [_fmt(result.published[k][pub_key]) for k, *_ in result.columns]
                        + [""])
        gauss = ref.get(metric)
        rows.append(["" if pub_key is not None else label, "ours"]
                    + [_pm(result.measured[k][metric]) for k, *_ in result.columns]
                    + ["-" if gauss is None else _fmt(gauss)])
    return header, rows


@render_table.register
def _(result: PaperComparison, console) -> None:
    from rich import box
    from rich.table import Table

    r0 = result.results[0].config
    console.print(f"simulate --preset {result.preset}: the paper's synthetic table (linear encoder, InfoNCE) "
                  f"beside ours; k={r0.latent_dim} -> d={r0.dim}, {r0.train_size} training rows, "
                  f"{r0.epochs} epochs, {r0.seeds} seeds (mean ± sd). The last two columns are CIFAR-10 / "
                  "ResNet-18 in the paper, digits / CNN here.", soft_wrap=True, markup=False, highlight=False)
    header, rows = comparison_rows(result)
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1))
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i < 2 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row, style="dim" if row[1] == "published" else None)
    width = console.width
    console.width = max(width, 170)  # never elide a number on a narrow or piped console
    try:
        console.print(table)
    finally:
        console.width = width
    dref = result.reference["digits"]
    console.print(f"Gaussian = an exact Gaussian under the same protocol (5000 held-out rows); for the 599 digits "
                  f"rows: AD pass {dref['ad_pass']:.3f}, per feature {dref['ad_pass_feature']:.3f}, "
                  f"DP pass {dref['dp_pass']:.3f}, per feature {dref['dp_pass_feature']:.3f}.",
                  soft_wrap=True, markup=False, highlight=False)
    checks = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in result.checks.items())
    console.print(f"checks: {checks}", soft_wrap=True, markup=False, highlight=False)
    la = " -> ".join(f"{v:.1f}" for v in result.load_average)
    console.print(f"{result.wall_seconds:.0f} s wall, {result.cpu_seconds:.0f} s CPU (load average {la}). "
                  "Every setting we chose: --json (choices) or README 'Simulate'.",
                  soft_wrap=True, markup=False, highlight=False)


@html_fragment.register
def _(result: PaperComparison) -> str:
    """The published-beside-measured table as a notebook fragment."""
    header, rows = comparison_rows(result)
    checks = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in result.checks.items())
    return html_div(html_table(header, rows, lambda i, c: i > 1,
                               caption=f"simulate --preset {result.preset}: published beside measured"),
                    f"<p class='muted'>checks: {html_text(checks)}</p>")
