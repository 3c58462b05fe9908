"""Per-row likelihood scores under a fitted whitener.

With w = (x - mu) @ W and r the kept rank:

* ``sqnorm``  = ||w||^2 (the squared Mahalanobis distance on the kept rank);
* ``loglik``  = -1/2 (r log 2 pi + ||w||^2): the W-CLIP score, the log-density of w under
  N(0, I_r); comparable between rows scored with the same W only;
* ``logpdf``  = loglik + log|det W|: the Gaussian log-density of x itself,
  log N(x; mu, Sigma) = -1/2 (r log 2 pi + log det Sigma_r + ||w||^2);
* ``pvalue``  = P(T2' >= T2) for a *new* row under the Hotelling predictive law: with n fit
  rows, T2 = n/(n+1) ||w||^2 and (n - r)/(r (n - 1)) T2 ~ F(r, n - r). When n <= r + 1 the
  F law does not exist and the chi2(r) tail is used instead (with a warning). Exact when the
  rows are Gaussian, and only then: on real embeddings (heavy-tailed norms) it is far too small;
* ``pvalue_chi2`` = P(chi2_r >= ||w||^2), the n -> infinity limit;
* ``pvalue_conformal`` = (1 + #{i : D_(i)^2 >= ||w||^2}) / (n_cal + 1), with D_(i)^2 the
  leave-one-out distances of the whitener's calibration rows (``Whitener.calibration_``). Valid
  for any distribution of exchangeable rows: P(p <= alpha) <= alpha for a new row from the
  reference distribution, up to the O(r/n) difference between fits on n - 1 and n rows (which
  makes it slightly conservative). Its resolution is 1/(n_cal + 1). Absent (None, with a note
  saying why) when the whitener carries no calibration distances, or when they are degenerate
  (``Whitener.calibration_degenerate_``: e.g. all infinite at n <= d + 1 without shrinkage, where
  every row, junk included, would get 1.0).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
from scipy import stats

from whitenclip.errors import InputError
from whitenclip.results import Result
from whitenclip.whitening import CALIBRATION_MISSING_NOTE, squared_norms

COLUMNS = ("loglik", "logpdf", "sqnorm", "pvalue")
"""The row columns every score has, in output order (``pvalue_conformal`` follows when present)."""
CONFORMAL_COLUMN = "pvalue_conformal"
SCORE_COLUMNS = (*COLUMNS, CONFORMAL_COLUMN)
QVALUE_COLUMN = "qvalue"
"""Column of ``score --fdr``: BH q-values of ``pvalue_conformal`` over all rows."""
"""All row columns in output order; ``pvalue_conformal`` only when the whitener is calibrated."""
LOG_2PI = float(np.log(2.0 * np.pi))


def conformal_unavailable(whitener) -> str | None:
    """Why ``whitener`` gives no ``pvalue_conformal`` (one line), or None when it does: no calibration
    distances (:data:`~whitenclip.whitening.CALIBRATION_MISSING_NOTE`), or degenerate ones
    (``calibration_degenerate_``, see :func:`~whitenclip.whitening.degenerate_calibration`)."""
    if getattr(whitener, "calibration_", None) is None:
        return CALIBRATION_MISSING_NOTE
    reason = getattr(whitener, "calibration_degenerate_", None)
    return f"pvalue_conformal is left out: {reason}" if reason else None


def score_columns(whitener) -> tuple[str, ...]:
    """The row columns :func:`score` gives for ``whitener``, in output order (``pvalue_conformal``
    only when it holds calibration distances that are not degenerate: :func:`conformal_unavailable`)."""
    return COLUMNS if conformal_unavailable(whitener) else SCORE_COLUMNS


class CalibrationWarning(UserWarning):
    """The calibrated (F-law) p-value is unavailable; the chi2 approximation was used."""


def loglik_from_sqnorm(sqnorm: np.ndarray, rank: int) -> np.ndarray:
    """W-CLIP log-likelihood -1/2 (r log 2 pi + ||w||^2), shape (m,)."""
    return -0.5 * (rank * LOG_2PI + np.asarray(sqnorm, dtype=np.float64))


def f_law_applies(n_samples: int | None, rank: int) -> bool:
    """True when the Hotelling predictive F(r, n - r) law is defined (n known and n > r + 1)."""
    return n_samples is not None and n_samples > rank + 1


def pvalue_hotelling(sqnorm: np.ndarray, n_samples: int, rank: int) -> np.ndarray:
    """Upper-tail p-value of a new row: F.sf((n - r)/(r (n - 1)) * n/(n + 1) * ||w||^2; r, n - r)."""
    n, r = float(n_samples), float(rank)
    t2 = n / (n + 1.0) * np.asarray(sqnorm, dtype=np.float64)
    return stats.f.sf((n - r) / (r * (n - 1.0)) * t2, r, n - r)


def pvalue_chi2(sqnorm: np.ndarray, rank: int) -> np.ndarray:
    """Upper-tail p-value P(chi2_r >= ||w||^2), the large-n limit."""
    return stats.chi2.sf(np.asarray(sqnorm, dtype=np.float64), rank)


def pvalue_conformal(sqnorm: np.ndarray, calibration: np.ndarray) -> np.ndarray:
    """Conformal p-value (1 + #{i : D_(i)^2 >= s}) / (n_cal + 1) of each score s = ||w||^2.

    ``calibration`` holds the n_cal leave-one-out distances D_(i)^2, ascending (as stored in
    ``Whitener.calibration_``). O(log n_cal) per row.

    >>> pvalue_conformal(np.array([0.5, 2.0, 9.0]), np.array([1.0, 2.0, 3.0])).tolist()
    [1.0, 0.75, 0.25]
    """
    cal = np.asarray(calibration, dtype=np.float64)
    at_least = cal.size - np.searchsorted(cal, np.asarray(sqnorm, dtype=np.float64), side="left")
    return (1.0 + at_least) / (cal.size + 1.0)


def bh_qvalues(pvalues) -> np.ndarray:
    """Benjamini-Hochberg q-values (adjusted p-values) of m p-values, shape (m,): q_(i) = min over
    j >= i of m p_(j) / j, at most 1 (equal to ``scipy.stats.false_discovery_control(p)``). Rows with
    q <= alpha are the BH discoveries at false discovery rate alpha; valid for conformal p-values of
    exchangeable new rows, which are positively dependent (PRDS; Bates et al. 2023).

    >>> bh_qvalues([0.01, 0.04, 0.03, 0.5]).round(4).tolist()
    [0.04, 0.0533, 0.0533, 0.5]
    """
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, m + 1)
    q = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    out = np.empty(m)
    out[order] = q
    return out


@dataclasses.dataclass(frozen=True, eq=False, repr=False)  # repr: bounded (Result.__repr__)
class ScoreTable(Result):
    """Per-row scores of m rows (see the module doc); every column a float64 array of shape (m,).

    ``columns`` names the row columns in output order (``id`` first is the renderer's business):
    loglik, logpdf, sqnorm, pvalue, then pvalue_conformal when the whitener is calibrated.
    ``pvalue_chi2`` is kept for library callers but not among the output columns.
    ``table["loglik"]`` reads a column as the old dict did.
    """

    loglik: np.ndarray
    logpdf: np.ndarray
    sqnorm: np.ndarray
    pvalue: np.ndarray
    pvalue_chi2: np.ndarray
    pvalue_conformal: np.ndarray | None = None
    qvalue: np.ndarray | None = None
    """Benjamini-Hochberg q-values of ``pvalue_conformal`` over all rows (:func:`with_qvalues`; ``score --fdr``)."""
    ids: list[str] | None = None
    note: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        cols = SCORE_COLUMNS if self.pvalue_conformal is not None else COLUMNS
        return cols if self.qvalue is None else (*cols, QVALUE_COLUMN)

    @property
    def n_rows(self) -> int:
        return int(self.sqnorm.shape[0])

    def row_ids(self) -> list[str]:
        """``ids``, or the row indices as strings when there are none."""
        return list(self.ids) if self.ids is not None else [str(i) for i in range(self.n_rows)]

    def keys(self) -> tuple[str, ...]:
        """Names of the arrays present: the output columns and pvalue_chi2."""
        return (*self.columns, "pvalue_chi2")

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key) -> bool:
        return key in self.keys()

    def values(self) -> list[np.ndarray]:
        return [getattr(self, k) for k in self.keys()]

    def items(self) -> list[tuple[str, np.ndarray]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def to_pandas(self):
        """A ``pandas.DataFrame`` indexed by ``id`` with the columns `score` writes (pandas is optional)."""
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - pandas is not a dependency
            raise ImportError("ScoreTable.to_pandas needs pandas: pip install pandas") from None
        return pd.DataFrame({c: self[c] for c in self.columns}, index=pd.Index(self.row_ids(), name="id"))

    @classmethod
    def concat(cls, tables, *, ids=None, calibrated: bool) -> "ScoreTable":
        """The rows of ``tables`` one after the other (``calibrated``: whether an empty result has the
        conformal column), with ``ids`` (all rows) when given."""
        tables = list(tables)
        cols = ("loglik", "logpdf", "sqnorm", "pvalue", "pvalue_chi2")
        joined = {c: np.concatenate([getattr(t, c) for t in tables]) if tables else np.empty(0) for c in cols}
        conformal = None
        if calibrated:
            conformal = np.concatenate([t.pvalue_conformal for t in tables]) if tables else np.empty(0)
        return cls(**joined, pvalue_conformal=conformal, ids=None if ids is None else list(ids),
                   note=tables[0].note if tables else None)

    def to_dict(self) -> dict:
        """``{"ids": [...] or None, column: float64 array, ...}`` (arrays; JSON via ``json_safe``)."""
        return {"ids": None if self.ids is None else list(self.ids), **dict(self.items())}


def score(whitener, X, ids=None, *, name: str = "X") -> ScoreTable:
    """Score rows X of shape (m, d) under a fitted :class:`~whitenclip.whitening.Whitener`.

    Returns a :class:`ScoreTable` of float64 arrays of shape (m,): ``sqnorm``, ``loglik``,
    ``logpdf``, ``pvalue`` (Hotelling predictive F law, chi2 fallback), ``pvalue_chi2`` and
    ``pvalue_conformal`` (None, with a ``note``, when the whitener has no calibration
    distances or degenerate ones: :func:`conformal_unavailable`). ``ids`` (m strings) are carried
    along for the renderers; ``name`` (the file) and
    the ids name a refused row.

    Rows are refused (:class:`InputError` naming the row and its id), never scored as inf or NaN:
    values beyond :data:`~whitenclip.validation.MAX_ABS` = 1e50, or a squared norm that
    overflows float64 (|w| past ~1e154, e.g. under an imported W with huge gains).
    """
    from whitenclip.validation import as_matrix, check_magnitude

    X = np.asarray(X)
    if X.ndim == 1:
        X = X[None, :]
    if ids is not None and X.ndim == 2 and X.dtype.kind == "f" and np.isfinite(X).all():
        check_magnitude(X, name, first_row=None, ids=ids)  # names the row by its id (str(id), only on refusal)
    X = as_matrix(X)
    with np.errstate(over="ignore", invalid="ignore"):
        sq = squared_norms(whitener.transform(X))
    bad = ~np.isfinite(sq)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        label = f"the row with id {str(ids[i])!r}" if ids is not None and i < len(ids) else f"row {i}"
        raise InputError(f"{name}: {label}: its whitened squared norm overflows float64 (|x| up to "
                         f"{float(np.abs(X[i]).max()):.3g}): it cannot be scored")
    r = int(whitener.rank_)
    loglik = loglik_from_sqnorm(sq, r)
    p_chi2 = pvalue_chi2(sq, r)
    if f_law_applies(whitener.n_samples_, r):
        p = pvalue_hotelling(sq, whitener.n_samples_, r)
    else:
        warnings.warn(f"the Gaussian pvalue's Hotelling law needs n > rank + 1 (n={whitener.n_samples_}, rank={r}): "
                      "pvalue uses the chi2 approximation (pvalue_conformal is unaffected)", CalibrationWarning,
                      stacklevel=2)
        p = p_chi2
    note = conformal_unavailable(whitener)
    cal = None if note else whitener.calibration_
    if ids is not None:
        ids = [str(i) for i in ids]
        if len(ids) != sq.shape[0]:
            raise InputError(f"{len(ids)} ids for {sq.shape[0]} rows")
    return ScoreTable(loglik=loglik, logpdf=loglik + whitener.log_det_, sqnorm=sq, pvalue=p, pvalue_chi2=p_chi2,
                      pvalue_conformal=None if cal is None else pvalue_conformal(sq, cal), ids=ids, note=note)


def with_qvalues(table: ScoreTable) -> ScoreTable:
    """``table`` with its ``qvalue`` column: :func:`bh_qvalues` of ``pvalue_conformal`` over all its rows
    (refused when the whitener gave no conformal p-values)."""
    if table.pvalue_conformal is None:
        raise InputError("q-values (--fdr) need conformal p-values: the whitener carries no calibration distances "
                         "(refit it without --no-calibration)")
    return dataclasses.replace(table, qvalue=bh_qvalues(table.pvalue_conformal))
