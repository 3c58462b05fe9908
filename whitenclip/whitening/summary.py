"""Summaries of a fitted whitener (the ``info`` command's data: header, spectrum, calibration) and
the notes ``fit`` prints about too few rows."""

from __future__ import annotations

import dataclasses

import numpy as np

from whitenclip.results import Result, json_safe
from whitenclip.whitening.estimator import Whitener


@dataclasses.dataclass(frozen=True)
class SpectrumSummary(Result):
    """Eigen-spectrum facts a person checks first (see :func:`spectrum_summary`)."""

    lambda_max: float
    lambda_min_kept: float
    condition_number: float
    decades: float
    rank: int
    dims_for_50pct: int
    dims_for_90pct: int
    dims_for_99pct: int


def _dims_for(frac: np.ndarray, level: float) -> int:
    """Fewest leading directions whose cumulative variance fraction reaches ``level``."""
    return int(min(np.searchsorted(frac, level) + 1, frac.size))


def summarize_spectrum(whitener: Whitener) -> SpectrumSummary:
    """:class:`SpectrumSummary` of a fitted whitener: extremes and condition number of the kept
    covariance, and k_p = min {k : sum_{i<=k} lambda_i >= p sum_i lambda_i} for p = 50/90/99%
    over all eigenvalues (kept or not)."""
    whitener._check_fitted()
    lam = np.asarray(whitener.all_eigenvalues_, dtype=np.float64)
    kept = np.asarray(whitener.eigenvalues_, dtype=np.float64)
    frac = np.cumsum(lam) / lam.sum() if lam.sum() > 0 else np.zeros_like(lam)
    return SpectrumSummary(
        lambda_max=float(kept.max()), lambda_min_kept=float(kept.min()),
        condition_number=float(kept.max() / kept.min()), decades=float(np.log10(kept.max() / kept.min())),
        rank=int(whitener.rank_), dims_for_50pct=_dims_for(frac, 0.5), dims_for_90pct=_dims_for(frac, 0.9),
        dims_for_99pct=_dims_for(frac, 0.99))


def spectrum_summary(whitener: Whitener) -> dict:
    """Eigen-spectrum facts a person checks first, as a dict (:func:`summarize_spectrum`)."""
    return summarize_spectrum(whitener).to_dict()


CALIBRATION_MISSING_NOTE = ("no calibration distances in this whitener (fitted with --no-calibration, imported, "
                            "or written before calibration existed): pvalue_conformal is not available; "
                            "refit to get it")

FEW_ROWS_PER_DIM = 5
"""``fit`` notes a fit without shrinkage on fewer than this many rows per dimension."""


CONFORMAL_MARGIN = 20
"""``fit`` notes a fit without shrinkage whose kept rank r leaves fewer than this many rows beyond it."""


def few_rows_note(n_samples: int, n_features: int, shrinkage=None, rank: int | None = None) -> str | None:
    """The one-line note ``fit`` prints when n < 5 d without shrinkage (None otherwise).

    With n close to d the smallest sample eigenvalues are far below the true ones, and 1/lambda
    weights them in ||w||^2: loglik of new rows reaches -1e5 or less, while their *ranking* still
    works. Measured with MiniLM (d = 384), n = 400, no shrinkage vs ``oas``: the demo captions'
    held-out vs out-of-domain AUC 1.000 vs 0.999, held-out mean logpdf -5663 vs +318; Flickr8k
    captions AUC 0.961 vs 0.932, logpdf -4179 vs +147 (at n = 4000: 0.986 vs 0.981, +221 vs +227).
    oas wins the density only near n = d: on Gaussian rows with a 60x spread of scales (d = 40)
    it gives -41 vs -500 at n = 1.1 d but -33 vs -25 at n = 3 d (the identity target is too flat).

    >>> few_rows_note(4000, 384) is None, few_rows_note(400, 384, "oas") is None
    (True, True)
    >>> few_rows_note(400, 384)[:43]
    'note: 400 rows for 384 dimensions (n < 5 d)'
    """
    if shrinkage is not None or n_samples >= FEW_ROWS_PER_DIM * n_features:
        return None
    margin = ""
    if rank is not None and 0 < n_samples - rank - 1 < CONFORMAL_MARGIN:
        # rank + 1 < n < rank + 21: finite but heavy-tailed leave-one-out distances (infinite ones: degenerate)
        margin = (f"; with n - r = {n_samples - rank} rows beyond the rank, pvalue_conformal is far too conservative "
                  "(MiniLM, n = d: 0 held-out rows below 0.05, 10% of junk)")
    return (f"note: {n_samples} rows for {n_features} dimensions (n < {FEW_ROWS_PER_DIM} d): the smallest "
            "eigenvalues are underestimated, so loglik of new rows can be far more negative than with more rows "
            "(compare logliks only under this whitener); ranking rows by loglik still works; when n is close to d, "
            "--shrinkage oas gives the better density (MiniLM, n = 400, d = 384: held-out mean logpdf +318 vs "
            f"-5663); >= 10 rows per dimension help most{margin}")


@dataclasses.dataclass(frozen=True)
class WhitenerSummary(Result):
    """What ``whitenclip info`` shows: the artifact header, its spectrum and calibration.

    ``to_dict()`` is ``{"path": ..., **header (without the eigenvalue list), "spectrum": {...}}``
    with ``n_cal`` and ``calibration`` among the header keys (None when absent, with ``note``);
    ``calibration`` records ``mode`` ("rows": leave-one-out, or "groups": leave-one-group-out),
    ``n_groups``, ``largest_group``, ``n_infinite``, ``degenerate`` (why it cannot give conformal
    p-values, or None) and ``warning`` (the grouped-rows and/or degenerate warning, or None).
    """

    path: str | None
    header: dict
    spectrum: SpectrumSummary
    n_cal: int | None
    note: str | None = None

    @property
    def calibration_mode(self) -> str | None:
        """"rows" or "groups" (None without calibration); artifacts from before groups say "rows"."""
        cal = self.header.get("calibration")
        return None if not isinstance(cal, dict) else str(cal.get("mode") or "rows")

    @property
    def n_groups(self) -> int | None:
        cal = self.header.get("calibration")
        return cal.get("n_groups") if isinstance(cal, dict) else None

    @property
    def warning(self) -> str | None:
        """The grouped-rows and/or degenerate-calibration warning (fit time, or found on loading), or None."""
        cal = self.header.get("calibration")
        return cal.get("warning") if isinstance(cal, dict) else None

    @property
    def degenerate(self) -> str | None:
        """Why the calibration cannot give conformal p-values (:func:`degenerate_calibration`), or None."""
        cal = self.header.get("calibration")
        return cal.get("degenerate") if isinstance(cal, dict) else None

    def to_dict(self) -> dict:
        out = {"path": self.path, **json_safe(self.header), "spectrum": self.spectrum.to_dict()}
        out["n_cal"] = self.n_cal
        if self.note:
            out["note"] = self.note
        return out


def summarize(whitener: Whitener, path=None) -> WhitenerSummary:
    """:class:`WhitenerSummary` of a fitted whitener (``path``: the artifact it came from)."""
    header = whitener.artifact_metadata()
    header.pop("eigenvalues", None)
    n_cal = whitener.n_cal_
    return WhitenerSummary(path=None if path is None else str(path), header=header,
                           spectrum=summarize_spectrum(whitener), n_cal=n_cal,
                           note=None if n_cal is not None else CALIBRATION_MISSING_NOTE)
