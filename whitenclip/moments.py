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


def _chunk_moments(X: np.ndarray, *, overwrite: bool = False,
                   gram: str = "float64") -> tuple[int, np.ndarray, np.ndarray]:
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
# parts: moments + power sums + metadata, what `whitenclip moments` writes and merges
# ---------------------------------------------------------------------------------------
PART_KEYS_THAT_MUST_MATCH = ("encoder", "modality", "normalized", "gram")
"""Metadata two parts must agree on (besides the dimension) to be merged."""

EXTRA_MERGERS: dict = {}
"""name -> ``merge(tensors_a, tensors_b) -> tensors``: how a named extra tensor group merges.

Extra statistics (e.g. a seeded reservoir for conformal calibration) register here; a part
holding an extra with no registered merger cannot be merged (refused, never dropped)."""


def shift_power_sums(n: int, scatter: np.ndarray, power3: np.ndarray, power4: float,
                     delta: np.ndarray) -> tuple[np.ndarray, float]:
    """Third and fourth power sums of rows re-centred from their mean m to m + delta.

    With y_i = x_i - m (so sum_i y_i = 0), S = sum y y^T, t = sum ||y||^2 y, q = sum ||y||^4 and
    c = ||delta||^2, expanding ||y - delta||^2 = ||y||^2 - 2 y.delta + c gives, exactly,

        t' = sum ||y - delta||^2 (y - delta) = t - tr(S) delta - 2 S delta - n c delta
        q' = sum ||y - delta||^4             = q - 4 delta.t + 4 delta^T S delta + 2 c tr(S) + n c^2

    Shapes: scatter (d, d), power3 and delta (d,); returns (t' (d,), q' float).

    >>> y = np.array([[1.0, 0.0], [-1.0, 0.0]])
    >>> t, q = shift_power_sums(2, y.T @ y, np.zeros(2), 2.0, np.array([1.0, 0.0]))
    >>> q == float(np.sum(np.sum((y - [1.0, 0.0]) ** 2, axis=1) ** 2))
    True
    """
    c = float(delta @ delta)
    Sd = scatter @ delta
    tr = float(np.trace(scatter))
    t = power3 - (tr + n * c) * delta - 2.0 * Sd
    q = power4 - 4.0 * float(delta @ power3) + 4.0 * float(delta @ Sd) + 2.0 * c * tr + n * c * c
    return t, q


