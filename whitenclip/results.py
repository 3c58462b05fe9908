"""Typed results: every analysis returns a frozen dataclass that knows how to become a dict.

A result is a ``@dataclass(frozen=True)`` subclass of :class:`Result`. Its fields are the
numbers a caller reads by attribute (a typo fails loudly); :meth:`Result.to_dict` turns it into
the JSON-ready mapping users rely on (``--json``), recursing into nested results, and
:func:`json_safe` is the one sanitiser (numpy to Python, NaN/inf to None).

Rendering (terminal tables, JSON, rows, HTML) lives in :mod:`whitenclip.render` alone. Row
results (one entry per input row, e.g. ``ScoreTable``) are declared ``repr=False`` so that
``repr()`` shows a few rows and a count, not every value.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Pair(Result):
...     a: float
...     b: float | None = None
>>> Pair(1.5, float("nan")).to_dict()
{'a': 1.5, 'b': None}
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Result:
    """Base of whitenclip's result types (frozen dataclasses with :meth:`to_dict`)."""

    def to_dict(self) -> dict[str, Any]:
        """Fields as a JSON-ready dict (nested results become dicts; NaN/inf become None).

        Subclasses override this to rename or add keys, keeping the documented JSON layout.
        """
        return {f.name: json_safe(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def _repr_html_(self) -> str:
        """Rich display in Jupyter: the result's HTML fragment from :func:`whitenclip.render.to_html`
        (a ``<div>`` with scoped CSS and ``<table>`` elements, long tables cut; never a page)."""
        from whitenclip.render import to_html  # the renderer is the one place results become text

        return to_html(self)

    def __repr__(self) -> str:
        """A bounded ``repr`` (:func:`whitenclip.render.to_repr`: a few rows and a count for row
        results). Used by subclasses declared ``@dataclass(repr=False)``; the others keep the
        dataclass ``repr`` of their fields."""
        from whitenclip.render import to_repr

        return to_repr(self)


def json_safe(obj, notes: list[str] | None = None, path: str = ""):
    """``obj`` with numpy scalars/arrays as Python values, results as dicts and NaN/inf as None.

    Each non-finite value replaced is noted in ``notes`` (when given) with its ``path``, except
    inside lists.

    >>> json_safe({"x": np.float32(2.0), "y": [np.inf, 1], "z": np.arange(2)})
    {'x': 2.0, 'y': [None, 1], 'z': [0, 1]}
    """
    if isinstance(obj, Result):
        return json_safe(obj.to_dict(), notes, path)
    if isinstance(obj, dict):
        return {str(k): json_safe(v, notes, f"{path}.{k}" if path else str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v, None, f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist(), None, path)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        if math.isfinite(v):
            return v
        if notes is not None:
            notes.append(f"{path}: non-finite value ({v}) replaced by null")
        return None
    return obj
