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
