"""``whitenclip info`` on what is not a whitener: embeddings (stores, files) and moments files.

Both are shown as a two-column field/value table; ``--json`` is the result's ``to_dict()``. Paths,
encoder names and commands are user text: they go into the table through
:func:`whitenclip.render.rich_text` (literally, control characters escaped), never as markup.
"""

from __future__ import annotations

from rich.table import Table

from whitenclip.moments import MomentsSummary
from whitenclip.readers.summary import EmbeddingsSummary
from whitenclip.render import render_table, rich_text


def _plain(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items()) or "-"
    return "-" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def _cell(value):
    return rich_text(_plain(value))


def _field_table(title: str, rows, console) -> None:
    table = Table(title=rich_text(title), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in rows:
        table.add_row(rich_text(key), _cell(value))
    console.print(table)


@render_table.register
def _embeddings_table(summary: EmbeddingsSummary, console) -> None:
    """rows x dim, dtype, shards, ids, groups, items (stores), encoder fields, the embed command."""
    rows = [("kind", summary.kind), ("rows", summary.n_rows), ("dim", summary.dim), ("dtype", summary.dtype),
            ("shards" if summary.kind == "store" else "blocks", summary.shards), ("ids", summary.ids),
            ("groups", summary.n_groups if summary.n_groups is not None else "none")]
    if summary.n_items is not None:
        rows += [("items", summary.n_items), ("complete", summary.complete)]
    rows += [(key, value) for key, value in summary.encoder.items()]
    if summary.command:
        rows.append(("command", summary.command))
    _field_table(f"embeddings {summary.path}", rows, console)
    if summary.complete is False:
        console.print(rich_text(f"note: the store is incomplete: rerun `{summary.command or 'whitenclip embed ...'}` "
                                "to finish it"))


@render_table.register
def _moments_table(summary: MomentsSummary, console) -> None:
    """n x d, pieces, encoder fields, Gram precision, power sums, calibration sample, input hash."""
    calibration = (f"{summary.calibration_rows:,} rows sampled by {summary.calibration_mode}"
                   if summary.calibration_rows is not None else "none")
    rows = [("n", summary.n), ("d", summary.d), ("pieces", summary.pieces),
            *summary.encoder.items(), ("gram", summary.gram), ("power_sums", summary.power_sums),
            ("calibration", calibration), ("dropped_nonfinite", summary.dropped_nonfinite),
            ("input_hash", summary.input_hash)]
    _field_table(f"moments {summary.path}", rows, console)
