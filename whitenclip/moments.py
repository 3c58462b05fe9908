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

from dataclasses import dataclass

import numpy as np

from whitenclip.errors import InputError
from whitenclip.results import Result
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

        from whitenclip.stores import atomic_write

        if not (np.isfinite(self.mean).all() and np.isfinite(self.scatter).all()):
            raise InputError(f"{path}: refusing to write moments holding NaN or inf")
        meta = {"format": MOMENTS_FORMAT, "version": str(MOMENTS_VERSION), "n": str(self.n)}
        blob = st_save({"mean": self.mean, "scatter": self.scatter}, metadata=meta)
        with atomic_write(path) as fh:
            fh.write(blob)

    @classmethod
    def load(cls, path) -> "Moments":
        """Read moments written by :meth:`save`; validates every number (see :func:`moments_from_file`)."""
        from whitenclip.stores import read_safetensors

        tensors, meta = read_safetensors(path)
        return moments_from_file(tensors, meta, path)

    def __repr__(self) -> str:
        return f"Moments(n={self.n}, n_features={self.n_features})"


GRAM_DTYPES = ("float64", "float32")

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


def _chunk_moments(X: np.ndarray, *, overwrite: bool = False, gram: str = "float64",
                   origin: tuple | None = None) -> tuple[int, np.ndarray, np.ndarray]:
    """(m, mean, scatter) of one chunk, scatter = (X - mean)^T (X - mean); mean in float64,
    the Gram product in ``gram`` precision, returned as float64 (see :func:`centred_gram`).
    Raises :class:`InputError` naming ``origin`` = (file, first row) when the values overflow."""
    if gram not in GRAM_DTYPES:
        raise InputError(f"gram must be one of {', '.join(GRAM_DTYPES)}; got {gram!r}")
    Xc, mean = _centre(X, overwrite=overwrite, origin=origin)
    S = centred_gram(Xc, gram)
    if not np.isfinite(S).all():
        raise _overflow(Xc, origin, "the scatter")
    return X.shape[0], mean, S