class MomentsPart:
    """Mergeable summary of a set of rows: :class:`Moments` plus what ``fit`` needs beyond them.

    For rows x_1..x_n in R^d with mean m and y_i = x_i - m:

    * ``moments``  n, m (d,), scatter S = sum y y^T (d, d)  (Chan's merge);
    * ``power3``   t = sum_i ||y_i||^2 y_i   shape (d,)
    * ``power4``   q = sum_i ||y_i||^4       float: Ledoit-Wolf's ``sum ||x - mean||^4``.

    t and q merge exactly around the moving mean (:func:`shift_power_sums`), so Ledoit-Wolf
    shrinkage of merged parts equals the one-pass value without a second pass over the rows.

    ``meta`` holds encoder / modality / normalized (None when unknown) and ``gram`` (the chunk
    Gram precision); ``inputs`` the content hashes of the pieces read (in piece order); ``stats``
    counts pieces, resumed pieces and dropped non-finite rows; ``extras`` maps a name to a dict
    of named arrays merged by :data:`EXTRA_MERGERS`.

    >>> a = MomentsPart(2).update(np.array([[0.0, 1.0], [2.0, 3.0]]))
    >>> b = MomentsPart(2).update(np.array([[4.0, 5.0]]))
    >>> m = a.merge(b)
    >>> m.n, m.mean.tolist(), m.power4
    (3, [2.0, 3.0], 128.0)
    """

    def __init__(self, n_features: int, meta: dict | None = None):
        self.moments = Moments(n_features)
        self.power3 = np.zeros(self.moments.n_features, dtype=np.float64)
        self.power4 = 0.0
        self.has_power_sums = True
        self.meta = {"encoder": None, "modality": None, "normalized": None, "gram": "float64", **(meta or {})}
        self.inputs: list[str] = []
        self.stats = {"pieces": 0, "resumed": 0, "dropped_nonfinite": 0}
        self.extras: dict[str, dict[str, np.ndarray]] = {}

    # -- views ----------------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        return self.moments.n_features

    @property
    def n(self) -> int:
        return self.moments.n

    @property
    def mean(self) -> np.ndarray:
        return self.moments.mean

    @property
    def scatter(self) -> np.ndarray:
        return self.moments.scatter

    @property
    def input_hash(self) -> str:
        """sha256 over the piece hashes (in order): names the rows behind this part."""
        import hashlib

        return hashlib.sha256("\n".join(self.inputs).encode()).hexdigest()

    @property
    def sum_sqnorm4(self) -> float | None:
        """sum_i ||x_i - mean||^4 (Ledoit-Wolf), or None for a part saved without power sums."""
        return float(self.power4) if self.has_power_sums else None

    # -- building -------------------------------------------------------------------------
    def update(self, X, *, gram: str | None = None) -> "MomentsPart":
        """Fold rows X, shape (m, d), in (float64 accumulation); returns self."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise InputError(f"expected rows of dimension {self.n_features}, got shape {X.shape}")
        if X.shape[0] == 0:
            return self
        gram = gram or self.meta.get("gram") or "float64"
        if gram not in GRAM_DTYPES:
            raise InputError(f"gram must be one of {', '.join(GRAM_DTYPES)}; got {gram!r}")
        Y = np.array(X, dtype=np.float64)
        mean = Y.mean(axis=0)
        Y -= mean
        a = np.einsum("ij,ij->i", Y, Y)
        t, q = a @ Y, float(a @ a)
        if gram == "float32":
            Y32 = Y.astype(np.float32)
            S = (Y32.T @ Y32).astype(np.float64)
        else:
            S = Y.T @ Y
        other = MomentsPart(self.n_features, self.meta)
        other.moments.n, other.moments.mean, other.moments.scatter = X.shape[0], mean, S
        other.power3, other.power4 = t, q
        merged = self._combine(other)
        self.moments, self.power3, self.power4 = merged.moments, merged.power3, merged.power4
        return self

    def _combine(self, other: "MomentsPart") -> "MomentsPart":
        """Moments and power sums of the union (no metadata checks)."""
        out = MomentsPart(self.n_features, self.meta)
        out.has_power_sums = self.has_power_sums and other.has_power_sums
        if self.n == 0 or other.n == 0:
            src = other if self.n == 0 else self
            out.moments, out.power3, out.power4 = src.moments.copy(), src.power3.copy(), src.power4
            return out
        out.moments = self.moments.merge(other.moments)
        if out.has_power_sums:
            ta, qa = shift_power_sums(self.n, self.scatter, self.power3, self.power4, out.mean - self.mean)
            tb, qb = shift_power_sums(other.n, other.scatter, other.power3, other.power4, out.mean - other.mean)
            out.power3, out.power4 = ta + tb, qa + qb
        return out

    def check_mergeable(self, other: "MomentsPart", name: str = "part") -> None:
        """Raise :class:`InputError` (naming ``name``) when ``other`` cannot join ``self``."""
        if other.n_features != self.n_features:
            raise InputError(f"{name}: moments of dimension {other.n_features}, earlier parts have {self.n_features}")
        for key in PART_KEYS_THAT_MUST_MATCH:
            if self.meta.get(key) != other.meta.get(key):
                raise InputError(f"{name}: {key}={other.meta.get(key)!r}, earlier parts have {self.meta.get(key)!r}")
        dup = set(self.inputs) & set(other.inputs)
        if dup:
            raise InputError(f"{name}: holds {len(dup)} piece(s) already merged (same input hash, e.g. "
                             f"{sorted(dup)[0][:16]}): a part given twice?")
        for key in set(self.extras) | set(other.extras):
            if key not in EXTRA_MERGERS:
                raise InputError(f"{name}: extra statistic {key!r} has no merge rule in this version")

    def merge(self, other: "MomentsPart", name: str = "part") -> "MomentsPart":
        """A new part for the union of the rows behind ``self`` and ``other`` (checked)."""
        self.check_mergeable(other, name)
        out = self._combine(other)
        out.inputs = self.inputs + other.inputs
        out.stats = {k: self.stats.get(k, 0) + other.stats.get(k, 0) for k in set(self.stats) | set(other.stats)}
        for key in set(self.extras) & set(other.extras):  # an extra only one side has covers part of
            out.extras[key] = EXTRA_MERGERS[key](self.extras[key], other.extras[key])  # the rows: dropped
        return out

    # -- persistence ------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write a ``.safetensors`` file (atomically) readable by :meth:`load` and :meth:`Moments.load`.

        Tensors: ``mean`` (d,), ``scatter`` (d, d), ``power3`` (d,), ``power4`` (1,), and
        ``extra.<name>.<tensor>`` for extras; header: ``format``, ``version``, ``n`` and
        ``whitenclip`` (JSON: d, meta, inputs, input_hash, stats, extras' names).
        """
        import json

        from safetensors.numpy import save as st_save

        from whitenclip.stores import atomic_write

        info = {"d": self.n_features, "meta": self.meta, "inputs": self.inputs, "input_hash": self.input_hash,
                "stats": self.stats, "power_sums": self.has_power_sums, "extras": sorted(self.extras)}
        header = {"format": MOMENTS_FORMAT, "version": str(MOMENTS_VERSION), "n": str(self.n),
                  "whitenclip": json.dumps(info)}
        tensors = {"mean": self.mean, "scatter": self.scatter, "power3": self.power3,
                   "power4": np.array([self.power4], dtype=np.float64)}
        for key, group in self.extras.items():
            tensors.update({f"extra.{key}.{k}": np.ascontiguousarray(v) for k, v in group.items()})
        blob = st_save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=header)
        with atomic_write(path) as fh:
            fh.write(blob)

    @classmethod
    def load(cls, path) -> "MomentsPart":
        """Read a part (or a plain :class:`Moments` file: then without power sums or metadata)."""
        import json

        from whitenclip.stores import read_safetensors

        m = Moments.load(path)
        tensors, header = read_safetensors(path)
        try:
            info = json.loads(header.get("whitenclip", "{}"))
        except ValueError:
            raise InputError(f"{path}: moments header is not valid JSON") from None
        out = cls(m.n_features, info.get("meta") or {})
        out.moments = m
        power3, power4 = tensors.get("power3"), tensors.get("power4")
        if power3 is not None and power4 is not None and info.get("power_sums", True):
            if power3.shape != (m.n_features,) or power4.shape != (1,):
                raise InputError(f"{path}: power sums have shapes {power3.shape}, {power4.shape}")
            if not (np.isfinite(power3).all() and np.isfinite(power4).all()):
                raise InputError(f"{path}: moments file holds non-finite values")
            out.power3, out.power4 = power3.astype(np.float64), float(power4[0])
        else:
            out.has_power_sums = False
        out.inputs = [str(s) for s in info.get("inputs", [])]
        out.stats.update(info.get("stats") or {})
        for key in info.get("extras", []):
            prefix = f"extra.{key}."
            out.extras[key] = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if not out.inputs:  # a plain Moments file: name its rows by their moments
            out.inputs = ["moments:" + _content_hash(m)]
        return out

    def __repr__(self) -> str:
        return f"MomentsPart(n={self.n}, n_features={self.n_features}, pieces={self.stats.get('pieces')})"


