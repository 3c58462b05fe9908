"""Distribution-free comparisons of two sets of rows: CMMD and a permutation two-sample test.

* :func:`cmmd` is CMMD (Jayasumana et al., CVPR 2024; google-research/cmmd ``distance.py``):
  1000 x MMD^2 with the Gaussian RBF kernel exp(-||x - y||^2 / (2 sigma^2)), sigma = 10, on
  L2-normalised rows, the biased V-statistic (means over all pairs, diagonals included), here
  computed tile by tile in bounded memory (never n x n), with the unbiased U-statistic beside it
  and a fold-jackknife interval for both from the same tile sums.
* :func:`permutation_test` is a two-sample test that holds its level for any law of exchangeable
  rows (or of exchangeable groups, when groups are given): the statistic is the squared distance
  between the mean random Fourier features (Rahimi & Recht 2007) of the two sets, a sum of RBF
  kernels at 0.5, 1 and 2 x the median pairwise distance of the pooled rows; p = (1 + #{T_b >= T})
  / (B + 1) over B seeded permutations of the set labels (of whole groups). Memory: the labels
  (B bits per row) and a (B + 1) x D accumulator, linear in the rows.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from whitenclip.errors import InputError

CMMD_SIGMA = 10.0
CMMD_SCALE = 1000.0
TILE_ROWS = 2048
CMMD_ASSUMES = ("none about the law: kernel MMD^2 x 1000 (RBF, sigma 10, unit rows; google-research/cmmd's biased "
                "V-statistic, cmmd_unbiased the U-statistic); interval: jackknife over 10 seeded folds "
                "(whole groups when given), normal")
TEST_ASSUMES = ("exchangeable rows under the null (or exchangeable groups, when groups are given): permutation "
                "test of mean random Fourier features (RBF at 0.5, 1, 2 x the median distance), valid at any n")
JACKKNIFE_FOLDS = 10


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (a zero row is refused: it has no direction)."""
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=1)
    if (norms == 0).any():
        raise InputError(f"row {int(np.flatnonzero(norms == 0)[0])} is all zeros: it cannot be L2-normalised")
    return X / norms[:, None]


def fold_labels(n: int, folds: int, rng: np.random.Generator, groups=None) -> np.ndarray:
    """A fold in 0..folds-1 for each of n rows: balanced seeded folds, or whole groups per fold."""
    if groups is None:
        return rng.permutation(np.arange(n) % folds)
    _, inverse = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    n_groups = int(inverse.max()) + 1
    return rng.permutation(np.arange(n_groups) % folds)[inverse.ravel()]


def _tile_sums(A, fa, B, fb, folds: int, gamma: float, symmetric: bool) -> np.ndarray:
    """(folds x folds) sums of exp(-gamma ||a - b||^2) over the row pairs of each pair of folds,
    computed TILE_ROWS x TILE_ROWS at a time (``symmetric``: A is B, upper tiles only)."""
    out = np.zeros((folds, folds))
    na, nb = A.shape[0], B.shape[0]
    sa, sb = np.einsum("ij,ij->i", A, A), np.einsum("ij,ij->i", B, B)
    eye = np.eye(folds)
    for i in range(0, na, TILE_ROWS):
        Ai, oa = A[i:i + TILE_ROWS], eye[fa[i:i + TILE_ROWS]]
        for j in range(i if symmetric else 0, nb, TILE_ROWS):
            D2 = sa[i:i + TILE_ROWS, None] + sb[None, j:j + TILE_ROWS] - 2.0 * (Ai @ B[j:j + TILE_ROWS].T)
            K = np.exp(-gamma * np.clip(D2, 0.0, None))
            T = oa.T @ (K @ eye[fb[j:j + TILE_ROWS]])
            out += T
            if symmetric and j != i:
                out += T.T
    return out


def _mmd_from_tiles(kxx, kyy, kxy, nx, ny, dx, dy):
    """(V, U) statistics from the kernel sums (dx, dy: sums of the diagonals k(x, x))."""
    v = kxx / nx ** 2 + kyy / ny ** 2 - 2.0 * kxy / (nx * ny)
    u = (kxx - dx) / (nx * (nx - 1.0)) + (kyy - dy) / (ny * (ny - 1.0)) - 2.0 * kxy / (nx * ny)
    return v, u


