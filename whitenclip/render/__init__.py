"""The one place that turns results into text: terminal tables, JSON, rows and HTML.

Each result type registers its renderers here with :func:`functools.singledispatch`, in the
submodule named after its concern (``render/gaussianity.py`` for the Gaussianity report,
``render/information.py`` for entropy and MI, ``render/tables.py`` for scores and whitener
summaries, ...). A command then only does ``render(result, fmt)``.

Adding an output format is one function here plus one registration per result type;
adding a result type is one submodule (listed in ``_RENDERER_MODULES``).

Formats:

* ``table``  a rich table on the console (people);
* ``json``   one JSON object on stdout (machines; NaN/inf are null);
* ``tsv`` / ``csv`` / ``jsonl``  one line per row, for row results (``score``);
* ``html``   a self-contained page with figures, written into a directory.

Notebooks get :func:`html_fragment` (``Result._repr_html_``): an HTML *fragment*, never a page:
one ``<div class="whitenclip">`` holding a ``<style>`` whose every rule is scoped under
``.whitenclip`` and real ``<table>`` elements, long tables cut pandas-style (first and last rows,
a row of ``…`` and ``N rows × M columns``). ``repr()`` of a result is bounded (:func:`to_repr`).

User text (ids, captions, file names, artifact fields, notes that quote them) is data, never
markup. It is escaped once, here, where it meets rich or HTML: :func:`rich_text` makes a
:class:`rich.text.Text` (no markup, no ``:emoji:`` codes) and :func:`html_text` applies
:func:`html.escape`; both first pass it through :func:`visible`, which writes control
characters, bidi overrides and undecodable bytes (surrogateescape) as backslash escapes.
"""

from __future__ import annotations

import functools
import html
import importlib
import json
import re
import sys
from pathlib import Path
from typing import IO

from whitenclip.results import json_safe

FORMATS = ("table", "json", "tsv", "csv", "jsonl", "html")
ROW_FORMATS = ("tsv", "csv", "jsonl")

# submodules that register renderers; imported on first use (keeps `whitenclip --help` fast)
_RENDERER_MODULES = ("gaussianity", "information", "tables", "simulate", "engine", "compare", "artifacts")


@functools.cache
def _load_renderers() -> None:
    for name in _RENDERER_MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:  # a renderer module not written yet
            if exc.name != f"{__name__}.{name}":
                raise


def to_json(result, *, indent: int | None = 2) -> str:
    """``result`` (a :class:`~whitenclip.results.Result` or plain data) as one strict JSON object."""
    return json.dumps(json_safe(result), indent=indent, allow_nan=False)


@functools.singledispatch
def render_table(result, console) -> None:
    """Print ``result`` as rich table(s) on ``console`` (a :class:`rich.console.Console`)."""
    raise TypeError(f"no table renderer for {type(result).__name__}")


@functools.singledispatch
def render_rows(result, fmt: str, *, header: bool = True) -> str:
    """``result``'s rows as TSV / CSV / JSONL text (``header``: TSV/CSV column names first)."""
    raise TypeError(f"no row renderer for {type(result).__name__}")


@functools.singledispatch
def render_html(result, out_dir: Path) -> dict[str, Path]:
    """Write ``result`` as a self-contained HTML page (and its JSON) into ``out_dir``.

    Returns the paths written, by role (``html``, ``json``, figures)."""
    raise TypeError(f"no html renderer for {type(result).__name__}")


@functools.singledispatch
def html_fragment(result) -> str:
    """``result`` as an HTML fragment for a notebook cell (``Result._repr_html_``).

    Default (results without a renderer of their own, e.g. a report's sections): a field/value
    table of ``result.to_dict()``, nested mappings flattened to dotted names, long lists cut.
    Result types register their own (tables, the Gaussianity report with inline figures, ...).
    """
    rows = field_rows(result.to_dict() if hasattr(result, "to_dict") else result)
    return html_div(html_table(("field", "value"), rows, lambda i, c: False,
                               caption=type(result).__name__, max_rows=HTML_MAX_ROWS))


