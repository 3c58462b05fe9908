"""The moments part file (``whitenclip moments`` / ``merge-moments`` output): writing a part, and
reading one back with every number and header field checked."""

from __future__ import annotations

import numpy as np

from whitenclip.errors import InputError
from whitenclip.moments.coverage import _self_overlap
from whitenclip.moments.estimator import MOMENTS_FORMAT, MOMENTS_VERSION, Moments, header_count, moments_from_file
from whitenclip.moments.numerics import GRAM_DTYPES
from whitenclip.moments.sampling import RESERVOIR_EXTRA, check_reservoir_tensors


def save_part(part, path) -> None:
    """Write ``part`` (a :class:`~whitenclip.moments.MomentsPart`) to a ``.safetensors`` file,
    atomically (the layout: :meth:`~whitenclip.moments.MomentsPart.save`)."""
    import json

    from safetensors.numpy import save as st_save

    from whitenclip.outputs import atomic_write

    if not part.is_finite():  # never write a non-finite part (update/merge refuse overflow first)
        raise InputError(f"{path}: refusing to write moments holding NaN or inf")
    info = {"d": part.n_features, "meta": part.meta, "inputs": part.inputs, "input_hash": part.input_hash,
            "coverage": part.coverage, "stats": part.stats, "power_sums": part.has_power_sums,
            "extras": sorted(part.extras)}
    header = {"format": MOMENTS_FORMAT, "version": str(MOMENTS_VERSION), "n": str(part.n),
              "whitenclip": json.dumps(info)}
    tensors = {"mean": part.mean, "scatter": part.scatter, "power3": part.power3,
               "power4": np.array([part.power4], dtype=np.float64)}
    for key, group in part.extras.items():
        tensors.update({f"extra.{key}.{k}": np.ascontiguousarray(v) for k, v in group.items()})
    blob = st_save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=header)
    with atomic_write(path) as fh:
        fh.write(blob)


def read_part(path) -> dict:
    """The checked fields of a part file (or of a plain :class:`Moments` file: then no metadata, no
    power sums, and its rows named by a hash of its moments): ``moments``, ``meta``, ``power_sums``
    (bool; ``power3`` and ``power4`` present when True), ``inputs``, ``coverage``, ``stats``, ``extras``.

    Every number and field is checked (:func:`moments_from_file`, :func:`check_part_info`, the
    power sums, :func:`check_reservoir_tensors`): an :class:`InputError` naming the file otherwise.
    """
    import json

    from whitenclip.readers.safetensors import read_safetensors

    tensors, header = read_safetensors(path)
    m = moments_from_file(tensors, header, path)
    if "whitenclip" not in header:  # a plain Moments file: name its rows by their moments
        return {"moments": m, "meta": None, "power_sums": False, "inputs": ["moments:" + _content_hash(m)],
                "coverage": [], "stats": {}, "extras": {}}
    try:
        info = json.loads(header["whitenclip"])
    except ValueError:
        raise InputError(f"{path}: moments header is not valid JSON") from None
    info = check_part_info(info, m, path)
    fields = {"moments": m, "meta": info["meta"], "power_sums": False, "inputs": info["inputs"],
              "coverage": info["coverage"], "stats": info["stats"], "extras": {}}
    power3, power4 = tensors.get("power3"), tensors.get("power4")
    if info["power_sums"] and power3 is not None and power4 is not None:
        fields["power3"], fields["power4"] = _checked_power_sums(power3, power4, m, path)
        fields["power_sums"] = True
    for key in info["extras"]:
        prefix = f"extra.{key}."
        fields["extras"][key] = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if key == RESERVOIR_EXTRA:
            check_reservoir_tensors(fields["extras"][key], m.n_features, m.n, path)
    return fields


