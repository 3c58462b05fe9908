"""Importing a released whitening matrix (the W-CLIP paper's ``mean_*.pt`` and ``w_mat_*.pt``) as a
fitted :class:`~whitenclip.whitening.estimator.Whitener`, with its conditioning checked."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from whitenclip.errors import InputError, RankDeficiencyWarning
from whitenclip.whitening.estimator import Whitener


def whitener_from_matrix(mean, W, *, n_samples: int | None = None, metadata: dict | None = None) -> Whitener:
    """Wrap a given mean (d,) and whitening matrix W (d, d) as a fitted :class:`Whitener`.

    W is kept exactly, so scores equal -1/2 (d log 2 pi + ||(x - mean) @ W||^2). The
    eigen-structure is recovered from Sigma^{-1} = W W^T: with the SVD W = U S V^T,
    Sigma = U S^{-2} U^T, so the covariance eigenvalues are 1/s_i^2 (eigenvectors U) and
    log|det W| = sum log s_i. ``n_samples`` (rows W was fitted on) enables the calibrated
    p-value; unknown n falls back to chi2.
    """
    from whitenclip.moments import header_count

    if n_samples is not None:
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)):
            raise InputError(f"n_samples must be a positive integer, got {n_samples!r}")
        n_samples = header_count(int(n_samples), "--n-samples", "n_samples", lo=1)
    mean = np.asarray(mean, dtype=np.float64).ravel()
    W = np.asarray(W, dtype=np.float64)
    d = mean.size
    if W.shape != (d, d):
        raise InputError(f"whitening matrix has shape {W.shape}, expected ({d}, {d}) to match the mean")
    if not (np.isfinite(mean).all() and np.isfinite(W).all()):
        raise InputError("mean or whitening matrix holds NaN or inf")
    U, s, Vt = np.linalg.svd(W)
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        if s[-1] <= 0 or not np.isfinite(1.0 / s[-1] ** 2):
            raise InputError("whitening matrix is singular: it cannot define a Gaussian density")
        if not s[0] ** -2.0 > 0:  # covariance eigenvalue 1/s^2 underflows to 0
            raise InputError(f"whitening matrix has a gain of {s[0]:.3g}: its implied covariance eigenvalue "
                             "1/s^2 underflows float64")
    order = np.argsort(s)  # ascending s = descending covariance eigenvalue 1/s^2
    U, s = U[:, order], s[order]
    wh = Whitener(method="pca", floor=0.0, calibration=False)
    wh.method = "imported"
    wh.mean_, wh.W_ = mean, W
    wh.unwhiten_ = (Vt.T[:, order] / s) @ U.T  # pinv(W) = V S^-1 U^T
    wh.components_, wh.eigenvalues_ = U, s**-2.0
    wh.all_eigenvalues_, wh.covariance_ = wh.eigenvalues_.copy(), (U * s**-2.0) @ U.T
    wh.shrinkage_, wh.effective_method_ = 0.0, "imported"
    wh.rank_, wh.n_samples_, wh.n_features_ = d, n_samples, d
    wh.log_det_ = float(np.sum(np.log(s)))
    wh.n_features_in_ = d
    wh.dropped_ = {"n_dropped": 0, "reason": ""}
    wh.calibration_ = None  # no reference rows: no conformal p-value
    wh.calibration_degenerate_ = wh.calibration_largest_group_ = None
    wh.shrinkage_choice_, wh.shrinkage_rule_ = None, None
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
    """Read one real, finite tensor from a torch ``.pt`` file with ``torch.load(weights_only=True)``, as float64."""
    import torch

    from whitenclip.readers.base import existing_file as _existing_file
    from whitenclip.readers.torch import torch_load, torch_load_error

    p = _existing_file(path)
    try:
        obj = torch_load(p)
    except Exception as exc:
        raise InputError(f"{p}: not a loadable torch tensor file ({torch_load_error(exc)})") from None
    if isinstance(obj, dict) and len(obj) == 1:
        obj = next(iter(obj.values()))
    if not isinstance(obj, torch.Tensor):
        raise InputError(f"{p}: expected a tensor, found {type(obj).__name__}")
    if obj.layout != torch.strided:
        raise InputError(f"{p}: holds a sparse tensor ({str(obj.layout).replace('torch.', '')}); save a dense one")
    if obj.is_complex() or not (obj.is_floating_point() or obj.dtype in (torch.int8, torch.int16, torch.int32,
                                                                        torch.int64, torch.uint8)):
        raise InputError(f"{p}: holds a {str(obj.dtype).replace('torch.', '')} tensor; expected real numbers")
    out = obj.detach().to(torch.float64).numpy()
    if not np.isfinite(out).all():
        bad = np.argwhere(~np.isfinite(out))[0]
        raise InputError(f"{p}: holds {out[tuple(bad)]} at index {tuple(int(i) for i in bad)}; expected finite numbers")
    return out


MODALITIES = ("image", "text")


def infer_modality(*paths) -> str | None:
    """``image`` or ``text`` when the file names (not their folders) say exactly one of them
    (``mean_image_L14.pt``, ``w_mat_text_L14.pt``), else None."""
    found = {m for p in paths for m in MODALITIES if m in Path(p).name.lower()}
    return found.pop() if len(found) == 1 else None


def import_wclip(mean_path, matrix_path, *, n_samples: int | None = None, modality: str | None = None) -> Whitener:
    """Build a whitener from the W-CLIP paper's released ``mean_*.pt`` and ``w_mat_*.pt`` files.

    ``modality`` (``image`` or ``text``) defaults to what the two file names say
    (:func:`infer_modality`); an InputError asks for it when they say neither or both. A given
    modality that contradicts the file names is used, with a warning.
    """
    inferred = infer_modality(mean_path, matrix_path)
    if modality is None:
        if inferred is None:
            raise InputError(f"cannot tell the modality from the file names {Path(mean_path).name} and "
                             f"{Path(matrix_path).name} (neither or both say image/text); give it: image or text")
        modality = inferred
    elif modality not in MODALITIES:
        raise InputError(f"modality must be image or text; got {modality!r}")
    elif inferred is not None and inferred != modality:
        warnings.warn(f"modality {modality} given, but the file names say {inferred} "
                      f"({Path(mean_path).name}, {Path(matrix_path).name}); recording {modality}", UserWarning,
                      stacklevel=2)
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
