"""GaussianMI: mutual information between paired blocks under a joint Gaussian, from canonical correlations."""

from __future__ import annotations

import hashlib
import math
import warnings

import numpy as np

from whitenclip.errors import InputError, RankDeficiencyWarning
from whitenclip.information._common import _check_fitted, _one_thread, _paired, _unit
from whitenclip.information.bias import _mi_bias, effective_dimension
from whitenclip.information.crossfit import HEADLINE_RATIO, cross_fitted_mi
from whitenclip.information.intervals import (
    _CI_METHODS,
    _check_ci,
    _check_n_boot,
    _GroupedMoments,
    _interval,
    _max_rank,
    _MIStatistic,
)
from whitenclip.information.knn import _ksg_check
from whitenclip.information.results import CrossFitMI, KsgCheck, MIResult, PointwiseMIResult, mi_detectability
from whitenclip.whitening import eigh_descending, ledoit_wolf_shrinkage_from_sums, oas_shrinkage, shrink


class GaussianMI:
    """Mutual information between paired blocks under a joint Gaussian, from canonical correlations.

    Each block is centred and whitened over its kept rank (``A_x = V_x Lambda_x^{-1/2}``);
    the singular values of the whitened cross-covariance ``K = A_x^T C_xy A_y`` are the
    canonical correlations ``rho_i`` and::

        I_plugin = -0.5 * sum_i log(1 - rho_i^2)
                 = 0.5 * (log det S_x + log det S_y - log det S_xy)
        I        = I_plugin - 0.5 * (b(r_x) + b(r_y) - b(r_x + r_y)),   b = log_det_bias(., n)

    i.e. ``I = H(X) + H(Y) - H(X, Y)`` with each entropy bias-corrected; unbiased for Gaussian
    data (no correction is applied with shrinkage). Correlations at 1 (a degenerate joint) are
    clipped to ``max_corr`` with a :class:`RankDeficiencyWarning`.

    Pointwise MI (:meth:`pointwise`) is ``log p(x, y) - log p(x) - log p(y)`` under the fitted
    Gaussian; on the fit data it averages exactly to ``mi_plugin_`` (without shrinkage).
    A KSG estimate on the top ``ksg_dims`` canonical pairs, beside their Gaussian MI, checks
    the model; it runs on held-out variates (each row projected on the canonical directions of the
    cross-fitting model fitted without it), with a within-fold permutation null, so it reads ~0 on
    independent pairs, and is skipped (``ksg_skipped_`` says why) when there are no folds. The
    interval ``ci_`` is a delete-a-group jackknife or a Bayesian bootstrap of the same statistic,
    as in :class:`GaussianEntropy` (the bootstrap is only valid while ``r_x + r_y << n``).

    Parameters
    ----------
    base : {"e", "2"}, default "e"
    shrinkage : None, "ledoit-wolf", "oas" or float in [0, 1], default None
        Shrinks the joint covariance of the block-scaled data (each block divided by its mean
        variance) towards the identity: ``S_x <- (1 - a) S_x + a mu_x I`` (same for y) and
        ``C_xy <- (1 - a) C_xy``; the intensity is Ledoit-Wolf's or OAS's (as in scikit-learn),
        computed by :mod:`whitenclip.whitening`.
    bias_correction : bool, default True
    ci : {"jackknife", "bootstrap", None}, default "jackknife"
    n_boot : int, default 200
    confidence : float, default 0.95
    ksg_dims : int, default 2
        Canonical pairs used by the KSG check (held out, see :class:`KsgCheck`); 0 disables it.
    k : int, default 3
    ksg_max_samples : int, default 10000
    floor : float, default 1e-12
    max_corr : float, default 1 - 1e-9
        A leading canonical correlation above it (or identical X and Y) is a deterministic
        relation: ``mi_`` is then ``inf`` (reported as "deterministic relation: MI is infinite").
    folds : int, default 5
        Folds of the cross-fitted estimate (:func:`cross_fitted_mi`); 0 turns it off. It is the
        headline when ``n < HEADLINE_RATIO * (rank_x + rank_y)``, and decides detectability.
    random_state : int, default 0

    Attributes
    ----------
    crossfit_ : dict or None
        :func:`cross_fitted_mi` of the fitted pairs (nats), or None (``folds=0``, too few rows).
    headline_ : {"in-sample", "cross-fitted"}
    deterministic_ : bool
    effective_dims_ : tuple of float
        :func:`effective_dimension` of X and of Y.
    mi_, mi_plugin_ : float
    ci_ : tuple of float (lo, hi) or None
    canonical_correlations_ : ndarray of shape (min(rank_x_, rank_y_),), descending
    x_mean_ : ndarray of shape (dx,)
    y_mean_ : ndarray of shape (dy,)
    x_weights_ : ndarray of shape (dx, n_pairs)
        ``u = (x - x_mean_) @ x_weights_`` are the canonical variates (unit variance).
    y_weights_ : ndarray of shape (dy, n_pairs)
    rank_x_, rank_y_, n_samples_ : int
    shrinkage_ : float
        Shrinkage intensity used (0 without shrinkage).
    ksg_ : dict or None
        ``{"dims", "k", "n", "mi", "gaussian_mi", "null_ci", "pvalue", "detectable", "permutations"}``
        in ``base`` units (:class:`KsgCheck`), or None (``ksg_dims=0``, or skipped: ``ksg_skipped_``).
    ksg_skipped_ : str
        Why the KSG check did not run ("" when it ran or is off).
    """

    def __init__(self, base="e", shrinkage=None, bias_correction=True, ci="jackknife",
                 n_boot=200, confidence=0.95, ksg_dims=2, k=3, ksg_max_samples=10000,
                 floor=1e-12, max_corr=1.0 - 1e-9, folds=5, random_state=0):
        self.folds = folds
        self.base = base
        self.shrinkage = shrinkage
        self.bias_correction = bias_correction
        self.ci = ci
        self.n_boot = n_boot
        self.confidence = confidence
        self.ksg_dims = ksg_dims
        self.k = k
        self.ksg_max_samples = ksg_max_samples
        self.floor = floor
        self.max_corr = max_corr
        self.random_state = random_state

    def fit(self, X, Y, groups=None, names=("X", "Y")):
        """Fit on paired rows: ``X`` (n_samples, dx), ``Y`` (n_samples, dy); returns ``self``.

        ``groups`` (n_samples ids, optional): rows sharing an id (captions of one image, frames
        of one clip) are kept in one cross-fitting fold and clustered in its interval; a None id
        makes the row its own group. ``names``: what refusals call X and Y (the CLI gives the files).
        """
        unit = _unit(self.base)
        X, Y = _paired(X, Y, min_rows=4, names=names)
        _check_ci(self.ci, _CI_METHODS[:2] + (None,))
        _check_n_boot(self.ci, self.n_boot)
        if groups is not None and len(groups) != X.shape[0]:
            raise InputError(f"mi: {len(groups)} group ids for {X.shape[0]} pairs")
        # a missing id (None) makes the pair its own group
        row_groups = None if groups is None else [f"\0row{i}" if g is None else str(g) for i, g in enumerate(groups)]
        rng = np.random.default_rng(self.random_state)
        n = X.shape[0]
        dx, dy = X.shape[1], Y.shape[1]
        self.x_mean_, self.y_mean_ = X.mean(axis=0), Y.mean(axis=0)
        J = np.hstack([X - self.x_mean_, Y - self.y_mean_])  # centred joint rows (n, dx + dy)
        groups = _GroupedMoments(J, rng, resample=self.ci is not None)
        S = groups.covariance()
        a, (sx, sy) = self._shrinkage(J, dx, S)
        # the joint log det needs r_x + r_y below the row count: the budget is shared symmetrically
        (Ax, lx), (Ay, ly) = _whitening_maps(S, dx, a, self.floor, _max_rank(n), names=names)
        rx, ry = Ax.shape[1], Ay.shape[1]
        K = (1.0 - a) * (Ax.T @ S[:dx, dx:] @ Ay)  # whitened cross-covariance (rx, ry)
        with _one_thread():
            P, rho, Qt = np.linalg.svd(K, full_matrices=False)
        self.deterministic_ = bool(X.shape == Y.shape and np.array_equal(X, Y)) or bool(
            rho.size and rho[0] > self.max_corr and a == 0.0)
        if self.deterministic_:
            warnings.warn("mi: deterministic relation between X and Y (identical inputs, or a canonical "
                          "correlation of 1): MI is infinite", RankDeficiencyWarning, stacklevel=2)
        rho = np.minimum(rho, self.max_corr)
        plugin = -0.5 * float(np.log1p(-rho**2).sum())
        correct = self.bias_correction and a == 0.0
        corrected = plugin - (_mi_bias(rx, ry, n) if correct else 0.0)
        targets = (a * np.repeat([sx, sy], [dx, dy]), a * np.concatenate([sx / lx, sy / ly]))
        stat = _MIStatistic(Ax, Ay, a, targets, self.max_corr, correct)
        self.ci_ = _interval(self, groups, stat, corrected, rng, unit)
        self.x_weights_, self.y_weights_ = Ax @ P, Ay @ Qt.T
        self.canonical_correlations_ = rho
        self.mi_, self.mi_plugin_ = corrected / unit, plugin / unit
        self.rank_x_, self.rank_y_, self.n_samples_, self.shrinkage_ = rx, ry, n, a
        self.effective_dims_ = (effective_dimension(S[:dx, :dx], n), effective_dimension(S[dx:, dx:], n))
        ratio = n / float(rx + ry)
        self.crossfit_ = None
        if int(self.folds) and not self.deterministic_:
            self.crossfit_ = cross_fitted_mi(X, Y, self.folds, row_groups, self.floor, self.confidence,
                                             self.random_state, variates=max(int(self.ksg_dims), 0))
        self.ksg_, self.ksg_skipped_ = _ksg_check(
            self.crossfit_, unit, ksg_dims=self.ksg_dims, k=self.k, ksg_max_samples=self.ksg_max_samples,
            confidence=self.confidence, folds=self.folds, deterministic=self.deterministic_,
            random_state=self.random_state)
        if self.deterministic_:
            self.mi_, self.ci_ = math.inf, None
        self.headline_ = "cross-fitted" if self.crossfit_ is not None and ratio < HEADLINE_RATIO else "in-sample"
        self._fingerprint = _fingerprint(X, Y)
        return self

    def transform(self, X, Y):
        """Canonical variates ``(U, V)``, each of shape (n_samples, n_pairs)."""
        _check_fitted(self, "x_weights_")
        X, Y = _paired(X, Y)
        return (X - self.x_mean_) @ self.x_weights_, (Y - self.y_mean_) @ self.y_weights_

    def pointwise(self, X, Y):
        """Pointwise MI ``log p(x,y) - log p(x) - log p(y)`` per pair, shape (n_samples,).

        In canonical variates ``(u_i, v_i)`` with correlations ``rho_i``::

            pmi = sum_i [-0.5 log(1 - rho_i^2)
                         - (rho_i^2 u_i^2 - 2 rho_i u_i v_i + rho_i^2 v_i^2) / (2 (1 - rho_i^2))]
        """
        U, V = self.transform(X, Y)
        r2 = self.canonical_correlations_**2
        quad = (r2 * (U**2 + V**2) - 2.0 * self.canonical_correlations_ * U * V) / (1.0 - r2)
        return (-0.5 * np.log1p(-r2).sum() - 0.5 * quad.sum(axis=1)) / _unit(self.base)

    def pointwise_result(self, X, Y, ids=None) -> PointwiseMIResult:
        """:meth:`pointwise` as a :class:`PointwiseMIResult`; ``ids`` default to row numbers.

        For the fitted pairs themselves, when the cross-fitted estimate is the headline, these are
        its held-out values (each pair scored by the model of the folds that did not hold it).
        A deterministic relation (``deterministic_``) raises :class:`InputError`: every pair's
        pointwise MI is infinite, and the finite numbers the clipped correlations give mean nothing.
        """
        if getattr(self, "deterministic_", False):
            raise InputError("pointwise MI: deterministic relation between X and Y (identical inputs, or a canonical "
                             "correlation of 1): every pair's pointwise MI is infinite")
        if getattr(self, "crossfit_", None) is not None and self.headline_ == "cross-fitted":
            Xc, Yc = _paired(X, Y)
            if _fingerprint(Xc, Yc) == self._fingerprint:
                pmi = self.crossfit_["pmi"] / _unit(self.base)
            else:
                pmi = self.pointwise(X, Y)
        else:
            pmi = self.pointwise(X, Y)
        ids = tuple(str(i) for i in (range(pmi.size) if ids is None else ids))
        if len(ids) != pmi.size:
            raise InputError(f"pointwise MI: {len(ids)} ids for {pmi.size} pairs")
        return PointwiseMIResult(ids=ids, pmi=pmi, base=str(self.base))

    def result(self, top: int = 10) -> MIResult:
        """The fitted values as an :class:`MIResult` (``top`` leading canonical correlations).

        ``mi``/``ci`` stay the in-sample estimate (the large-n estimate); ``crossfit`` holds the
        cross-fitted one, ``headline`` names the one to read and ``headline_reason`` says why
        (``n / (rank_x + rank_y)`` against :data:`HEADLINE_RATIO`). Whether dependence is
        detectable is decided on the cross-fitted interval when there is one (see :func:`_verdict`).
        """
        _check_fitted(self, "mi_")
        ci = None if self.ci_ is None else (float(self.ci_[0]), float(self.ci_[1]))
        cf = None if self.crossfit_ is None else _crossfit_result(self.crossfit_, _unit(self.base))
        mi = math.inf if self.deterministic_ else float(self.mi_)
        n = int(self.n_samples_)
        detectable, note, resolvable = _verdict(mi, ci, cf, deterministic=self.deterministic_,
                                                confidence=self.confidence, n=n, effective_dims=self.effective_dims_)
        reason, head_mi, head_ci = _headline(self.headline_, self.deterministic_, n, int(self.rank_x_ + self.rank_y_),
                                             self.folds, mi, ci, cf)
        return MIResult(mi=mi, mi_plugin=float(self.mi_plugin_), ci=None if self.deterministic_ else ci,
                        canonical_correlations=tuple(float(r) for r in self.canonical_correlations_[:top]),
                        n=n, rank_x=int(self.rank_x_), rank_y=int(self.rank_y_),
                        base=str(self.base), shrinkage=float(self.shrinkage_),
                        ksg=None if self.ksg_ is None else KsgCheck(**self.ksg_), detectable=detectable,
                        note=note, confidence=float(self.confidence), ci_method=self.ci,
                        bias_corrected=bool(self.bias_correction and self.shrinkage_ == 0.0),
                        crossfit=cf, headline=self.headline_, headline_mi=head_mi, headline_ci=head_ci,
                        headline_reason=reason, deterministic=bool(self.deterministic_), resolvable=resolvable,
                        effective_dims=tuple(float(e) for e in self.effective_dims_),
                        ksg_skipped=str(getattr(self, "ksg_skipped_", "")))

    def summary(self, top: int = 10) -> dict:
        """JSON-ready dict of :meth:`result`: mi, mi_plugin, ci, canonical_correlations (top), n,
        ranks, base, shrinkage, ksg, detectable, note, ..."""
        return self.result(top).to_dict()

    # ---------------------------------------------------------------- helpers

    def _shrinkage(self, J, dx, S):
        """Intensity ``a`` and block mean variances ``(mu_x, mu_y)``: :func:`_shrinkage_intensity`."""
        return _shrinkage_intensity(self.shrinkage, J, dx, S)