def _content_hash(m: Moments) -> str:
    import hashlib

    h = hashlib.sha256(str(m.n).encode())
    h.update(np.ascontiguousarray(m.mean).tobytes())
    h.update(np.ascontiguousarray(m.scatter).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# validation of a part's header (every number read from an artifact is checked)
# ---------------------------------------------------------------------------------------
_META_TYPES = {"encoder": (str, type(None)), "modality": (str, type(None)), "normalized": (bool, type(None))}


def check_part_info(info, m: Moments, path) -> dict:
    """The ``whitenclip`` JSON of a part's header, checked and normalised: a dict with ``d`` equal to
    the tensors' d, ``meta`` (encoder/modality str or null, normalized bool or null, gram one of
    :data:`GRAM_DTYPES`), ``inputs`` (strings), ``coverage`` (entries with a file, an id and rows
    0 <= start <= stop <= 2^53 covering at most n + dropped rows), ``stats`` (counts),
    ``power_sums`` (bool), ``extras`` (names). Raises :class:`InputError` naming the file."""
    def bad(what):
        return InputError(f"{path}: moments header: {what}")

    if not isinstance(info, dict):
        raise bad(f"expected a JSON object, got {type(info).__name__}")
    if "d" in info and header_count(info["d"], path, "d", lo=1) != m.n_features:
        raise bad(f"d={info['d']} but the tensors have d={m.n_features}")
    meta = info.get("meta") or {}
    if not isinstance(meta, dict):
        raise bad("meta must be an object")
    for key, types in _META_TYPES.items():
        if not isinstance(meta.get(key), types):
            raise bad(f"meta.{key}={meta.get(key)!r} has the wrong type")
    if meta.get("gram", "float64") not in GRAM_DTYPES:
        raise bad(f"meta.gram={meta.get('gram')!r} must be one of {', '.join(GRAM_DTYPES)}")
    if meta.get("calibration_mode") not in (None, "rows", "groups"):
        raise bad(f"meta.calibration_mode={meta.get('calibration_mode')!r} must be rows, groups or null")
    if any(not isinstance(v, (str, bool, int, float, type(None))) for v in meta.values()):
        raise bad("meta values must be strings, numbers, booleans or null")
    inputs = info.get("inputs", [])
    if not isinstance(inputs, list) or not all(isinstance(v, str) for v in inputs):
        raise bad("inputs must be a list of strings")
    stats = info.get("stats") or {}
    if not isinstance(stats, dict):
        raise bad("stats must be an object")
    stats = {str(k): header_count(v, path, f"stats.{k}") for k, v in stats.items()}
    coverage = info.get("coverage", [])
    if not isinstance(coverage, list):
        raise bad("coverage must be a list")
    covered = 0
    for e in coverage:
        if not (isinstance(e, dict) and isinstance(e.get("file"), str) and isinstance(e.get("id"), str)
                and isinstance(e.get("rows"), list) and len(e["rows"]) == 2):
            raise bad(f"coverage entry {str(e)[:80]!r} must be {{file, id, rows: [start, stop]}}")
        lo, hi = (header_count(v, path, "coverage rows") for v in e["rows"])
        if hi < lo:
            raise bad(f"coverage rows {lo}:{hi} of {e['file']} are reversed")
        covered += hi - lo
    if covered > m.n + stats.get("dropped_nonfinite", 0):
        raise bad(f"coverage names {covered} rows, more than n={m.n} (+ {stats.get('dropped_nonfinite', 0)} dropped)")
    if _self_overlap(coverage):
        raise bad("coverage holds overlapping row ranges of one file (rows counted twice)")
    power_sums = info.get("power_sums", True)
    if not isinstance(power_sums, bool):
        raise bad("power_sums must be true or false")
    extras = info.get("extras", [])
    if not isinstance(extras, list) or not all(isinstance(v, str) for v in extras):
        raise bad("extras must be a list of names")
    return {"meta": meta, "inputs": list(inputs), "coverage": [dict(e) for e in coverage], "stats": stats,
            "power_sums": power_sums, "extras": extras}


def _checked_power_sums(power3, power4, m: Moments, path) -> tuple[np.ndarray, float]:
    """Power sums t (d,) and q of a part, checked: finite floats, (tr S)^2 / n <= q <= (tr S)^2 (Cauchy-Schwarz
    and positivity of a_i = ||y_i||^2, to 1e-6), all zero when n = 0."""
    if power3.shape != (m.n_features,) or power4.shape != (1,) or power3.dtype.kind != "f" or power4.dtype.kind != "f":
        raise InputError(f"{path}: power sums have shapes {power3.shape}, {power4.shape} (expected "
                         f"({m.n_features},), (1,), float)")
    t, q = power3.astype(np.float64), float(power4[0])
    if not (np.isfinite(t).all() and np.isfinite(q)):
        raise InputError(f"{path}: moments file holds non-finite values")
    bound = float((np.trace(m.scatter) / np.sqrt(max(m.n, 1))) ** 2)
    if q < 0 or q < bound * (1.0 - 1e-6):
        raise InputError(f"{path}: power4 = {q:.6g} is impossible: sum ||x - mean||^4 >= (tr S)^2 / n = {bound:.6g}")
    top = float(np.trace(m.scatter)) ** 2
    if q > top * (1.0 + 1e-6):
        raise InputError(f"{path}: power4 = {q:.6g} is impossible: sum ||x - mean||^4 <= (tr S)^2 = {top:.6g}")
    if m.n == 0 and (q != 0 or t.any()):
        raise InputError(f"{path}: an empty part (n = 0) must have zero power sums")
    return t, q
