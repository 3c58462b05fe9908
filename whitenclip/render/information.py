"""Renderers of the information results: entropy and MI tables, pointwise-MI rows.

Registered on import (see ``_RENDERER_MODULES`` in :mod:`whitenclip.render`):

* :class:`~whitenclip.information.EntropyResult` -> ``render_table`` (``whitenclip entropy``);
* :class:`~whitenclip.information.MIResult` -> ``render_table`` (``whitenclip mi``): the headline
  estimate first (cross-fitted or in-sample), the other beside it, and why; an MI whose interval
  contains 0 is shown as "no detectable dependence (...)" ("cannot resolve dependence at this n"
  when n is below the effective dimensions), never as a bare number; deterministic inputs as
  "infinite (deterministic relation)";
* :class:`~whitenclip.information.PointwiseMIResult` -> ``render_rows`` (``mi --pointwise``):
  ``id<TAB>pmi`` lines with ``repr`` floats (TSV), or CSV / JSONL.

Every table ends with an ``assumes`` row naming the model behind its numbers. Notebooks get
the same rows as HTML fragments (``_repr_html_``), pointwise MI as a cut ``<table>`` of pairs.
"""

from __future__ import annotations

import csv
import io
import json
import math

from rich.table import Table

from whitenclip.information import EntropyResult, MIResult, PointwiseMIResult
from whitenclip.render import (
    escape_tsv,
    html_div,
    html_fragment,
    html_table,
    html_text,
    kept_rows,
    render_repr,
    render_rows,
    render_table,
    rich_text,
)
from whitenclip.results import json_safe

_UNITS = {"e": "nats", "2": "bits"}


def _unit(base: str) -> str:
    return _UNITS.get(str(base), str(base))


def fmt_ci(ci) -> str:
    """An interval as ``[lo, hi]`` (6 significant digits), ``-`` when there is none.

    >>> fmt_ci((1.0, 2.5)), fmt_ci(None)
    ('[1, 2.5]', '-')
    """
    return "-" if ci is None else f"[{ci[0]:.6g}, {ci[1]:.6g}]"


def _ci_label(confidence: float) -> str:
    return f"ci {100 * confidence:g}%"