def _crossfit_result(c, unit):
    """The :func:`cross_fitted_mi` dict ``c`` (nats) as a :class:`CrossFitMI` in ``unit``."""
    return CrossFitMI(mi=c["mi"] / unit, ci=(c["ci"][0] / unit, c["ci"][1] / unit), se=c["se"] / unit,
                      folds=int(c["folds"]), grouped=bool(c["grouped"]),
                      ranks=tuple((int(k), int(m)) for k, m in c["ranks"]))


def _verdict(mi, ci, cf, *, deterministic, confidence, n, effective_dims):
    """``(detectable, note, resolvable)`` of :meth:`GaussianMI.result`.

    * deterministic inputs: detectable, "deterministic relation: MI is infinite";
    * with a cross-fitted estimate, the decision is its interval's: above 0 = detected;
      otherwise, when ``n < d_eff_x + d_eff_y`` (effective dimensions, :func:`effective_dimension`)
      the sample cross-covariance noise exceeds what n rows resolve: ``detectable`` None and
      "cannot resolve dependence at this n" (not "none"); else "no detectable dependence", with
      a negative estimate explained, not shown as information;
    * without one, :func:`mi_detectability` of the in-sample interval.
    """
    if deterministic:
        return True, ("deterministic relation: MI is infinite (the inputs are identical, or a linear "
                      "combination of X equals one of Y: a canonical correlation of 1)"), True
    if cf is None:
        det, note = mi_detectability(mi, ci, float(confidence))
        return det, note, None
    level = f"{100 * float(confidence):g}%"
    dex, dey = effective_dims
    resolvable = n >= dex + dey
    where = f"cross-fitted {cf.mi:.3g}, {level} interval [{cf.ci[0]:.3g}, {cf.ci[1]:.3g}]"
    if cf.ci[0] > 0:
        return True, f"dependence detected: the cross-fitted {level} interval lies above 0 ({where})", resolvable
    if not resolvable:
        return None, (f"cannot resolve dependence at this n: n = {n} rows < d_eff(X) + d_eff(Y) = {dex:.0f} + "
                      f"{dey:.0f} (effective dimensions), so sample cross-covariance noise exceeds what the rows "
                      f"can resolve; this is not evidence of independence ({where})"), resolvable
    if all(m == 0 for _, m in cf.ranks):
        return False, ("no detectable dependence: held-out likelihood preferred the independence model in "
                       f"every fold ({where})"), resolvable
    if cf.mi < 0:
        return False, (f"no detectable dependence: the cross-fitted estimate {cf.mi:.3g} is below 0: the "
                       "fitted dependence predicts held-out pairs worse than independence does (noise fitted "
                       f"as signal); it is not an amount of information ({where})"), resolvable
    return False, f"no detectable dependence: the cross-fitted {level} interval contains 0 ({where})", resolvable


