"""The :class:`Moments` estimator (count, mean, centred scatter; Chan's merge) and its plain
moments file: the format name, header counts and the checked reader :func:`moments_from_file`."""

from __future__ import annotations

import numpy as np

from whitenclip.errors import InputError
from whitenclip.moments.numerics import _chunk_moments, _overflow
from whitenclip.validation import MAX_ABS, check_magnitude

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

    def update(self, X, *, overwrite: bool = False, gram: str = "float64", origin: tuple | None = None) -> "Moments":
        """Fold the rows of X, shape (m, d), into the moments; returns self.

        ``overwrite=True`` lets a float64 X be centred in place (saves a copy when the caller
        owns a throw-away chunk). ``gram="float32"`` computes each chunk's centred Gram
        (X - m)^T (X - m) in float32 (about 2x faster; relative error ~1e-6 of the largest
        variance, so eigenvalues below ~1e-5 x lambda_max lose accuracy; scale-safe: see
        :func:`centred_gram`); the mean, the merge across chunks and everything after stay float64.
        Values beyond :data:`~whitenclip.validation.MAX_ABS` = 1e50 in magnitude, or whose moments
        would overflow, raise :class:`InputError` naming ``origin`` = (file, row of X[0]) and the
        row; the moments are then unchanged (never inf or NaN).
        """
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise InputError(f"expected rows of dimension {self.n_features}, got shape {X.shape}")
        if X.shape[0] == 0:
            return self
        check_magnitude(X, *(origin or ("X", 0)))
        n, mean, scatter = _chunk_moments(X, overwrite=overwrite, gram=gram, origin=origin)
        before = (self.n, self.mean, self.scatter)
        self._absorb(n, mean, scatter)  # builds new arrays: ``before`` stays intact
        if not (np.isfinite(self.mean).all() and np.isfinite(self.scatter).all()):
            self.n, self.mean, self.scatter = before
            raise _overflow(np.asarray(X, dtype=np.float64) - mean, origin, "the merged scatter")
        return self

    def _absorb(self, n_b: int, mean_b: np.ndarray, scatter_b: np.ndarray) -> None:
        n_a = self.n
        n = n_a + n_b
        delta = mean_b - self.mean
        with np.errstate(over="ignore", invalid="ignore"):
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
            if not (np.isfinite(out.mean).all() and np.isfinite(out.scatter).all()):
                raise InputError(f"merging moments of {self.n} and {other.n} rows overflows float64 "
                                 "(means too far apart for their scatter to be representable)")
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

        from whitenclip.outputs import atomic_write

        if not (np.isfinite(self.mean).all() and np.isfinite(self.scatter).all()):
            raise InputError(f"{path}: refusing to write moments holding NaN or inf")
        meta = {"format": MOMENTS_FORMAT, "version": str(MOMENTS_VERSION), "n": str(self.n)}
        blob = st_save({"mean": self.mean, "scatter": self.scatter}, metadata=meta)
        with atomic_write(path) as fh:
            fh.write(blob)

    @classmethod
    def load(cls, path) -> "Moments":
        """Read moments written by :meth:`save`; validates every number (see :func:`moments_from_file`)."""
        from whitenclip.readers.safetensors import read_safetensors

        tensors, meta = read_safetensors(path)
        return moments_from_file(tensors, meta, path)

    def __repr__(self) -> str:
        return f"Moments(n={self.n}, n_features={self.n_features})"



MAX_COUNT = 2**53
"""Largest row count an artifact may claim: float64 counts every integer exactly up to 2^53."""


def header_count(value, path, key: str, *, lo: int = 0, hi: int = MAX_COUNT) -> int:
    """A count read from an artifact header: a decimal integer (a string of digits, or a JSON
    integer) in [lo, hi], else an :class:`InputError` naming the file and the field.

    >>> header_count("12", "m.safetensors", "n")
    12
    >>> header_count("1e3", "m.safetensors", "n")
    Traceback (most recent call last):
    ...
    whitenclip.errors.InputError: m.safetensors: header field n='1e3' must be an integer in [0, 2^53]
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)) or (
            isinstance(value, str) and not (value.isascii() and value.isdigit() and len(value) <= 20)):
        ok = None
    else:
        ok = int(value)
    if ok is None or not lo <= ok <= hi:
        top = "2^53" if hi == MAX_COUNT else str(hi)
        raise InputError(f"{path}: header field {key}={value!r} must be an integer in [{lo}, {top}]")
    return ok


def moments_from_file(tensors: dict, header: dict, path) -> Moments:
    """:class:`Moments` from a moments file's tensors and header, every number checked.

    ``n`` a count in [0, 2^53]; ``mean`` (d,) with d >= 1 and ``scatter`` (d, d), finite, float, the
    mean within :data:`~whitenclip.validation.MAX_ABS` (as every accepted row);
    the scatter symmetric (to 1e-6 of its largest diagonal entry) with a non-negative diagonal;
    an empty part (n = 0) all zeros, a one-row part a zero scatter. Anything else is an
    :class:`InputError` naming the file.
    """
    if header.get("format") != MOMENTS_FORMAT:
        raise InputError(f"{path}: not a whitenclip moments file")
    if "n" not in header:
        raise InputError(f"{path}: moments header has no row count n")
    n = header_count(header["n"], path, "n")
    mean, scatter = tensors.get("mean"), tensors.get("scatter")
    if mean is None or scatter is None or mean.ndim != 1 or mean.size < 1 or scatter.shape != (mean.size, mean.size):
        raise InputError(f"{path}: moments file has missing or mis-shaped tensors (mean (d,), scatter (d, d))")
    for name, t in (("mean", mean), ("scatter", scatter)):
        if t.dtype.kind != "f":
            raise InputError(f"{path}: tensor {name} has dtype {t.dtype}, expected float")
    mean, scatter = mean.astype(np.float64), scatter.astype(np.float64)
    if not (np.isfinite(mean).all() and np.isfinite(scatter).all()):
        raise InputError(f"{path}: moments file holds non-finite values")
    if np.abs(mean).max() > MAX_ABS:
        raise InputError(f"{path}: mean holds |m| = {np.abs(mean).max():.3g} > {MAX_ABS:.0e}, beyond any accepted row")
    diag = np.diag(scatter)
    top = float(diag.max(initial=0.0))
    if (diag < 0).any() or not np.allclose(scatter, scatter.T, rtol=0.0, atol=1e-6 * top):
        raise InputError(f"{path}: scatter is not a scatter matrix (symmetric, diagonal >= 0)")
    if n == 0 and (mean.any() or scatter.any()):
        raise InputError(f"{path}: an empty part (n = 0) must have a zero mean and scatter")
    if n == 1 and scatter.any():
        raise InputError(f"{path}: a one-row part must have a zero scatter")
    out = Moments(mean.size)
    out.n, out.mean, out.scatter = n, mean, scatter
    return out