def to_html(result) -> str:
    """``result`` as an HTML fragment (see :func:`html_fragment`)."""
    _load_renderers()
    return html_fragment(result)


@functools.singledispatch
def render_repr(result) -> str:
    """``repr(result)`` for results that opt in (``@dataclass(repr=False)``): bounded in size.

    Default: ``Name(field=value, ...)`` with arrays as ``array(shape=..., dtype=...)`` and every
    value cut to :data:`REPR_WIDTH` characters. Row results register a few rows and a count.
    """
    import dataclasses

    fields = dataclasses.fields(result) if dataclasses.is_dataclass(result) else ()
    body = ", ".join(f"{f.name}={_short_repr(getattr(result, f.name))}" for f in fields)
    return f"{type(result).__name__}({body})"


def to_repr(result) -> str:
    """``repr(result)``, bounded (see :func:`render_repr`)."""
    _load_renderers()
    return render_repr(result)


def render(result, fmt: str = "table", *, stream: IO[str] | None = None, console=None) -> None:
    """Render ``result`` in ``fmt`` (one of :data:`FORMATS` but ``html``) on ``stream`` (stdout)."""
    _load_renderers()
    stream = sys.stdout if stream is None else stream
    if fmt == "json":
        stream.write(to_json(result) + "\n")
    elif fmt in ROW_FORMATS:
        stream.write(render_rows(result, fmt))
    elif fmt == "table":
        from rich.console import Console

        render_table(result, console or Console(file=stream))
    else:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS[:-1])}")
    stream.flush()