def _content_hash(m: Moments) -> str:
    import hashlib

    h = hashlib.sha256(str(m.n).encode())
    h.update(np.ascontiguousarray(m.mean).tobytes())
    h.update(np.ascontiguousarray(m.scatter).tobytes())
    return h.hexdigest()


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


# ---------------------------------------------------------------------------------------
# the reservoir as an extra of moments parts (conformal calibration of sharded / Dask fits)
# ---------------------------------------------------------------------------------------
RESERVOIR_EXTRA = "reservoir"
"""Name of the :class:`Reservoir` extra in a :class:`MomentsPart` (tensors ``rows``, ``keys``, ``state``)."""


def reservoir_to_tensors(res: Reservoir) -> dict[str, np.ndarray]:
    """A reservoir as named arrays: ``rows`` (k, d) float64, ``keys`` (k,) uint64 and ``state``
    = [size, seed, rows seen, next position] int64."""
    return {"rows": res._rows[:len(res)].copy(), "keys": res._keys.copy(),
            "state": np.array([res.size, res.seed, res.n_seen, res._next], dtype=np.int64)}


def reservoir_from_tensors(t: dict) -> Reservoir:
    """Inverse of :func:`reservoir_to_tensors`."""
    size, seed, n_seen, nxt = (int(v) for v in np.asarray(t["state"]))
    rows = np.asarray(t["rows"], dtype=np.float64)
    res = Reservoir(size, rows.shape[1], seed)
    res._keys = np.asarray(t["keys"], dtype=np.uint64).copy()
    res._rows[:rows.shape[0]] = rows
    res.n_seen, res._next = n_seen, nxt
    return res


def _merge_reservoir_tensors(a: dict, b: dict) -> dict:
    return reservoir_to_tensors(reservoir_from_tensors(a).merge(reservoir_from_tensors(b)))


EXTRA_MERGERS[RESERVOIR_EXTRA] = _merge_reservoir_tensors