def _headline(headline, deterministic, n, r, folds, mi, ci, cf):
    """``(headline_reason, headline_mi, headline_ci)`` of :meth:`GaussianMI.result`: which estimate to read and
    why (``n / r``, ``r = rank_x + rank_y``, against :data:`HEADLINE_RATIO`)."""
    ratio = n / r
    if deterministic:
        reason = "deterministic relation: no finite estimate"
        head_mi, head_ci = math.inf, None
    elif headline == "cross-fitted":
        reason = (f"n / (rank_x + rank_y) = {n} / {r} = {ratio:.3g} < {HEADLINE_RATIO:g}: in-sample canonical "
                  "correlations are biased towards 1 this close to the rank, so the cross-fitted estimate "
                  "is the headline")
        head_mi, head_ci = cf.mi, cf.ci
    else:
        reason = (f"n / (rank_x + rank_y) = {n} / {r} = {ratio:.3g} >= {HEADLINE_RATIO:g}: the in-sample "
                  "bias-corrected estimate is unbiased for Gaussian pairs and has the smaller variance")
        if cf is None:
            reason = (f"n / (rank_x + rank_y) = {ratio:.3g}; no cross-fitted estimate "
                      f"({'folds=0' if not int(folds) else 'too few rows or groups for the folds'})")
        head_mi, head_ci = mi, ci
    return reason, head_mi, head_ci


