"""Renderers of per-row scores (:class:`~whitenclip.likelihood.ScoreTable`) and whitener
summaries (:class:`~whitenclip.whitening.WhitenerSummary`).

Row formats (``whitenclip score``), one line per row, ``id`` first, then ``table.columns``:

* ``tsv``    tab-separated; ids escaped (backslash, tab, newline, carriage return as ``\\\\``,
  ``\\t``, ``\\n``, ``\\r``); floats as ``repr`` (shortest round-trip text, ``nan``/``inf``);
* ``csv``    RFC 4180 quoting of ids (``csv`` module), floats as ``repr``;
* ``jsonl``  one JSON object per row; non-finite floats become null.

A command writes :func:`header_line` once, then ``render_rows(table, fmt, header=False)`` per chunk.

Notebooks (``_repr_html_``): a ``<table>`` of the rows, cut to the first and last rows with a count
beyond :data:`~whitenclip.render.HTML_MAX_ROWS`; the whitener summary as a field table. Ids and
artifact fields are user text: :func:`~whitenclip.render.rich_text` / ``html_text``, never markup.
"""

from __future__ import annotations

import csv
import io
import json

from rich.table import Table

from whitenclip.likelihood import ScoreTable
from whitenclip.render import (
    cut_text,
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
    visible,
)
from whitenclip.results import json_safe
from whitenclip.whitening import WhitenerSummary

INFO_FIELDS = ("method", "shrinkage", "shrinkage_intensity", "shrinkage_rule", "n", "d", "rank", "floor", "dropped",
               "log_det", "encoder", "modality", "normalized", "activation", "encoder_fingerprint", "created_at",
               "input_hash", "n_cal")
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
        out.add_row(rich_text(i), *(short(v[k]) for v in values))
    console.print(out)
    if table.n_rows > shown:
        console.print(f"... {table.n_rows - shown} more row(s)", markup=False, highlight=False)
    if table.note:
        console.print(rich_text(f"note: {table.note}"))


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
    # the file name on a line of its own (a table title would wrap a long path across lines)
    console.print(rich_text("whitener" if summary.path is None else f"whitener {summary.path}", "bold"),
                  soft_wrap=True)
    table = Table(show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in whitener_rows(summary):
        table.add_row(rich_text(key), rich_text(value))
    console.print(table)
    if summary.note:
        console.print(rich_text(f"note: {summary.note}"))
    if summary.warning:
        console.print(rich_text(f"warning: {summary.warning}"))


def whitener_rows(summary: WhitenerSummary) -> list[tuple[str, str]]:
    """(field, value) rows of the ``info`` table: :data:`INFO_FIELDS`, calibration, ``spectrum.*``."""
    data = summary.to_dict()
    rows = [(key, short(data.get(key))) for key in INFO_FIELDS]
    if summary.calibration_mode is not None:
        rows.append(("calibration", calibration_text(summary)))
    rows += [(f"spectrum.{key}", short(value)) for key, value in data["spectrum"].items()]
    return rows


def calibration_text(summary: WhitenerSummary) -> str:
    """How the calibration was made, in a few words: ``leave-one-group-out: 1000 rows in 200 groups``
    or ``leave-one-out: 1000 rows``, then ``, DEGENERATE (no pvalue_conformal)`` when it is degenerate."""
    if summary.calibration_mode == "groups":
        text = f"leave-one-group-out: {summary.n_cal} rows in {summary.n_groups} groups"
    else:
        text = f"leave-one-out: {summary.n_cal} rows (no groups)"
    return text + (", DEGENERATE (no pvalue_conformal)" if summary.degenerate else "")


# ---------------------------------------------------------------------------------------
# notebooks: HTML fragments and bounded repr
# ---------------------------------------------------------------------------------------
def _score_cells(table: ScoreTable, rows) -> list[tuple[str, ...]]:
    ids = table.ids
    return [(str(ids[k]) if ids is not None else str(k), *(short(float(table[c][k])) for c in table.columns))
            for k in rows]


@html_fragment.register
def _(table: ScoreTable) -> str:
    """The rows as a ``<table>`` (cut to the first and last rows, with a count, past HTML_MAX_ROWS)."""
    head, tail = kept_rows(table.n_rows)
    parts = [html_table(("id", *table.columns), _score_cells(table, [*head, *tail]),
                        caption=f"{table.n_rows} scored row(s)", n_rows=table.n_rows)]
    if table.note:
        parts.append(f"<p class='muted'>note: {html_text(table.note)}</p>")
    return html_div(*parts)


@html_fragment.register
def _(summary: WhitenerSummary) -> str:
    parts = [html_table(("field", "value"), whitener_rows(summary), lambda i, c: False,
                        caption="whitener" if summary.path is None else f"whitener {summary.path}")]
    for label, text in (("note", summary.note), ("warning", summary.warning)):
        if text:
            parts.append(f"<p class='muted'>{label}: {html_text(text)}</p>")
    return html_div(*parts)


REPR_ROWS = 3
"""Rows a row result's ``repr`` shows at each end (the rest are counted)."""


def repr_rows(name: str, header, n_rows: int, cells, note: str | None = None) -> str:
    """A bounded ``repr`` of a row result: a title, the first and last :data:`REPR_ROWS` rows as
    aligned text (``cells(indices)`` gives them; each cell cut to :data:`~whitenclip.render.REPR_WIDTH`)
    and ``[N rows x M columns]``."""
    head, tail = kept_rows(n_rows, 2 * REPR_ROWS, REPR_ROWS)
    rows = [tuple(cut_text(visible(c)) for c in row) for row in cells([*head, *tail])]
    if tail:
        rows.insert(len(head), tuple("..." for _ in header))
    grid = [tuple(header), *rows]
    widths = [max(len(r[j]) for r in grid) for j in range(len(header))]
    lines = [f"{name}: {n_rows} row(s)"]
    lines += ["  " + "  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths)))
              for r in grid]
    lines.append(f"[{n_rows} rows x {len(header)} columns]")
    if note:
        lines.append(cut_text(f"note: {visible(note)}", 200))
    return "\n".join(lines)


@render_repr.register
def _(table: ScoreTable) -> str:
    return repr_rows("ScoreTable", ("id", *table.columns), table.n_rows, lambda rows: _score_cells(table, rows),
                     table.note)
