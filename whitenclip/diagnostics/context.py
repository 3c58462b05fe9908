"""The report context: the rows, the whitener and the protocol every section reads, with the one
streamed pass over the rows (norms, whitened norms, the shape subsample, the covariance spectrum)."""

from __future__ import annotations

import functools

import numpy as np

from whitenclip.config import DIAGNOSTICS_CHUNK_ROWS
from whitenclip.diagnostics.marginal import draw_subsets
from whitenclip.diagnostics.small_n import held_out_whitening


def _chunks(X: np.ndarray, fn=None, rows: int = DIAGNOSTICS_CHUNK_ROWS):
    for s in range(0, X.shape[0], rows):
        C = X[s:s + rows]
        yield C if fn is None else fn(C)


class ReportContext:
    """What every section reads: the rows, the whitener, the protocol and one streamed pass.

    Attributes (shapes for n rows of dimension d, whitened rank r)
    ----------
    X : (n, d) float64;  whitener : fitted Whitener;  fitted_here, in_sample : bool
    seed, trials, subset, projections, projection_rows, mardia_rows, shape_rows : protocol
    mean : (d,);  raw_norms : (n,) ||x||;  centred_sq : (n,) ||x - mean||^2;  col_sq : (d,)
    sqnorms : (n,) ||w||^2;  shape_sub : seeded row indices;  w_shape : (len(shape_sub), r') whitened
    covariance : (d, d) covariance of X (ddof=1; the whitener's own when in-sample)
    spectrum : (d,) its eigenvalues, descending;  notes : list of str (appended to)
    few_rows : bool, in-sample rows with n <= r + 1 (the whitening is an exact frame; whitened
    figures come from :attr:`held_out`, :func:`held_out_whitening`)
    """

    def __init__(self, X: np.ndarray, whitener, *, fitted_here: bool, in_sample: bool, seed: int, trials: int,
                 subset: int, projections: int, projection_rows: int, mardia_rows: int, shape_rows: int,
                 notes: list[str]):
        self.X, self.whitener, self.fitted_here, self.in_sample = X, whitener, fitted_here, in_sample
        self.seed, self.trials, self.subset, self.projections = int(seed), int(trials), int(subset), int(projections)
        self.projection_rows, self.mardia_rows, self.shape_rows = projection_rows, mardia_rows, shape_rows
        self.notes = notes
        self.n, self.d = X.shape
        self.rank = int(whitener.rank_)
        self.n_fit = int(whitener.n_samples_) if whitener.n_samples_ is not None else self.n
        self.few_rows = bool(in_sample and self.rank >= 2 and self.n <= self.rank + 1)
        self._stream_pass()

    @functools.cached_property
    def held_out(self) -> dict:
        """:func:`held_out_whitening` of X (the whitener's method, OAS shrinkage, this seed)."""
        out = held_out_whitening(self.X, method=self.whitener.method, seed=self.seed)
        self.notes.extend(out.pop("notes"))
        return out

    def _stream_pass(self) -> None:
        X, n, d, rows = self.X, self.n, self.d, DIAGNOSTICS_CHUNK_ROWS
        self.mean = mean = X.mean(axis=0)
        self.raw_norms = np.sqrt(np.einsum("ij,ij->i", X, X))
        self.centred_sq, self.col_sq = np.empty(n), np.zeros(d)
        for s, C in zip(range(0, n, rows), _chunks(X, lambda C: C - mean, rows)):
            C2 = C * C
            self.centred_sq[s:s + C.shape[0]] = C2.sum(axis=1)
            self.col_sq += C2.sum(axis=0)
        # per-coordinate skewness / excess kurtosis on a seeded subsample (sd of g2 ~ sqrt(24 / rows));
        # its whitened rows are picked up during the single transform pass that gives ||w||^2
        rng_shape = np.random.default_rng(np.random.SeedSequence([self.seed, 0x5AE]))
        self.shape_sub = (np.sort(rng_shape.choice(n, size=self.shape_rows, replace=False)) if n > self.shape_rows
                          else np.arange(n))
        self.sqnorms, w_rows = np.empty(n), []
        for s, W in zip(range(0, n, rows), _chunks(X, self.whitener.transform, rows)):
            self.sqnorms[s:s + W.shape[0]] = np.einsum("ij,ij->i", W, W)
            lo, hi = np.searchsorted(self.shape_sub, [s, s + W.shape[0]])
            w_rows.append(W[self.shape_sub[lo:hi] - s])
        self.w_shape = np.concatenate(w_rows)
        if self.fitted_here or self.in_sample:
            self.covariance = self.whitener.covariance_
            self.spectrum = self.whitener.all_eigenvalues_
        else:
            self.covariance = np.cov(X, rowvar=False).reshape(d, d)
            self.spectrum = np.clip(np.linalg.eigvalsh(self.covariance), 0, None)[::-1]

    @functools.cached_property
    def subsets(self) -> list[np.ndarray]:
        """The per-coordinate protocol's row subsets (shared by raw and whitened coordinates)."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0xC00D]))
        return draw_subsets(self.n, self.trials, self.subset, rng)
