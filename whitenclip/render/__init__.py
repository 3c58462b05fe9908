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


def write_html(result, out_dir) -> dict[str, Path]:
    """Write ``result``'s HTML page into ``out_dir`` (see :func:`render_html`)."""
    _load_renderers()
    return render_html(result, Path(out_dir))
