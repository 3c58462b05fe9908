"""Confidence intervals over row groups: grouped moments, delete-a-group jackknife and Bayesian bootstrap
replicates, the entropy / MI statistic of a replicate covariance, and the interval arithmetic."""

from __future__ import annotations

import math

import numpy as np
from scipy import linalg, special
from scipy.stats import t as _student_t

from whitenclip.errors import InputError
from whitenclip.information._common import _log_det_chol, _one_thread
from whitenclip.information.bias import _mi_bias, log_det_bias

_GROUPS = 48  # row groups whose moments the jackknife / bootstrap recombine (_GroupedMoments)
_CI_METHODS = ("jackknife", "bootstrap", "gaussian", None)


class _GroupedMoments:
    """Per-group count, sum and second moment of the rows of ``Z`` (n, p).

    Rows are shuffled (seeded) into ``G = min(n, 48)`` groups (one group when
    ``resample=False``); any weighting of the groups pools exactly into a covariance::

        N = sum v_g n_g,  s = sum v_g s_g,  M = sum v_g M_g,  S = (M - s s^T / N) / (N - 1)

    at ``G p^2`` cost instead of ``n p^2``. The jackknife leaves one group out (``v_g = 0``,
    others 1); the Bayesian bootstrap (Rubin 1981) draws ``v = G * Dirichlet(1, ..., 1)``:
    mean 1 and variance ~1 like multinomial counts but never 0, so replicates keep full rank.
    """

    def __init__(self, Z, rng, resample=True):
        n, p = Z.shape
        G = min(n, _GROUPS) if resample else 1
        groups = np.array_split(rng.permutation(n), G) if G > 1 else [slice(None)]
        self.counts = np.empty(G)
        self.sums = np.empty((G, p))
        self.seconds = np.empty((G, p * p))
        for j, g in enumerate(groups):
            Zg = Z[g]
            self.counts[j] = Zg.shape[0]
            self.sums[j] = Zg.sum(axis=0)
            self.seconds[j] = (Zg.T @ Zg).ravel()

    def covariance(self):
        """ddof=1 covariance of all rows, shape (p, p)."""
        p = self.sums.shape[1]
        N, s = self.counts.sum(), self.sums.sum(axis=0)
        return (self.seconds.sum(axis=0).reshape(p, p) - np.outer(s, s) / N) / (N - 1.0)

    def jackknife(self, statistic):
        """``statistic(S, n)`` with each group left out in turn; shape (G,)."""
        p = self.sums.shape[1]
        M, s, N = self.seconds.sum(axis=0), self.sums.sum(axis=0), self.counts.sum()
        out = np.empty(self.counts.size)
        with _one_thread():
            for g in range(out.size):
                Ng, sg = N - self.counts[g], s - self.sums[g]
                S = ((M - self.seconds[g]).reshape(p, p) - np.outer(sg, sg) / Ng) / (Ng - 1.0)
                out[g] = statistic(S, int(Ng))
        return out

    def bootstrap(self, n_boot, statistic, rng, chunk=16):
        """``statistic(S, n)`` for ``n_boot`` Bayesian-bootstrap replicates; shape (n_boot,)."""
        G, p = self.sums.shape
        weights = G * rng.dirichlet(np.ones(G), size=int(n_boot))
        n = int(self.counts.sum())
        out = np.empty(len(weights))
        for start in range(0, len(weights), chunk):
            w = weights[start:start + chunk]
            M = (w @ self.seconds).reshape(-1, p, p)
            N, s = w @ self.counts, w @ self.sums
            with _one_thread():
                for j in range(len(w)):
                    out[start + j] = statistic((M[j] - np.outer(s[j], s[j]) / N[j]) / (N[j] - 1.0), n)
        return out


class _EntropyStatistic:
    """Bias-corrected ``0.5 log det S`` of a replicate covariance.

    Replicates are factorised in the input coordinates when the kept rank is full; if that
    Cholesky fails (an ill-conditioned input), or the rank is deficient, they are first
    whitened with ``W = V lam^{-1/2}`` and ``log det S = log det(W^T S W) + sum log lam``.
    """

    def __init__(self, r, V, lam):
        self.r, self.W, self.offset = r, V / np.sqrt(lam), float(np.log(lam).sum())
        self.project = V.shape[1] < V.shape[0]

    def __call__(self, S, n):
        bias = log_det_bias(self.r, n)
        if not self.project:
            try:
                return 0.5 * (_log_det_chol(S) - bias)
            except linalg.LinAlgError:
                pass
        return 0.5 * (_log_det_chol(self.W.T @ S @ self.W) + self.offset - bias)


