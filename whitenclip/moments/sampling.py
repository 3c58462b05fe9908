"""Calibration sampling: the seeded, mergeable :class:`Reservoir` of whole groups of rows
(bottom-m sampling by row or group key), its tensors as an extra of moments parts, and their checks."""

from __future__ import annotations

import numpy as np

from whitenclip.errors import InputError

# ---------------------------------------------------------------------------------------
# a mergeable sample of whole groups of rows (bottom-m sampling by group key)
# ---------------------------------------------------------------------------------------
RESERVOIR_KEY = "splitmix64(seed, position) per row, or splitmix64(seed, blake2b64(group)) per group"

RESERVOIR_MAX_ROWS = 1 << 20
"""The most rows a calibration reservoir may hold (``--calibration-rows``; also checked in moments
headers): 1,048,576 rows are 6 GiB at d = 768, and conformal resolution stops mattering long before."""

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_NO_BOUND = np.uint64(2**64 - 1)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser applied elementwise to uint64 ``x`` (a bijection of uint64).

    >>> splitmix64(np.array([0, 1], dtype=np.uint64)).tolist()
    [16294208416658607535, 10451216379200822465]
    """
    z = np.array(x, dtype=np.uint64, copy=True) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def _seed_base(seed: int) -> np.uint64:
    return splitmix64(np.array([int(seed) % 2**64], dtype=np.uint64))[0]


def row_keys(positions, seed: int = 0) -> np.ndarray:
    """Sampling keys of rows at global ``positions`` (uint64): splitmix64(splitmix64(seed) + position).

    Distinct positions get distinct keys (splitmix64 is a bijection), so bottom-m sampling has no ties.
    """
    return splitmix64(np.asarray(positions, dtype=np.uint64) + _seed_base(seed))


def group_keys(groups, seed: int = 0) -> np.ndarray:
    """Sampling keys of rows by their group ids (uint64): splitmix64(splitmix64(seed) + h(group)), with
    h the first 8 bytes of blake2b of the id's text. Rows of one group share their key, wherever they lie."""
    import hashlib

    memo: dict = {}
    out = np.empty(len(groups), dtype=np.uint64)
    for i, g in enumerate(groups):
        h = memo.get(g)
        if h is None:
            h = memo[g] = int.from_bytes(hashlib.blake2b(str(g).encode("utf-8", "surrogatepass"),
                                                         digest_size=8).digest(), "little")
        out[i] = h
    return splitmix64(out + _seed_base(seed))


