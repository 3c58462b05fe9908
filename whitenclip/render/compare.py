"""Renderers of :class:`~whitenclip.comparison.CompareResult` (``whitenclip compare``).

Table: one row per QUERY (in the order given) with the headline figures and intervals, then one
line per set (rows used, Gaussianity verdict), the flagged items, what each figure assumes and the
notes. JSON: one object per QUERY, one per line (:func:`json_lines`). Set names and item ids are
user text: they go into rich ``Text``, never into markup.
"""

from __future__ import annotations

import json

from rich.table import Table

from whitenclip.comparison import CompareResult, QueryComparison
from whitenclip.render import html_div, html_fragment, html_table, html_text, render_table
from whitenclip.render import rich_text as Text
from whitenclip.results import json_safe

SHOWN_ITEMS = 10
"""Flagged items listed per QUERY in the table (all of them in the JSON)."""


def json_lines(result: CompareResult) -> str:
    """One strict JSON object per QUERY, one per line, in the order given (NaN/inf as null)."""
    return "".join(json.dumps(json_safe(q), allow_nan=False) + "\n" for q in result.queries)


def _num(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}g}"


def _kl(v) -> str:
    """A bias-corrected KL or fd_inf below 0 (sampling noise around ~0) is not shown as a distance."""
    if v is not None and v < 0:
        return f"~0 (estimate {v:.3g} < 0)"
    return _num(v)


def _ci(v) -> str:
    return "-" if v is None or any(x is None for x in v) else f"[{v[0]:.4g}, {v[1]:.4g}]"


def _p(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def _figure_rows(result: CompareResult, pct: str) -> list:
    """(label, cell(query) -> str) of each figure row, in display order."""
    rows = [
        ("rows (used by cmmd/test/prdc)", lambda q: f"{q.query.n}" + ("" if q.query.n_used in (None, q.query.n)
                                                                        else f" ({q.query.n_used})")),
        (f"fd ({pct} CI)", lambda q: f"{_num(q.fd)} {_ci(q.fd_ci)}" if q.fd_ci else _num(q.fd)),
        (f"fd_inf ({pct} CI)", lambda q: "-" if q.fd_inf is None else f"{_kl(q.fd_inf)} {_ci(q.fd_inf_ci)}"),
        ("kl(ref || query)", lambda q: _kl(q.kl_ref_query)),
        ("kl(query || ref)", lambda q: _kl(q.kl_query_ref)),
        (f"cmmd ({pct} CI)", lambda q: "-" if q.cmmd is None else f"{_num(q.cmmd)} {_ci(q.cmmd_ci)}"),
        ("cmmd unbiased", lambda q: "-" if q.cmmd_unbiased is None else
         f"{_num(q.cmmd_unbiased)} {_ci(q.cmmd_unbiased_ci)}"),
        ("pvalue (permutation)", lambda q: _p(q.pvalue)),
        ("precision / recall", lambda q: "-" if q.precision is None else f"{q.precision:.3f} / {q.recall:.3f}"),
        ("density / coverage", lambda q: "-" if q.precision is None else f"{q.density:.3f} / {q.coverage:.3f}"),
        ("flagged items", lambda q: "-" if q.n_flagged is None else f"{q.n_flagged} at FDR {q.fdr:g}"),
    ]
    if len(result.queries) > 1:
        rows.append((f"rank (by {result.ranked_by})", lambda q: str(q.rank)))
    return rows


@render_table.register
def _(result: CompareResult, console) -> None:
    queries = result.queries
    pct = f"{round(100 * queries[0].confidence)}%" if queries else ""
    table = Table(title=Text(f"compare with {result.ref.name}"), title_justify="left")
    table.add_column("figure")
    for q in queries:
        table.add_column(Text(q.name), justify="right", overflow="fold")
    for label, cell in _figure_rows(result, pct):
        table.add_row(label, *(cell(q) for q in queries))
    console.print(table)
    for s in (result.ref, *(q.query for q in queries)):
        line = Text(f"{'REF' if s is result.ref else 'QUERY'} ")
        line.append(Text(s.name))
        line.append(f": {s.n} rows x {s.d}")
        if s.n_used is not None and s.n_used != s.n:
            line.append(f" ({s.n_used} used by cmmd, the test and prdc)")
        if s.n_groups is not None:
            line.append(f", {s.n_groups} groups")
        if s.gaussianity is not None:
            line.append(f"; Gaussianity: {s.gaussianity} ({s.gaussianity_because})")
        console.print(line, soft_wrap=True)
    for q in queries:
        if q.flagged:
            line = Text("flagged in ")
            line.append(Text(q.name))
            line.append(f" (q <= {q.fdr:g}, least likely under REF first): ")
            for k, item in enumerate(q.flagged[:SHOWN_ITEMS]):
                if k:
                    line.append(", ")
                line.append(Text(str(item["id"])))
                line.append(f" (p={item['pvalue']:.2g})")
            if len(q.flagged) > SHOWN_ITEMS:
                line.append(f", ... and {len(q.flagged) - SHOWN_ITEMS} more (--json lists all)")
            console.print(line, soft_wrap=True)
    if queries:
        console.print(Text("assumes:"))
        for key, text in queries[0].assumes.items():
            console.print(Text(f"  {key}: {text}"), soft_wrap=True)
    notes = list(result.notes) + [n for q in queries for n in q.notes]
    for note in dict.fromkeys(notes):
        console.print(Text(f"note: {note}"), soft_wrap=True)


@render_table.register
def _(q: QueryComparison, console) -> None:
    render_table(CompareResult(ref=q.ref, queries=(q,), ranked_by="cmmd"), console)


@html_fragment.register
def _(result: CompareResult) -> str:
    queries = result.queries
    pct = f"{round(100 * queries[0].confidence)}%" if queries else ""
    rows = [(label, *(cell(q) for q in queries)) for label, cell in _figure_rows(result, pct)]
    sets = [f"{'REF' if s is result.ref else 'QUERY'} {s.name}: {s.n} rows x {s.d}"
            + (f"; Gaussianity: {s.gaussianity}" if s.gaussianity else "")
            for s in (result.ref, *(q.query for q in queries))]
    notes = dict.fromkeys([*result.notes, *(n for q in queries for n in q.notes)])
    return html_div(html_table(("figure", *(q.name for q in queries)), rows, caption=f"compare with {result.ref.name}"),
                    *(f"<p>{html_text(line)}</p>" for line in sets),
                    *(f"<p class='muted'>note: {html_text(n)}</p>" for n in notes))


@html_fragment.register
def _(q: QueryComparison) -> str:
    return html_fragment(CompareResult(ref=q.ref, queries=(q,), ranked_by="cmmd"))
