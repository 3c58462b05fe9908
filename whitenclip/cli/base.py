"""The typer app and the manners every command shares: data on stdout, log lines on stderr, exit codes.

Exit codes: 0 ok, 1 runtime failure, 2 usage or bad input (one-line message naming the file and row;
``--debug`` for a traceback). Click's usage errors are one line too; warnings raised inside a command
become ``whitenclip: warning:`` lines (skipped inputs summarised past :data:`MAX_SKIP_WARNINGS`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings

import typer
import typer.core
from rich.console import Console

from whitenclip.errors import InputError, WhitenclipError, is_out_of_memory

# click's UsageError, as the click typer runs on raises it (typer may vendor its own click)
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class _OneLineUsageError(_UsageError):
    """A usage error (bad option value, unknown option, missing argument) shown as one line."""

    def show(self, file=None) -> None:
        command = self.ctx.command_path if self.ctx is not None else "whitenclip"
        from whitenclip.render import visible  # a bad path's control characters / undecodable bytes as escapes

        typer.echo(visible(f"whitenclip: error: {' '.join(self.format_message().split())} (see {command} --help)"),
                   file=file or sys.stderr)


class _OneLineUsageGroup(typer.core.TyperGroup):
    """Click's usage errors (usage, hint, error: 4 lines) become one line on stderr, exit 2."""

    def make_context(self, *args, **kwargs):
        with _one_line_usage():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _one_line_usage():
            return super().invoke(ctx)


@contextlib.contextmanager
def _one_line_usage():
    try:
        yield
    except _UsageError as exc:
        if isinstance(exc, _OneLineUsageError) or type(exc).__name__ == "NoArgsIsHelpError":
            raise  # (`whitenclip` alone prints its help)
        raise _OneLineUsageError(exc.format_message(), exc.ctx) from None


app = typer.Typer(
    name="whitenclip",
    help="Whitening, likelihoods, Gaussianity diagnostics and information estimates for contrastive embeddings.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=_OneLineUsageGroup,
)

_console = Console(stderr=True, highlight=False)
_state = {"debug": bool(os.environ.get("WHITENCLIP_DEBUG")), "quiet": False, "skips": 0}

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


# ---------------------------------------------------------------------------------------
# shared plumbing
# ---------------------------------------------------------------------------------------
def _print_line(message: str) -> None:
    """One line on stderr, shown literally: file names, ids and captions in ``message`` are data, never
    rich markup or ``:emoji:`` codes; control characters and undecodable bytes are written as escapes
    (:func:`whitenclip.render.rich_text`)."""
    from whitenclip.render import rich_text

    _console.print(rich_text(message), soft_wrap=True)


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    """Print ``whitenclip: error: message`` on stderr and exit with ``code``."""
    _print_line(f"whitenclip: error: {message}")
    raise typer.Exit(code)


def _log(message: str) -> None:
    """A progress/log line on stderr (silenced by --quiet)."""
    if not _state["quiet"]:
        _print_line(message)


MAX_SKIP_WARNINGS = 20
"""Skip warnings printed one by one; past this, one summary line says how many more there were."""


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if category.__name__ == "InputSkipWarning":
        _state["skips"] += 1
        if _state["skips"] > MAX_SKIP_WARNINGS:
            return
    _print_line(f"whitenclip: warning: {message}")


def _flush_skip_warnings() -> None:
    hidden = _state["skips"] - MAX_SKIP_WARNINGS
    if hidden > 0:
        _print_line(f"whitenclip: warning: ... and {hidden} more skipped item(s) not shown ({_state['skips']} in all)")
    _state["skips"] = 0


def _handles_errors(func):
    """Run a command with whitenclip's error manners: one line on stderr and a meaningful exit code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            # PIL's DecompressionBombWarning names no file; inputs.load_image warns naming it
            warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit")
            warnings.showwarning = _show_warning
            try:
                return func(*args, **kwargs)
            except (typer.Exit, typer.Abort):
                raise
            except InputError as exc:
                _reraise_in_debug()
                _fail(str(exc), EXIT_USAGE)
            except WhitenclipError as exc:
                _reraise_in_debug()
                _fail(str(exc), EXIT_FAILURE)
            except BrokenPipeError:
                _silence_stdout()
                raise typer.Exit(EXIT_OK)
            except KeyboardInterrupt:
                _fail("interrupted", 130)
            except MemoryError:
                _reraise_in_debug()
                _fail(out_of_memory_hint(func), EXIT_FAILURE)
            except Exception as exc:  # an unexpected failure still gets one line, never a traceback
                _reraise_in_debug()
                if is_out_of_memory(exc):  # e.g. "libtorch_cpu.so: failed to map segment" under prlimit --as
                    _fail(out_of_memory_hint(func), EXIT_FAILURE)
                _fail(f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())} "
                      "(rerun with --debug for a traceback)", EXIT_FAILURE)
            finally:
                _flush_skip_warnings()

    return wrapper


def out_of_memory_hint(command) -> str:
    """The out-of-memory line: names --chunk-rows only to commands that have that option."""
    import inspect

    has_chunks = "chunk_rows" in inspect.signature(command).parameters
    return "out of memory (try " + ("smaller --chunk-rows or " if has_chunks else "") + "fewer or smaller inputs)"


def _reraise_in_debug() -> None:
    if _state["debug"]:
        raise


def _silence_stdout() -> None:
    with contextlib.suppress(Exception):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _given_options(free) -> list[str]:
    """Options of the running command typed on the command line (not defaults, not env), except ``free``."""
    import importlib

    # the click typer runs on (typer may vendor its own, as for _UsageError above)
    core = sys.modules[next(c for c in typer.Context.__mro__ if c.__module__.endswith(".core")).__module__]
    ctx = importlib.import_module(core.__name__.rsplit(".", 1)[0] + ".globals").get_current_context()
    return [p.opts[0] for p in ctx.command.params if p.name not in free and p.opts
            and ctx.get_parameter_source(p.name) is core.ParameterSource.COMMANDLINE]


def _print_version(value: bool) -> None:
    if value:
        from whitenclip import __version__

        typer.echo(f"whitenclip {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _global_options(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or log lines on stderr."),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print whitenclip's version and exit."),
) -> None:
    if debug:
        _enable_debug()
    _state["quiet"] = quiet


def _set_quiet(value: bool) -> bool:
    if value:
        _state["quiet"] = True
    return value


def _set_debug(value: bool) -> bool:
    if value:
        _enable_debug()
    return value


def _enable_debug() -> None:
    """--debug: tracebacks on errors, and the hub / open_clip log lines that are hidden otherwise."""
    import logging

    _state["debug"] = True
    os.environ["WHITENCLIP_DEBUG"] = "1"
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("whitenclip").setLevel(logging.DEBUG)


def _render(result, fmt: str) -> None:
    """Data on stdout: ``result`` as a table, JSON or rows (see :mod:`whitenclip.render`)."""
    from whitenclip.render import render

    render(result, fmt)


def main() -> None:
    """Console-script entry point."""
    app()
