"""The one input validator for arrays handed to the library (validation at the boundary)."""

from __future__ import annotations

import numpy as np

from whitenclip.errors import InputError


def as_matrix(X, name: str = "X", *, min_rows: int = 1, allow_1d: bool = False) -> np.ndarray:
    """``X`` as a finite float64 array of shape (n_samples, n_features), or an InputError.

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
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1 and allow_1d:
        X = X[:, None]
    if X.ndim != 2:
        raise InputError(f"{name}: expected a 2-D array of shape (n_samples, n_features), got {X.ndim}-D")
    if X.shape[0] < min_rows or X.shape[1] < 1:
        raise InputError(f"{name}: need at least {min_rows} row(s) and 1 column, got shape {X.shape}")
    finite = np.isfinite(X).all(axis=1)
    if not finite.all():
        raise InputError(f"{name}: row {int(np.flatnonzero(~finite)[0])} holds NaN or inf")
    return X
