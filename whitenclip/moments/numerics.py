"""Float64 numerics of one chunk of rows: centring, the (scale-safe) centred Gram product, the
exact shift of third and fourth power sums to a new mean, and the one-line overflow refusal."""

from __future__ import annotations

import numpy as np

from whitenclip.errors import InputError

GRAM_DTYPES = ("float64", "float32")


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
