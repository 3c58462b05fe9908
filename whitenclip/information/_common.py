"""Private helpers shared by the information estimators: units, paired inputs, fitted checks, BLAS threads."""

from __future__ import annotations

import math

import numpy as np
from scipy import linalg
from threadpoolctl import threadpool_limits

from whitenclip.errors import InputError, NotFittedError
from whitenclip.validation import as_matrix

_LOG_2PI_E = math.log(2.0 * math.pi * math.e)
_BASES = {"e": 1.0, "2": math.log(2.0)}  # divide nats by this to get the unit
_MAX_CCA = 1.0 - 1e-9


def _one_thread():
    """Single-threaded BLAS for LAPACK factorisations of (d, d) matrices: on a busy 2-core
    machine OpenBLAS threads make ``eigh`` of a 768 x 768 matrix ~50x slower, not faster."""
    return threadpool_limits(1, user_api="blas")


def _log_det_chol(S):
    """log det of a symmetric positive definite matrix via Cholesky."""
    return 2.0 * float(np.log(np.diag(linalg.cholesky(S, lower=True))).sum())


def _unit(base):
    if str(base) not in _BASES:
        raise InputError(f"base must be 'e' or '2', got {base!r}")
    return _BASES[str(base)]


def _paired(X, Y, min_rows=2, names=("X", "Y")):
    X = as_matrix(X, str(names[0]), min_rows=min_rows, allow_1d=True)
    Y = as_matrix(Y, str(names[1]), min_rows=min_rows, allow_1d=True)
    if X.shape[0] != Y.shape[0]:
        raise InputError(f"{names[0]} has {X.shape[0]} rows but {names[1]} has {Y.shape[0]}; rows must be paired")
    return X, Y


def _check_fitted(est, attr):
    if not hasattr(est, attr):
        raise NotFittedError(f"{type(est).__name__} is not fitted; call fit first")
