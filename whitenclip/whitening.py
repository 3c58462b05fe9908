"""Whitening transforms fitted on reference embeddings, and their safetensors artifact.

Given rows x in R^d with mean mu and covariance Sigma = V diag(lambda) V^T (eigenvalues in
descending order, ``ddof=1``), a whitening matrix W gives w = (x - mu) @ W with Cov(w) = I
on the kept rank r:

* ``pca``       W = V_r diag(lambda_r^{-1/2})            shape (d, r)  -- the W-CLIP form;
                w are principal coordinates with unit variance.
* ``zca``       W = V_r diag(lambda_r^{-1/2}) V_r^T      shape (d, d)  -- closest to identity.
* ``cholesky``  W = L^{-T} where Sigma = L L^T            shape (d, d)  -- triangular.

All three give the same squared norm ||w||^2 = (x - mu)^T Sigma_r^+ (x - mu) and the same
log|det W| = -1/2 sum_{i<=r} log lambda_i over the kept rank.

Directions whose eigenvalue is below ``floor * lambda_max`` (constant coordinates, n <= d,
duplicated rows) or past ``rank`` are dropped with a :class:`RankDeficiencyWarning`; the
reason is kept in ``dropped_`` and in the artifact's metadata.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import scipy.linalg

from whitenclip.errors import InputError, NotFittedError, RankDeficiencyWarning
from whitenclip.moments import Moments

ARTIFACT_FORMAT = "whitenclip-whitener"
ARTIFACT_VERSION = 1
METHODS = ("pca", "zca", "cholesky")
SHRINKAGES = (None, "ledoit-wolf", "oas")
DEFAULT_FLOOR = 1e-10


# ---------------------------------------------------------------------------------------
# shrinkage intensities
# ---------------------------------------------------------------------------------------
def oas_shrinkage(cov: np.ndarray, n_samples: int) -> float:
    """Oracle Approximating Shrinkage intensity (Chen et al. 2010), as in sklearn's ``oas``.

    With mu = tr(S)/d and alpha = mean(S**2) (S the ddof=0 covariance),
    num = alpha + mu^2, den = (n + 1) (alpha - mu^2 / d), shrinkage = min(num / den, 1).
    """
    d = cov.shape[0]
    mu = np.trace(cov) / d
    alpha = np.mean(cov**2)
    num = alpha + mu**2
    den = (n_samples + 1.0) * (alpha - mu**2 / d)
    return 1.0 if den == 0 else float(min(num / den, 1.0))


def ledoit_wolf_shrinkage_from_sums(cov0: np.ndarray, n_samples: int, sum_sqnorm4: float) -> float:
    """Ledoit-Wolf (2004) shrinkage intensity from streamed sums (sklearn's formula).

    cov0 is the ddof=0 covariance (d, d) and sum_sqnorm4 = sum_i ||x_i - mu||^4, the only
    fourth-moment quantity the estimator needs:

        m = tr(S)/d,  delta = ||S||_F^2/d - m^2,
        beta = (sum_i ||x_i - mu||^4 / n - ||S||_F^2) / (d n),
        shrinkage = min(beta, delta) / delta.
    """
    d = cov0.shape[0]
    mu = np.trace(cov0) / d
    fro2 = float(np.sum(cov0**2))
    delta = fro2 / d - mu**2
    beta = (sum_sqnorm4 / n_samples - fro2) / (d * n_samples)
    if delta <= 0:
        return 0.0
    return float(min(beta, delta) / delta)


def sum_centered_sqnorm4(chunks, mean: np.ndarray) -> float:
    """sum_i ||x_i - mean||^4 over an iterable of (m, d) chunks (second pass for Ledoit-Wolf)."""
    total = 0.0
    for X in chunks:
        total += float(np.sum(np.sum((np.asarray(X, dtype=np.float64) - mean) ** 2, axis=1) ** 2))
    return total


def shrink(cov: np.ndarray, shrinkage: float) -> np.ndarray:
    """Shrunk covariance (1 - a) Sigma + a (tr Sigma / d) I, for a in [0, 1]."""
    d = cov.shape[0]
    out = (1.0 - shrinkage) * cov
    out[np.diag_indices(d)] += shrinkage * np.trace(cov) / d
    return out


# ---------------------------------------------------------------------------------------
# the estimator
# ---------------------------------------------------------------------------------------
class Whitener:
    """Linear whitening w = (x - mean_) @ W_ fitted on reference rows.

    Parameters
    ----------
    method : {"pca", "zca", "cholesky"}, default "pca"
        Form of W (see module doc). ``pca`` is the W-CLIP form.
    shrinkage : None, "ledoit-wolf", "oas" or float in [0, 1], default None
        Covariance shrinkage towards (tr Sigma / d) I before the eigendecomposition.
    floor : float, default 1e-10
        Eigenvalues below ``floor * lambda_max`` are dropped (relative floor).
    rank : int or None, default None
        Keep at most this many leading directions.

    Attributes
    ----------
    mean_ : ndarray of shape (d,)
    W_ : ndarray of shape (d, r) for pca, (d, d) for zca and cholesky
    unwhiten_ : ndarray of shape (r, d) or (d, d)
        Right inverse used by :meth:`inverse_transform`: x = mean_ + w @ unwhiten_.
    components_ : ndarray of shape (d, r)
        Eigenvectors of ``covariance_`` as columns, descending eigenvalue.
    eigenvalues_ : ndarray of shape (r,)
        Kept eigenvalues, descending.
    all_eigenvalues_ : ndarray of shape (d,)
        All eigenvalues of ``covariance_``, descending, negative round-off clipped to 0.
    covariance_ : ndarray of shape (d, d)
        The (shrunk) covariance, ddof=1.
    shrinkage_ : float
        Shrinkage intensity applied (0 when none).
    rank_ : int
        r, the kept rank.
    n_samples_, n_features_ : int
    log_det_ : float
        log|det W| over the kept rank = -1/2 sum log eigenvalues_.
    dropped_ : dict
        {"n_dropped": int, "reason": str}.
    metadata_ : dict
        Free-form provenance (encoder, modality, normalized, input_hash, ...).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((500, 4)) @ np.diag([1, 2, 3, 4])
    >>> wh = Whitener().fit(X)
    >>> np.allclose(np.cov(wh.transform(X), rowvar=False), np.eye(4))
    True
    """

    def __init__(self, method: str = "pca", shrinkage=None, floor: float = DEFAULT_FLOOR, rank: int | None = None):
        self.method = method
        self.shrinkage = shrinkage
        self.floor = floor
        self.rank = rank

    # -- validation ---------------------------------------------------------------------
    def _validate_params(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"method must be one of {', '.join(METHODS)}; got {self.method!r}")
        s = self.shrinkage
        if not (s in SHRINKAGES or (isinstance(s, (int, float)) and not isinstance(s, bool) and 0.0 <= s <= 1.0)):
            raise InputError(f"shrinkage must be none, ledoit-wolf, oas or a float in [0, 1]; got {s!r}")
        if not (np.isfinite(self.floor) and 0.0 <= self.floor < 1.0):
            raise InputError(f"floor must be in [0, 1); got {self.floor!r}")
        if self.rank is not None and int(self.rank) < 1:
            raise InputError(f"rank must be >= 1; got {self.rank!r}")

    @staticmethod
    def _validate_X(X, name: str = "X") -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise InputError(f"{name}: expected a 2-D array of shape (n_samples, n_features), got {X.ndim}-D")
        bad = ~np.isfinite(X).all(axis=1)
        if bad.any():
            raise InputError(f"{name}: row {int(np.flatnonzero(bad)[0])} holds NaN or inf")
        return X

    # -- fitting ------------------------------------------------------------------------
    def fit(self, X, y=None) -> "Whitener":
        """Fit on rows X of shape (n_samples, n_features); returns self."""
        self._validate_params()
        X = self._validate_X(X)
        moments = Moments.from_array(X)
        sum4 = None
        if self.shrinkage == "ledoit-wolf":
            sum4 = sum_centered_sqnorm4([X], moments.mean)
        return self.fit_moments(moments, sum_sqnorm4=sum4)

    def fit_moments(self, moments: Moments, *, sum_sqnorm4: float | None = None) -> "Whitener":
        """Fit from streamed :class:`Moments` (count, mean, scatter); returns self.

        ``sum_sqnorm4`` = sum_i ||x_i - mean||^4 is needed only for Ledoit-Wolf shrinkage
        (a second pass over the rows; see :func:`sum_centered_sqnorm4`).
        """
        self._validate_params()
        n, d = moments.n, moments.n_features
        if n < 2:
            raise InputError(f"need at least 2 rows to fit a whitener, got {n}")
        cov = moments.covariance(ddof=1)
        self.shrinkage_ = self._shrinkage_intensity(cov, n, sum_sqnorm4)
        if self.shrinkage_ > 0:
            cov = shrink(cov, self.shrinkage_)
        self.mean_ = moments.mean.copy()
        self.covariance_ = cov
        self.n_samples_, self.n_features_ = int(n), int(d)
        lam, V = eigh_descending(cov)
        keep = self._kept_count(lam)
        if keep == 0:
            raise InputError("every coordinate is constant: nothing to whiten")
        self.dropped_ = self._explain_dropped(lam, keep, cov)
        self._set_basis(lam, V, keep, cov)
        self.metadata_ = {"input_hash": _moments_hash(moments), "input_hash_of": "moments (n, mean, scatter)"}
        if self.dropped_["n_dropped"]:
            warnings.warn(f"kept rank {keep} of {d}: {self.dropped_['reason']}", RankDeficiencyWarning, stacklevel=2)
        return self

    def _shrinkage_intensity(self, cov: np.ndarray, n: int, sum4) -> float:
        if self.shrinkage is None:
            return 0.0
        if self.shrinkage == "oas":
            return oas_shrinkage(cov * (n - 1) / n, n)
        if self.shrinkage == "ledoit-wolf":
            if sum4 is None:
                raise InputError("ledoit-wolf shrinkage needs sum ||x - mean||^4 (a second pass over the rows)")
            return ledoit_wolf_shrinkage_from_sums(cov * (n - 1) / n, n, sum4)
        return float(self.shrinkage)

    def _kept_count(self, lam: np.ndarray) -> int:
        lam_max = lam[0]
        if lam_max <= 0:
            return 0
        keep = int(np.sum(lam > self.floor * lam_max))
        if self.rank is not None:
            keep = min(keep, int(self.rank))
        return keep

    def _explain_dropped(self, lam: np.ndarray, keep: int, cov: np.ndarray) -> dict:
        d, n = lam.size, self.n_samples_
        reasons = []
        constant = int(np.sum(np.diag(cov) <= self.floor * lam[0]))
        if constant:
            reasons.append(f"{constant} constant coordinate(s)")
        if n - 1 < d:
            reasons.append(f"n={n} rows give rank at most n-1={n - 1} < d={d}")
        below = int(np.sum(lam <= self.floor * lam[0]))
        if below and not reasons:
            reasons.append(f"{below} eigenvalue(s) below floor {self.floor:g} x lambda_max (collinear or duplicated rows)")
        elif below:
            reasons.append(f"{below} eigenvalue(s) below floor {self.floor:g} x lambda_max in all")
        if self.rank is not None and keep == int(self.rank) and keep < d - below:
            reasons.append(f"rank capped at {self.rank}")
        return {"n_dropped": int(d - keep), "reason": "; ".join(reasons) if d - keep else ""}

    def _set_basis(self, lam: np.ndarray, V: np.ndarray, keep: int, cov: np.ndarray) -> None:
        lam_r, V_r = lam[:keep], V[:, :keep]
        self.all_eigenvalues_ = lam
        self.eigenvalues_ = lam_r
        self.components_ = V_r
        self.rank_ = keep
        self.log_det_ = float(-0.5 * np.sum(np.log(lam_r)))
        inv_sqrt, sqrt = lam_r**-0.5, lam_r**0.5
        method = self.method
        if method == "cholesky" and keep < self.n_features_:
            warnings.warn("cholesky whitening of a rank-deficient covariance: using the kept eigen-subspace "
                          "(the pca form)", RankDeficiencyWarning, stacklevel=3)
            method = "pca"
        if method == "pca":
            self.W_ = V_r * inv_sqrt
            self.unwhiten_ = (V_r * sqrt).T
        elif method == "zca":
            self.W_ = (V_r * inv_sqrt) @ V_r.T
            self.unwhiten_ = (V_r * sqrt) @ V_r.T
        else:
            L = scipy.linalg.cholesky(cov, lower=True)
            self.W_ = scipy.linalg.solve_triangular(L, np.eye(L.shape[0]), lower=True).T
            self.unwhiten_ = L.T
        self.effective_method_ = method

    # -- using --------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "W_"):
            raise NotFittedError("this Whitener is not fitted yet; call fit(X) first")

    def transform(self, X) -> np.ndarray:
        """w = (X - mean_) @ W_, shape (m, r) for pca, (m, d) otherwise; float64."""
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[None, :]
        if X.shape[1] != self.n_features_:
            raise InputError(f"input has dimension {X.shape[1]}, the whitener expects {self.n_features_}")
        return (X - self.mean_) @ self.W_

    def inverse_transform(self, Z) -> np.ndarray:
        """x = mean_ + Z @ unwhiten_, shape (m, d); exact on the kept subspace."""
        self._check_fitted()
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim == 1:
            Z = Z[None, :]
        if Z.shape[1] != self.unwhiten_.shape[0]:
            raise InputError(f"whitened input has dimension {Z.shape[1]}, expected {self.unwhiten_.shape[0]}")
        return self.mean_ + Z @ self.unwhiten_

    def fit_transform(self, X, y=None) -> np.ndarray:
        return self.fit(X).transform(X)

    @property
    def condition_number_(self) -> float:
        """lambda_max / lambda_min over the kept rank (condition number of the kept covariance)."""
        self._check_fitted()
        return float(self.eigenvalues_[0] / self.eigenvalues_[-1])

    # -- artifact -------------------------------------------------------------------------
    def artifact_metadata(self) -> dict:
        """Everything the artifact header records, as a JSON-ready dict."""
        self._check_fitted()
        return {
            "format": ARTIFACT_FORMAT,
            "version": ARTIFACT_VERSION,
            "method": self.method,
            "effective_method": self.effective_method_,
            "shrinkage": self.shrinkage,
            "shrinkage_intensity": self.shrinkage_,
            "floor": self.floor,
            "rank_requested": self.rank,
            "rank": self.rank_,
            "n": self.n_samples_,
            "d": self.n_features_,
            "log_det": self.log_det_,
            "dropped": self.dropped_,
            "eigenvalues": [float(v) for v in self.eigenvalues_],
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "encoder": None,
            "modality": None,
            "normalized": None,
            **self.metadata_,
        }

    def save(self, path) -> Path:
        """Write the fitted whitener to one ``.safetensors`` file, atomically."""
        from safetensors.numpy import save as st_save

        from whitenclip.stores import atomic_write

        meta = self.artifact_metadata()
        tensors = {
            "mean": self.mean_, "W": self.W_, "unwhiten": self.unwhiten_, "components": self.components_,
            "eigenvalues": self.eigenvalues_, "all_eigenvalues": self.all_eigenvalues_, "covariance": self.covariance_,
        }
        header = {"format": ARTIFACT_FORMAT, "version": str(ARTIFACT_VERSION), "whitenclip": json.dumps(meta)}
        blob = st_save({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in tensors.items()}, metadata=header)
        with atomic_write(path) as fh:
            fh.write(blob)
        return Path(path)

    @classmethod
    def load(cls, path) -> "Whitener":
        """Read a whitener written by :meth:`save`; validates version, shapes and finiteness."""
        from whitenclip.stores import read_safetensors

        tensors, header = read_safetensors(path)
        if header.get("format") != ARTIFACT_FORMAT or "whitenclip" not in header:
            raise InputError(f"{path}: not a whitenclip whitener (no '{ARTIFACT_FORMAT}' header)")
        try:
            meta = json.loads(header["whitenclip"])
            version = int(meta.get("version", -1))
        except (ValueError, TypeError, AttributeError):
            raise InputError(f"{path}: whitener header is not valid JSON") from None
        if version != ARTIFACT_VERSION:
            raise InputError(f"{path}: whitener format version {version} is not supported (expected {ARTIFACT_VERSION})")
        wh = cls(method=meta["method"], shrinkage=meta["shrinkage"], floor=meta["floor"], rank=meta["rank_requested"])
        _restore(wh, tensors, meta, path)
        return wh


def _restore(wh: Whitener, tensors: dict, meta: dict, path) -> None:
    need = ("mean", "W", "unwhiten", "components", "eigenvalues", "all_eigenvalues", "covariance")
    missing = [k for k in need if k not in tensors]
    if missing:
        raise InputError(f"{path}: whitener is missing tensor(s) {', '.join(missing)}")
    d, r = int(meta["d"]), int(meta["rank"])
    width = r if meta["effective_method"] == "pca" else d
    shapes = {"mean": (d,), "W": (d, width), "unwhiten": (width, d), "components": (d, r), "eigenvalues": (r,),
              "all_eigenvalues": (d,), "covariance": (d, d)}
    for k, shape in shapes.items():
        if tensors[k].shape != shape:
            raise InputError(f"{path}: tensor {k} has shape {tensors[k].shape}, header implies {shape}")
        if not np.isfinite(tensors[k]).all():
            raise InputError(f"{path}: tensor {k} holds NaN or inf")
    if not (tensors["eigenvalues"] > 0).all():
        raise InputError(f"{path}: kept eigenvalues must be positive")
    wh.mean_, wh.W_, wh.unwhiten_ = tensors["mean"], tensors["W"], tensors["unwhiten"]
    wh.components_, wh.eigenvalues_ = tensors["components"], tensors["eigenvalues"]
    wh.all_eigenvalues_, wh.covariance_ = tensors["all_eigenvalues"], tensors["covariance"]
    wh.rank_, wh.n_samples_, wh.n_features_ = r, int(meta["n"]) if meta["n"] is not None else None, d
    wh.shrinkage_, wh.effective_method_ = float(meta["shrinkage_intensity"]), meta["effective_method"]
    wh.log_det_ = float(-0.5 * np.sum(np.log(wh.eigenvalues_)))
    wh.dropped_ = meta["dropped"]
    skip = {"format", "version", "method", "effective_method", "shrinkage", "shrinkage_intensity", "floor",
            "rank_requested", "rank", "n", "d", "log_det", "dropped", "eigenvalues"}
    wh.metadata_ = {k: v for k, v in meta.items() if k not in skip}


def eigh_descending(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenpairs of a symmetric matrix (float64, LAPACK syevr), descending, negatives clipped to 0.

    Runs single-threaded: at d ~ 1000 threaded OpenBLAS gains nothing here and, on a busy machine,
    spinning threads made it 5-90x slower (measured on the 2-core dev machine).
    """
    from threadpoolctl import threadpool_limits

    limit = threadpool_limits(limits=1, user_api="blas") if cov.shape[0] >= 128 else contextlib.nullcontext()
    with limit:
        lam, V = scipy.linalg.eigh(cov, driver="evr")
    lam, V = lam[::-1], V[:, ::-1]
    return np.clip(lam, 0.0, None), np.ascontiguousarray(V)


def _moments_hash(moments: Moments) -> str:
    h = hashlib.sha256()
    h.update(str(moments.n).encode())
    h.update(np.ascontiguousarray(moments.mean).tobytes())
    h.update(np.ascontiguousarray(moments.scatter).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# importing a released whitening matrix (W-CLIP)
# ---------------------------------------------------------------------------------------
def whitener_from_matrix(mean, W, *, n_samples: int | None = None, metadata: dict | None = None) -> Whitener:
    """Wrap a given mean (d,) and whitening matrix W (d, d) as a fitted :class:`Whitener`.

    W is kept exactly, so scores equal -1/2 (d log 2 pi + ||(x - mean) @ W||^2). The
    eigen-structure is recovered from Sigma^{-1} = W W^T: with the SVD W = U S V^T,
    Sigma = U S^{-2} U^T, so the covariance eigenvalues are 1/s_i^2 (eigenvectors U) and
    log|det W| = sum log s_i. ``n_samples`` (rows W was fitted on) enables the calibrated
    p-value; unknown n falls back to chi2.
    """
    mean = np.asarray(mean, dtype=np.float64).ravel()
    W = np.asarray(W, dtype=np.float64)
    d = mean.size
    if W.shape != (d, d):
        raise InputError(f"whitening matrix has shape {W.shape}, expected ({d}, {d}) to match the mean")
    if not (np.isfinite(mean).all() and np.isfinite(W).all()):
        raise InputError("mean or whitening matrix holds NaN or inf")
    U, s, Vt = np.linalg.svd(W)
    if s[-1] <= 0 or not np.isfinite(1.0 / s[-1] ** 2):
        raise InputError("whitening matrix is singular: it cannot define a Gaussian density")
    order = np.argsort(s)  # ascending s = descending covariance eigenvalue 1/s^2
    U, s = U[:, order], s[order]
    wh = Whitener(method="pca", floor=0.0)
    wh.method = "imported"
    wh.mean_, wh.W_ = mean, W
    wh.unwhiten_ = (Vt.T[:, order] / s) @ U.T  # pinv(W) = V S^-1 U^T
    wh.components_, wh.eigenvalues_ = U, s**-2.0
    wh.all_eigenvalues_, wh.covariance_ = wh.eigenvalues_.copy(), (U * s**-2.0) @ U.T
    wh.shrinkage_, wh.effective_method_ = 0.0, "imported"
    wh.rank_, wh.n_samples_, wh.n_features_ = d, n_samples, d
    wh.log_det_ = float(np.sum(np.log(s)))
    wh.dropped_ = {"n_dropped": 0, "reason": ""}
    wh.metadata_ = {**(metadata or {}), "conditioning": conditioning_report(wh.eigenvalues_)}
    return wh


def conditioning_report(eigenvalues) -> dict:
    """Summary of a covariance spectrum lambda (descending): extremes, condition number and
    decades spanned, and ``n_degenerate``: directions with lambda > 1e20 x lambda_min, i.e. whose
    whitening gain s = lambda^{-1/2} is below 1e-10 of the largest: W (numerically) annihilates
    them, so log|det W| and ``logpdf`` are not meaningful there."""
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    cond = float(lam[0] / lam[-1])
    return {
        "lambda_max": float(lam[0]),
        "lambda_min": float(lam[-1]),
        "condition_number": cond,
        "decades": float(np.log10(cond)),
        "n_degenerate": int(np.sum(lam > 1e20 * lam[-1])),
    }


def _warn_conditioning(report: dict, name: str) -> None:
    if report["n_degenerate"]:
        warnings.warn(f"{name}: W is numerically singular: it annihilates {report['n_degenerate']} direction(s) "
                      f"(implied covariance eigenvalues up to {report['lambda_max']:.3g}); loglik keeps the "
                      "paper's formula, logpdf is not meaningful", RankDeficiencyWarning, stacklevel=3)
    elif report["decades"] > 6:
        warnings.warn(f"{name}: ill-conditioned covariance: eigenvalues span {report['decades']:.1f} decades "
                      f"(lambda_min {report['lambda_min']:.3g})", RankDeficiencyWarning, stacklevel=3)


def load_torch_tensor(path) -> np.ndarray:
    """Read one tensor from a torch ``.pt`` file with ``torch.load(weights_only=True)``."""
    import torch

    from whitenclip.stores import _existing_file

    p = _existing_file(path)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{p}: not a loadable torch tensor file ({' '.join(str(exc).split())[:200]})") from None
    if isinstance(obj, dict) and len(obj) == 1:
        obj = next(iter(obj.values()))
    if not isinstance(obj, torch.Tensor):
        raise InputError(f"{p}: expected a tensor, found {type(obj).__name__}")
    return obj.detach().to(torch.float64).numpy()


def import_wclip(mean_path, matrix_path, *, n_samples: int | None = None, modality: str | None = None) -> Whitener:
    """Build a whitener from the W-CLIP paper's released ``mean_*.pt`` and ``w_mat_*.pt`` files."""
    mean = load_torch_tensor(mean_path)
    W = load_torch_tensor(matrix_path)
    meta = {"source": "wclip", "source_files": [str(mean_path), str(matrix_path)], "modality": modality,
            "normalized": False, "encoder": "openclip:ViT-L-14/openai"}
    try:
        wh = whitener_from_matrix(mean, W, n_samples=n_samples, metadata=meta)
    except InputError as exc:
        raise InputError(f"{matrix_path}: {exc}") from None
    _warn_conditioning(wh.metadata_["conditioning"], str(matrix_path))
    return wh


# ---------------------------------------------------------------------------------------
# streaming fit over files, and spectrum summaries
# ---------------------------------------------------------------------------------------
def fit_whitener_streaming(sources, *, method: str = "pca", shrinkage=None, floor: float = DEFAULT_FLOOR,
                           rank: int | None = None, drop_nonfinite: bool = False, chunk_rows: int = 16384,
                           extra_metadata: dict | None = None, gram: str = "float64"):
    """Fit a :class:`Whitener` on embedding sources without holding their rows in memory.

    One pass accumulates :class:`Moments` chunk by chunk (peak memory O(chunk_rows * d + d^2),
    independent of n); Ledoit-Wolf shrinkage adds a second pass for sum ||x - mean||^4.
    ``gram="float32"`` computes each chunk's Gram in float32 (see :meth:`Moments.update`).
    Returns ``(whitener, row_stats)``.
    """
    from whitenclip.stores import RowStats, iter_rows

    Whitener(method=method, shrinkage=shrinkage, floor=floor, rank=rank)._validate_params()
    sources = list(sources)
    stats = RowStats()
    moments = None
    for _, X in iter_rows(sources, drop_nonfinite=drop_nonfinite, stats=stats, chunk_rows=chunk_rows):
        moments = (moments or Moments(X.shape[1])).update(X, overwrite=True, gram=gram)
    if moments is None:
        raise InputError(f"{', '.join(s.path for s in sources)}: no usable rows")
    if moments.n < 2:
        raise InputError(f"{sources[0].path}: need at least 2 rows to fit a whitener, got {moments.n}")
    sum4 = None
    if shrinkage == "ledoit-wolf":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            chunks = (X for _, X in iter_rows(sources, drop_nonfinite=drop_nonfinite, chunk_rows=chunk_rows))
            sum4 = sum_centered_sqnorm4(chunks, moments.mean)
    wh = Whitener(method=method, shrinkage=shrinkage, floor=floor, rank=rank).fit_moments(moments, sum_sqnorm4=sum4)
    wh.metadata_.update({k: v for k, v in (extra_metadata or {}).items() if v is not None})
    wh.metadata_["gram_dtype"] = gram
    return wh, stats


def spectrum_summary(whitener: Whitener) -> dict:
    """Eigen-spectrum facts a person checks first: extremes, condition number of the kept
    covariance, and how many directions carry 50/90/99% of the variance (sum lambda)."""
    lam = np.asarray(whitener.all_eigenvalues_, dtype=np.float64)
    kept = np.asarray(whitener.eigenvalues_, dtype=np.float64)
    frac = np.cumsum(lam) / lam.sum() if lam.sum() > 0 else np.zeros_like(lam)
    return {
        "lambda_max": float(kept.max()),
        "lambda_min_kept": float(kept.min()),
        "condition_number": float(kept.max() / kept.min()),
        "decades": float(np.log10(kept.max() / kept.min())),
        "rank": int(whitener.rank_),
        "dims_for_50pct": int(np.searchsorted(frac, 0.5) + 1),
        "dims_for_90pct": int(np.searchsorted(frac, 0.9) + 1),
        "dims_for_99pct": int(np.searchsorted(frac, 0.99) + 1),
    }
