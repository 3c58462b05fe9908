"""User text is data, never markup: ids, file names, artifact fields and log lines show literally.

Every string goes through the renderer once (``render.rich_text`` / ``render.html_text``): rich
markup (``[bold]``, ``[/]``, ``[link=...]``), ``:emoji:`` codes and HTML stay as typed; control
characters, bidi overrides and undecodable bytes (surrogateescape file names) are shown as
backslash escapes, so a terminal never receives an escape sequence from data and one id is one line.
The expected form is spelled out here (:func:`shown`), independently of the library.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import io
import os
import re
import warnings
from html.parser import HTMLParser

import numpy as np
import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from whitenclip import Whitener, score
from whitenclip.cli import base as cli
from whitenclip.render import render
from whitenclip.whitening import summarize

PROPERTY = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

TOKENS = ["[", "]", "[/]", "[bold]", "[/bold]", "[link=javascript:alert(1)]", "[/link]", "[red]", "\\[", "<script>",
          "</script>", "<b>", "&", "&amp;", '"', "'", ":smile:", ":warning:", "\x1b[31m", "\x1b]8;;http://x\x07",
          "\x00", "\n", "\r", "\t", "\x07", "\x7f", "\x9b", "\u202e", "\u2028", "\\", "x", " ", "é", "中"]
USER_TEXT = st.one_of(
    st.text(max_size=24),  # any Unicode but lone surrogates
    st.lists(st.sampled_from(TOKENS), max_size=8).map("".join),
    st.binary(max_size=12).map(lambda b: b.decode("utf-8", "surrogateescape")),  # a non-UTF-8 file name
)


def shown(text: str) -> str:
    """How ``text`` must appear: C0/DEL/C1 controls, U+2028/9, bidi controls and lone surrogates as
    backslash escapes (``\\n`` ``\\t`` ``\\r``, a surrogateescape byte as ``\\xNN``), all else as typed."""
    def esc(m):
        c = m.group()
        o = ord(c)
        if c in "\t\n\r":
            return {"\t": "\\t", "\n": "\\n", "\r": "\\r"}[c]
        if 0xDC80 <= o <= 0xDCFF:
            return f"\\x{o - 0xDC00:02x}"
        return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"

    return re.sub("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]",
                  esc, text)


def terminal(result) -> str:
    """``result``'s table as a wide, colourless terminal shows it."""
    buf = io.StringIO()
    render(result, "table", console=Console(file=buf, width=3000, color_system=None, force_terminal=False))
    return buf.getvalue()


class _Cells(HTMLParser):
    """Text of every <td>, <th> and <caption> (entities decoded) and every tag seen."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.cells, self.tags, self._open = [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("td", "th", "caption"):
            self._open = []

    def handle_endtag(self, tag):
        if tag in ("td", "th", "caption") and self._open is not None:
            self.cells.append("".join(self._open))
            self._open = None

    def handle_data(self, data):
        if self._open is not None:
            self._open.append(data)


def cells(fragment: str) -> _Cells:
    p = _Cells()
    p.feed(fragment)
    p.close()
    return p


def assert_safe_html(fragment: str) -> None:
    """No element or attribute came from data: only the renderer's own tags, no link, no script."""
    p = cells(fragment)
    assert {t for t, _ in p.tags} <= {"div", "style", "table", "caption", "thead", "tbody", "tr", "th", "td", "p"}
    assert all(set(a) <= {"class"} for _, a in p.tags), [a for _, a in p.tags if set(a) - {"class"}]
    fragment.encode("utf-8")  # a notebook sends it as UTF-8 JSON: no lone surrogates


@pytest.fixture(scope="module")
def whitener():
    return Whitener().fit(np.random.default_rng(0).standard_normal((40, 3)))


@pytest.fixture(scope="module")
def rows(whitener):
    return np.random.default_rng(1).standard_normal((2, 3))


# ---------------------------------------------------------------------------------------
# ScoreTable ids
# ---------------------------------------------------------------------------------------
@PROPERTY
@given(user_id=USER_TEXT)
def test_score_table_ids_show_literally(whitener, rows, user_id):
    table = score(whitener, rows, ids=[user_id, "plain"])
    out = terminal(table)
    lines = [line for line in out.splitlines() if "plain" in line or shown(user_id) in line]
    assert any(shown(user_id) in line for line in lines), out
    assert "\x1b" not in out and "\r" not in out
    frag = table._repr_html_()
    assert_safe_html(frag)
    assert html.escape(shown(user_id), quote=True) in frag
    assert shown(user_id) in cells(frag).cells
    assert shown(user_id)[:40] in repr(table)


