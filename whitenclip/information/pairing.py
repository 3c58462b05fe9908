"""Pairing the rows of two inputs for MI: what a side's ids are (:func:`ids_kind`) and :func:`pair_rows`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from whitenclip.errors import InputError

PAIR_BY = ("id", "row")
"""Explicit pairing rules of :func:`pair_rows` (``mi --pair-by``); None = the automatic rule."""
ID_KINDS = ("ids", "captions", "none")
"""What a side's row ids are (:func:`ids_kind`): real ids, its own captions, or row numbers only."""


def ids_kind(source) -> str:
    """What the row ids of an opened source are, for pairing (:func:`pair_rows`):

    * ``"ids"``: ids of their own: an id column of a table (``--id-column``, or its ``id`` column;
      integers ``0..n-1`` included), ``.npz``/``.safetensors``/``.pt`` ids, image paths (raw images
      or an image store);
    * ``"captions"``: the ids are the caption text itself (raw captions, or a caption store:
      ``embed`` names each caption row by its caption);
    * ``"none"``: row numbers the reader made up (``.npy``, text vectors, a table without an id column).

    ``source``: a :class:`~whitenclip.readers.rows.EmbeddingFile` or :class:`~whitenclip.sources.EncodedSource`.
    """
    inputs = getattr(source, "inputs", None)
    if inputs is not None:  # raw images/captions: each item (path or caption) is its id
        return "captions" if inputs.modality == "text" else "ids"
    # an EmbeddingFile's shards say where their ids come from (None: the row index; a table: its id column)
    if not any(s.ids is not None for s in getattr(source, "shards", ())):
        return "none"
    p = Path(str(source.path))
    store = p.is_dir() and (p / "meta.json").is_file()
    return "captions" if store and (source.meta or {}).get("modality") == "text" else "ids"


def pair_rows(ids_x, X, ids_y, Y, name_x="X", name_y="Y", *, kinds=(None, None), pair_by=None):
    """Pair the rows of two inputs: ``(ids, X, Y, how)``, ``how`` = ``"id"`` (Y reordered) or ``"row"``.

    ``kinds``: :func:`ids_kind` of each side (None: inferred, ids equal to the row numbers
    ``"0", "1", ...`` then count as none). The rule (``pair_by=None``):

    * both sides carry real ids (``"ids"``): paired by id. Identical lists pair row i with row i,
      the same ids in another order reorder ``Y`` (``how = "id"``), and anything else is refused
      naming the first id found on one side only (or the first duplicate);
    * either side has no ids, or its ids are its own captions: paired by row (row i with row i;
      the row counts must agree).

    ``pair_by="id"`` pairs by id whatever the kinds (captions included), and is refused when a
    side has no ids; ``pair_by="row"`` pairs by position. An id read as ``"None"`` (a null in the
    file) is refused when pairing by id: it names no row.
    """
    if pair_by not in (None, *PAIR_BY):
        raise InputError(f"pair_by must be one of {', '.join(PAIR_BY)} or None; got {pair_by!r}")
    kinds = tuple(k if k is not None else ("ids" if _own_ids(i, A.shape[0]) else "none")
                  for k, i, A in zip(kinds, (ids_x, ids_y), (X, Y)))
    by_id = kinds == ("ids", "ids") if pair_by is None else pair_by == "id"
    if pair_by == "id":
        for kind, name in zip(kinds, (name_x, name_y)):
            if kind == "none":
                raise InputError(f"--pair-by id: {name} has no ids (its rows are only numbered); "
                                 "pair by row (--pair-by row), or give ids (an id column, .npz/.safetensors ids)")
    if not by_id:
        if X.shape[0] != Y.shape[0]:
            raise InputError(f"{name_x} has {X.shape[0]} rows but {name_y} has {Y.shape[0]}; "
                             "mi needs paired rows (row i with row i)")
        return list(ids_x), X, Y, "row"
    for ids, name in ((ids_x, name_x), (ids_y, name_y)):
        bad = next((i for i, v in enumerate(ids) if v is None or str(v) == "None"), None)
        if bad is not None:
            raise InputError(f"{name}: row {bad} has a null id (None); give every row an id, or none")
    ids_x, ids_y = [str(i) for i in ids_x], [str(i) for i in ids_y]
    if ids_x == ids_y:
        return ids_x, X, Y, "row"
    where_x: dict = {}  # id -> row, per side
    where_y: dict = {}
    for ids, name, seen in ((ids_x, name_x, where_x), (ids_y, name_y, where_y)):
        for i, v in enumerate(ids):
            if v in seen:
                raise InputError(f"{name}: id {v!r} appears twice (rows {seen[v]} and {i}); pairing by id "
                                 "needs unique ids")
            seen[v] = i
    for i, v in enumerate(ids_x):
        if v not in where_y:
            raise InputError(f"{name_x} and {name_y} carry different ids: {v!r} (row {i} of {name_x}) is not in "
                             f"{name_y}; rows are paired by id when both inputs carry ids (--pair-by row: by position)")
    for i, v in enumerate(ids_y):
        if v not in where_x:
            raise InputError(f"{name_x} and {name_y} carry different ids: {v!r} (row {i} of {name_y}) is not in "
                             f"{name_x}; rows are paired by id when both inputs carry ids (--pair-by row: by position)")
    order = np.fromiter((where_y[v] for v in ids_x), dtype=np.int64, count=len(ids_x))
    return ids_x, X, Y[order], "id"


def _own_ids(ids, n):
    """Whether ``ids`` are a file's own (not the row numbers a reader makes up)."""
    return ids is not None and len(ids) == n and any(str(v) != str(i) for i, v in enumerate(ids))
