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
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
from pathlib import Path
from typing import IO

from whitenclip.results import json_safe

FORMATS = ("table", "json", "tsv", "csv", "jsonl", "html")
ROW_FORMATS = ("tsv", "csv", "jsonl")

# submodules that register renderers; imported on first use (keeps `whitenclip --help` fast)
_RENDERER_MODULES = ("gaussianity", "information", "tables", "simulate", "engine")


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
    """``result`` as HTML for a notebook cell (``Result._repr_html_``).

    Default: the terminal table (:func:`render_table`) exported by rich as preformatted HTML;
    result types with a page of their own (the Gaussianity report, ``simulate``) register it,
    figures inline.
    """
    import io

    from rich.console import Console

    console = Console(file=io.StringIO(), record=True, width=120, color_system="truecolor")
    render_table(result, console)
    return console.export_html(inline_styles=True, code_format="<pre style='font-family:monospace'>{code}</pre>")


def to_html(result) -> str:
    """``result`` as an HTML fragment (see :func:`html_fragment`)."""
    _load_renderers()
    return html_fragment(result)


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
    import html

    data = base64.b64encode(png).decode("ascii")
    return (f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def html_table(header, rows, numeric=None) -> str:
    """An HTML table; ``numeric(i, cell)`` says which cells are right-aligned numbers
    (default: every cell but the first of a row)."""
    import html

    numeric = numeric or (lambda i, c: i > 0)
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td{' class=n' if numeric(i, c) else ''}>{html.escape(str(c))}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


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
