"""Grouped references: the rows of one group (captions of one image, frames of one clip) travel
together through the calibration sample (:class:`whitenclip.readers.rows.GroupTagged`), and :func:`grouping_check` warns
when rows given without groups look grouped."""

from __future__ import annotations

import dataclasses

import numpy as np

from whitenclip.readers.rows import GroupTagged  # noqa: F401 (re-exported: the calibration's grouped rows)
from whitenclip.results import Result
from whitenclip.validation import as_matrix


class GroupedRowsWarning(UserWarning):
    """The reference rows look grouped (several rows per image / clip / source), and no groups were given."""


GROUPING_K = 4
"""Neighbours per row in :func:`grouping_check`."""
GROUPING_ADJACENT = 0.1
"""Excess cosine of rows adjacent in the input over random pairs, first condition of :func:`grouping_check`."""
GROUPING_THRESHOLD = 0.25
"""Excess k-NN transitivity over a Gaussian twin, second condition of :func:`grouping_check`."""
GROUPING_DIMS = 128
"""Rows wider than this are randomly projected to this many dimensions for the k-NN graph."""


@dataclasses.dataclass(frozen=True)
class GroupingCheck(Result):
    """What :func:`grouping_check` found (None where it did not get that far) and its warning."""

    n_rows: int
    n_adjacent: int
    adjacent_excess: float | None
    adjacent_z: float | None
    transitivity: float | None
    gaussian_transitivity: float | None
    excess: float | None
    warning: str | None


def knn_transitivity(X, k: int = GROUPING_K) -> float:
    """Transitivity of the k-NN graph of rows X (m, d) by cosine of the centred rows: the share of
    ordered pairs (a, b) of a row's k nearest neighbours with b among a's k nearest neighbours.
    Products in X's precision, blocks of 1024 rows: O(m^2 d) time, O(1024 m) memory."""
    Y = _unit_centred(X)
    m = Y.shape[0]
    nn = np.empty((m, k), dtype=np.int64)
    for lo in range(0, m, 1024):
        hi = min(lo + 1024, m)
        S = Y[lo:hi] @ Y.T
        S[np.arange(hi - lo), np.arange(lo, hi)] = -np.inf
        nn[lo:hi] = np.argpartition(-S, k - 1, axis=1)[:, :k]
    edges = np.sort((np.arange(m)[:, None] * m + nn).ravel())
    a, b = np.triu_indices(k, 1)
    pairs = np.concatenate([nn[:, a] * m + nn[:, b], nn[:, b] * m + nn[:, a]], axis=1).ravel()
    at = np.minimum(np.searchsorted(edges, pairs), edges.size - 1)
    return float(np.mean(edges[at] == pairs))


def _unit_centred(X) -> np.ndarray:
    X = np.asarray(X)
    Y = X - X.mean(axis=0)
    norm = np.linalg.norm(Y, axis=1)
    return Y / np.where(norm > 0, norm, 1.0)[:, None]


def grouping_check(rows, positions=None, *, seed: int = 0) -> GroupingCheck:
    """Do these (calibration) rows look like several rows per unit (captions per image, frames per clip)?

    ``positions`` (m,) are the rows' places in the input (default: ``rows`` are in input order).
    Rule: the rows look grouped when both

    1. rows *adjacent in the input* (positions p and p + 1, both in the sample) are more alike
       than random pairs: their mean cosine (centred rows) exceeds that of the same rows in a
       seeded random order by more than 0.1 and by more than 5 standard errors, with at least 50
       adjacent pairs. Exchangeable rows have no such excess, however they are ordered; files
       that store each image's captions (or each clip's frames) together have a large one; and
    2. the rows form near-cliques: the transitivity of the 4-nearest-neighbour graph (cosine of
       centred rows, randomly projected to 128 dimensions when d is larger) exceeds that of a
       Gaussian twin (same mean and covariance, as many rows) by more than 0.25. This spares
       files that are merely sorted (adjacent rows alike, but no cliques).

    Measured (MiniLM, d = 384): 5 captions per Flickr8k image in file order: adjacent excess 0.47,
    transitivity 0.54 vs 0.09 (n = 1000) and 0.43 vs 0.07 (n = 3000); one caption per random
    image: adjacent excess < 0.01, transitivity excess 0.11-0.17; the demo's 4000 captions drawn
    from a grammar (a population full of near-duplicates, but drawn independently): adjacent
    excess < 0.01 (transitivity alone would have called them grouped: excess 0.51). When the rows
    look grouped, the leave-one-out calibration flags too many new rows (8-13% instead of 5% at
    n = 1000), and the warning names the remedy.

    What it cannot see: groups whose rows are scattered through the input (shuffled), and groups
    when the sample holds a small share of the rows (n >> m: few adjacent pairs are sampled; the
    harm shrinks too, siblings moving a row's distance by O(k d / n)). Cost: O(m d) for the
    first condition; the k-NN graphs (two m x m x 128 float32 products) only when it holds.
    """
    X = as_matrix(rows, "rows")
    m, d = X.shape
    pos = np.arange(m) if positions is None else np.asarray(positions, dtype=np.int64)
    order = np.argsort(pos, kind="stable")
    Y = _unit_centred(X)[order]
    adjacent = np.flatnonzero(np.diff(pos[order]) == 1)
    out = dict(n_rows=m, n_adjacent=int(adjacent.size), adjacent_excess=None, adjacent_z=None, transitivity=None,
               gaussian_transitivity=None, excess=None, warning=None)
    if adjacent.size < 50 or m < 10 * (GROUPING_K + 1):
        return GroupingCheck(**out)
    rng = np.random.default_rng(seed)
    near = np.einsum("ij,ij->i", Y[adjacent], Y[adjacent + 1])
    perm = rng.permutation(m)
    far = np.einsum("ij,ij->i", Y[perm[:-1]], Y[perm[1:]])
    excess = float(near.mean() - far.mean())
    z = excess / float(np.sqrt(near.var() / near.size + far.var() / far.size) or np.inf)
    out.update(adjacent_excess=excess, adjacent_z=z)
    if excess <= GROUPING_ADJACENT or z <= 5:
        return GroupingCheck(**out)
    Z = X - X.mean(axis=0)
    if d > GROUPING_DIMS:
        Z = Z @ (rng.standard_normal((d, GROUPING_DIMS)) / np.sqrt(GROUPING_DIMS))
    lam, V = np.linalg.eigh(Z.T @ Z / (m - 1))
    twin = (rng.standard_normal(Z.shape) * np.sqrt(np.clip(lam, 0.0, None))) @ V.T
    t, t0 = knn_transitivity(Z.astype(np.float32)), knn_transitivity(twin.astype(np.float32))
    out.update(transitivity=t, gaussian_transitivity=t0, excess=t - t0)
    if t - t0 > GROUPING_THRESHOLD:
        out["warning"] = (
            f"reference rows look grouped (rows next to each other are alike, cosine +{excess:.2f}, and form "
            f"near-cliques), e.g. several captions per image: pvalue_conformal would flag too many new rows; "
            "pass --group-column NAME or --groups FILE (fit(X, groups=...))")
    return GroupingCheck(**out)

