"""Streaming, mergeable first and second moments in float64.

For rows x_1..x_n in R^d we keep

* ``n``       the count,
* ``mean``    m = (1/n) sum_i x_i                       shape (d,),
* ``scatter`` S = sum_i (x_i - m)(x_i - m)^T            shape (d, d),

so that the sample covariance is ``S / (n - ddof)``. Chunks are folded in with the exact
pairwise update of Chan, Golub & LeVeque (1979): for two sets A and B with
delta = m_B - m_A and n = n_A + n_B,

    m = m_A + delta * n_B / n
    S = S_A + S_B + outer(delta, delta) * n_A * n_B / n

Each chunk's own scatter is computed around the chunk's mean (centred GEMM), which keeps
the accumulation stable when the mean is large compared with the spread.
"""

from __future__ import annotations

import numpy as np

from whitenclip.errors import InputError

MOMENTS_FORMAT = "whitenclip-moments"
MOMENTS_VERSION = 1


class Moments:
    """Count, mean and centred scatter of a stream of d-dimensional rows.

    Parameters
    ----------
    n_features : int
        Dimension d of the rows.

    Attributes
    ----------
    n : int
        Rows seen so far.
    mean : ndarray of shape (d,)
        Running mean, float64.
    scatter : ndarray of shape (d, d)
        sum_i (x_i - mean)(x_i - mean)^T, float64, symmetric.

    Examples
    --------
    >>> m = Moments(3).update(np.ones((4, 3)))
    >>> m.n, m.mean.tolist()
    (4, [1.0, 1.0, 1.0])
    """

    def __init__(self, n_features: int):
        if int(n_features) < 1:
            raise InputError(f"n_features must be >= 1, got {n_features}")
        self.n_features = int(n_features)
        self.n = 0
        self.mean = np.zeros(self.n_features, dtype=np.float64)
        self.scatter = np.zeros((self.n_features, self.n_features), dtype=np.float64)

    # -- building -------------------------------------------------------------------
    @classmethod
    def from_array(cls, X) -> "Moments":
        """Moments of all rows of X, shape (n, d)."""
        X = np.asarray(X)
        if X.ndim != 2:
            raise InputError(f"expected a 2-D array of shape (n_samples, n_features), got {X.ndim}-D")
        return cls(X.shape[1]).update(X)

    def update(self, X, *, overwrite: bool = False, gram: str = "float64") -> "Moments":
        """Fold the rows of X, shape (m, d), into the moments; returns self.

        ``overwrite=True`` lets a float64 X be centred in place (saves a copy when the caller
        owns a throw-away chunk). ``gram="float32"`` computes each chunk's centred Gram
        (X - m)^T (X - m) in float32 (about 2x faster; relative error ~1e-6 of the largest
        variance, so eigenvalues below ~1e-5 x lambda_max lose accuracy); the mean, the merge
        across chunks and everything after stay float64.
        """
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise InputError(f"expected rows of dimension {self.n_features}, got shape {X.shape}")
        if X.shape[0] == 0:
            return self
        n, mean, scatter = _chunk_moments(X, overwrite=overwrite, gram=gram)
        self._absorb(n, mean, scatter)
        return self

    def _absorb(self, n_b: int, mean_b: np.ndarray, scatter_b: np.ndarray) -> None:
        n_a = self.n
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.scatter = self.scatter + scatter_b + np.outer(delta, delta) * (n_a * n_b / n)
        self.n = n

    def merge(self, other: "Moments") -> "Moments":
        """Moments of the union of the rows behind ``self`` and ``other`` (a new object)."""
        if other.n_features != self.n_features:
            raise InputError(f"cannot merge moments of dimension {self.n_features} and {other.n_features}")
        out = self.copy()
        if other.n:
            out._absorb(other.n, other.mean, other.scatter)
        return out

    def copy(self) -> "Moments":
        out = Moments(self.n_features)
        out.n, out.mean, out.scatter = self.n, self.mean.copy(), self.scatter.copy()
        return out

    # -- reading --------------------------------------------------------------------
    def covariance(self, ddof: int = 1) -> np.ndarray:
        """Sample covariance S / (n - ddof), shape (d, d), exactly symmetric."""
        if self.n - ddof <= 0:
            raise InputError(f"need more than {ddof} row(s) for a covariance, got {self.n}")
        cov = self.scatter / (self.n - ddof)
        return 0.5 * (cov + cov.T)

    # -- persistence ------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the moments to a ``.safetensors`` file (atomically)."""
        from safetensors.numpy import save as st_save

        from whitenclip.stores import atomic_write

        meta = {"format": MOMENTS_FORMAT, "version": str(MOMENTS_VERSION), "n": str(self.n)}
        blob = st_save({"mean": self.mean, "scatter": self.scatter}, metadata=meta)
        with atomic_write(path) as fh:
            fh.write(blob)

    @classmethod
    def load(cls, path) -> "Moments":
        """Read moments written by :meth:`save`; validates format, shapes and finiteness."""
        from whitenclip.stores import read_safetensors

        tensors, meta = read_safetensors(path)
        if meta.get("format") != MOMENTS_FORMAT:
            raise InputError(f"{path}: not a whitenclip moments file")
        mean, scatter = tensors.get("mean"), tensors.get("scatter")
        if mean is None or scatter is None or scatter.shape != (mean.size, mean.size):
            raise InputError(f"{path}: moments file has missing or mis-shaped tensors")
        if not (np.isfinite(mean).all() and np.isfinite(scatter).all()):
            raise InputError(f"{path}: moments file holds non-finite values")
        out = cls(mean.size)
        out.n, out.mean, out.scatter = int(meta["n"]), mean.astype(np.float64), scatter.astype(np.float64)
        return out

    def __repr__(self) -> str:
        return f"Moments(n={self.n}, n_features={self.n_features})"


