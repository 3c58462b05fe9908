"""Renderers of per-row scores (:class:`~whitenclip.likelihood.ScoreTable`) and whitener
summaries (:class:`~whitenclip.whitening.WhitenerSummary`).

Row formats (``whitenclip score``), one line per row, ``id`` first, then ``table.columns``:

* ``tsv``    tab-separated; ids escaped (backslash, tab, newline, carriage return as ``\\\\``,
  ``\\t``, ``\\n``, ``\\r``); floats as ``repr`` (shortest round-trip text, ``nan``/``inf``);
* ``csv``    RFC 4180 quoting of ids (``csv`` module), floats as ``repr``;
* ``jsonl``  one JSON object per row; non-finite floats become null.

A command writes :func:`header_line` once, then ``render_rows(table, fmt, header=False)`` per chunk.
"""

from __future__ import annotations

import csv
import io
import json

from rich.table import Table

from whitenclip.likelihood import ScoreTable
from whitenclip.render import escape_tsv, render_rows, render_table
from whitenclip.results import json_safe
from whitenclip.whitening import WhitenerSummary

INFO_FIELDS = ("method", "shrinkage", "shrinkage_intensity", "n", "d", "rank", "floor", "dropped", "log_det",
               "encoder", "modality", "normalized", "activation", "encoder_fingerprint", "created_at", "input_hash",
               "n_cal")
"""Header fields `whitenclip info` shows, in order (then the spectrum)."""


def header_line(columns, fmt: str) -> str:
    """The header line of row format ``fmt`` for these columns (``id`` first); '' for jsonl."""
    if fmt == "jsonl":
        return ""
    if fmt not in ("tsv", "csv"):
        raise ValueError(f"unknown row format {fmt!r}; expected tsv, csv or jsonl")
    return ("\t" if fmt == "tsv" else ",").join(("id", *columns)) + "\n"


@render_rows.register
def _score_rows(table: ScoreTable, fmt: str, *, header: bool = True) -> str:
    """Rows ``id, loglik, logpdf, sqnorm, pvalue[, pvalue_conformal]`` as TSV / CSV / JSONL text."""
    columns = table.columns
    head = header_line(columns, fmt) if header else ""
    ids = table.row_ids()
    values = [table[c].tolist() for c in columns]
    if fmt == "jsonl":
        return head + "".join(json.dumps({"id": i, **{c: json_safe(v[k]) for c, v in zip(columns, values)}}) + "\n"
                              for k, i in enumerate(ids))
    if fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([i, *(repr(v[k]) for v in values)] for k, i in enumerate(ids))
        return head + buf.getvalue()
    return head + "".join(escape_tsv(i) + "".join("\t" + repr(x) for x in row) + "\n"
                          for i, *row in zip(ids, *values))


TABLE_ROWS = 50
"""Rows a score table shows on a console or in a notebook (the rest are counted)."""


@render_table.register
def _score_table(table: ScoreTable, console) -> None:
    """The first :data:`TABLE_ROWS` rows, values to 6 significant digits (all rows: a row format)."""
    out = Table(title=f"{table.n_rows} scored row(s)")
    for name in ("id", *table.columns):
        out.add_column(name, justify="left" if name == "id" else "right")
    shown = min(table.n_rows, TABLE_ROWS)
    values = [table[c][:shown].tolist() for c in table.columns]
    for k, i in enumerate(table.row_ids()[:shown]):
        out.add_row(i, *(short(v[k]) for v in values))
    console.print(out)
    if table.n_rows > shown:
        console.print(f"... {table.n_rows - shown} more row(s)", markup=False, highlight=False)
    if table.note:
        console.print(f"note: {table.note}", markup=False, highlight=False)


def short(value) -> str:
    """A header value as one short table cell: floats to 6 significant digits, dicts as k=v."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={short(v)}" for k, v in value.items()) or "-"
    return "-" if value is None else str(value)


@render_table.register
def _whitener_table(summary: WhitenerSummary, console) -> None:
    """The ``info`` table: header fields, n_cal, then ``spectrum.*`` rows (and the note, if any)."""
    data = summary.to_dict()
    table = Table(title=f"whitener {summary.path}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key in INFO_FIELDS:
        table.add_row(key, short(data.get(key)))
    if summary.calibration_mode is not None:
        table.add_row("calibration", calibration_text(summary))
    for key, value in data["spectrum"].items():
        table.add_row(f"spectrum.{key}", short(value))
    console.print(table)
    if summary.note:
        console.print(f"note: {summary.note}", markup=False, highlight=False)
    if summary.warning:
        console.print(f"warning: {summary.warning}", markup=False, highlight=False)


def calibration_text(summary: WhitenerSummary) -> str:
    """How the calibration was made, in a few words: ``leave-one-group-out: 1000 rows in 200 groups``
    or ``leave-one-out: 1000 rows``."""
    if summary.calibration_mode == "groups":
        return f"leave-one-group-out: {summary.n_cal} rows in {summary.n_groups} groups"
    return f"leave-one-out: {summary.n_cal} rows (no groups)"