def _shrinkage_intensity(shrinkage, J, dx, S):
    """Intensity ``a`` of ``shrinkage`` (None, a number in [0, 1], "ledoit-wolf" or "oas") and block mean
    variances ``(mu_x, mu_y)`` (``J`` centred joint rows, ``S`` their ddof=1 covariance).

    The Ledoit-Wolf / OAS intensities are those of the block-scaled rows
    ``Z = J / sqrt(mu_block)`` taken as centred (scikit-learn's ``assume_centered=True``),
    from ``whitenclip.whitening``: ddof=0 covariance ``S_Z = D S D (n - 1) / n`` with
    ``D = diag(mu_block^{-1/2})``, and for Ledoit-Wolf ``sum_i ||z_i||^4``.
    """
    var = np.diag(S)
    mus = (float(var[:dx].mean()), float(var[dx:].mean()))
    s = shrinkage
    if s is None:
        return 0.0, mus
    if isinstance(s, (int, float)) and not isinstance(s, bool):
        if not 0.0 <= s <= 1.0:
            raise InputError(f"shrinkage must be in [0, 1], got {s}")
        return float(s), mus
    if s not in ("ledoit-wolf", "oas"):
        raise InputError(f"unknown shrinkage {s!r} (use ledoit-wolf, oas or a number in [0, 1])")
    n = J.shape[0]
    scale = 1.0 / np.sqrt(np.repeat(mus, [dx, J.shape[1] - dx]))
    cov0 = S * np.outer(scale, scale) * ((n - 1.0) / n)
    if s == "oas":
        return oas_shrinkage(cov0, n), mus
    sum4 = float((((J * J) @ (scale * scale)) ** 2).sum())
    return ledoit_wolf_shrinkage_from_sums(cov0, n, sum4), mus


