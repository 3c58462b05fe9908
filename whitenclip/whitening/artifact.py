"""The whitener artifact: one ``.safetensors`` file (the fitted tensors and a JSON header), its
header as a dict, writing it atomically, and reading it back with every header field, tensor shape
and value checked."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import numpy as np

from whitenclip.errors import InputError
from whitenclip.moments import RESERVOIR_KEY
from whitenclip.whitening.basis import METHODS
from whitenclip.whitening.calibration import DEFAULT_CALIBRATION_ROWS, degenerate_calibration
from whitenclip.whitening.shrinkage import SHRINKAGES

ARTIFACT_FORMAT = "whitenclip-whitener"
ARTIFACT_VERSION = 1


def whitener_calibration_metadata(wh) -> dict | None:
    """:meth:`Whitener.calibration_metadata` (how ``calibration_`` was made), or None without calibration."""
    if wh.n_cal_ is None:
        return None
    groups = getattr(wh, "calibration_groups_", None)
    return {"n_cal": wh.n_cal_, "rows_max": int(wh.calibration_rows), "seed": int(wh.calibration_seed),
            "mode": "rows" if groups is None else "groups", "n_groups": groups,
            "sampling": f"rows with key <= T (at most rows_max rows; whole groups) of {RESERVOIR_KEY}",
            "distance": ("leave-one-group-out" if groups is not None else "leave-one-out")
            + " squared Mahalanobis distance, closed form",
            "n_infinite": int(np.sum(np.isinf(wh.calibration_))),
            "largest_group": getattr(wh, "calibration_largest_group_", None),
            "degenerate": getattr(wh, "calibration_degenerate_", None),
            "warning": getattr(wh, "calibration_warning_", None)}


def whitener_artifact_metadata(wh) -> dict:
    """:meth:`Whitener.artifact_metadata`: the artifact header of a fitted whitener, JSON-ready."""
    wh._check_fitted()
    return {
        "format": ARTIFACT_FORMAT,
        "version": ARTIFACT_VERSION,
        "method": wh.method,
        "effective_method": wh.effective_method_,
        "shrinkage": getattr(wh, "shrinkage_choice_", wh.shrinkage),
        "shrinkage_intensity": wh.shrinkage_,
        "shrinkage_rule": getattr(wh, "shrinkage_rule_", None),
        "floor": wh.floor,
        "rank_requested": wh.rank,
        "rank": wh.rank_,
        "n": wh.n_samples_,
        "d": wh.n_features_,
        "log_det": wh.log_det_,
        "dropped": wh.dropped_,
        "eigenvalues": [float(v) for v in wh.eigenvalues_],
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "encoder": None,
        "modality": None,
        "normalized": None,
        **wh.metadata_,
        "n_cal": wh.n_cal_,
        "calibration": wh.calibration_metadata(),
    }


def save_whitener(wh, path) -> Path:
    """:meth:`Whitener.save`: write the fitted whitener ``wh`` to one ``.safetensors`` file, atomically."""
    from safetensors.numpy import save as st_save

    from whitenclip.outputs import atomic_write

    meta = wh.artifact_metadata()
    tensors = {
        "mean": wh.mean_, "W": wh.W_, "unwhiten": wh.unwhiten_, "components": wh.components_,
        "eigenvalues": wh.eigenvalues_, "all_eigenvalues": wh.all_eigenvalues_, "covariance": wh.covariance_,
    }
    if wh.n_cal_ is not None:
        tensors["calibration"] = wh.calibration_
    header = {"format": ARTIFACT_FORMAT, "version": str(ARTIFACT_VERSION), "whitenclip": json.dumps(meta)}
    blob = st_save({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in tensors.items()}, metadata=header)
    with atomic_write(path) as fh:
        fh.write(blob)
    return Path(path)


def load_whitener(cls, path):
    """:meth:`Whitener.load`: an instance of the whitener class ``cls`` read from ``path``, checked."""
    from whitenclip.readers.safetensors import read_safetensors

    tensors, header = read_safetensors(path)
    if header.get("format") != ARTIFACT_FORMAT or "whitenclip" not in header:
        raise InputError(f"{path}: not a whitenclip whitener (no '{ARTIFACT_FORMAT}' header)")
    try:
        meta = json.loads(header["whitenclip"])
        version = int(meta.get("version", -1))
    except (ValueError, TypeError, AttributeError):
        raise InputError(f"{path}: whitener header is not valid JSON") from None
    if version != ARTIFACT_VERSION:
        raise InputError(f"{path}: whitener format version {version} is not supported "
                         f"(expected {ARTIFACT_VERSION})")
    meta = check_whitener_header(meta, path)
    cal = meta["calibration"]
    wh = cls(method=meta["method"], shrinkage=meta["shrinkage"], floor=meta["floor"], rank=meta["rank_requested"],
             calibration="calibration" in tensors,
             calibration_rows=cal["rows_max"] if cal else DEFAULT_CALIBRATION_ROWS,
             calibration_seed=cal["seed"] if cal else 0)
    _restore(wh, tensors, meta, path)
    return wh


def check_whitener_header(meta, path) -> dict:
    """The ``whitenclip`` JSON of a whitener artifact with every field :meth:`Whitener.load` reads
    checked (an :class:`InputError` naming the file and the field otherwise): ``method`` and
    ``effective_method`` known, ``shrinkage`` none/ledoit-wolf/oas/[0, 1], ``shrinkage_intensity``
    in [0, 1], ``floor`` in [0, 1), ``d`` >= 1, ``rank`` in [1, d], ``rank_requested`` null or >= 1,
    ``n`` null or a count in [1, 2^53], ``dropped`` {n_dropped, reason}, ``calibration`` null or
    {rows_max in [1, RESERVOIR_MAX_ROWS], seed >= 0}. Returns a copy with those fields normalised."""
    from whitenclip.moments import MAX_COUNT, RESERVOIR_MAX_ROWS

    def bad(key, what):
        return InputError(f"{path}: whitener header field {key}={meta.get(key, '<missing>')!r} {what}")

    def number(key, lo, hi, *, hi_open=False):
        v = meta.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) \
                or not (lo <= v < hi if hi_open else lo <= v <= hi):
            raise bad(key, f"must be a number in [{lo}, {hi}{')' if hi_open else ']'}")
        return float(v)

    def count(key, lo, hi=MAX_COUNT, optional=False):
        v = meta.get(key)
        if optional and v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise bad(key, f"must be an integer in [{lo}, {'2^53' if hi == MAX_COUNT else hi}]")
        return v

    if not isinstance(meta, dict):
        raise InputError(f"{path}: whitener header is not a JSON object")
    out = dict(meta)
    for key in ("method", "effective_method"):
        if meta.get(key) not in (*METHODS, "imported"):
            raise bad(key, f"must be one of {', '.join(METHODS)}, imported")
    s = meta.get("shrinkage")
    if isinstance(s, (int, float)) and not isinstance(s, bool):
        out["shrinkage"] = number("shrinkage", 0.0, 1.0)
    elif s not in SHRINKAGES:
        raise bad("shrinkage", "must be null, ledoit-wolf, oas or a number in [0, 1]")
    else:
        out["shrinkage"] = s
    out["shrinkage_intensity"] = number("shrinkage_intensity", 0.0, 1.0)
    out["floor"] = number("floor", 0.0, 1.0, hi_open=True)
    out["d"] = count("d", 1)
    out["rank"] = count("rank", 1, out["d"])
    out["rank_requested"] = count("rank_requested", 1, optional=True)
    out["n"] = count("n", 1, optional=True)
    dropped = meta.get("dropped", {"n_dropped": out["d"] - out["rank"], "reason": ""})
    if not (isinstance(dropped, dict) and isinstance(dropped.get("reason", ""), str)
            and isinstance(dropped.get("n_dropped"), int) and not isinstance(dropped.get("n_dropped"), bool)
            and 0 <= dropped["n_dropped"] <= out["d"]):
        raise bad("dropped", "must be {n_dropped: integer in [0, d], reason: string}")
    out["dropped"] = {"n_dropped": dropped["n_dropped"], "reason": dropped.get("reason", "")}
    cal = meta.get("calibration")
    if cal is not None:
        if not (isinstance(cal, dict) and all(isinstance(cal.get(k), int) and not isinstance(cal.get(k), bool)
                                              for k in ("rows_max", "seed"))
                and 1 <= cal["rows_max"] <= RESERVOIR_MAX_ROWS and cal["seed"] >= 0):
            raise bad("calibration", f"must be null or {{rows_max in [1, {RESERVOIR_MAX_ROWS}], seed >= 0, ...}}")
    out["calibration"] = cal
    return out


def _restore(wh, tensors: dict, meta: dict, path) -> None:
    need = ("mean", "W", "unwhiten", "components", "eigenvalues", "all_eigenvalues", "covariance")
    missing = [k for k in need if k not in tensors]
    if missing:
        raise InputError(f"{path}: whitener is missing tensor(s) {', '.join(missing)}")
    d, r = meta["d"], meta["rank"]  # checked by check_whitener_header
    width = r if meta["effective_method"] == "pca" else d
    shapes = {"mean": (d,), "W": (d, width), "unwhiten": (width, d), "components": (d, r), "eigenvalues": (r,),
              "all_eigenvalues": (d,), "covariance": (d, d)}
    for k, shape in shapes.items():
        if tensors[k].shape != shape:
            raise InputError(f"{path}: tensor {k} has shape {tensors[k].shape}, header implies {shape}")
        if not np.isfinite(tensors[k]).all():
            raise InputError(f"{path}: tensor {k} holds NaN or inf")
    if not (tensors["eigenvalues"] > 0).all():
        raise InputError(f"{path}: kept eigenvalues must be positive")
    wh.mean_, wh.W_, wh.unwhiten_ = tensors["mean"], tensors["W"], tensors["unwhiten"]
    wh.components_, wh.eigenvalues_ = tensors["components"], tensors["eigenvalues"]
    wh.all_eigenvalues_, wh.covariance_ = tensors["all_eigenvalues"], tensors["covariance"]
    wh.rank_, wh.n_samples_, wh.n_features_ = r, meta["n"], d
    wh.shrinkage_, wh.effective_method_ = float(meta["shrinkage_intensity"]), meta["effective_method"]
    wh.log_det_ = float(-0.5 * np.sum(np.log(wh.eigenvalues_)))
    wh.dropped_ = meta["dropped"]
    wh.n_features_in_ = d
    wh.calibration_ = _restore_calibration(tensors.get("calibration"), path)
    cal = meta["calibration"] or {}  # None or a dict: checked by check_whitener_header
    n_groups, warning, largest = cal.get("n_groups"), cal.get("warning"), cal.get("largest_group")
    wh.calibration_groups_ = int(n_groups) if isinstance(n_groups, int) and n_groups > 0 else None
    wh.calibration_warning_ = str(warning) if isinstance(warning, str) and warning else None
    wh.calibration_largest_group_ = largest if isinstance(largest, int) and not isinstance(largest, bool) \
        and largest > 0 else None
    wh.calibration_degenerate_ = None if wh.calibration_ is None else degenerate_calibration(
        wh.calibration_, largest_group=wh.calibration_largest_group_, n_groups=wh.calibration_groups_)
    if wh.calibration_degenerate_ and wh.calibration_degenerate_ not in (wh.calibration_warning_ or ""):
        # an artifact written before degenerate calibrations were flagged: said now
        wh.calibration_warning_ = "; ".join(w for w in (wh.calibration_warning_, wh.calibration_degenerate_) if w)
    wh.shrinkage_choice_ = meta["shrinkage"]
    rule = meta.get("shrinkage_rule")
    wh.shrinkage_rule_ = rule if isinstance(rule, str) and rule else None
    skip = {"format", "version", "method", "effective_method", "shrinkage", "shrinkage_intensity", "floor",
            "rank_requested", "rank", "n", "d", "log_det", "dropped", "eigenvalues", "n_cal", "calibration",
            "shrinkage_rule"}
    from whitenclip.encoders.base import split_encoder_meta  # older artifacts: fingerprint inside activation

    wh.metadata_ = split_encoder_meta({k: v for k, v in meta.items() if k not in skip})


def _restore_calibration(cal, path) -> np.ndarray | None:
    """The artifact's calibration tensor, checked (1-D, no NaN, >= 0, ascending), or None."""
    if cal is None:
        return None
    cal = np.asarray(cal, dtype=np.float64)
    if cal.ndim != 1 or cal.size == 0:
        raise InputError(f"{path}: tensor calibration has shape {cal.shape}, expected (n_cal,) with n_cal >= 1")
    if np.isnan(cal).any() or (cal < 0).any() or (cal[1:] < cal[:-1]).any():
        raise InputError(f"{path}: tensor calibration must hold ascending distances >= 0 (no NaN)")
    return cal