def cmmd(X, Y, *, sigma: float = CMMD_SIGMA, scale: float = CMMD_SCALE, normalize: bool = True,
         groups_x=None, groups_y=None, seed: int = 0, confidence: float = 0.95) -> dict:
    """CMMD of rows X (n, d) and Y (m, d): ``scale`` x MMD^2, RBF kernel of bandwidth ``sigma``.

    ``cmmd`` is google-research/cmmd's biased V-statistic (every pair, diagonals included);
    ``cmmd_unbiased`` the U-statistic (diagonals left out: zero in expectation when X and Y share a
    law). Rows are L2-normalised first (``normalize``), as CMMD's CLIP embeddings are. Intervals:
    leave-one-fold-out jackknife over 10 seeded folds of each set (fold g of X left out with fold g
    of Y; whole groups per fold when ``groups_x``/``groups_y`` are given), normal, from the same
    tile sums (no extra kernel evaluations). Memory: O((n + m) d) plus one 2048 x 2048 tile.
    """
    X, Y = (unit_rows(X), unit_rows(Y)) if normalize else (np.asarray(X, np.float64), np.asarray(Y, np.float64))
    nx, ny = X.shape[0], Y.shape[0]
    if min(nx, ny) < 2:
        raise InputError(f"cmmd needs at least 2 rows per set, got {nx} and {ny}")
    rng = np.random.default_rng(seed)
    folds = min(JACKKNIFE_FOLDS, nx, ny)
    fx, fy = fold_labels(nx, folds, rng, groups_x), fold_labels(ny, folds, rng, groups_y)
    gamma = 1.0 / (2.0 * sigma ** 2)
    Kxx = _tile_sums(X, fx, X, fx, folds, gamma, True)
    Kyy = _tile_sums(Y, fy, Y, fy, folds, gamma, True)
    Kxy = _tile_sums(X, fx, Y, fy, folds, gamma, False)
    cx, cy = np.bincount(fx, minlength=folds).astype(float), np.bincount(fy, minlength=folds).astype(float)
    dgx, dgy = cx, cy  # the diagonal k(x, x) = 1 (left out of the U-statistic)
    v, u = _mmd_from_tiles(Kxx.sum(), Kyy.sum(), Kxy.sum(), nx, ny, dgx.sum(), dgy.sum())
    jack_v, jack_u = [], []
    for g in range(folds):
        kxx = Kxx.sum() - Kxx[g].sum() - Kxx[:, g].sum() + Kxx[g, g]
        kyy = Kyy.sum() - Kyy[g].sum() - Kyy[:, g].sum() + Kyy[g, g]
        kxy = Kxy.sum() - Kxy[g].sum() - Kxy[:, g].sum() + Kxy[g, g]
        a, b = _mmd_from_tiles(kxx, kyy, kxy, nx - cx[g], ny - cy[g], dgx.sum() - dgx[g], dgy.sum() - dgy[g])
        jack_v.append(a)
        jack_u.append(b)
    z = float(special.ndtri(0.5 + 0.5 * confidence))

    def interval(est, reps):
        reps = np.asarray(reps)
        se = math.sqrt((folds - 1) / folds * float(np.sum((reps - reps.mean()) ** 2))) * scale
        return (scale * est - z * se, scale * est + z * se)

    return {"cmmd": scale * v, "cmmd_unbiased": scale * u, "ci": interval(v, jack_v),
            "ci_unbiased": interval(u, jack_u), "folds": folds}


def _group_codes(nx: int, ny: int, groups_x, groups_y):
    """(code per pooled row, side of each group (True: X), size of each group); groups of X and Y are
    kept apart (a label used on both sides names two groups)."""
    if groups_x is None and groups_y is None:
        codes = np.arange(nx + ny)
        return codes, np.arange(nx + ny) < nx, np.ones(nx + ny)
    gx = [f"x\0{g}" for g in groups_x] if groups_x is not None else [f"x\0\0{i}" for i in range(nx)]
    gy = [f"y\0{g}" for g in groups_y] if groups_y is not None else [f"y\0\0{i}" for i in range(ny)]
    labels, codes = np.unique(np.asarray(gx + gy), return_inverse=True)
    codes = codes.ravel()
    side = np.zeros(labels.size, dtype=bool)
    side[codes[:nx]] = True
    return codes, side, np.bincount(codes, minlength=labels.size).astype(float)