GRAM_DTYPES = ("float64", "float32")


def _chunk_moments(X: np.ndarray, *, overwrite: bool = False, gram: str = "float64") -> tuple[int, np.ndarray, np.ndarray]:
    """(m, mean, scatter) of one chunk, scatter = (X - mean)^T (X - mean); mean in float64,
    the Gram product in ``gram`` precision, returned as float64."""
    if gram not in GRAM_DTYPES:
        raise InputError(f"gram must be one of {', '.join(GRAM_DTYPES)}; got {gram!r}")
    in_place = overwrite and X.dtype == np.float64 and X.flags.c_contiguous and X.flags.writeable
    Xc = X if in_place else np.array(X, dtype=np.float64)
    mean = Xc.mean(axis=0)
    Xc -= mean
    if gram == "float32":
        Xc = Xc.astype(np.float32)
        return X.shape[0], mean, (Xc.T @ Xc).astype(np.float64)
    return X.shape[0], mean, Xc.T @ Xc


# ---------------------------------------------------------------------------------------
# a mergeable uniform sample of rows (bottom-m sampling)
# ---------------------------------------------------------------------------------------
RESERVOIR_KEY = "splitmix64(seed, position)"

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser applied elementwise to uint64 ``x`` (a bijection of uint64).

    >>> splitmix64(np.array([0, 1], dtype=np.uint64)).tolist()
    [16294208416658607535, 10451216379200822465]
    """
    z = np.array(x, dtype=np.uint64, copy=True) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def row_keys(positions, seed: int = 0) -> np.ndarray:
    """Sampling keys of rows at global ``positions`` (uint64): splitmix64(splitmix64(seed) + position).

    Distinct positions get distinct keys (splitmix64 is a bijection), so bottom-m sampling has no ties.
    """
    base = splitmix64(np.array([int(seed) % 2**64], dtype=np.uint64))[0]
    return splitmix64(np.asarray(positions, dtype=np.uint64) + base)


class Reservoir:
    """A seeded, uniform, mergeable sample of at most ``size`` rows of a stream (bottom-m sampling).

    Every row gets a key from a seeded hash of its global position in the stream
    (:func:`row_keys`); the reservoir keeps the ``size`` rows with the smallest keys. The kept set
    is therefore a uniform random subset of the rows (without replacement), fixed by the seed and
    the positions alone: it does not depend on the chunking or on the order chunks arrive in,
    and the reservoir of a union is the bottom-``size`` of the reservoirs of its parts
    (:meth:`merge`), exactly.

    Positions count the rows handed to :meth:`update` (0, 1, 2, ... in stream order) unless
    ``start`` gives the global position of a chunk's first row (a shard fitted elsewhere).

    Memory: ``size`` x d float64 rows plus one key per row (about 31 MiB at 5000 x 768).
    Rows enter by copy; the caller may reuse or overwrite its chunk afterwards.

    Parameters
    ----------
    size : int
        m, the most rows kept.
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
    """

    def __init__(self, size: int, n_features: int, seed: int = 0):
        if int(size) < 1:
            raise InputError(f"reservoir size must be >= 1, got {size}")
        if int(n_features) < 1:
            raise InputError(f"n_features must be >= 1, got {n_features}")
        self.size, self.n_features, self.seed = int(size), int(n_features), int(seed)
        self.n_seen = 0  # rows offered
        self._next = 0  # position of the next row when update() is given no start
        self._keys = np.empty(0, dtype=np.uint64)
        self._rows = np.empty((self.size, self.n_features), dtype=np.float64)  # slots; first len(_keys) used

    def __len__(self) -> int:
        return int(self._keys.size)

    def update(self, X, *, start: int | None = None) -> "Reservoir":
        """Offer the rows of X, shape (c, d), at global positions ``start .. start + c - 1``
        (default: right after the rows seen so far); returns self."""
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
        keys = row_keys(np.arange(first, first + c, dtype=np.uint64), self.seed)
        full = self._keys.size == self.size
        cand = np.flatnonzero(keys < self._keys.max()) if full else np.arange(c)
        if cand.size:
            self._absorb(keys[cand], X, cand)
        return self

    def _absorb(self, new_keys: np.ndarray, X: np.ndarray, idx: np.ndarray) -> None:
        """Keep the bottom-``size`` of the current keys and ``new_keys`` (their rows are ``X[idx]``).

        Live rows occupy slots ``0 .. len - 1``. Entrants take the slots of evicted rows, then
        the free tail; there are never more evictions than entrants, so no hole is left.
        """
        have = self._keys.size
        keys = np.concatenate([self._keys, new_keys])
        if keys.size <= self.size:
            keep = np.arange(keys.size)
        else:
            keep = np.argpartition(keys, self.size - 1)[:self.size]
        kept_old = np.zeros(have, dtype=bool)
        kept_old[keep[keep < have]] = True
        entering = keep[keep >= have] - have
        slots = np.concatenate([np.flatnonzero(~kept_old), np.arange(have, self.size)])[:entering.size]
        self._rows[slots] = X[idx[entering]]
        total = int(kept_old.sum()) + entering.size
        out = np.empty(total, dtype=np.uint64)
        out[:min(have, total)] = self._keys[:min(have, total)]
        out[slots] = new_keys[entering]
        self._keys = out

    def merge(self, other: "Reservoir") -> "Reservoir":
        """The reservoir of the union of both streams (a new object; same size, seed and d)."""
        if (other.size, other.n_features, other.seed) != (self.size, self.n_features, self.seed):
            raise InputError(f"cannot merge reservoirs of (size, d, seed) {(self.size, self.n_features, self.seed)} "
                             f"and {(other.size, other.n_features, other.seed)}")
        out = self.copy()
        out.n_seen, out._next = self.n_seen + other.n_seen, max(self._next, other._next)
        if len(other):
            out._absorb(other._keys, other._rows[:len(other)], np.arange(len(other)))
        return out

    def copy(self) -> "Reservoir":
        out = Reservoir(self.size, self.n_features, self.seed)
        out.n_seen, out._next, out._keys, out._rows = self.n_seen, self._next, self._keys.copy(), self._rows.copy()
        return out

    @property
    def keys(self) -> np.ndarray:
        """Keys of the kept rows, ascending (uint64)."""
        return np.sort(self._keys)

    @property
    def rows(self) -> np.ndarray:
        """The kept rows in ascending key order, shape (min(size, rows seen), d), float64 (a copy)."""
        order = np.argsort(self._keys, kind="stable")
        return self._rows[:self._keys.size][order]

    def __repr__(self) -> str:
        return (f"Reservoir(size={self.size}, n_features={self.n_features}, seed={self.seed}, "
                f"kept={len(self)}, seen={self.n_seen})")
