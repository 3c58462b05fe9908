"""Moments parts: :class:`MomentsPart` (moments plus the power sums, metadata, coverage and extras
that ``fit`` needs), its float64 accumulation and its checked merge."""

from __future__ import annotations

import numpy as np

from whitenclip.errors import InputError
from whitenclip.moments.artifact import read_part, save_part
from whitenclip.moments.coverage import coverage_entry, first_overlap
from whitenclip.moments.estimator import Moments
from whitenclip.moments.numerics import GRAM_DTYPES, _centre, _overflow, centred_gram, shift_power_sums
from whitenclip.moments.sampling import RESERVOIR_EXTRA, Reservoir, _merge_reservoir_tensors, reservoir_to_tensors
from whitenclip.validation import check_magnitude

# ---------------------------------------------------------------------------------------
# parts: moments + power sums + metadata, what `whitenclip moments` writes and merges
# ---------------------------------------------------------------------------------------
PART_KEYS_THAT_MUST_MATCH = ("encoder", "modality", "normalized", "activation", "encoder_fingerprint", "gram")
"""Metadata two parts must agree on (besides the dimension) to be merged."""

EXTRA_MERGERS: dict = {}
"""name -> ``merge(tensors_a, tensors_b) -> tensors``: how a named extra tensor group merges.

Extra statistics (e.g. a seeded reservoir for conformal calibration) register here; a part
holding an extra with no registered merger cannot be merged (refused, never dropped)."""

EXTRA_MERGERS[RESERVOIR_EXTRA] = _merge_reservoir_tensors