def _field_table(title: str, rows: list[tuple[str, str]]) -> Table:
    """Two-column (field, value) table without header; values are plain text (no rich markup)."""
    table = Table(title=rich_text(title), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in rows:
        table.add_row(rich_text(key), rich_text(value))
    return table


def entropy_rows(result: EntropyResult) -> list[tuple[str, str]]:
    """(field, value) rows of the ``entropy`` table."""
    dims = f"over r = {result.rank} dims"
    rows = [
        (f"entropy (Gaussian, bias-corrected, {dims})", f"{result.entropy:.6g}"),
        (_ci_label(result.confidence), fmt_ci(result.ci)),
        (f"entropy (Gaussian, plug-in, {dims})", f"{result.entropy_plugin:.6g}"),
        ("std (Gaussian theory)", f"{result.std:.4g}"),
        ("dims", result.over),
    ]
    knn = result.knn
    if knn is not None:
        rows += [
            (f"k-NN over the top {knn.dims} principal components",
             f"{knn.entropy:.6g} (held out; Gaussian entropy of the same held-out projections {knn.gaussian:.6g}; "
             f"calibrated: k-NN {knn.entropy_raw:.6g} on the rows, {knn.gaussian_knn:.6g} on Gaussian samples of the "
             f"same size; k={knn.k}, n={knn.n}, {knn.folds} folds)"),
            (f"negentropy (k-NN gap, top {knn.dims} PCs)", f"{knn.gap:.3g}"),
            ("compare", f"the k-NN figures are over the top {knn.dims} principal components of one half of the rows, "
                        f"taken on the other half (held out, both ways), the Gaussian entropy above over "
                        f"r = {result.rank} dims: compare the k-NN figure with the Gaussian one of the same held-out "
                        "projections (their difference is the gap), not with the entropy over all dims"),
        ]
    elif result.knn_skipped:
        rows.append(("k-NN check", result.knn_skipped))
    if result.whitened:
        rows.append(("whitener", "entropy measured in the whitener's kept subspace, in input units; the k-NN "
                                 "check runs on the input rows' own PCs and does not depend on it"))
    rows.append(("assumes", result.assumes))
    return rows


def pointwise_summary(result: MIResult) -> str:
    """The stderr line ``mi --pointwise`` ends with: the headline estimate, its interval, n and the note.

    A deterministic relation reads "infinite (deterministic relation)", as in the table, never ``inf``.
    """
    head = result.headline_mi
    if result.deterministic or head is None or not math.isfinite(head):
        value = "infinite (deterministic relation)" if result.deterministic else "-"
    else:
        value = f"{head:.6g}"
    return f"mi ({result.headline}) {value} ci {fmt_ci(result.headline_ci)} over {result.n} pairs; {result.note}"


def mi_rows(result: MIResult) -> list[tuple[str, str]]:
    """(field, value) rows of the ``mi`` table; a non-detectable MI is not shown as a measurement.

    The first row is the headline estimate (cross-fitted or in-sample, ``result.headline``); the
    other estimate follows it, then why the headline was chosen.
    """
    insample = ("mi (bias-corrected)" if result.bias_corrected
                else ("mi (shrunk)" if result.shrinkage else "mi (plug-in)"))
    cf = result.crossfit
    level = _ci_label(result.confidence)
    if result.deterministic:
        rows = [("mi", "infinite (deterministic relation)"), (level, "-")]
    else:
        crossfit_head = cf is not None and result.headline == "cross-fitted"
        head_mi, head_ci = (cf.mi, cf.ci) if crossfit_head else (result.mi, result.ci)
        label = f"mi (cross-fitted, {cf.folds} folds)" if crossfit_head else insample
        if result.detectable is None and result.resolvable is False:
            value = f"cannot resolve dependence at this n (estimate {head_mi:.6g}; {level} {fmt_ci(head_ci)})"
        elif result.detectable is False:
            where = "no interval" if head_ci is None else f"{level} {fmt_ci(head_ci)}"
            value = f"no detectable dependence (estimate {head_mi:.6g}; {where})"
        else:
            value = f"{head_mi:.6g}"
        rows = [(label, value), (level, fmt_ci(head_ci))]
        if cf is not None and not crossfit_head:
            rows.append((f"mi (cross-fitted, {cf.folds} folds)", f"{cf.mi:.6g} {fmt_ci(cf.ci)}"))
        elif crossfit_head:
            rows.append((f"{insample}, large-n estimate", f"{result.mi:.6g} {fmt_ci(result.ci)}"))
    if cf is not None:
        ranks = ", ".join(f"{k}/{m}" for k, m in cf.ranks)
        grouped = " (folds hold whole groups)" if cf.grouped else ""
        rows.append(("cross-fit model (k dirs/m pairs)", f"{ranks} per fold{grouped}"))
    if result.headline_reason:
        rows.append(("headline", f"{result.headline}: {result.headline_reason}"))
    # in-sample figures: near the rank they are biased towards dependence (canonical correlations -> 1), so
    # when the cross-fitted estimate is the headline they are labelled as such, never shown bare
    biased = ", in-sample: biased upward at this n" if result.headline == "cross-fitted" else ""
    rows += [
        (f"mi (plug-in{biased})", f"{result.mi_plugin:.6g}"),
        (f"top canonical correlations{' (in-sample)' if biased else ''}",
         ", ".join(f"{r:.4f}" for r in result.canonical_correlations)),
    ]
    rows += ksg_rows(result)
    if result.note:
        rows.append(("note", result.note))
    rows.append(("assumes", result.assumes))
    return rows


def entropy_title(result: EntropyResult) -> str:
    return f"entropy ({_unit(result.base)}) of {result.n} rows, rank {result.rank}"


def mi_title(result: MIResult) -> str:
    return f"mutual information ({_unit(result.base)}) of {result.n} pairs, ranks {result.rank_x} x {result.rank_y}"


def ksg_rows(result: MIResult) -> list[tuple[str, str]]:
    """The KSG check's row: its figure only when it lies beyond its permutation noise, else "no detectable
    dependence" with the noise range and no figure (a within-noise estimate is not information; JSON keeps
    it as ``ksg.mi`` beside ``detectable: false``); or why it was skipped."""
    ksg = result.ksg
    if ksg is None:
        return [("KSG check", result.ksg_skipped)] if result.ksg_skipped else []
    label = f"KSG, top {ksg.dims} held-out canonical pairs"
    gauss = "-" if ksg.gaussian_mi is None else f"{ksg.gaussian_mi:.4g}"
    null = (f"permutation null {fmt_ci(ksg.null_ci)} over {ksg.permutations} within-fold permutations, "
            f"p = {ksg.pvalue:.3g}" if ksg.null_ci is not None else "no permutation null")
    if ksg.detectable is False:
        value = f"no detectable dependence (the estimate lies within the noise: {null}; k={ksg.k}, n={ksg.n})"
    else:
        value = f"{ksg.mi:.6g} vs Gaussian {gauss} of the same pairs ({null}; k={ksg.k}, n={ksg.n})"
    return [(label, value)]


@render_table.register
def _(result: EntropyResult, console) -> None:
    console.print(_field_table(entropy_title(result), entropy_rows(result)))


@render_table.register
def _(result: MIResult, console) -> None:
    console.print(_field_table(mi_title(result), mi_rows(result)))


def _field_fragment(title: str, rows: list[tuple[str, str]]) -> str:
    return html_div(html_table(("field", "value"), rows, lambda i, c: False, caption=title))


@html_fragment.register
def _(result: EntropyResult) -> str:
    return _field_fragment(entropy_title(result), entropy_rows(result))


@html_fragment.register
def _(result: MIResult) -> str:
    return _field_fragment(mi_title(result), mi_rows(result))


def _pmi_cells(result: PointwiseMIResult, rows) -> list[tuple[str, str]]:
    return [(str(result.ids[k]), f"{float(result.pmi[k]):.6g}") for k in rows]


@html_fragment.register
def _(result: PointwiseMIResult) -> str:
    """The pairs' pointwise MI as a ``<table>`` (cut to the first and last rows, with a count)."""
    n = len(result.ids)
    head, tail = kept_rows(n)
    return html_div(html_table(("id", f"pmi ({_unit(result.base)})"), _pmi_cells(result, [*head, *tail]),
                               caption=f"pointwise mutual information of {n} pairs", n_rows=n),
                    f"<p class='muted'>assumes: {html_text(result.assumes)}</p>")


@render_repr.register
def _(result: PointwiseMIResult) -> str:
    from whitenclip.render.tables import repr_rows

    return repr_rows("PointwiseMIResult", ("id", f"pmi ({_unit(result.base)})"), len(result.ids),
                     lambda rows: _pmi_cells(result, rows))


@render_rows.register
def _(result: PointwiseMIResult, fmt: str, *, header: bool = True) -> str:
    values = result.pmi.tolist()
    if fmt == "tsv":
        head = "id\tpmi\n" if header else ""
        return head + "".join(f"{escape_tsv(i)}\t{v!r}\n" for i, v in zip(result.ids, values))
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        if header:
            writer.writerow(("id", "pmi"))
        writer.writerows((i, repr(v)) for i, v in zip(result.ids, values))
        return buf.getvalue()
    if fmt == "jsonl":
        return "".join(json.dumps({"id": i, "pmi": json_safe(v)}, allow_nan=False) + "\n"
                       for i, v in zip(result.ids, values))
    raise ValueError(f"unknown row format {fmt!r}; expected tsv, csv or jsonl")
