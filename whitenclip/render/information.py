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

Every table ends with an ``assumes`` row naming the model behind its numbers.
"""

from __future__ import annotations

import csv
import io
import json
import math

from rich.table import Table
from rich.text import Text

from whitenclip.information import EntropyResult, MIResult, PointwiseMIResult
from whitenclip.render import escape_tsv, render_rows, render_table
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
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in rows:
        table.add_row(Text(key), Text(value))
    return table


def entropy_rows(result: EntropyResult) -> list[tuple[str, str]]:
    """(field, value) rows of the ``entropy`` table."""
    rows = [
        ("entropy (bias-corrected)", f"{result.entropy:.6g}"),
        (_ci_label(result.confidence), fmt_ci(result.ci)),
        ("entropy (plug-in)", f"{result.entropy_plugin:.6g}"),
        ("std (Gaussian theory)", f"{result.std:.4g}"),
    ]
    knn = result.knn
    if knn is not None:
        rows += [
            (f"k-NN, top {knn.dims} PCs", f"{knn.entropy:.6g} (Gaussian {knn.gaussian:.6g}; k-NN on a Gaussian "
                                          f"sample {knn.gaussian_knn:.6g}; k={knn.k}, n={knn.n})"),
            ("negentropy (k-NN gap)", f"{knn.gap:.3g}"),
        ]
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
    rows += [
        ("mi (plug-in)", f"{result.mi_plugin:.6g}"),
        ("top canonical correlations", ", ".join(f"{r:.4f}" for r in result.canonical_correlations)),
    ]
    ksg = result.ksg
    if ksg is not None:
        rows.append((f"KSG, top {ksg.dims} pairs",
                     f"{ksg.mi:.6g} vs Gaussian {ksg.gaussian_mi:.6g} (k={ksg.k}, n={ksg.n})"))
    if result.note:
        rows.append(("note", result.note))
    rows.append(("assumes", result.assumes))
    return rows


@render_table.register
def _(result: EntropyResult, console) -> None:
    title = f"entropy ({_unit(result.base)}) of {result.n} rows, rank {result.rank}"
    console.print(_field_table(title, entropy_rows(result)))


@render_table.register
def _(result: MIResult, console) -> None:
    title = (f"mutual information ({_unit(result.base)}) of {result.n} pairs, "
             f"ranks {result.rank_x} x {result.rank_y}")
    console.print(_field_table(title, mi_rows(result)))


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
