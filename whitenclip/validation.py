"""The one input validator for arrays handed to the library (validation at the boundary).

Rows must be finite and of magnitude at most :data:`MAX_ABS` = 1e50: the library's statistics
take squares (covariances, squared norms), fourth powers (Ledoit-Wolf, kurtosis, Mardia) and sums
of them over many rows in float64, which overflow to inf (and then NaN) somewhere past |x| ~ 1e77;
1e50 leaves every such sum finite (4th powers 1e200) with room for 1e100 rows. Embeddings are
O(1), so the bound only ever meets corrupt or mis-scaled input, which is refused, naming the row.
"""

from __future__ import annotations

import numpy as np

from whitenclip.errors import InputError

MAX_ABS = 1e50
"""Largest |value| accepted in a row (see the module doc)."""


def check_magnitude(X: np.ndarray, name: str = "X", first_row: int | None = 0, ids=None) -> None:
    """Raise :class:`InputError` naming ``name`` and the first row (``first_row`` + index, and its id
    when ``ids`` are given; by its id alone when ``first_row`` is None) of finite X (m, d) holding a
    value beyond :data:`MAX_ABS` in magnitude.

    >>> try:
    ...     check_magnitude(np.array([[1.0, 2.0], [3.0, -1e60]]), "v.npy")
    ... except InputError as e:
    ...     print(str(e)[:39])
    v.npy: row 1 holds |x| = 1e+60 > 1e+50:
    """
    if X.size == 0 or (X.dtype.kind == "f" and float(np.finfo(X.dtype).max) <= MAX_ABS):  # float16/32: never above
        return
    big = np.abs(X).max(axis=1) > MAX_ABS
    if big.any():
        i = int(np.flatnonzero(big)[0])
        has_id = ids is not None and i < len(ids)
        if first_row is None:
            label = f"the row with id {str(ids[i])!r}" if has_id else f"row {i} of a chunk"
        else:
            label = f"row {first_row + i}" + (f" (id {str(ids[i])!r})" if has_id else "")
        raise InputError(f"{name}: {label} holds |x| = {float(np.abs(X[i]).max()):.3g} > {MAX_ABS:.0e}: too large "
                         "for float64 statistics (squares and 4th powers overflow); rescale the rows")


def as_matrix(X, name: str = "X", *, min_rows: int = 1, allow_1d: bool = False) -> np.ndarray:
    """``X`` as a finite float64 array of shape (n_samples, n_features), or an InputError.

    Every value must be finite and at most :data:`MAX_ABS` in magnitude (:func:`check_magnitude`).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    name : str
        What the message calls X (a file name, "X", "Y").
    min_rows : int
        Fewest rows accepted.
    allow_1d : bool
        Read a 1-D array as one column (n_samples, 1) instead of refusing it.

    >>> as_matrix([[1, 2], [3, 4]]).dtype
    dtype('float64')
    >>> as_matrix([[1.0, float("nan")]])
    Traceback (most recent call last):
    ...
    whitenclip.errors.InputError: X: row 0 holds NaN or inf
    """
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{name}: expected a numeric array of shape (n_samples, n_features)") from None
    if X.ndim == 1 and allow_1d:
        X = X[:, None]
    if X.ndim != 2:
        raise InputError(f"{name}: expected a 2-D array of shape (n_samples, n_features), got {X.ndim}-D")
    if X.shape[0] < min_rows or X.shape[1] < 1:
        raise InputError(f"{name}: need at least {min_rows} row(s) and 1 column, got shape {X.shape}")
    finite = np.isfinite(X).all(axis=1)
    if not finite.all():
        raise InputError(f"{name}: row {int(np.flatnonzero(~finite)[0])} holds NaN or inf")
    check_magnitude(X, name)
    return X
