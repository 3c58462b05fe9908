"""The report: its result types (:class:`GaussianityReport`, :class:`WhitenerInfo`,
:class:`Protocol`), the recognition of the whitener's own fit rows, and
:func:`gaussianity_report`, which runs every section of :data:`SECTIONS` on one context."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from whitenclip.config import CHUNK_ROWS
from whitenclip.diagnostics.context import ReportContext
from whitenclip.diagnostics.marginal import AD_THRESHOLD, DP_ALPHA
from whitenclip.diagnostics.sections import SECTIONS, Section
from whitenclip.errors import InputError
from whitenclip.results import Result, json_safe
from whitenclip.validation import as_matrix


@dataclasses.dataclass(frozen=True)
class WhitenerInfo(Result):
    """Which whitener the report used and whether X are its own fit rows (``in_sample``)."""

    fitted_on_input: bool
    in_sample: bool
    method: str
    shrinkage: float
    n_fit: int
    dropped: dict
    note: str
    in_sample_basis: str
    held_out: dict | None = None
    """At n <= rank + 1 (in-sample): the held-out whitening behind the whitened coordinates
    (method, shrinkage rule and intensity per fold, rows, rank, description); else None."""


@dataclasses.dataclass(frozen=True)
class Protocol(Result):
    """The sampling protocol actually run (after clipping to the rows available)."""

    trials: int
    trials_requested: int
    subset: int
    projections: int
    projection_rows: int
    seed: int
    ad_threshold: float
    dp_alpha: float
    mardia_rows: int


@dataclasses.dataclass(frozen=True)
class GaussianityReport(Result):
    """The Gaussianity report: header, protocol and one :class:`Section` result per section.

    ``to_dict()`` is the documented JSON (keys n, d, rank, whitener, protocol, one key per
    section, notes). Sections are read by attribute (``report.norm``, ``report.verdict``) or
    with :meth:`section`; ``report["key"]`` reads the JSON mapping (the pre-typed interface).
    """

    n: int
    d: int
    rank: int
    whitener: WhitenerInfo
    protocol: Protocol
    sections: tuple[Section, ...]
    notes: tuple[str, ...] = ()

    def section(self, key: str) -> Section:
        for s in self.sections:
            if s.key == key:
                return s
        raise KeyError(key)

    def __getattr__(self, name: str):
        if name.startswith("_") or name == "sections":
            raise AttributeError(name)
        try:
            return self.section(name)
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no attribute or section {name!r}") from None

    def to_dict(self) -> dict:
        out = {"n": self.n, "d": self.d, "rank": self.rank, "whitener": self.whitener.to_dict(),
               "protocol": self.protocol.to_dict()}
        for s in self.sections:
            out[s.key] = s.to_dict()
        out["notes"] = list(self.notes)
        return json_safe(out)

    # the pre-typed, read-only mapping interface (``report["norm"]["whitened"]["cv"]``, ``dict(report)``)
    def __getitem__(self, key: str):
        return self.to_dict()[key]

    def __contains__(self, key: str) -> bool:
        return key in self.to_dict()

    def keys(self):
        return self.to_dict().keys()

    def __iter__(self):
        return iter(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict) -> "GaussianityReport":
        """Rebuild a report from its JSON (e.g. a saved report.json); absent sections are skipped."""
        return cls(n=data["n"], d=data["d"], rank=data["rank"],
                   whitener=WhitenerInfo(**{f.name: data["whitener"].get(f.name)
                                            for f in dataclasses.fields(WhitenerInfo)}),
                   protocol=Protocol(**{f.name: data["protocol"].get(f.name) for f in dataclasses.fields(Protocol)}),
                   sections=tuple(s.from_dict(data[s.key]) for s in SECTIONS if data.get(s.key) is not None),
                   notes=tuple(data.get("notes") or ()))


def _sanitised(section: Section, notes: list[str]) -> Section:
    """The section with JSON-ready field values (NaN/inf -> None, each noted)."""
    values = {f.name: json_safe(getattr(section, f.name), notes, f"{section.key}.{f.name}")
              for f in dataclasses.fields(section)}
    return dataclasses.replace(section, **values)


# ---------------------------------------------------------------------------------------
# in-sample recognition
# ---------------------------------------------------------------------------------------
def recognise_in_sample(X: np.ndarray, whitener) -> tuple[bool, str]:
    """Whether rows X are the whitener's own fit rows, and on what basis.

    Necessary: same n, no shrinkage, same mean (to 1e-9). Then, when the artifact records
    ``metadata_["input_hash"]`` (the hash of the fitted float64 :class:`~whitenclip.moments.Moments`),
    X's moments are hashed the same way (chunks of ``config.CHUNK_ROWS`` rows, as ``fit`` reads one
    file and as ``Whitener.fit`` does when n <= CHUNK_ROWS; the artifact's ``gram_dtype``): equal
    hashes mean the same rows. Unequal hashes fall back to comparing X's covariance with the
    artifact's (relative 1e-9: the same rows in another order, or read in other chunks, e.g. from
    several files). Artifacts without a hash keep the n / mean test. Cost: one O(n d^2) pass over
    X, only when n and the mean already match.

    Returns
    -------
    (in_sample, basis) : bool, str
    """
    from whitenclip.moments import Moments
    from whitenclip.whitening import _moments_hash

    n, d = X.shape
    if whitener.n_samples_ != n or whitener.shrinkage_ != 0:
        return False, "row count or shrinkage differ from the fit"
    if not np.allclose(whitener.mean_, X.mean(axis=0), rtol=1e-9, atol=1e-12):
        return False, "mean differs from the fit's"
    meta = getattr(whitener, "metadata_", None) or {}
    want = meta.get("input_hash")
    if not want:
        return True, "same n and mean (artifact without input hash)"
    moments = Moments(d)
    for s in range(0, n, CHUNK_ROWS):
        moments.update(X[s:s + CHUNK_ROWS], gram=meta.get("gram_dtype", "float64"))
    if _moments_hash(moments) == want:
        return True, "input hash of the fitted moments matches"
    cov, ref = moments.covariance(ddof=1), np.asarray(whitener.covariance_, dtype=np.float64)
    if np.allclose(cov, ref, rtol=1e-9, atol=1e-9 * float(np.max(np.abs(ref)))):
        return True, "same n, mean and covariance (input hash differs: other row order or chunking)"
    return False, "input hash and covariance differ from the fit's"



def gaussianity_report(X, whitener=None, *, trials: int = 10, subset: int = 500, projections: int = 1000,
                       seed: int = 0, projection_rows: int = 5000, mardia_rows: int = 5000,
                       shape_rows: int = 20000, in_sample: bool | None = None) -> GaussianityReport:
    """How close rows X are to a multivariate Gaussian, beside an exact Gaussian's figures.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Embeddings (finite).
    whitener : whitenclip.whitening.Whitener, optional
        Fitted whitener. None fits ``Whitener()`` (pca, no shrinkage) on X itself; the report
        says so under ``whitener.fitted_on_input``.
    trials, subset : int
        Per-coordinate protocol: ``trials`` random subsets of ``subset`` rows.
    projections : int
        Number k of random unit directions.
    seed : int
        Seeds every random choice (subsets, directions, subsamples, Gaussian references).
    projection_rows, mardia_rows, shape_rows : int
        Row subsample sizes for projections, for Mardia's skewness and for the per-coordinate
        skewness / excess kurtosis (all seeded; all rows when n is smaller).
    in_sample : bool, optional
        Whether X are the rows the whitener was fitted on (chooses the Beta or F reference law).
        None: True when the whitener is fitted here, else :func:`recognise_in_sample` (the
        artifact's input hash, or its n and mean when it has no hash).

    Returns
    -------
    GaussianityReport
        One result per entry of :data:`SECTIONS` (norm, coordinates, projections, multivariate,
        spectrum, isotropy, verdict). ``to_dict()`` is JSON-ready (no NaN or inf: undefined
        values are None with a reason or a note) with keys n, d, rank, whitener, protocol, the
        sections and notes. Pass rates are fractions in [0, 1].

    Examples
    --------
    >>> X = np.random.default_rng(0).standard_normal((200, 3))
    >>> rep = gaussianity_report(X, trials=1, subset=50, projections=10)
    >>> [s.key for s in rep.sections]
    ['norm', 'coordinates', 'projections', 'multivariate', 'spectrum', 'isotropy', 'verdict']
    >>> rep.rank, rep.norm.whitened["law"], rep["whitener"]["in_sample"]
    (3, 'beta', True)
    >>> round(rep.isotropy.whitened["effective_rank"], 9)  # whitened in-sample rows are isotropic
    3.0
    """
    from whitenclip.whitening import Whitener

    X = as_matrix(X, "X")
    n, d = X.shape
    if n < 3:
        raise InputError(f"X: need at least 3 rows for a Gaussianity report, got {n}")
    if projections < 1:
        raise InputError(f"projections must be >= 1, got {projections}")
    notes: list[str] = []
    fitted_here = whitener is None
    if fitted_here:
        if not np.any(X != X[0]):  # rank 0: nothing varies, nothing to whiten or test
            raise InputError(f"X: all {n} rows are identical (rank 0): degenerate, nothing to test")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            whitener = Whitener(calibration=False).fit(X)  # the report needs no p-values
        notes += [str(w.message) for w in caught]
        basis = "whitener fitted on the input here"
    elif whitener.n_features_ != d:
        raise InputError(f"input has dimension {d}, the whitener expects {whitener.n_features_}")
    if in_sample is not None:
        basis = "given by the caller"
    elif fitted_here:
        in_sample = True
    else:
        in_sample, basis = recognise_in_sample(X, whitener)

    ctx = ReportContext(X, whitener, fitted_here=fitted_here, in_sample=bool(in_sample), seed=seed, trials=trials,
                        subset=subset, projections=projections, projection_rows=projection_rows,
                        mardia_rows=mardia_rows, shape_rows=shape_rows, notes=notes)
    done: dict[str, Section] = {}
    for cls in SECTIONS:
        done[cls.key] = cls.compute(ctx, done)
    subsets = ctx.subsets
    info = WhitenerInfo(fitted_on_input=bool(fitted_here), in_sample=bool(in_sample), method=whitener.method,
                        shrinkage=float(whitener.shrinkage_), n_fit=ctx.n_fit, dropped=json_safe(whitener.dropped_),
                        note=("no whitener given: fitted Whitener(method='pca') on the input itself" if fitted_here
                              else "whitener given by the user"), in_sample_basis=basis,
                        held_out=({k: v for k, v in ctx.held_out.items() if k != "blocks"} if ctx.few_rows else None))
    protocol = Protocol(trials=len(subsets), trials_requested=int(trials), subset=len(subsets[0]),
                        projections=int(projections), projection_rows=done["projections"].rows, seed=int(seed),
                        ad_threshold=AD_THRESHOLD, dp_alpha=DP_ALPHA,
                        mardia_rows=done["multivariate"].skewness["rows"])
    sections = tuple(_sanitised(s, notes) for s in done.values())
    return GaussianityReport(n=int(n), d=int(d), rank=ctx.rank, whitener=info, protocol=protocol, sections=sections,
                             notes=tuple(notes))
