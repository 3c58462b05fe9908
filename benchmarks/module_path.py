"""The library modules a command's embedding rows pass through, in order.

Runs one ``whitenclip`` command in this process under :func:`sys.setprofile`. Printed first: the
call stack (library frames, innermost first, consecutive frames of one module joined) at the
first moment a reader hands rows back: the modules the rows travel up through. Then the first
chunk of rows is followed: every call that receives a 2-D float array (of at least one row) and every
return or ``yield`` that hands one back is an event; the module of each event, with consecutive
repeats collapsed, is the path. Printed: the path up to the first event in
``whitenclip.moments`` / ``whitenclip.whitening`` (where rows become sums), the number of module
changes on it, and every module that ever touched rows, by first touch.

    python benchmarks/module_path.py fit STORE -o /tmp/w.safetensors

Used for the before/after figures of the reading-layer restructuring (docs/layout.md).
"""

from __future__ import annotations

import sys

import numpy as np


def _rows(value) -> bool:
    if isinstance(value, np.ndarray):
        return value.ndim == 2 and value.shape[0] > 0 and value.dtype.kind == "f"
    if isinstance(value, (tuple, list)) and len(value) <= 4:
        return any(isinstance(v, np.ndarray) and _rows(v) for v in value)
    return False


def trace(argv: list[str]) -> tuple[list[tuple[str, str, str]], list[str]]:
    """``(event, module, function)`` of each row-bearing call/return while ``whitenclip argv`` runs,
    and the stack (innermost first, ``module.function``) of the first return that hands rows back."""
    events: list[tuple[str, str, str]] = []
    stack: list[str] = []

    def profile(frame, event, arg):
        mod = frame.f_globals.get("__name__", "")
        if not mod.startswith("whitenclip"):
            return
        if event == "call":
            code = frame.f_code
            args = [frame.f_locals.get(n) for n in code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]]
            if any(_rows(a) for a in args):
                events.append(("call", mod, code.co_name))
        elif event == "return" and _rows(arg):
            events.append(("return", mod, frame.f_code.co_name))
            if not stack:
                f = frame
                while f is not None:
                    name = f.f_globals.get("__name__", "")
                    if name.startswith("whitenclip"):
                        stack.append(f"{name}.{f.f_code.co_name}")
                    f = f.f_back

    from whitenclip.cli import main

    sys.argv = ["whitenclip", *argv]
    sys.setprofile(profile)
    try:
        main()
    except SystemExit:
        pass
    finally:
        sys.setprofile(None)
    return events, stack


def collapse(steps: list[str]) -> list[str]:
    """Consecutive steps in one module joined: ``mod.f`` then ``mod.g`` -> ``mod.f/g``."""
    out: list[str] = []
    for step in steps:
        mod, func = step.rsplit(".", 1)
        if out and out[-1].rsplit(".", 1)[0] == mod:
            out[-1] += f"/{func}"
        else:
            out.append(step)
    return out


def first_chunk_path(events, sinks=("whitenclip.moments", "whitenclip.whitening")) -> list[str]:
    path: list[str] = []
    for _, mod, func in events:
        step = f"{mod}.{func}"
        if not path or path[-1].rsplit(".", 1)[0] != mod:
            path.append(step)
        if mod.startswith(sinks):
            break
    return path


def main_(argv: list[str]) -> None:
    events, stack = trace(argv)
    path = first_chunk_path(events)
    print(f"whitenclip {' '.join(argv)}")
    up = collapse(stack)
    print(f"the first rows read travel up {len(up)} module frames (innermost first):")
    for step in up:
        print(f"  {step}")
    print(f"first chunk: {len(path)} modules, {len(path) - 1} changes")
    for step in path:
        print(f"  {step}")
    seen: list[str] = []
    for _, mod, _ in events:
        if mod not in seen:
            seen.append(mod)
    print("every module that touched rows, by first touch: " + " -> ".join(seen))


if __name__ == "__main__":
    main_(sys.argv[1:])