# ---------------------------------------------------------------------------------------
# helpers every renderer shares
# ---------------------------------------------------------------------------------------
def escape_tsv(text: str) -> str:
    """An id as one TSV field: backslash, tab, newline and carriage return written as a backslash
    followed by ``\\``, ``t``, ``n`` or ``r``."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def figure_png(fig, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes (tight bounding box)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def html_figure(name: str, png: bytes, caption: str) -> str:
    """A ``<figure>`` with the PNG embedded as a data URI (self-contained pages)."""
    import base64

    data = base64.b64encode(png).decode("ascii")
    return (f"<figure><img alt='{html_text(name)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html_text(caption)}</figcaption></figure>")


HTML_MAX_ROWS = 60
"""Tables longer than this are cut in HTML (pandas' ``display.max_rows``) ..."""
HTML_KEEP_ROWS = 5
"""... to their first and last this many rows (pandas' ``display.min_rows`` = 10 in all)."""


def kept_rows(n: int, max_rows: int | None = HTML_MAX_ROWS, keep: int = HTML_KEEP_ROWS) -> tuple[range, range]:
    """``(head, tail)`` row indices a table of ``n`` rows shows: all rows when ``n <= max_rows``
    (``tail`` empty), else the first and last ``keep``.

    >>> kept_rows(3), kept_rows(100, 60, 2)
    ((range(0, 3), range(3, 3)), (range(0, 2), range(98, 100)))
    """
    if max_rows is None or n <= max_rows:
        return range(n), range(n, n)
    return range(keep), range(n - keep, n)


def html_table(header, rows, numeric=None, *, caption: str | None = None, n_rows: int | None = None,
               max_rows: int | None = None) -> str:
    """An HTML ``<table>`` (every cell through :func:`html_text`); ``numeric(i, cell)`` says which
    cells are right-aligned numbers (default: every cell but the first of a row).

    Long tables are cut as pandas does: ``rows`` longer than ``max_rows`` show their first and
    last :data:`HTML_KEEP_ROWS`, a row of ``…`` and, below, ``N rows × M columns``. ``n_rows``:
    the table's full length when ``rows`` is already cut to ``head + tail`` (:func:`kept_rows`).
    """
    numeric = numeric or (lambda i, c: i > 0)
    rows = list(rows)
    total = len(rows) if n_rows is None else n_rows
    if n_rows is None and max_rows is not None and total > max_rows:
        head, tail = kept_rows(total, max_rows)
        rows = [rows[i] for i in head] + [rows[i] for i in tail]
    cut = total > len(rows)

    def tr(row) -> str:
        return "<tr>" + "".join(f"<td{' class=n' if numeric(i, c) else ''}>{html_text(c)}</td>"
                                for i, c in enumerate(row)) + "</tr>"

    body = [tr(r) for r in rows]
    if cut:
        half = (len(rows) + 1) // 2
        body.insert(half, "<tr class='gap'>" + "<td>…</td>" * len(header) + "</tr>")
    cap = f"<caption>{html_text(caption)}</caption>" if caption else ""
    head = "".join(f"<th>{html_text(h)}</th>" for h in header)
    out = f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    if cut:
        out += f"<p class='count'>{total} rows × {len(header)} columns</p>"
    return out


FRAGMENT_CLASS = "whitenclip"
"""The class of the ``<div>`` wrapping every notebook fragment; all its CSS is scoped under it."""

_FRAGMENT_CSS = {
    "": "font-family:inherit;line-height:1.35",
    "table": "border-collapse:collapse;margin:.4em 0;font-size:.9em",
    "caption": "caption-side:top;text-align:left;font-weight:600;padding:.2em 0;white-space:nowrap",
    "td, th": "border:1px solid rgba(127,127,127,.35);padding:.2em .6em;text-align:left;vertical-align:top",
    "th": "background:rgba(127,127,127,.12)",
    "td.n": "text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap",
    "tr.gap td": "text-align:center;opacity:.7",
    "p": "margin:.3em 0",
    ".count, .muted": "opacity:.75;font-size:.88em",
    "h3": "font-size:1.15em;margin:.4em 0 .2em",
    "h4": "font-size:1em;margin:1em 0 .2em;border-bottom:1px solid rgba(127,127,127,.35)",
    ".verdict": "padding:.5em .8em;border-radius:6px;margin:.6em 0",
    ".ok": "background:rgba(60,170,80,.15);border:1px solid rgba(60,170,80,.6)",
    ".warn": "background:rgba(230,160,40,.15);border:1px solid rgba(230,160,40,.6)",
    ".bad": "background:rgba(220,60,60,.15);border:1px solid rgba(220,60,60,.6)",
    "figure": "margin:.6em 0",
    "figure img": "max-width:100%;border:1px solid rgba(127,127,127,.25)",
    "figcaption": "opacity:.8;font-size:.88em",
}


def scoped_css(rules: dict[str, str], scope: str = f".{FRAGMENT_CLASS}") -> str:
    """CSS with every selector prefixed by ``scope`` (``""`` styles the scope itself), so a
    fragment never restyles the notebook around it.

    >>> scoped_css({"": "color:red", "td, th": "padding:0"})
    '.whitenclip{color:red}.whitenclip td,.whitenclip th{padding:0}'
    """
    out = []
    for selector, body in rules.items():
        scoped = ",".join(f"{scope} {s.strip()}" if s.strip() else scope for s in selector.split(","))
        out.append(f"{scoped}{{{body}}}")
    return "".join(out)


def html_div(*parts: str) -> str:
    """A notebook fragment: ``parts`` inside ``<div class="whitenclip">`` with its scoped style."""
    return f"<div class='{FRAGMENT_CLASS}'><style>{scoped_css(_FRAGMENT_CSS)}</style>{''.join(parts)}</div>"


# ---------------------------------------------------------------------------------------
# user text: data, never markup
# ---------------------------------------------------------------------------------------
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                        "\ud800-\udfff]")
_NAMED_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape_char(match) -> str:
    c = match.group()
    o = ord(c)
    if c in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[c]
    if 0xDC80 <= o <= 0xDCFF:  # a byte that was not UTF-8, kept by os.fsdecode (surrogateescape)
        return f"\\x{o - 0xDC00:02x}"
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def visible(text) -> str:
    """``str(text)`` as it is shown: control characters (C0, DEL, C1), line/paragraph separators,
    bidi controls and lone surrogates (a non-UTF-8 file name's bytes under surrogateescape) written
    as backslash escapes (``\\n``, ``\\t``, ``\\x1b``, ``\\xff``, ``\\u202e``); all else unchanged.

    So one id is one line, a terminal never receives an escape sequence from data, and the text
    can always be encoded (UTF-8 stdout, JSON for notebooks).

    >>> visible("a\\tb\\x1b[31m"), visible(b"caf\\xe9.npy".decode("utf-8", "surrogateescape"))
    ('a\\\\tb\\\\x1b[31m', 'caf\\\\xe9.npy')
    """
    return _INVISIBLE.sub(_escape_char, str(text))