class Reservoir:
    """A seeded, mergeable sample of whole groups of rows, at most ``size`` rows (bottom-m sampling).

    Every row gets a key: a seeded hash of its global position in the stream (:func:`row_keys`),
    or, when the caller gives group ids, of its group id (:func:`group_keys`), so all rows of a
    group share one key. With c(t) = #{rows seen with key <= t}, the reservoir holds exactly the
    rows with key <= T, T the largest key with c(T) <= ``size``: whole groups, taken in key order
    while they fit. The kept groups are a uniform random subset of the groups (a row sample when
    every row is its own group), fixed by the seed, positions and group ids alone: independent
    of chunking and of the order chunks arrive in, and the reservoir of a union is the one
    :meth:`merge` computes from the reservoirs of its parts, exactly. (A group larger than
    ``size`` is never kept, and once it is seen neither is anything after it in key order.)

    To stay exact across chunks it remembers ``bound``, the smallest key it ever turned away:
    c(bound) > size from then on, so no later row with a key >= bound can enter.

    Positions count the rows handed to :meth:`update` (0, 1, 2, ... in stream order) unless
    ``start`` gives the global position of a chunk's first row (a shard fitted elsewhere).

    Memory: what it holds (k <= ``size`` rows of d float64, a key and a position per row) plus,
    while a chunk is absorbed, one more copy of the kept rows: nothing is allocated ahead.
    Rows enter by copy; the caller may reuse or overwrite its chunk afterwards.

    Parameters
    ----------
    size : int
        m, the most rows kept (at most :data:`RESERVOIR_MAX_ROWS`).
    n_features : int
        Dimension d of the rows.
    seed : int, default 0

    Examples
    --------
    >>> X = np.arange(20.0).reshape(10, 2)
    >>> a = Reservoir(3, 2).update(X[:6])
    >>> b = Reservoir(3, 2).update(X[6:], start=6)
    >>> np.array_equal(a.merge(b).rows, Reservoir(3, 2).update(X).rows)
    True
    >>> g = ["a", "a", "b", "c", "c", "c", "d", "e", "e", "f"]  # rows 0-1 are one group, 3-5 another...
    >>> r = Reservoir(4, 2).update(X, groups=g)
    >>> r.rows[:, 0].tolist(), r.n_groups  # whole groups ("e", "b", "d") while they fit in 4 rows
    ([14.0, 16.0, 4.0, 12.0], 3)
    """

    def __init__(self, size: int, n_features: int, seed: int = 0):
        if int(size) < 1:
            raise InputError(f"reservoir size must be >= 1, got {size}")
        if int(size) > RESERVOIR_MAX_ROWS:
            raise InputError(f"reservoir size {size} is over the limit of {RESERVOIR_MAX_ROWS} rows "
                             "(calibration p-values gain nothing past a few thousand rows)")
        if int(n_features) < 1:
            raise InputError(f"n_features must be >= 1, got {n_features}")
        self.size, self.n_features, self.seed = int(size), int(n_features), int(seed)
        self.n_seen = 0  # rows offered
        self._next = 0  # position of the next row when update() is given no start
        self._keys = np.empty(0, dtype=np.uint64)
        self._pos = np.empty(0, dtype=np.uint64)
        self._rows = np.empty((0, self.n_features), dtype=np.float64)
        self._bound = _NO_BOUND  # smallest key ever turned away (2^64 - 1: none yet)
        self._owned = True  # _rows/_keys/_pos are this reservoir's own, writable arrays
        self.grouped = False  # some row came with a group id

    def __len__(self) -> int:
        return int(self._keys.size)

    def update(self, X, *, start: int | None = None, groups=None) -> "Reservoir":
        """Offer the rows of X, shape (c, d), at global positions ``start .. start + c - 1``
        (default: right after the rows seen so far); ``groups`` (c ids, or None) names each row's
        group (a None entry: the row is its own group). Returns self."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise InputError(f"expected rows of dimension {self.n_features}, got shape {X.shape}")
        c = X.shape[0]
        first = self._next if start is None else int(start)
        if first < 0:
            raise InputError(f"row positions must be >= 0, got start={start}")
        self.n_seen += c
        self._next = first + c
        if c == 0:
            return self
        pos = np.arange(first, first + c, dtype=np.uint64)
        keys = row_keys(pos, self.seed)
        if groups is not None:
            if len(groups) != c:
                raise InputError(f"{len(groups)} group ids for {c} rows")
            named = np.array([g is not None for g in groups], dtype=bool)
            if named.any():
                self.grouped = True
                keys[named] = group_keys([g for g in groups if g is not None], self.seed)
        cand = np.flatnonzero(keys < self._bound)
        if cand.size:
            self._absorb(keys[cand], pos[cand], X, cand)
        return self

    def _absorb(self, keys: np.ndarray, pos: np.ndarray, X: np.ndarray, idx: np.ndarray | None = None) -> None:
        """Keep the rows with key <= T among the held rows and the offered ones (T: the row cap, whole
        groups): ``keys``/``pos`` of the offered rows ``X[idx]`` (``X`` itself when ``idx`` is None).
        Only the offered rows that stay are copied."""
        all_keys = np.concatenate([self._keys, keys])
        keep = all_keys < self._bound  # after a merge, held rows may lie past the other part's bound
        keep[keep] = _under_cap(all_keys[keep], self.size)
        turned_away = all_keys[~keep]
        if turned_away.size:
            self._bound = min(self._bound, turned_away.min())
        have = self._keys.size
        old, new = keep[:have], keep[have:]
        take = new if idx is None else idx[new]
        evicted = np.flatnonzero(~old)
        n_in = int(np.count_nonzero(new))
        if have == 0:
            self._keys, self._pos = keys[new], pos[new]
            self._rows, self._owned = np.array(X[take], dtype=np.float64), True
        elif self._owned and 0 < n_in <= evicted.size:  # entrants take evicted slots: nothing reallocated
            slots, drop = evicted[:n_in], evicted[n_in:]
            self._rows[slots], self._keys[slots], self._pos[slots] = X[take], keys[new], pos[new]
            if drop.size:
                live = np.ones(have, dtype=bool)
                live[drop] = False
                self._rows, self._keys, self._pos = self._rows[live], self._keys[live], self._pos[live]
        else:  # grow (or shrink without entrants): one new array of the rows kept
            held = self._rows if old.all() else self._rows[old]
            self._rows = np.concatenate([held, np.asarray(X[take], dtype=np.float64)])
            self._keys = np.concatenate([self._keys[old], keys[new]])
            self._pos = np.concatenate([self._pos[old], pos[new]])
            self._owned = True

    def merge(self, other: "Reservoir") -> "Reservoir":
        """The reservoir of the union of both streams (a new object; same size, seed and d)."""
        if (other.size, other.n_features, other.seed) != (self.size, self.n_features, self.seed):
            raise InputError(f"cannot merge reservoirs of (size, d, seed) {(self.size, self.n_features, self.seed)} "
                             f"and {(other.size, other.n_features, other.seed)}")
        out = Reservoir(self.size, self.n_features, self.seed)
        out.n_seen, out._next = self.n_seen + other.n_seen, max(self._next, other._next)
        out._keys, out._pos, out._rows = self._keys, self._pos, self._rows  # shared: never written in place
        out._owned = False
        out._bound, out.grouped = min(self._bound, other._bound), self.grouped or other.grouped
        out._absorb(other._keys, other._pos, other._rows)
        return out

    def copy(self) -> "Reservoir":
        out = Reservoir(self.size, self.n_features, self.seed)
        out.n_seen, out._next, out._bound, out.grouped = self.n_seen, self._next, self._bound, self.grouped
        out._keys, out._pos, out._rows = self._keys.copy(), self._pos.copy(), self._rows.copy()
        return out

    def _order(self) -> np.ndarray:
        return np.lexsort((self._pos, self._keys))

    @property
    def keys(self) -> np.ndarray:
        """Keys of the kept rows in :attr:`rows` order (ascending; a group's rows share one)."""
        return self._keys[self._order()]

    @property
    def rows(self) -> np.ndarray:
        """The kept rows in ascending (key, position) order, shape (k, d), float64 (a copy)."""
        return self._rows[self._order()]

    @property
    def positions(self) -> np.ndarray:
        """Global positions of the kept rows in :attr:`rows` order (uint64; 0 in samples saved before groups)."""
        return self._pos[self._order()]

    @property
    def n_groups(self) -> int:
        """Distinct groups among the kept rows (= rows when no group ids were given)."""
        return int(np.unique(self._keys).size)

    def __repr__(self) -> str:
        return (f"Reservoir(size={self.size}, n_features={self.n_features}, seed={self.seed}, "
                f"kept={len(self)}, seen={self.n_seen})")


def _under_cap(keys: np.ndarray, size: int) -> np.ndarray:
    """Mask of the rows with key <= T, T the largest key with #{key <= T} <= size (whole ties)."""
    if keys.size <= size:
        return np.ones(keys.size, dtype=bool)
    uniq, counts = np.unique(keys, return_counts=True)
    fits = np.cumsum(counts) <= size
    if not fits.any():
        return np.zeros(keys.size, dtype=bool)
    return keys <= uniq[np.flatnonzero(fits)[-1]]


# ---------------------------------------------------------------------------------------
# the reservoir as an extra of moments parts (conformal calibration of sharded / Dask fits)
# ---------------------------------------------------------------------------------------
RESERVOIR_EXTRA = "reservoir"
"""Name of the :class:`Reservoir` extra in a :class:`MomentsPart` (tensors ``rows``, ``keys``,
``positions``, ``bound``, ``state``)."""


def reservoir_to_tensors(res: Reservoir) -> dict[str, np.ndarray]:
    """A reservoir as named arrays: ``rows`` (k, d) float64, ``keys`` and ``positions`` (k,) uint64,
    ``bound`` (1,) uint64 and ``state`` = [size, seed, rows seen, next position, grouped] int64
    (arrays are shared, not copied: the reservoir stops writing into them)."""
    res._owned = False
    return {"rows": res._rows, "keys": res._keys, "positions": res._pos,
            "bound": np.array([res._bound], dtype=np.uint64),
            "state": np.array([res.size, res.seed, res.n_seen, res._next, int(res.grouped)], dtype=np.int64)}


def reservoir_from_tensors(t: dict, name: str = "calibration sample") -> Reservoir:
    """Inverse of :func:`reservoir_to_tensors`, validated (InputError naming ``name``): size in
    [1, :data:`RESERVOIR_MAX_ROWS`], k <= size rows of the part's width, finite, one key each,
    rows seen >= k. Samples written before groups existed (no ``positions``/``bound``) load as
    row samples."""
    try:
        state = [int(v) for v in np.asarray(t["state"]).ravel()]
        rows, keys = np.asarray(t["rows"]), np.asarray(t["keys"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{name}: lacks its rows, keys or state") from None
    if len(state) not in (4, 5):
        raise InputError(f"{name}: state has {len(state)} fields, expected 4 or 5")
    size, seed, n_seen, nxt = state[:4]
    if not 1 <= size <= RESERVOIR_MAX_ROWS:
        raise InputError(f"{name}: size {size} is outside [1, {RESERVOIR_MAX_ROWS}]")
    if rows.ndim != 2 or rows.shape[1] < 1 or keys.shape != (rows.shape[0],) or keys.dtype != np.uint64:
        raise InputError(f"{name}: has rows {rows.shape} and keys {keys.shape} {keys.dtype}")
    k = rows.shape[0]
    if k > size or n_seen < k or nxt < 0 or seed < 0:
        raise InputError(f"{name}: holds {k} rows for size {size} and {n_seen} rows seen")
    if rows.dtype.kind != "f" or not np.isfinite(rows).all():
        raise InputError(f"{name}: holds non-finite or non-float rows")
    res = Reservoir(size, rows.shape[1], seed)
    res.n_seen, res._next = n_seen, nxt
    res._keys, res._rows, res._owned = keys, np.asarray(rows, dtype=np.float64), False
    pos = t.get("positions")
    if pos is None:  # before groups: keys were distinct positions' hashes, rows in no particular order
        res._pos = np.zeros(k, dtype=np.uint64)
        res._bound = keys.max() + np.uint64(1) if (n_seen > k and k) else _NO_BOUND
    else:
        pos, bound = np.asarray(pos), np.asarray(t.get("bound", [_NO_BOUND])).ravel()
        if pos.shape != (k,) or pos.dtype != np.uint64 or bound.shape != (1,) or bound.dtype != np.uint64:
            raise InputError(f"{name}: positions/bound have shapes {pos.shape}/{bound.shape}")
        res._pos, res._bound = pos, bound[0]
        if k and keys.max() >= res._bound:
            raise InputError(f"{name}: keeps a row past its own bound")
    res.grouped = bool(state[4]) if len(state) == 5 else False
    return res


def _merge_reservoir_tensors(a: dict, b: dict) -> dict:
    return reservoir_to_tensors(reservoir_from_tensors(a).merge(reservoir_from_tensors(b)))


def check_calibration_rows(m, option: str = "--calibration-rows") -> int:
    """``m`` as the size of a calibration sample: an integer in [0, :data:`RESERVOIR_MAX_ROWS`]."""
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 0 <= int(m) <= RESERVOIR_MAX_ROWS:
        raise InputError(f"{option} must be an integer in [0, {RESERVOIR_MAX_ROWS}] (p-values in steps of "
                         f"1/(m + 1); memory up to m x d x 8 bytes); got {m!r}")
    return int(m)


def check_reservoir_tensors(t: dict, d: int, n: int, path) -> None:
    """Check a part's reservoir extra (:func:`reservoir_from_tensors` validates size, rows, keys and
    state) against the part: rows of width d, at most n rows seen. Raises :class:`InputError`."""
    res = reservoir_from_tensors(t, name=f"{path}: calibration sample")
    if res._rows.shape[1] != d:
        raise InputError(f"{path}: calibration sample rows have width {res._rows.shape[1]}, the moments d={d}")
    if res.n_seen > n:
        raise InputError(f"{path}: calibration sample saw {res.n_seen} rows, the part has n={n}")
