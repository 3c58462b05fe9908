"""Writing scores: to stdout, one file, or one file per shard (``-o DIR/``), in input order."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Callable

from whitenclip.engine.drivers import iter_scores, plan
from whitenclip.engine.options import EngineOptions
from whitenclip.errors import InputError


def shard_output_names(paths, suffix: str) -> list[str]:
    """Names of the per-shard files of ``-o DIR/``, unique per shard: ``<stem>.<suffix>`` when the
    stems differ, else each shard's path relative to the shards' common folder with its suffix
    replaced (``A/shard-00000.tsv``, ``B/shard-00000.tsv``). A shard given twice, or two shards
    whose names still clash (``a.npy`` and ``a.safetensors`` side by side), are refused.

    >>> shard_output_names(["e/img_emb_0.npy", "e/img_emb_1.npy"], "tsv")
    ['img_emb_0.tsv', 'img_emb_1.tsv']
    >>> shard_output_names(["/s/A/shard-00000.npy", "/s/B/shard-00000.npy"], "tsv")
    ['A/shard-00000.tsv', 'B/shard-00000.tsv']
    """
    paths = [str(p) for p in paths]
    first: dict[str, str] = {}
    for p in paths:
        seen = first.setdefault(os.path.realpath(p), p)
        if seen is not p:
            raise InputError(f"{p}: given twice; its per-shard output file would be written twice "
                             "(give each input once, or write one file with -o FILE)")
    names = [f"{Path(p).stem}.{suffix}" for p in paths]
    if len(set(names)) < len(names):
        absolute = [os.path.abspath(p) for p in paths]
        root = os.path.commonpath([os.path.dirname(a) for a in absolute])
        names = [Path(os.path.relpath(a, root)).with_suffix(f".{suffix}").as_posix() for a in absolute]
    clash: dict[str, str] = {}
    for p, name in zip(paths, names):
        if name in clash:
            raise InputError(f"{p}: its per-shard output {name} clashes with that of {clash[name]}; "
                             "rename one, or write one file with -o FILE")
        clash[name] = p
    return names


def write_scores(inputs, opts: EngineOptions, whitener, *, output, format_rows: Callable, header: str,
                 suffix: str, drop_nonfinite: bool = False, stdout=None, protected=()) -> int:
    """Score INPUTs and write rows in input order: to ``stdout``, to one file (atomically), or, when
    ``output`` is a directory (exists, or ends with ``/``: then created), one file per shard
    ``DIR/<name>.<suffix>`` (names from :func:`shard_output_names`, unique per shard).
    Before any work, every file to be written is checked against every input and shard and
    against ``protected`` (e.g. the whitener; :func:`whitenclip.outputs.check_output_files`).
    ``format_rows(table)`` renders a :class:`~whitenclip.likelihood.ScoreTable` (the caller's
    renderer: the engine writes no format of its own). The header is written with the first
    rows (or at the end when there are none), so a run failing before its first row writes
    nothing. Returns the number of rows written."""

    from whitenclip.outputs import atomic_write, check_output_dir, check_output_files, wants_directory

    out_dir = output is not None and str(output) != "-" and wants_directory(output)
    rows = 0
    if not out_dir:
        with contextlib.ExitStack() as stack:
            if output is None or str(output) == "-":
                sink = stdout or sys.stdout
            else:
                sink = stack.enter_context(atomic_write(output, "w"))
            for _, table in iter_scores(inputs, opts, whitener, drop_nonfinite=drop_nonfinite):
                text = format_rows(table)
                if text:
                    sink.write(header + text if header else text)
                    header = ""
                rows += table.n_rows
            if header:
                sink.write(header)
        return rows
    shards = plan(inputs, opts)[0]
    files = [Path(output) / name for name in shard_output_names([s.path for s in shards], suffix)]
    check_output_dir(output, inputs=[*inputs, *protected])
    check_output_files(files, inputs=[*inputs, *protected, *(s.path for s in shards)])
    where = dict(zip((s.path for s in shards), files))
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
    current, stack = None, contextlib.ExitStack()
    try:
        for path, table in iter_scores(inputs, opts, whitener, drop_nonfinite=drop_nonfinite):
            if path != current:
                stack.close()
                stack = contextlib.ExitStack()
                sink = stack.enter_context(atomic_write(where[path], "w"))
                sink.write(header)
                current = path
            sink.write(format_rows(table))
            rows += table.n_rows
    except BaseException:
        stack.__exit__(*sys.exc_info())
        raise
    stack.close()
    for shard in shards:
        if shard.n_rows == 0:  # an empty shard still gets its (header-only) file
            with atomic_write(where[shard.path], "w") as fh:
                fh.write(header)
    return rows