def rich_text(text, style: str = ""):
    """User text as a :class:`rich.text.Text`: shown literally (``[bold]``, ``[/]``, ``:smile:``
    stay as typed), through :func:`visible`."""
    from rich.text import Text

    return Text(visible(text), style=style)


def html_text(text) -> str:
    """User text for HTML: :func:`visible`, then :func:`html.escape` (quotes too)."""
    return html.escape(visible(text), quote=True)


REPR_WIDTH = 60
"""Characters one value may take in a bounded ``repr`` (the rest is cut, with ``…``)."""


def cut_text(text: str, width: int = REPR_WIDTH) -> str:
    """``text`` cut to ``width`` characters, the last one ``…`` when cut.

    >>> cut_text("abcdef", 4)
    'abc…'
    """
    return text if len(text) <= width else text[: width - 1] + "…"


def _short_repr(value) -> str:
    import numpy as np

    if isinstance(value, np.ndarray):
        return f"array(shape={value.shape}, dtype={value.dtype})"
    if isinstance(value, (list, tuple)) and len(value) > 6:
        return f"<{type(value).__name__} of {len(value)}>"
    return cut_text(visible(repr(value)))


def field_rows(data, prefix: str = "", limit: int = 8) -> list[tuple[str, str]]:
    """``(name, value)`` rows of a mapping, nested mappings flattened to dotted names, lists longer
    than ``limit`` shown as their first values and a count, floats to 6 significant digits.

    >>> field_rows({"a": 0.123456789, "b": {"c": [1, 2, 3]}, "d": list(range(20))}, limit=3)
    [('a', '0.123457'), ('b.c', '1, 2, 3'), ('d', '0, 1, 2, … (20 values)')]
    """
    if not isinstance(data, dict):
        return [(prefix or "value", _cell(data))]
    rows: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            rows += field_rows(value, name, limit)
        elif isinstance(value, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in value):
            rows.append((name, _nested_cell(value)))
        elif isinstance(value, (list, tuple)):
            shown = ", ".join(_cell(v) for v in value[:limit])
            rows.append((name, shown + (f", … ({len(value)} values)" if len(value) > limit else "") or "-"))
        else:
            rows.append((name, _cell(value)))
    return rows


def _nested_cell(values, width: int = 160) -> str:
    """A list holding mappings or lists: its JSON when short, else what it holds and how many."""
    text = json.dumps(json_safe(values), ensure_ascii=False, default=str)
    if len(text) <= width:
        return text
    if all(isinstance(v, dict) for v in values):
        keys = [str(k) for k in dict.fromkeys(k for v in values for k in v)]
        fields = ", ".join(keys[:8]) + (f", … ({len(keys)} fields)" if len(keys) > 8 else "")
        return f"{len(values)} {'entry' if len(values) == 1 else 'entries'} with {fields}"
    return f"{len(values)} entries: {cut_text(text, width)}"


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list, tuple)):
        return cut_text(json.dumps(json_safe(value), ensure_ascii=False, default=str), 200)
    return "-" if value is None else str(value)


def write_file(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`whitenclip.outputs.atomic_write`); returns ``path``."""
    from whitenclip.outputs import atomic_write

    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return path


def write_html(result, out_dir) -> dict[str, Path]:
    """Write ``result``'s HTML page into ``out_dir`` (see :func:`render_html`)."""
    _load_renderers()
    return render_html(result, Path(out_dir))
