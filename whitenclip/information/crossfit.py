"""Cross-fitted Gaussian MI: held-out pointwise MI with the model ((k, m) ranks) chosen by held-out likelihood,
and its fold helpers."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import t as _student_t

from whitenclip.information._common import _MAX_CCA, _one_thread, _paired
from whitenclip.whitening import eigh_descending

HEADLINE_RATIO = 10.0
"""The in-sample estimate is the headline when ``n >= HEADLINE_RATIO * (rank_x + rank_y)``."""
_RANK_GRID = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
_LOG_2PI = math.log(2.0 * math.pi)


class _FoldMoments:
    """Count, sum and second moment of the joint rows ``Z`` (n, p) in each fold (about the overall
    mean ``centre_``), so the moments of any union of folds, and the second moment of one fold about
    any mean, are sums: no second pass over the rows."""

    def __init__(self, Z, folds):
        self.centre = Z.mean(axis=0)
        self.counts = np.array([f.size for f in folds], dtype=np.float64)
        self.sums = np.empty((len(folds), Z.shape[1]))
        self.seconds = np.empty((len(folds), Z.shape[1], Z.shape[1]))
        for j, f in enumerate(folds):
            Zf = Z[f] - self.centre
            self.sums[j], self.seconds[j] = Zf.sum(axis=0), Zf.T @ Zf

    def pooled(self, idx):
        """``(N, mean, S)`` of the union of folds ``idx`` (mean relative to ``centre``, S ddof=1)."""
        N, s = self.counts[idx].sum(), self.sums[idx].sum(axis=0)
        mean = s / N
        return N, mean, (self.seconds[idx].sum(axis=0) - N * np.outer(mean, mean)) / (N - 1.0)

    def second_about(self, j, mean):
        """``mean_i (z_i - c - mean)(z_i - c - mean)^T`` over fold ``j``."""
        n, s = self.counts[j], self.sums[j]
        return (self.seconds[j] - np.outer(s, mean) - np.outer(mean, s)) / n + np.outer(mean, mean)


class _FoldModel:
    """Gaussian model fitted on training rows (joint covariance ``S``, ``dx`` columns of X):
    per side the eigenpairs above ``floor * lambda_max``, and the whitened cross-covariance in the
    principal bases, ``Kfull = (V_x lam_x^{-1/2})^T S_xy (V_y lam_y^{-1/2})``."""

    def __init__(self, N, S, dx, floor):
        self.N, self.dx, self.dy = N, dx, S.shape[0] - dx
        self.lx, self.Vx, self.rx = _side_eigh(S[:dx, :dx], floor)
        self.ly, self.Vy, self.ry = _side_eigh(S[dx:, dx:], floor)
        self.trx, self.trY = float(np.trace(S[:dx, :dx])), float(np.trace(S[dx:, dx:]))
        self.Wx = self.Vx[:, :self.rx] / np.sqrt(self.lx[:self.rx])
        self.Wy = self.Vy[:, :self.ry] / np.sqrt(self.ly[:self.ry])
        self.Kfull = self.Wx.T @ S[:dx, dx:] @ self.Wy
        self._cca = {}

    def ranks(self, k):
        """The symmetric budget: ``k`` directions per side, or all a side has."""
        return min(k, self.rx), min(k, self.ry)

    def grid(self):
        """Candidate ``k``: the rank grid (and the largest valid k) with ``k_x + k_y <= N - 2``."""
        ks = [k for k in _RANK_GRID if sum(self.ranks(k)) <= self.N - 2 and k <= max(self.rx, self.ry)]
        top = max(self.rx, self.ry)
        while top > 0 and sum(self.ranks(top)) > self.N - 2:
            top -= 1
        return sorted(set(ks) | ({top} if top > 0 else set()))

    def cca(self, k):
        """Canonical pairs of the top-``k`` principal coordinates: ``(P, rho, Q)``, rho descending."""
        if k not in self._cca:
            kx, ky = self.ranks(k)
            P, rho, Qt = np.linalg.svd(self.Kfull[:kx, :ky], full_matrices=False)
            self._cca[k] = (P, np.minimum(rho, _MAX_CCA), Qt.T)
        return self._cca[k]

    def marginal(self, Hx, hx, Hy, hy, k):
        """Mean held-out log-density of the two marginals, each a probabilistic PCA with ``k``
        directions (the kept eigenvalues) and one isotropic variance for the rest, from the held-out
        second moments in the principal bases (``Hx`` diagonal, ``hx`` its trace over all dims)."""
        out = 0.0
        for lam, H, h, tr, d, r in ((self.lx, Hx, hx, self.trx, self.dx, self.ranks(k)[0]),
                                    (self.ly, Hy, hy, self.trY, self.dy, self.ranks(k)[1])):
            q = H[:r]
            out -= 0.5 * (float((q / lam[:r]).sum()) + float(np.log(lam[:r]).sum()) + r * _LOG_2PI)
            if r < d:
                s2 = (tr - float(lam[:r].sum())) / (d - r)
                if not s2 > 0.0:
                    return -math.inf
                out -= 0.5 * ((h - float(q.sum())) / s2 + (d - r) * (_LOG_2PI + math.log(s2)))
        return out

    def pmi_terms(self, Cxx, Cyy, Cxy, k):
        """Mean held-out pointwise MI of each canonical pair of the top-``k`` model, cumulated:
        entry ``m`` is the held-out mean of ``log p(x, y) - log p(x) - log p(y)`` with ``m`` pairs
        (entry 0 is 0: the independence model). ``C..`` are held-out second moments in the
        whitened principal coordinates."""
        kx, ky = self.ranks(k)
        P, rho, Q = self.cca(k)
        uu = ((Cxx[:kx, :kx] @ P) * P).sum(axis=0)
        vv = ((Cyy[:ky, :ky] @ Q) * Q).sum(axis=0)
        uv = ((Cxy[:kx, :ky] @ Q) * P).sum(axis=0)
        r2 = rho * rho
        terms = -0.5 * np.log1p(-r2) - 0.5 * (r2 * (uu + vv) - 2.0 * rho * uv) / (1.0 - r2)
        return np.concatenate([[0.0], np.cumsum(terms)])


def _side_eigh(S, floor):
    lam, V = eigh_descending(S)
    r = int((lam > floor * lam[0]).sum()) if lam[0] > 0.0 else 0
    return lam, V, r


def _select(fm, idx, dx, floor):
    """``(k, m)`` maximising the held-out joint log-likelihood of a K-fold cross-validation over
    the folds ``idx`` (each left out in turn, the model fitted on the others): ``k`` principal
    directions per side, ``m`` canonical pairs (0: the independence model)."""
    total: dict = {}
    for j in idx:
        N, mean, S = fm.pooled([i for i in idx if i != j])
        mod = _FoldModel(N, S, dx, floor)
        C = fm.second_about(j, mean)
        Hx = np.einsum("ij,ik,kj->j", mod.Vx, C[:dx, :dx], mod.Vx, optimize=True)
        Hy = np.einsum("ij,ik,kj->j", mod.Vy, C[dx:, dx:], mod.Vy, optimize=True)
        hx, hy = float(np.trace(C[:dx, :dx])), float(np.trace(C[dx:, dx:]))
        Cxx, Cyy = mod.Wx.T @ C[:dx, :dx] @ mod.Wx, mod.Wy.T @ C[dx:, dx:] @ mod.Wy
        Cxy = mod.Wx.T @ C[:dx, dx:] @ mod.Wy
        for k in mod.grid():
            base = mod.marginal(Hx, hx, Hy, hy, k)
            cum = mod.pmi_terms(Cxx, Cyy, Cxy, k)
            for m in (0, *(g for g in _RANK_GRID if g < min(mod.ranks(k))), min(mod.ranks(k))):
                total.setdefault((k, m), []).append(fm.counts[j] * (base + cum[m]))
    valid = {key: sum(v) for key, v in total.items() if len(v) == len(idx)}
    if not valid:
        return None
    return max(valid, key=valid.get)


def _fold_indices(n, n_folds, label, rng):
    """``n_folds`` folds of row indices (whole groups when ``label``, each row's group index
    0..G-1, is given), seeded."""
    if label is None:
        return [np.sort(f) for f in np.array_split(rng.permutation(n), n_folds)]
    order = rng.permutation(label.max() + 1)
    fold_of = np.empty(order.size, dtype=np.int64)
    for j, part in enumerate(np.array_split(order, n_folds)):
        fold_of[part] = j
    return [np.flatnonzero(fold_of[label] == j) for j in range(n_folds)]


def cross_fitted_mi(X, Y, folds=5, groups=None, floor=1e-12, confidence=0.95, random_state=0, variates=0):
    """Cross-fitted Gaussian MI: held-out pointwise log-density ratios (nats), with a model chosen
    by held-out likelihood.

    Rows are split into ``folds`` folds (whole groups when ``groups`` is given). For each fold f,
    a model is fitted on the other folds and evaluated on f::

        pmi_i = log p(x_i, y_i) - log p(x_i) - log p(y_i),     i in fold f

    The model: per side, the top ``k`` principal directions of the training rows (the same budget
    ``k`` for X and Y), and ``m <= k`` canonical pairs of those coordinates with their training
    correlations ``rho_j`` (``m = 0``: independence). ``(k, m)`` maximises the held-out *joint*
    log-likelihood ``log p(x) + log p(y) + pmi`` (marginals: probabilistic PCA with ``k``
    directions) of an inner cross-validation over the training folds only, so fold f never
    chooses its own model. In the canonical variates ``u_j, v_j`` of the held-out rows, scaled to
    unit variance over fold f (marginal scales only: a training eigenvalue inflated by noise
    would otherwise turn into spurious dependence; the pairing is not used)::

        pmi_i = sum_j [-0.5 log(1 - rho_j^2) - (rho_j^2 (u_ij^2 + v_ij^2) - 2 rho_j u_ij v_ij) / (2 (1 - rho_j^2))]

    The estimate is ``mean_i pmi_i``; its interval ``mean +/- t_{n-1} se`` with ``se`` the
    standard error of the held-out values (clustered by group when ``groups`` is given). For
    independent rows its expectation is <= 0 (a KL divergence with the sign flipped), so a
    negative value means the fitted dependence predicts held-out pairs worse than independence.

    ``variates`` > 0 also returns the held-out canonical variates of the top ``variates`` canonical
    pairs of each fold's top-``k`` model (whatever ``m``; fewer when a fold's model has fewer):
    ``"variates": (U, V, fold)``, U and V of shape (n, q), each fold's rows centred and scaled to
    unit variance over that fold, ``fold`` (n,) each row's fold. The directions never saw the rows
    they project, so U and V are independent whenever X and Y are (the KSG check of
    :class:`GaussianMI` runs on them).

    Returns a dict ``{"mi", "ci", "se", "pmi" (n,), "folds", "grouped", "ranks" [(k, m) per fold],
    "held_out_correlation", "variates"}`` in nats, or None when there are too few rows (or groups)
    for ``folds`` folds (at least ``4 * folds`` rows).
    """
    X, Y = _paired(X, Y)
    n, dx = X.shape
    n_folds = int(folds)
    label, n_groups = None, n  # each row's group index (groups compared as strings), and how many groups
    if groups is not None:
        unique, label = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
        n_groups = unique.size
    if n_folds < 3 or n < 4 * n_folds or n_groups < n_folds:
        return None
    rng = np.random.default_rng(random_state)
    idx = _fold_indices(n, n_folds, label, rng)
    if min(f.size for f in idx) < 2:
        return None
    Z = np.hstack([X, Y])
    pmi = np.empty(n)
    ranks, top_corr, held = [], [], []
    with _one_thread():
        fm = _FoldMoments(Z, idx)
        for f in range(n_folds):
            rest = [i for i in range(n_folds) if i != f]
            chosen = _select(fm, rest, dx, floor)
            if chosen is None:
                return None
            k, m = chosen
            N, mean, S = fm.pooled(rest)
            mod = _FoldModel(N, S, dx, floor)
            kx, ky = mod.ranks(k)
            ranks.append((int(k), int(m)))
            Zh = Z[idx[f]] - fm.centre - mean
            if int(variates) > 0:
                P, _, Q = mod.cca(k)
                q = min(int(variates), P.shape[1])
                held.append((_unit_columns(Zh[:, :dx] @ (mod.Wx[:, :kx] @ P[:, :q])),
                             _unit_columns(Zh[:, dx:] @ (mod.Wy[:, :ky] @ Q[:, :q]))))
            if m == 0:
                pmi[idx[f]] = 0.0
                continue
            P, rho, Q = mod.cca(k)
            P, rho, Q = P[:, :m], rho[:m], Q[:, :m]
            U = Zh[:, :dx] @ (mod.Wx[:, :kx] @ P)
            V = Zh[:, dx:] @ (mod.Wy[:, :ky] @ Q)
            U /= np.sqrt(np.maximum((U * U).mean(axis=0), np.finfo(float).tiny))
            V /= np.sqrt(np.maximum((V * V).mean(axis=0), np.finfo(float).tiny))
            top_corr.append(float((U[:, 0] * V[:, 0]).mean()))
            r2 = rho * rho
            pmi[idx[f]] = (-0.5 * float(np.log1p(-r2).sum())
                           - 0.5 * ((r2 * (U * U + V * V) - 2.0 * rho * U * V) / (1.0 - r2)).sum(axis=1))
    mi = float(pmi.mean())
    if groups is None:
        se = float(pmi.std(ddof=1)) / math.sqrt(n)
        dof = n - 1
    else:
        sums = np.bincount(label, weights=pmi - mi)
        G = sums.size
        se = math.sqrt(G / (G - 1.0) * float((sums**2).sum())) / n
        dof = G - 1
    t = float(_student_t.ppf(0.5 + 0.5 * confidence, dof))
    held_out = None
    if held and min(u.shape[1] for u, _ in held) > 0:
        q = min(u.shape[1] for u, _ in held)
        U, V, fold = np.empty((n, q)), np.empty((n, q)), np.empty(n, dtype=np.int64)
        for f, (u, v) in enumerate(held):
            U[idx[f]], V[idx[f]], fold[idx[f]] = u[:, :q], v[:, :q], f
        held_out = (U, V, fold)
    return {"mi": mi, "ci": (mi - t * se, mi + t * se), "se": se, "pmi": pmi, "folds": n_folds,
            "grouped": groups is not None, "ranks": ranks,
            "held_out_correlation": min(top_corr) if len(top_corr) == n_folds else None, "variates": held_out}


def _unit_columns(A):
    """Columns of ``A`` centred and scaled to unit variance (a constant column stays 0)."""
    A = A - A.mean(axis=0)
    return A / np.sqrt(np.maximum((A * A).mean(axis=0), np.finfo(float).tiny))