def median_distance(Z: np.ndarray, rng: np.random.Generator, rows: int = 1000) -> float:
    """Median Euclidean distance between distinct rows of a seeded subsample of ``rows`` rows of Z."""
    S = Z[rng.choice(Z.shape[0], size=min(rows, Z.shape[0]), replace=False)]
    sq = np.einsum("ij,ij->i", S, S)
    D2 = np.clip(sq[:, None] + sq[None, :] - 2.0 * S @ S.T, 0.0, None)
    iu = np.triu_indices(S.shape[0], k=1)
    med = float(np.sqrt(np.median(D2[iu])))
    return med if med > 0 else 1.0


def permutation_test(X, Y, *, groups_x=None, groups_y=None, n_permutations: int = 1000, features: int = 1024,
                     normalize: bool = True, seed: int = 0, chunk_rows: int = 4096) -> dict:
    """Permutation two-sample test of rows X (n, d) and Y (m, d) (``TEST_ASSUMES``).

    Statistic T = ||mean phi(X) - mean phi(Y)||^2 with phi ``features`` random Fourier features of
    the (L2-normalised, ``normalize``) rows for the sum of RBF kernels of bandwidths 0.5, 1 and 2 x
    the pooled median distance (the bandwidth and the features depend on the pooled rows only, so
    they are the same under every permutation). Permutations reassign the set labels of rows, or
    of whole groups (``groups_x``/``groups_y``: one label per row; the number of groups per set is
    kept). p = (1 + #{b : T_b >= T}) / (B + 1), valid (P(p <= alpha) <= alpha) under exchangeability.

    Returns a dict: ``pvalue``, ``statistic``, ``n_permutations``, ``bandwidth``, ``features``, ``grouped``.
    """
    if n_permutations < 1:
        raise InputError(f"the permutation test needs at least 1 permutation, got {n_permutations}")
    Xa, Ya = (unit_rows(X), unit_rows(Y)) if normalize else (np.asarray(X, np.float64), np.asarray(Y, np.float64))
    nx, ny = Xa.shape[0], Ya.shape[0]
    if min(nx, ny) < 1:
        raise InputError("the permutation test needs rows in both sets")
    Z = np.concatenate([Xa, Ya])
    rng = np.random.default_rng(seed)
    bandwidth = median_distance(Z, rng)
    per = max(features // 3, 1)
    omega = np.concatenate([rng.standard_normal((Z.shape[1], per)) / (f * bandwidth) for f in (0.5, 1.0, 2.0)], axis=1)
    phase = rng.uniform(0.0, 2.0 * np.pi, omega.shape[1])
    codes, side, sizes = _group_codes(nx, ny, groups_x, groups_y)
    labels = np.empty((n_permutations + 1, side.size), dtype=bool)
    labels[0] = side
    labels[1:] = rng.permuted(np.broadcast_to(side, (n_permutations, side.size)), axis=1)
    n_in = labels @ sizes
    inv_x, inv_y = 1.0 / n_in, -1.0 / (sizes.sum() - n_in)
    acc = np.zeros((n_permutations + 1, omega.shape[1]))
    scale = math.sqrt(2.0 / omega.shape[1])
    for s in range(0, Z.shape[0], chunk_rows):
        phi = scale * np.cos(Z[s:s + chunk_rows] @ omega + phase)
        W = np.where(labels[:, codes[s:s + chunk_rows]], inv_x[:, None], inv_y[:, None])
        acc += W @ phi
    T = np.einsum("ij,ij->i", acc, acc)
    p = (1.0 + float(np.sum(T[1:] >= T[0]))) / (n_permutations + 1.0)
    return {"pvalue": p, "statistic": float(T[0]), "n_permutations": int(n_permutations),
            "bandwidth": bandwidth, "features": int(omega.shape[1]),
            "grouped": groups_x is not None or groups_y is not None}