class _MIStatistic:
    """MI of a replicate joint covariance: ``0.5 (logdet S_x + logdet S_y - logdet S) - bias``.

    MI is invariant to invertible maps of each block, so replicates are factorised in the input
    coordinates when both blocks have full rank, and otherwise (or when that fails) after the
    block whitening ``B = diag(A_x, A_y)``. ``targets`` holds the shrinkage target's diagonal,
    times the intensity ``a``, in both coordinates (input, whitened).
    """

    def __init__(self, Ax, Ay, a, targets, max_corr, correct):
        self.rx, self.ry, self.a, self.targets = Ax.shape[1], Ay.shape[1], a, targets
        self.max_corr, self.correct = max_corr, correct
        self.B = linalg.block_diag(Ax, Ay)  # (dx + dy, rx + ry)
        self.project = self.B.shape[0] > self.B.shape[1]

    def __call__(self, S, n):
        bias = _mi_bias(self.rx, self.ry, n) if self.correct else 0.0
        if not self.project:
            try:
                return self._mi(S, self.targets[0]) - bias
            except linalg.LinAlgError:
                pass
        return self._mi(self.B.T @ S @ self.B, self.targets[1]) - bias

    def _mi(self, S, target):
        if self.a:
            S = (1.0 - self.a) * S
            S[np.diag_indices_from(S)] += target
        k = self.rx
        try:
            return 0.5 * (_log_det_chol(S[:k, :k]) + _log_det_chol(S[k:, k:]) - _log_det_chol(S))
        except linalg.LinAlgError:  # degenerate joint: canonical correlations, clipped
            Lx = linalg.cholesky(S[:k, :k], lower=True)
            Ly = linalg.cholesky(S[k:, k:], lower=True)
            K = linalg.solve_triangular(Lx, S[:k, k:], lower=True)
            K = linalg.solve_triangular(Ly, K.T, lower=True)
            rho = np.minimum(linalg.svdvals(K), self.max_corr)
            return -0.5 * float(np.log1p(-rho**2).sum())


def _interval(est, groups, statistic, estimate, rng, unit):
    """``est.ci`` interval (in ``unit``) of ``statistic`` over the row ``groups``."""
    method, level = est.ci, est.confidence
    if method is None:
        return None
    if method == "jackknife":
        reps = groups.jackknife(statistic) / unit
        G = reps.size
        se = math.sqrt((G - 1) / G * float(((reps - reps.mean()) ** 2).sum()))
        t = float(_student_t.ppf(0.5 + 0.5 * level, G - 1))
        return (estimate / unit - t * se, estimate / unit + t * se)
    reps = groups.bootstrap(est.n_boot, statistic, rng) / unit
    return _centred_interval(estimate / unit, reps, level)


def _max_rank(n):
    """Largest rank whose log det stays defined with any one row group left out (jackknife)."""
    return n - 1 - math.ceil(n / min(n, _GROUPS))


def _check_n_boot(ci, n_boot):
    if ci == "bootstrap" and not (isinstance(n_boot, (int, np.integer)) and n_boot >= 2):
        raise InputError(f"a bootstrap interval needs at least 2 resamples (got {n_boot}); "
                         "200 or more are sensible (1000+ for a 99% interval)")


def _centred_interval(estimate, replicates, confidence):
    """Bootstrap percentile spread, centred on the (already bias-corrected) estimate."""
    alpha = 0.5 * (1.0 - confidence)
    lo, hi = np.quantile(replicates, [alpha, 1.0 - alpha])
    centre = replicates.mean()
    return (float(estimate + lo - centre), float(estimate + hi - centre))


def _check_ci(ci, allowed):
    if ci not in allowed:
        raise InputError(f"ci must be one of {', '.join(map(str, allowed))}; got {ci!r}")


def _normal_interval(estimate, std, confidence):
    z = float(special.ndtri(0.5 + 0.5 * confidence))
    return (float(estimate - z * std), float(estimate + z * std))