def test_score_table_markup_ids_examples(whitener, rows):
    """The reported cases: a link id is not a link, ``[/]`` is not an internal error, [bold] stays."""
    ids = ["[link=javascript:alert(1)]x[/link]", "[/]"]
    table = score(whitener, rows, ids=ids)
    frag = table._repr_html_()
    assert "<a " not in frag and "javascript:alert(1)]x[/link]</td>" in frag
    out = terminal(table)
    assert "[link=javascript:alert(1)]x[/link]" in out and "│ [/]" in out
    assert "[bold]r7[/bold]" in terminal(score(whitener, rows[:1], ids=["[bold]r7[/bold]"]))
    assert "😄" not in terminal(score(whitener, rows[:1], ids=[":smile:"]))


# ---------------------------------------------------------------------------------------
# whitener summary: file name and artifact fields
# ---------------------------------------------------------------------------------------
@PROPERTY
@given(name=USER_TEXT, encoder=USER_TEXT)
def test_whitener_summary_fields_show_literally(whitener, name, encoder):
    base = summarize(whitener, path=name)
    summary = dataclasses.replace(base, header={**base.header, "encoder": encoder})
    out = terminal(summary)
    assert f"whitener {shown(name)}" in out.splitlines()[0]
    assert any(line.startswith("│ encoder ") and shown(encoder) in line for line in out.splitlines()), out
    assert "\x1b" not in out
    frag = summary._repr_html_()
    assert_safe_html(frag)
    p = cells(frag)
    assert f"whitener {shown(name)}" in p.cells and shown(encoder) in p.cells


def test_info_shows_the_file_name_and_artifact_fields_literally(tmp_path):
    """`whitenclip info 'W[v2].safetensors'` names that file (not W.safetensors); an ``encoder`` field
    holding markup is text, not a link (nor a MarkupError)."""
    wh = Whitener().fit(np.random.default_rng(0).standard_normal((40, 3)))
    wh.metadata_ = {**wh.metadata_, "encoder": "[link=javascript:alert(1)]x[/link] [/] :smile:"}
    (tmp_path / "runs[").mkdir()
    path = tmp_path / "runs[" / "]W[v2] [red]:smile:.safetensors"  # ".../runs[/]W[v2] ..."
    wh.save(path)
    res = CliRunner().invoke(cli.app, ["info", str(path)])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0] == f"whitener {path}"
    assert any(line.startswith("│ encoder ") and "[link=javascript:alert(1)]x[/link] [/] :smile:" in line
               for line in lines), res.stdout


def test_error_line_names_a_non_utf8_markup_file_literally(tmp_path):
    os.mkdir(os.fsencode(tmp_path) + b"/W[")
    raw = os.fsencode(tmp_path) + b"/W[/]\xff[bold].safetensors"
    with open(raw, "wb") as fh:
        fh.write(b"not a whitener")
    res = CliRunner().invoke(cli.app, ["info", os.fsdecode(raw)])
    assert res.exit_code == 2
    err = res.stderr
    assert err.startswith("whitenclip: error: ") and err.count("\n") == 1, err
    assert f"{tmp_path}/W[/]\\xff[bold].safetensors" in err


# ---------------------------------------------------------------------------------------
# log, warning and error lines (cli._log, _show_warning, _fail)
# ---------------------------------------------------------------------------------------
def _stderr_of(fn) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        fn()
    return buf.getvalue()


@PROPERTY
@given(text=USER_TEXT)
def test_log_warning_and_error_lines_show_literally(text):
    quiet = cli._state["quiet"]
    cli._state["quiet"] = False
    try:
        log = _stderr_of(lambda: cli._log(f"reading {text}"))
        warn = _stderr_of(lambda: cli._show_warning(UserWarning(f"skipped {text}"), UserWarning, "f.py", 1))

        def fail():
            with pytest.raises(typer.Exit) as exc:
                cli._fail(f"{text}: not a whitener")
            assert exc.value.exit_code == 2

        err = _stderr_of(fail)
    finally:
        cli._state["quiet"] = quiet
    assert log == f"reading {shown(text)}\n"
    assert warn == f"whitenclip: warning: skipped {shown(text)}\n"
    assert err == f"whitenclip: error: {shown(text)}: not a whitener\n"


def test_warning_display_in_a_command_keeps_markup(tmp_path):
    """A warning raised inside a command (shown by the CLI's warning hook) keeps ``[/]`` and ``:smile:``."""
    @cli._handles_errors
    def command():
        warnings.warn("skipped [/]:smile:\x1b[2J.jpg", UserWarning, stacklevel=1)

    err = _stderr_of(command)
    assert err == "whitenclip: warning: skipped [/]:smile:\\x1b[2J.jpg\n"