class MomentsPart:
    """Mergeable summary of a set of rows: :class:`Moments` plus what ``fit`` needs beyond them.

    For rows x_1..x_n in R^d with mean m and y_i = x_i - m:

    * ``moments``  n, m (d,), scatter S = sum y y^T (d, d)  (Chan's merge);
    * ``power3``   t = sum_i ||y_i||^2 y_i   shape (d,)
    * ``power4``   q = sum_i ||y_i||^4       float: Ledoit-Wolf's ``sum ||x - mean||^4``.

    t and q merge exactly around the moving mean (:func:`shift_power_sums`), so Ledoit-Wolf
    shrinkage of merged parts equals the one-pass value without a second pass over the rows.

    ``meta`` holds encoder / modality / normalized (None when unknown) and ``gram`` (the chunk
    Gram precision); ``inputs`` the content hashes of the pieces read (in piece order);
    ``coverage`` what the part covers: one :func:`coverage_entry` per piece, ``{"file": path,
    "id": file identity, "rows": [start, stop]}`` (see :func:`file_identity`); ``stats``
    counts pieces, resumed pieces and dropped non-finite rows; ``extras`` maps a name to a dict
    of named arrays merged by :data:`EXTRA_MERGERS`.

    Two parts whose coverage holds overlapping row ranges of the same file (same identity) are
    refused at merge, however their pieces were cut; so is a piece hash seen twice.

    ``meta["calibration_mode"]`` says how the reservoir extra was sampled: ``"groups"`` (whole
    groups, keyed by group id: ``fit`` leaves each group out) or ``"rows"`` (the default of
    parts without the key); see :attr:`calibration_mode`. Parts sampled both ways are refused
    at merge: their union would be neither a sample of groups nor one of rows (an empty part,
    n = 0, merges with either).

    >>> a = MomentsPart(2).update(np.array([[0.0, 1.0], [2.0, 3.0]]))
    >>> b = MomentsPart(2).update(np.array([[4.0, 5.0]]))
    >>> m = a.merge(b)
    >>> m.n, m.mean.tolist(), m.power4
    (3, [2.0, 3.0], 128.0)
    """

    def __init__(self, n_features: int, meta: dict | None = None):
        self.moments = Moments(n_features)
        self.power3 = np.zeros(self.moments.n_features, dtype=np.float64)
        self.power4 = 0.0
        self.has_power_sums = True
        self.meta = {"encoder": None, "modality": None, "normalized": None, "gram": "float64", **(meta or {})}
        self.inputs: list[str] = []
        self.coverage: list[dict] = []
        self.stats = {"pieces": 0, "resumed": 0, "dropped_nonfinite": 0}
        self.extras: dict[str, dict[str, np.ndarray]] = {}

    @classmethod
    def empty(cls, n_features: int, meta: dict | None = None, *, files=(), calibration_rows: int = 0) -> "MomentsPart":
        """The part of no rows (n = 0) of ``files`` (empty shards): the identity of :meth:`merge`.

        With ``calibration_rows`` > 0 it carries an empty reservoir, so that merging it keeps the
        others' calibration sample (a reservoir only one side has is dropped)."""
        out = cls(n_features, meta)
        out.coverage = [coverage_entry(f, 0, 0) for f in files]
        if calibration_rows > 0:
            out.extras[RESERVOIR_EXTRA] = reservoir_to_tensors(Reservoir(calibration_rows, n_features))
        return out

    # -- views ----------------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        return self.moments.n_features

    @property
    def n(self) -> int:
        return self.moments.n

    @property
    def mean(self) -> np.ndarray:
        return self.moments.mean

    @property
    def scatter(self) -> np.ndarray:
        return self.moments.scatter

    @property
    def input_hash(self) -> str:
        """sha256 over the piece hashes (in order): names the rows behind this part."""
        import hashlib

        return hashlib.sha256("\n".join(self.inputs).encode()).hexdigest()

    @property
    def calibration_mode(self) -> str | None:
        """How the calibration sample was drawn: "groups" or "rows", None when the part has none."""
        if RESERVOIR_EXTRA not in self.extras:
            return None
        return "groups" if self.meta.get("calibration_mode") == "groups" else "rows"

    @property
    def sum_sqnorm4(self) -> float | None:
        """sum_i ||x_i - mean||^4 (Ledoit-Wolf), or None for a part saved without power sums."""
        return float(self.power4) if self.has_power_sums else None

    # -- building -------------------------------------------------------------------------
    def update(self, X, *, gram: str | None = None, origin: tuple | None = None) -> "MomentsPart":
        """Fold rows X, shape (m, d), in (float64 accumulation); returns self.

        Values beyond :data:`~whitenclip.validation.MAX_ABS` = 1e50 in magnitude (sum ||y||^4
        overflows near 1e77), or whose moments would overflow, raise :class:`InputError` naming
        ``origin`` = (file, row of X[0]) and the row; the part is then unchanged (never non-finite).
        """
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise InputError(f"expected rows of dimension {self.n_features}, got shape {X.shape}")
        if X.shape[0] == 0:
            return self
        gram = gram or self.meta.get("gram") or "float64"
        if gram not in GRAM_DTYPES:
            raise InputError(f"gram must be one of {', '.join(GRAM_DTYPES)}; got {gram!r}")
        check_magnitude(X, *(origin or ("X", 0)))
        Y, mean = _centre(X, origin=origin)
        with np.errstate(over="ignore", invalid="ignore"):
            a = np.einsum("ij,ij->i", Y, Y)
            t, q = a @ Y, float(a @ a)
        if not (np.isfinite(t).all() and np.isfinite(q)):
            raise _overflow(Y, origin, "sum ||x - mean||^4 (Ledoit-Wolf's power sum)")
        S = centred_gram(Y, gram)
        if not np.isfinite(S).all():
            raise _overflow(Y, origin, "the scatter")
        other = MomentsPart(self.n_features, self.meta)
        other.moments.n, other.moments.mean, other.moments.scatter = X.shape[0], mean, S
        other.power3, other.power4 = t, q
        merged = self._combine(other)
        if not merged.is_finite():
            raise _overflow(Y, origin, "the merged moments")
        self.moments, self.power3, self.power4 = merged.moments, merged.power3, merged.power4
        return self

    def is_finite(self) -> bool:
        """True when every number of the part is finite (mean, scatter, power sums)."""
        return bool(np.isfinite(self.mean).all() and np.isfinite(self.scatter).all()
                    and np.isfinite(self.power3).all() and np.isfinite(self.power4))

    def _combine(self, other: "MomentsPart") -> "MomentsPart":
        """Moments and power sums of the union (no metadata checks)."""
        out = MomentsPart(self.n_features, self.meta)
        out.has_power_sums = self.has_power_sums and other.has_power_sums
        if self.n == 0 or other.n == 0:
            src = other if self.n == 0 else self
            out.moments, out.power3, out.power4 = src.moments.copy(), src.power3.copy(), src.power4
            return out
        out.moments = self.moments.merge(other.moments)
        if out.has_power_sums:
            with np.errstate(over="ignore", invalid="ignore"):
                ta, qa = shift_power_sums(self.n, self.scatter, self.power3, self.power4, out.mean - self.mean)
                tb, qb = shift_power_sums(other.n, other.scatter, other.power3, other.power4, out.mean - other.mean)
                out.power3, out.power4 = ta + tb, qa + qb
            if not (np.isfinite(out.power3).all() and np.isfinite(out.power4)):
                raise InputError(f"merging parts of {self.n} and {other.n} rows overflows float64 in "
                                 "sum ||x - mean||^4 (values too large)")
            # sum a_i^2 >= (sum a_i)^2 / n with a_i = ||y_i||^2 (Cauchy-Schwarz): round-off below the bound is lifted
            out.power4 = max(float(out.power4), float((np.trace(out.scatter) / np.sqrt(out.n)) ** 2))
        return out

    def check_mergeable(self, other: "MomentsPart", name: str = "part") -> None:
        """Raise :class:`InputError` (naming ``name``) when ``other`` cannot join ``self``."""
        if other.n_features != self.n_features:
            raise InputError(f"{name}: moments of dimension {other.n_features}, earlier parts have {self.n_features}")
        for key in PART_KEYS_THAT_MUST_MATCH:
            if self.meta.get(key) != other.meta.get(key):
                raise InputError(f"{name}: {key}={other.meta.get(key)!r}, earlier parts have {self.meta.get(key)!r}")
        clash = first_overlap(self.coverage, other.coverage)
        if clash is not None:
            a, b = clash
            raise InputError(f"{name}: rows {b['rows'][0]}:{b['rows'][1]} of {b['file']} overlap rows "
                             f"{a['rows'][0]}:{a['rows'][1]} of {a['file']} already merged (same file identity: size "
                             "and sampled bytes; a copy counts as the same file): rows would be counted twice")
        dup = set(self.inputs) & set(other.inputs)
        if dup:
            raise InputError(f"{name}: holds {len(dup)} piece(s) already merged (same input hash, e.g. "
                             f"{sorted(dup)[0][:16]}): a part given twice?")
        mine, theirs = self.calibration_mode, other.calibration_mode
        if mine and theirs and mine != theirs and self.n and other.n:  # an empty part (n = 0) has no sample
            raise InputError(f"{name}: calibration sample of {theirs}, earlier parts sampled {mine}: parts of a "
                             "grouped and an ungrouped `whitenclip moments` run cannot be merged (rerun `moments` "
                             "on every part with the same --groups/--no-groups)")
        for key in set(self.extras) | set(other.extras):
            if key not in EXTRA_MERGERS:
                raise InputError(f"{name}: extra statistic {key!r} has no merge rule in this version")

    def merge(self, other: "MomentsPart", name: str = "part") -> "MomentsPart":
        """A new part for the union of the rows behind ``self`` and ``other`` (checked)."""
        self.check_mergeable(other, name)
        try:
            out = self._combine(other)
        except InputError as exc:  # overflow of the merged sums: name the part
            raise InputError(f"{name}: {exc}") from None
        out.inputs = self.inputs + other.inputs
        out.coverage = self.coverage + other.coverage
        out.stats = {k: self.stats.get(k, 0) + other.stats.get(k, 0) for k in set(self.stats) | set(other.stats)}
        for key in set(self.extras) & set(other.extras):  # an extra only one side has covers part of
            out.extras[key] = EXTRA_MERGERS[key](self.extras[key], other.extras[key])  # the rows: dropped
        modes = [p.calibration_mode for p in (self, other) if p.calibration_mode and p.n]
        if RESERVOIR_EXTRA in out.extras and modes:  # the mode of the parts that have rows
            out.meta["calibration_mode"] = modes[0]
        return out

    # -- persistence ------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write a ``.safetensors`` file (atomically) readable by :meth:`load` and :meth:`Moments.load`.

        Tensors: ``mean`` (d,), ``scatter`` (d, d), ``power3`` (d,), ``power4`` (1,), and
        ``extra.<name>.<tensor>`` for extras; header: ``format``, ``version``, ``n`` and
        ``whitenclip`` (JSON: d, meta, inputs, input_hash, coverage, stats, extras' names).
        """
        save_part(self, path)

    @classmethod
    def load(cls, path) -> "MomentsPart":
        """Read a part (or a plain :class:`Moments` file: then without power sums or metadata).

        Every number and field is checked (:func:`moments_from_file`, :func:`check_part_info`,
        the power sums, :func:`check_reservoir_tensors`); anything inconsistent is an
        :class:`InputError` naming the file, never a crash or a silently wrong fit.
        """
        fields = read_part(path)
        out = cls(fields["moments"].n_features, fields["meta"])
        out.moments, out.has_power_sums = fields["moments"], fields["power_sums"]
        if out.has_power_sums:
            out.power3, out.power4 = fields["power3"], fields["power4"]
        out.inputs, out.coverage, out.extras = fields["inputs"], fields["coverage"], fields["extras"]
        out.stats.update(fields["stats"])
        return out

    def __repr__(self) -> str:
        return f"MomentsPart(n={self.n}, n_features={self.n_features}, pieces={self.stats.get('pieces')})"