def _centre(X: np.ndarray, *, overwrite: bool = False, origin: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(X - mean, mean) in float64, X centred in place when ``overwrite`` and X is a writeable
    C-contiguous float64 array, else a copy; :func:`_overflow` refuses a non-finite result."""
    in_place = overwrite and X.dtype == np.float64 and X.flags.c_contiguous and X.flags.writeable
    Xc = X if in_place else np.array(X, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        mean = Xc.mean(axis=0)
        Xc -= mean
    if not np.isfinite(mean).all() or not np.isfinite(Xc).all():
        raise _overflow(Xc, origin, "the mean")
    return Xc, mean


def centred_gram(Y: np.ndarray, gram: str = "float64") -> np.ndarray:
    """Y^T Y of centred rows Y (m, d) as float64 (d, d), scale-safe in float32.

    ``gram="float32"`` divides Y by s = 2^e (e: the exponent of max |Y|, so the division is exact)
    before the float32 product and multiplies the float64 result by s^2: values of any magnitude
    keep float32's relative precision (about 1e-7) instead of overflowing above |y| ~ 1e19 or
    vanishing below ~1e-19. In float64 the product is taken as it is: a non-finite result means
    the scatter itself is not representable (callers refuse it, see :func:`_overflow`).
    """
    if gram == "float32":
        amax = float(np.max(np.abs(Y))) if Y.size else 0.0
        scale = float(np.ldexp(1.0, int(np.frexp(amax)[1]))) if amax > 0 else 1.0
        Y32 = (Y / scale).astype(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            return (Y32.T @ Y32).astype(np.float64) * (scale * scale)
    with np.errstate(over="ignore", invalid="ignore"):
        return Y.T @ Y


def _overflow(Y: np.ndarray, origin: tuple | None, what: str) -> InputError:
    """The one-line refusal of a chunk whose float64 moments overflow, naming the file and the row
    holding the largest value (``origin`` = (file, row of Y[0]); "X" and chunk rows when None)."""
    name, first = origin if origin is not None else ("X", 0)
    with np.errstate(invalid="ignore"):
        mag = np.nan_to_num(np.abs(Y), nan=np.inf).max(axis=1)
    row = int(np.argmax(mag)) if mag.size else 0
    return InputError(f"{name}: row {int(first) + row}: values too large for float64 moments (|x - mean| up to "
                      f"{float(mag[row]) if mag.size else float('inf'):.3g}): {what} overflows; rescale the rows")


# ---------------------------------------------------------------------------------------
# parts: moments + power sums + metadata, what `whitenclip moments` writes and merges
# ---------------------------------------------------------------------------------------
PART_KEYS_THAT_MUST_MATCH = ("encoder", "modality", "normalized", "activation", "encoder_fingerprint", "gram")
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
    Gram precision); ``inputs`` the content hashes of the pieces read (in piece order);
    ``coverage`` what the part covers: one :func:`coverage_entry` per piece, ``{"file": path,
    "id": file identity, "rows": [start, stop]}`` (see :func:`file_identity`); ``stats``
    counts pieces, resumed pieces and dropped non-finite rows; ``extras`` maps a name to a dict
    of named arrays merged by :data:`EXTRA_MERGERS`.

    Two parts whose coverage holds overlapping row ranges of the same file (same identity) are
    refused at merge, however their pieces were cut; so is a piece hash seen twice.

    ``meta["calibration_mode"]`` says how the reservoir extra was sampled: ``"groups"`` (whole
    groups, keyed by group id: ``fit`` leaves each group out) or ``"rows"`` (the default of
    parts without the key); see :attr:`calibration_mode`. Parts sampled both ways are refused
    at merge: their union would be neither a sample of groups nor one of rows (an empty part,
    n = 0, merges with either).

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
        self.coverage: list[dict] = []
        self.stats = {"pieces": 0, "resumed": 0, "dropped_nonfinite": 0}
        self.extras: dict[str, dict[str, np.ndarray]] = {}

    @classmethod
    def empty(cls, n_features: int, meta: dict | None = None, *, files=(), calibration_rows: int = 0) -> "MomentsPart":
        """The part of no rows (n = 0) of ``files`` (empty shards): the identity of :meth:`merge`.

        With ``calibration_rows`` > 0 it carries an empty reservoir, so that merging it keeps the
        others' calibration sample (a reservoir only one side has is dropped)."""
        out = cls(n_features, meta)
        out.coverage = [coverage_entry(f, 0, 0) for f in files]
        if calibration_rows > 0:
            out.extras[RESERVOIR_EXTRA] = reservoir_to_tensors(Reservoir(calibration_rows, n_features))
        return out

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
    def calibration_mode(self) -> str | None:
        """How the calibration sample was drawn: "groups" or "rows", None when the part has none."""
        if RESERVOIR_EXTRA not in self.extras:
            return None
        return "groups" if self.meta.get("calibration_mode") == "groups" else "rows"

    @property
    def sum_sqnorm4(self) -> float | None:
        """sum_i ||x_i - mean||^4 (Ledoit-Wolf), or None for a part saved without power sums."""
        return float(self.power4) if self.has_power_sums else None

    # -- building -------------------------------------------------------------------------
    def update(self, X, *, gram: str | None = None, origin: tuple | None = None) -> "MomentsPart":
        """Fold rows X, shape (m, d), in (float64 accumulation); returns self.

        Values beyond :data:`~whitenclip.validation.MAX_ABS` = 1e50 in magnitude (sum ||y||^4
        overflows near 1e77), or whose moments would overflow, raise :class:`InputError` naming
        ``origin`` = (file, row of X[0]) and the row; the part is then unchanged (never non-finite).
        """
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise InputError(f"expected rows of dimension {self.n_features}, got shape {X.shape}")
        if X.shape[0] == 0:
            return self
        gram = gram or self.meta.get("gram") or "float64"
        if gram not in GRAM_DTYPES:
            raise InputError(f"gram must be one of {', '.join(GRAM_DTYPES)}; got {gram!r}")
        check_magnitude(X, *(origin or ("X", 0)))
        Y, mean = _centre(X, origin=origin)
        with np.errstate(over="ignore", invalid="ignore"):
            a = np.einsum("ij,ij->i", Y, Y)
            t, q = a @ Y, float(a @ a)
        if not (np.isfinite(t).all() and np.isfinite(q)):
            raise _overflow(Y, origin, "sum ||x - mean||^4 (Ledoit-Wolf's power sum)")
        S = centred_gram(Y, gram)
        if not np.isfinite(S).all():
            raise _overflow(Y, origin, "the scatter")
        other = MomentsPart(self.n_features, self.meta)
        other.moments.n, other.moments.mean, other.moments.scatter = X.shape[0], mean, S
        other.power3, other.power4 = t, q
        merged = self._combine(other)
        if not merged.is_finite():
            raise _overflow(Y, origin, "the merged moments")
        self.moments, self.power3, self.power4 = merged.moments, merged.power3, merged.power4
        return self

    def is_finite(self) -> bool:
        """True when every number of the part is finite (mean, scatter, power sums)."""
        return bool(np.isfinite(self.mean).all() and np.isfinite(self.scatter).all()
                    and np.isfinite(self.power3).all() and np.isfinite(self.power4))

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
            with np.errstate(over="ignore", invalid="ignore"):
                ta, qa = shift_power_sums(self.n, self.scatter, self.power3, self.power4, out.mean - self.mean)
                tb, qb = shift_power_sums(other.n, other.scatter, other.power3, other.power4, out.mean - other.mean)
                out.power3, out.power4 = ta + tb, qa + qb
            if not (np.isfinite(out.power3).all() and np.isfinite(out.power4)):
                raise InputError(f"merging parts of {self.n} and {other.n} rows overflows float64 in "
                                 "sum ||x - mean||^4 (values too large)")
            # sum a_i^2 >= (sum a_i)^2 / n with a_i = ||y_i||^2 (Cauchy-Schwarz): round-off below the bound is lifted
            out.power4 = max(float(out.power4), float((np.trace(out.scatter) / np.sqrt(out.n)) ** 2))
        return out

    def check_mergeable(self, other: "MomentsPart", name: str = "part") -> None:
        """Raise :class:`InputError` (naming ``name``) when ``other`` cannot join ``self``."""
        if other.n_features != self.n_features:
            raise InputError(f"{name}: moments of dimension {other.n_features}, earlier parts have {self.n_features}")
        for key in PART_KEYS_THAT_MUST_MATCH:
            if self.meta.get(key) != other.meta.get(key):
                raise InputError(f"{name}: {key}={other.meta.get(key)!r}, earlier parts have {self.meta.get(key)!r}")
        clash = first_overlap(self.coverage, other.coverage)
        if clash is not None:
            a, b = clash
            raise InputError(f"{name}: rows {b['rows'][0]}:{b['rows'][1]} of {b['file']} overlap rows "
                             f"{a['rows'][0]}:{a['rows'][1]} of {a['file']} already merged (same file identity: size "
                             "and sampled bytes; a copy counts as the same file): rows would be counted twice")
        dup = set(self.inputs) & set(other.inputs)
        if dup:
            raise InputError(f"{name}: holds {len(dup)} piece(s) already merged (same input hash, e.g. "
                             f"{sorted(dup)[0][:16]}): a part given twice?")
        mine, theirs = self.calibration_mode, other.calibration_mode
        if mine and theirs and mine != theirs and self.n and other.n:  # an empty part (n = 0) has no sample
            raise InputError(f"{name}: calibration sample of {theirs}, earlier parts sampled {mine}: parts of a "
                             "grouped and an ungrouped `whitenclip moments` run cannot be merged (rerun `moments` "
                             "on every part with the same --groups/--no-groups)")
        for key in set(self.extras) | set(other.extras):
            if key not in EXTRA_MERGERS:
                raise InputError(f"{name}: extra statistic {key!r} has no merge rule in this version")

    def merge(self, other: "MomentsPart", name: str = "part") -> "MomentsPart":
        """A new part for the union of the rows behind ``self`` and ``other`` (checked)."""
        self.check_mergeable(other, name)
        try:
            out = self._combine(other)
        except InputError as exc:  # overflow of the merged sums: name the part
            raise InputError(f"{name}: {exc}") from None
        out.inputs = self.inputs + other.inputs
        out.coverage = self.coverage + other.coverage
        out.stats = {k: self.stats.get(k, 0) + other.stats.get(k, 0) for k in set(self.stats) | set(other.stats)}
        for key in set(self.extras) & set(other.extras):  # an extra only one side has covers part of
            out.extras[key] = EXTRA_MERGERS[key](self.extras[key], other.extras[key])  # the rows: dropped
        modes = [p.calibration_mode for p in (self, other) if p.calibration_mode and p.n]
        if RESERVOIR_EXTRA in out.extras and modes:  # the mode of the parts that have rows
            out.meta["calibration_mode"] = modes[0]
        return out

    # -- persistence ------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write a ``.safetensors`` file (atomically) readable by :meth:`load` and :meth:`Moments.load`.

        Tensors: ``mean`` (d,), ``scatter`` (d, d), ``power3`` (d,), ``power4`` (1,), and
        ``extra.<name>.<tensor>`` for extras; header: ``format``, ``version``, ``n`` and
        ``whitenclip`` (JSON: d, meta, inputs, input_hash, coverage, stats, extras' names).
        """
        import json

        from safetensors.numpy import save as st_save

        from whitenclip.stores import atomic_write

        if not self.is_finite():  # never write a non-finite part (update/merge refuse overflow first)
            raise InputError(f"{path}: refusing to write moments holding NaN or inf")
        info = {"d": self.n_features, "meta": self.meta, "inputs": self.inputs, "input_hash": self.input_hash,
                "coverage": self.coverage, "stats": self.stats, "power_sums": self.has_power_sums,
                "extras": sorted(self.extras)}
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
        """Read a part (or a plain :class:`Moments` file: then without power sums or metadata).

        Every number and field is checked (:func:`moments_from_file`, :func:`check_part_info`,
        the power sums, :func:`check_reservoir_tensors`); anything inconsistent is an
        :class:`InputError` naming the file, never a crash or a silently wrong fit.
        """
        import json

        from whitenclip.stores import read_safetensors

        tensors, header = read_safetensors(path)
        m = moments_from_file(tensors, header, path)
        if "whitenclip" not in header:  # a plain Moments file: name its rows by their moments
            out = cls(m.n_features)
            out.moments, out.has_power_sums = m, False
            out.inputs = ["moments:" + _content_hash(m)]
            return out
        try:
            info = json.loads(header["whitenclip"])
        except ValueError:
            raise InputError(f"{path}: moments header is not valid JSON") from None
        info = check_part_info(info, m, path)
        out = cls(m.n_features, info["meta"])
        out.moments = m
        power3, power4 = tensors.get("power3"), tensors.get("power4")
        if info["power_sums"] and power3 is not None and power4 is not None:
            out.power3, out.power4 = _checked_power_sums(power3, power4, m, path)
        else:
            out.has_power_sums = False
        out.inputs, out.coverage = info["inputs"], info["coverage"]
        out.stats.update(info["stats"])
        for key in info["extras"]:
            prefix = f"extra.{key}."
            out.extras[key] = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            if key == RESERVOIR_EXTRA:
                check_reservoir_tensors(out.extras[key], m.n_features, m.n, path)
        return out

    def __repr__(self) -> str:
        return f"MomentsPart(n={self.n}, n_features={self.n_features}, pieces={self.stats.get('pieces')})"


def _content_hash(m: Moments) -> str:
    import hashlib

    h = hashlib.sha256(str(m.n).encode())
    h.update(np.ascontiguousarray(m.mean).tobytes())
    h.update(np.ascontiguousarray(m.scatter).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# what a part covers: file identity + row range
# ---------------------------------------------------------------------------------------
IDENTITY_BLOCK = 1 << 16
"""Bytes read from the start, the middle and the end of a file for :func:`file_identity`."""


def file_identity(path) -> str:
    """Content identity of a file: blake2b of its size and of three 64 KiB blocks (start, middle,
    end; the whole file when smaller), 32 hex digits.

    It names the *file* whatever piece of it a task reads, so the coverage of two parts can be
    compared row range against row range (a piece's own hash changes with where pieces are cut).
    It is path-independent: a copy of a shard is the same file, and its rows are not counted
    twice. Cost: three reads of 64 KiB per piece. Two files whose sizes and three blocks agree are
    taken to be the same file (for embedding shards: the same header and the same first, middle
    and last rows).
    """
    import hashlib
    import os

    size = os.path.getsize(path)
    h = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(path, "rb") as fh:
        for at in sorted({0, max(0, size // 2 - IDENTITY_BLOCK // 2), max(0, size - IDENTITY_BLOCK)}):
            fh.seek(at)
            h.update(fh.read(IDENTITY_BLOCK))
    return h.hexdigest()


def coverage_entry(path, start: int, stop: int, identity: str | None = None) -> dict:
    """What a piece covers: ``{"file": absolute path, "id": file_identity, "rows": [start, stop]}``."""
    import os

    return {"file": os.path.abspath(str(path)), "id": identity or file_identity(path), "rows": [int(start), int(stop)]}


def first_overlap(a: list[dict], b: list[dict]) -> tuple[dict, dict] | None:
    """The first pair (entry of ``a``, entry of ``b``) covering overlapping, non-empty row ranges of
    the same file identity, or None. The ranges of ``a`` must be disjoint per file (a merged or a
    loaded part's are: see :func:`check_part_info`). O((|a| + |b|) log |a|)."""
    import bisect

    spans: dict[str, tuple[list, list]] = {}
    for e in sorted((e for e in a if e["rows"][1] > e["rows"][0]), key=lambda e: e["rows"][0]):
        starts, entries = spans.setdefault(e["id"], ([], []))
        starts.append(e["rows"][0])
        entries.append(e)
    for e in b:
        lo, hi = e["rows"]
        if hi <= lo or e["id"] not in spans:
            continue
        starts, entries = spans[e["id"]]
        i = bisect.bisect_left(starts, hi) - 1  # the last range of ``a`` starting before hi
        if i >= 0 and entries[i]["rows"][1] > lo:  # disjoint ranges: ends ascend with starts
            return entries[i], e
    return None


# ---------------------------------------------------------------------------------------
# validation of a part's header (every number read from an artifact is checked)
# ---------------------------------------------------------------------------------------
_META_TYPES = {"encoder": (str, type(None)), "modality": (str, type(None)), "normalized": (bool, type(None))}


def check_part_info(info, m: Moments, path) -> dict:
    """The ``whitenclip`` JSON of a part's header, checked and normalised: a dict with ``d`` equal to
    the tensors' d, ``meta`` (encoder/modality str or null, normalized bool or null, gram one of
    :data:`GRAM_DTYPES`), ``inputs`` (strings), ``coverage`` (entries with a file, an id and rows
    0 <= start <= stop <= 2^53 covering at most n + dropped rows), ``stats`` (counts),
    ``power_sums`` (bool), ``extras`` (names). Raises :class:`InputError` naming the file."""
    def bad(what):
        return InputError(f"{path}: moments header: {what}")

    if not isinstance(info, dict):
        raise bad(f"expected a JSON object, got {type(info).__name__}")
    if "d" in info and header_count(info["d"], path, "d", lo=1) != m.n_features:
        raise bad(f"d={info['d']} but the tensors have d={m.n_features}")
    meta = info.get("meta") or {}
    if not isinstance(meta, dict):
        raise bad("meta must be an object")
    for key, types in _META_TYPES.items():
        if not isinstance(meta.get(key), types):
            raise bad(f"meta.{key}={meta.get(key)!r} has the wrong type")
    if meta.get("gram", "float64") not in GRAM_DTYPES:
        raise bad(f"meta.gram={meta.get('gram')!r} must be one of {', '.join(GRAM_DTYPES)}")
    if meta.get("calibration_mode") not in (None, "rows", "groups"):
        raise bad(f"meta.calibration_mode={meta.get('calibration_mode')!r} must be rows, groups or null")
    if any(not isinstance(v, (str, bool, int, float, type(None))) for v in meta.values()):
        raise bad("meta values must be strings, numbers, booleans or null")
    inputs = info.get("inputs", [])
    if not isinstance(inputs, list) or not all(isinstance(v, str) for v in inputs):
        raise bad("inputs must be a list of strings")
    stats = info.get("stats") or {}
    if not isinstance(stats, dict):
        raise bad("stats must be an object")
    stats = {str(k): header_count(v, path, f"stats.{k}") for k, v in stats.items()}
    coverage = info.get("coverage", [])
    if not isinstance(coverage, list):
        raise bad("coverage must be a list")
    covered = 0
    for e in coverage:
        if not (isinstance(e, dict) and isinstance(e.get("file"), str) and isinstance(e.get("id"), str)
                and isinstance(e.get("rows"), list) and len(e["rows"]) == 2):
            raise bad(f"coverage entry {str(e)[:80]!r} must be {{file, id, rows: [start, stop]}}")
        lo, hi = (header_count(v, path, "coverage rows") for v in e["rows"])
        if hi < lo:
            raise bad(f"coverage rows {lo}:{hi} of {e['file']} are reversed")
        covered += hi - lo
    if covered > m.n + stats.get("dropped_nonfinite", 0):
        raise bad(f"coverage names {covered} rows, more than n={m.n} (+ {stats.get('dropped_nonfinite', 0)} dropped)")
    if _self_overlap(coverage):
        raise bad("coverage holds overlapping row ranges of one file (rows counted twice)")
    power_sums = info.get("power_sums", True)
    if not isinstance(power_sums, bool):
        raise bad("power_sums must be true or false")
    extras = info.get("extras", [])
    if not isinstance(extras, list) or not all(isinstance(v, str) for v in extras):
        raise bad("extras must be a list of names")
    return {"meta": meta, "inputs": list(inputs), "coverage": [dict(e) for e in coverage], "stats": stats,
            "power_sums": power_sums, "extras": extras}


def _self_overlap(coverage: list[dict]) -> bool:
    by_id: dict[str, list] = {}
    for e in coverage:
        if e["rows"][1] > e["rows"][0]:
            by_id.setdefault(e["id"], []).append(tuple(e["rows"]))
    for spans in by_id.values():
        spans.sort()
        if any(spans[i][1] > spans[i + 1][0] for i in range(len(spans) - 1)):
            return True
    return False


def _checked_power_sums(power3, power4, m: Moments, path) -> tuple[np.ndarray, float]:
    """Power sums t (d,) and q of a part, checked: finite floats, (tr S)^2 / n <= q <= (tr S)^2 (Cauchy-Schwarz
    and positivity of a_i = ||y_i||^2, to 1e-6), all zero when n = 0."""
    if power3.shape != (m.n_features,) or power4.shape != (1,) or power3.dtype.kind != "f" or power4.dtype.kind != "f":
        raise InputError(f"{path}: power sums have shapes {power3.shape}, {power4.shape} (expected "
                         f"({m.n_features},), (1,), float)")
    t, q = power3.astype(np.float64), float(power4[0])
    if not (np.isfinite(t).all() and np.isfinite(q)):
        raise InputError(f"{path}: moments file holds non-finite values")
    bound = float((np.trace(m.scatter) / np.sqrt(max(m.n, 1))) ** 2)
    if q < 0 or q < bound * (1.0 - 1e-6):
        raise InputError(f"{path}: power4 = {q:.6g} is impossible: sum ||x - mean||^4 >= (tr S)^2 / n = {bound:.6g}")
    top = float(np.trace(m.scatter)) ** 2
    if q > top * (1.0 + 1e-6):
        raise InputError(f"{path}: power4 = {q:.6g} is impossible: sum ||x - mean||^4 <= (tr S)^2 = {top:.6g}")
    if m.n == 0 and (q != 0 or t.any()):
        raise InputError(f"{path}: an empty part (n = 0) must have zero power sums")
    return t, q


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


EXTRA_MERGERS[RESERVOIR_EXTRA] = _merge_reservoir_tensors



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


# ---------------------------------------------------------------------------------------
# what `whitenclip info` says about a moments file
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MomentsSummary(Result):
    """What ``whitenclip info`` shows about a moments file (``whitenclip moments`` / ``merge-moments``):
    rows ``n`` x ``d``, ``pieces`` read, the encoder ``meta`` it records, the Gram precision, whether it
    holds the power sums (Ledoit-Wolf), the calibration sample (``calibration_rows`` kept, drawn by
    ``calibration_mode`` rows or groups; None when it has none), dropped non-finite rows and ``input_hash``."""

    path: str
    n: int
    d: int
    pieces: int
    encoder: dict
    gram: str | None
    power_sums: bool
    calibration_mode: str | None
    calibration_rows: int | None
    dropped_nonfinite: int
    input_hash: str


def summarize_moments(path) -> MomentsSummary:
    """:class:`MomentsSummary` of a moments file (read and checked by :meth:`MomentsPart.load`)."""
    part = MomentsPart.load(path)
    res = part.extras.get(RESERVOIR_EXTRA)
    kept = None if res is None else int(np.asarray(res["rows"]).shape[0])
    meta = {k: v for k, v in part.meta.items() if v is not None and k not in ("gram", "calibration_mode")}
    return MomentsSummary(path=str(path), n=int(part.n), d=int(part.n_features),
                          pieces=int(part.stats.get("pieces", 0)), encoder=meta, gram=part.meta.get("gram"),
                          power_sums=bool(part.has_power_sums), calibration_mode=part.calibration_mode,
                          calibration_rows=kept, dropped_nonfinite=int(part.stats.get("dropped_nonfinite", 0)),
                          input_hash=part.input_hash)
