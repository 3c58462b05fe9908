"""Rows as commands read them: :class:`EmbeddingFile` (one user path, its shards read piece by
piece in this process) and the checks every row passes (finite, within
:data:`~whitenclip.validation.MAX_ABS`), for the local path and the engine's tasks alike."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from whitenclip.config import CHUNK_ROWS
from whitenclip.errors import InputError, NonFiniteRowsWarning
from whitenclip.readers.base import Piece, format_of, index_ids

DEFAULT_CHUNK_ROWS = CHUNK_ROWS


@dataclass
class EmbeddingFile:
    """A source of embedding rows read in chunks: the shards behind one path, each read as one
    piece by its format (:mod:`whitenclip.readers.base`), in order.

    Attributes
    ----------
    path : str
        What the user named (``-`` for standard input).
    n_rows, dim : int
        Shape of the embedding matrix (n_rows, dim).
    dtype : str
        Stored dtype (float16, float32 or float64).
    meta : dict
        What the file says about itself (encoder, modality, normalized), when known.
    shards : list of Shard
        The files (arrays) behind ``path``, in order.
    """

    path: str
    n_rows: int
    dim: int
    dtype: str
    meta: dict = field(default_factory=dict)
    shards: list = field(default_factory=list, repr=False)
    id_prefix: str | None = None
    """Rows without ids of their own get ``f"{id_prefix}:{row}"`` (set when a command reads several
    inputs, so ids stay unique and traceable), else ``str(row)``."""
    groups: list | None = None
    """Group id of each row (captions of one image...; None entries: own group), or None: from a
    store that records them, or ``--groups FILE`` (:func:`whitenclip.sources.open_sources`)."""
    progress: bool = False
    """Report long reads on stderr: a plain line (rows, rate, ETA) every ~15 s, none for a short read
    (:class:`whitenclip.progress.LineProgress`; the CLI sets it unless ``--quiet``)."""

    def pieces(self) -> list[Piece]:
        """One piece per shard (a whole table file is one run of all its units)."""
        out = []
        for s in self.shards:
            for lo, hi, units in format_of(s).cut(s, max(s.n_rows, 1)):
                out.append(Piece(s, len(out), lo, hi, units))
        return out

    def iter_chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[tuple[list[str], np.ndarray]]:
        """Yield ``(ids, X)`` with X of shape (m <= chunk_rows, dim), float64, in file order.

        Each X is a new array the caller may modify (it never aliases the file's data).
        """
        if not self.progress:
            yield from self._chunks(chunk_rows)
            return
        from whitenclip.progress import progress

        with progress(True, self.n_rows, f"reading {self.path}", unit="rows") as advance:
            for ids, X in self._chunks(chunk_rows):
                advance(X.shape[0])
                yield ids, X

    def _chunks(self, chunk_rows: int) -> Iterator[tuple[list[str], np.ndarray]]:
        start = 0  # rows of the shards before this one
        for piece in self.pieces():
            fmt, recorded = format_of(piece.shard), None
            for lo, X, ids in fmt.read(piece, chunk_rows):  # a chunk may bring its ids (a table's)
                hi = lo + X.shape[0]
                if ids is None and piece.shard.ids is not None:
                    recorded = fmt.ids(piece) if recorded is None else recorded  # read once per piece
                    ids = recorded[lo - piece.start:hi - piece.start]
                elif ids is None:
                    ids = index_ids(start + lo, start + hi, self.id_prefix)
                yield ids, X
            start += piece.shard.n_rows

    def read_all(self) -> tuple[list[str], np.ndarray]:
        """All rows at once: ``(ids, X)`` with X of shape (n_rows, dim), float64."""
        ids, parts = [], []
        for chunk_ids, X in self.iter_chunks():
            ids.extend(chunk_ids)
            parts.append(X)
        X = np.concatenate(parts) if parts else np.empty((0, self.dim))
        return ids, X


def embedding_file(path: str, shards: list, *, what: str = "") -> EmbeddingFile:
    """The :class:`EmbeddingFile` over ``shards`` (one dimension, one dtype), named ``path``; zero rows
    refused (``"{path}: {what}holds zero rows"``). Group ids are gathered when a shard records them."""
    n = sum(s.n_rows for s in shards)
    if n == 0:
        raise InputError(f"{path}: {what}holds zero rows")
    first = shards[0]
    src = EmbeddingFile(str(path), n, first.dim, np.dtype(first.dtype).name, dict(first.meta), list(shards))
    pieces = src.pieces()
    groups = [format_of(p.shard).groups(p) for p in pieces]
    if any(g is not None for g in groups):
        src.groups = [v for g, p in zip(groups, pieces) for v in (g if g is not None else [None] * p.n_rows)]
    return src


@dataclass
class RowStats:
    """Counts gathered while streaming rows: rows kept and non-finite rows dropped."""

    kept: int = 0
    dropped_nonfinite: int = 0


def finite_rows(X: np.ndarray, name: str, first_row: int, ids=None, *, drop_nonfinite: bool = False) -> np.ndarray:
    """The boolean mask of X's (m, d) finite rows, once they are checked: a row holding NaN or inf
    raises :class:`InputError` naming ``name`` and its row ``first_row + i`` (and its id, given
    ``ids``) unless ``drop_nonfinite``; a finite row beyond :data:`~whitenclip.validation.MAX_ABS`
    raises always (:func:`~whitenclip.validation.check_magnitude`, rows numbered as in X)."""
    from whitenclip.validation import check_magnitude

    ok = np.isfinite(X).all(axis=1)
    if ok.all():
        check_magnitude(X, name, first_row, ids)
        return ok
    if not drop_nonfinite:
        i = int(np.flatnonzero(~ok)[0])
        label = f"row {first_row + i}" + (f" (id {ids[i]!r})" if ids is not None else "")
        raise InputError(f"{name}: {label} holds NaN or inf (use --drop-nonfinite to skip such rows)")
    check_magnitude(np.where(ok[:, None], X, 0.0), name, first_row, ids)  # the rows kept, numbered as in X
    return ok


def finite_chunks(source: EmbeddingFile, *, drop_nonfinite: bool = False, stats: RowStats | None = None,
                  chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[tuple[list[str], np.ndarray]]:
    """Chunks of ``source`` with every row finite and within ``validation.MAX_ABS``.

    A row beyond :data:`~whitenclip.validation.MAX_ABS` = 1e50 in magnitude raises
    :class:`InputError` naming the file and the row (:func:`~whitenclip.validation.check_magnitude`).
    A row holding NaN or inf raises :class:`InputError` naming the file and the first bad row
    (0-based index and id), unless ``drop_nonfinite`` is set: then such rows are skipped,
    counted in ``stats.dropped_nonfinite`` and reported in one warning at the end.
    """
    stats = stats if stats is not None else RowStats()
    offset = 0
    for ids, X in source.iter_chunks(chunk_rows):
        ok = finite_rows(X, str(source.path), offset, ids, drop_nonfinite=drop_nonfinite)
        if not ok.all():
            stats.dropped_nonfinite += int((~ok).sum())
            ids = [s for s, k in zip(ids, ok) if k]
            X = X[ok]
        offset += ok.size
        stats.kept += X.shape[0]
        if X.shape[0]:
            yield ids, X
    if stats.dropped_nonfinite:
        warnings.warn(f"{source.path}: skipped {stats.dropped_nonfinite} row(s) holding NaN or inf",
                      NonFiniteRowsWarning, stacklevel=2)


def iter_rows(sources, *, drop_nonfinite: bool = False, stats: RowStats | None = None,
              chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[tuple[list[str], np.ndarray]]:
    """Finite ``(ids, X)`` chunks from several sources in order; all must share one dimension d."""
    dim = None
    for src in sources:
        if dim is not None and src.dim != dim:
            raise InputError(f"{src.path}: rows have dimension {src.dim}, but earlier inputs have {dim}")
        dim = src.dim
        yield from finite_chunks(src, drop_nonfinite=drop_nonfinite, stats=stats, chunk_rows=chunk_rows)


def label_ids(sources) -> list:
    """Give rows without ids of their own ``FILE:ROW`` ids when there are several sources."""
    sources = list(sources)
    if len(sources) > 1:
        for src in sources:
            if isinstance(src, EmbeddingFile):
                src.id_prefix = src.path
    return sources


# ---------------------------------------------------------------------------------------
# rows tagged with their group ids (grouped calibration)
# ---------------------------------------------------------------------------------------
class _GroupId(str):
    """A row id carrying its group id (``.group``) through the row filters below (:func:`finite_chunks`)."""

    group = None


class GroupTagged:
    """A source whose row ids carry the source's ``groups`` (one id per row, in row order)."""

    def __init__(self, source):
        self.source = source

    def __getattr__(self, name):
        return getattr(self.source, name)

    def iter_chunks(self, chunk_rows: int = CHUNK_ROWS, **kw):
        groups, seen = getattr(self.source, "groups", None), 0
        for ids, X in self.source.iter_chunks(chunk_rows, **kw):
            tagged = [_GroupId(i) for i in ids]
            if groups is not None:
                if seen + len(tagged) > len(groups):
                    raise InputError(f"{self.source.path}: {len(groups)} group ids for more rows than that")
                for t, g in zip(tagged, groups[seen:seen + len(tagged)]):
                    t.group = g
            seen += len(tagged)
            yield tagged, X
        if groups is not None and seen != len(groups):
            raise InputError(f"{self.source.path}: {len(groups)} group ids for {seen} rows")