def _whitening_maps(S, dx, a, floor, budget, names=("X", "Y")):
    """``(A_x, lam_x), (A_y, lam_y)``: ``A = V lam^{-1/2}`` (d, r) of each shrunk block
    ``(1 - a) S_b + a (tr S_b / d_b) I`` over its kept rank, with ``r_x + r_y <= budget`` shared
    symmetrically: each side keeps up to half, and a side that needs less leaves the rest to the
    other (never 487 x 1)."""
    sides = []
    for cov, what in ((S[:dx, :dx], f"mi: {names[0]}"), (S[dx:, dx:], f"mi: {names[1]}")):
        lam, V = eigh_descending(shrink(cov, a))
        if not lam[0] > 0.0:
            raise InputError(f"{what}: all directions have zero variance")
        sides.append((lam, V, int((lam > floor * lam[0]).sum()), what))
    (_, _, nx, _), (_, _, ny, _) = sides
    cap_x = max(budget // 2, budget - ny, 1)
    caps = (cap_x, max(budget - min(nx, cap_x), 1))
    out = []
    for (lam, V, r0, what), cap in zip(sides, caps):
        r = min(r0, cap)
        if r < 1:
            raise InputError(f"{what}: too few rows for any kept direction")
        if r < lam.size:
            warnings.warn(f"{what}: kept rank {r} of {lam.size} (variance below {floor:g} x the largest, "
                          f"or beyond the {cap} of the {budget} allowed by the row count, shared by X and Y)",
                          RankDeficiencyWarning, stacklevel=4)
        out.append((np.ascontiguousarray(V[:, :r]) / np.sqrt(lam[:r]), lam[:r].copy()))
    return out


def _fingerprint(X, Y):
    """A digest of the fitted pairs (to recognise them again in :meth:`GaussianMI.pointwise_result`)."""
    h = hashlib.blake2b(digest_size=16)
    for A in (X, Y):
        h.update(str(A.shape).encode())
        h.update(np.ascontiguousarray(A).data)
    return h.hexdigest()
