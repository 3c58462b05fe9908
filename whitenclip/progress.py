"""Progress of long work on stderr: a rich bar on a terminal, plain lines at a steady cadence otherwise.

When stderr is not a terminal (``nohup``, SLURM, ``2>log``) a bar would either be dropped (rich
prints nothing to a file until it stops) or smear control codes through the log, so long work
prints one plain line every :data:`INTERVAL_SECONDS` instead, as pip and tqdm do::

    embedding texts: 12,288/40,455 (30%), 204 items/s, elapsed 1:00, eta 2:18

and one closing line (``done in ...``) when it printed any. Work shorter than one interval prints
nothing. ``WHITENCLIP_PROGRESS_SECONDS`` sets the interval (``0``: a line per update, for tests).
The caller decides whether progress is wanted at all (``--quiet`` says no).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

INTERVAL_SECONDS = 15.0
"""Seconds between two progress lines when stderr is not a terminal (``WHITENCLIP_PROGRESS_SECONDS``)."""


clock = time.monotonic
"""The clock of :class:`LineProgress` (seconds; a test may replace it)."""


def interval_seconds() -> float:
    """The line cadence: ``WHITENCLIP_PROGRESS_SECONDS`` when set to a number >= 0, else :data:`INTERVAL_SECONDS`."""
    text = os.environ.get("WHITENCLIP_PROGRESS_SECONDS", "")
    try:
        value = float(text)
    except ValueError:
        return INTERVAL_SECONDS
    return value if value >= 0 else INTERVAL_SECONDS


def duration(seconds: float) -> str:
    """``H:MM:SS`` or ``M:SS``.

    >>> duration(5), duration(138.4), duration(3725)
    ('0:05', '2:18', '1:02:05')
    """
    s = int(round(max(seconds, 0.0)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class LineProgress:
    """Counts work done toward ``total`` and writes a line to ``stream`` at most every ``interval`` seconds.

    Parameters
    ----------
    total : int
        Units of work expected (items, steps); 0 or None: unknown (no percentage or ETA).
    label : str
        What is being done (``"embedding texts"``); user text is printed as is (no markup).
    unit : str
        Name of the units in the rate (``items/s``, ``steps/s``).
    stream : file, optional
        Default: ``sys.stderr`` at the time of each line.
    interval : float, optional
        Seconds between lines (default :func:`interval_seconds`).
    clock : callable, optional
        Monotonic seconds (default :data:`clock`, ``time.monotonic``); tests pass a fake one.

    Examples
    --------
    >>> import io
    >>> t = [0.0]
    >>> out = io.StringIO()
    >>> p = LineProgress(1000, "embedding texts", stream=out, interval=10, clock=lambda: t[0])
    >>> t[0] = 5.0; p.advance(100)      # before the first interval: nothing
    >>> t[0] = 12.0; p.advance(140)
    >>> p.close()
    >>> print(out.getvalue(), end="")
    embedding texts: 240/1,000 (24%), 20 items/s, elapsed 0:12, eta 0:38
    embedding texts: 240/1,000 (24%), 20 items/s, stopped after 0:12
    """

    def __init__(self, total: int | None, label: str, *, unit: str = "items", stream=None,
                 interval: float | None = None, clock=None):
        clock = clock if clock is not None else globals()["clock"]
        self.total = int(total) if total else 0
        self.label, self.unit = label, unit
        self.stream = stream
        self.interval = interval_seconds() if interval is None else float(interval)
        self.clock = clock
        self.done = 0
        self.lines = 0
        self.start = self.last = self.latest = clock()

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more units; write a line when the interval has passed since the last one."""
        self.done += int(n)
        now = self.latest = self.clock()
        if n and now - self.last >= self.interval and not (self.total and self.done >= self.total):  # end: close()
            self.last = now
            self._write(self.line(now))

    def line(self, now: float | None = None, *, final: bool = False) -> str:
        """The progress line at time ``now``: count, percentage, rate, elapsed and ETA (or the closing words)."""
        now = self.clock() if now is None else now
        elapsed = max(now - self.start, 0.0)
        rate = self.done / elapsed if elapsed > 0 else 0.0
        text = f"{self.label}: {self.done:,}"
        if self.total:
            text += f"/{self.total:,} ({100.0 * self.done / self.total:.0f}%)"
        text += f", {_rate(rate)} {self.unit}/s"
        if final:
            finished = self.total and self.done >= self.total
            return text + (f", done in {duration(elapsed)}" if finished else f", stopped after {duration(elapsed)}")
        text += f", elapsed {duration(elapsed)}"
        if self.total and rate > 0:
            text += f", eta {duration((self.total - self.done) / rate)}"
        return text

    def close(self) -> None:
        """The closing line (timed at the last :meth:`advance`), when any line was written (short work
        stays silent)."""
        if self.lines:
            self._write(self.line(self.latest, final=True))
            self.lines = 0

    def _write(self, text: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        try:
            stream.write(text + "\n")
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr never stops the work
            return
        self.lines += 1


def _rate(rate: float) -> str:
    return f"{rate:,.0f}" if rate >= 10 else f"{rate:.2g}" if rate > 0 else "0"


def is_terminal(stream=None) -> bool:
    """True when ``stream`` (default ``sys.stderr``) is a terminal."""
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def progress(enabled: bool, total: int | None, label: str, *, unit: str = "items", bar_factory=None):
    """Yield ``advance(n)``: nothing when not ``enabled``; on a terminal the rich bar ``bar_factory(total,
    label)`` makes (a context manager yielding ``advance``, e.g. :func:`rich_bar`), when given; otherwise
    :class:`LineProgress` lines (also on a terminal without a bar: reads of files print nothing unless long)."""
    if not enabled:
        yield lambda n: None
        return
    if bar_factory is not None and is_terminal():
        with bar_factory(total, label) as advance:
            yield advance
        return
    lines = LineProgress(total, label, unit=unit)
    try:
        yield lines.advance
    finally:
        lines.close()


@contextlib.contextmanager
def rich_bar(total: int, label: str):
    """Yield ``advance(n)`` of a rich bar on stderr with items/s and ETA."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class _Rate(ProgressColumn):
        def render(self, task):
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} items/s" if speed else "? items/s")

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(),
                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


class LineBoard:
    """rich ``Progress``'s ``add_task`` / ``update`` / ``stop`` for runs that report by task
    (``simulate``'s one run per loss and seed), as :class:`LineProgress` lines off a terminal."""

    def __init__(self, *, unit: str = "steps", stream=None, interval: float | None = None, clock=None):
        self.unit, self.stream, self.interval, self.clock = unit, stream, interval, clock
        self.tasks: list[LineProgress] = []

    def add_task(self, description: str, total: int | None = None) -> int:
        self.tasks.append(LineProgress(total, description, unit=self.unit, stream=self.stream,
                                       interval=self.interval, clock=self.clock))
        return len(self.tasks) - 1

    def update(self, task_id: int, advance: int = 0) -> None:
        task = self.tasks[task_id]
        task.advance(advance)
        if task.total and task.done >= task.total:
            task.close()

    def stop(self) -> None:
        for task in self.tasks:
            task.close()
