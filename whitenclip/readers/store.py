"""whitenclip store directories: ``meta.json`` + ``shard-NNNNN.npy`` + ``shard-NNNNN.ids.json``
(written by ``whitenclip embed``, :class:`whitenclip.writers.StoreWriter`). Each committed shard is
an ``.npy`` shard with its ids file (:mod:`whitenclip.readers.npy`); a store whose ``meta.json``
records more items than its committed shards cover (a killed ``embed``) is refused unless
``allow_partial``."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whitenclip.errors import InputError
from whitenclip.readers.base import FLOAT_KINDS, Shard, is_count
from whitenclip.readers.meta import ENCODER_META_KEYS, split_encoder_meta
from whitenclip.readers.npy import FORMAT as NPY
from whitenclip.readers.sidecar import read_shard_ids

STORE_FORMAT = "whitenclip-store"


STORE_VERSION = 1


_SHARD_RE = re.compile(r"^shard-(\d{5,})\.npy$")


def _shard_paths(directory: Path) -> list[tuple[int, Path, Path]]:
    """Committed shards of a store, in order: (index, npy, ids json); npy present = committed."""
    out = []
    for p in directory.iterdir():
        m = _SHARD_RE.match(p.name)
        if m:
            ids = p.with_name(p.name[:-4] + ".ids.json")
            if ids.is_file():
                out.append((int(m.group(1)), p, ids))
    return sorted(out)


def _read_store_meta(directory: Path) -> dict:
    """``meta.json`` of a store, validated: ``dim`` a positive integer; ``n_items`` (when present)
    a non-negative integer; ``dtype`` (when present) float16/32/64."""
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise InputError(f"{directory}: not a whitenclip store (no meta.json)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InputError(f"{meta_path}: not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
        raise InputError(f"{meta_path}: not a whitenclip store (format is not {STORE_FORMAT!r})")
    if not is_count(meta.get("dim")) or meta["dim"] == 0:
        raise InputError(f"{meta_path}: 'dim' must be a positive integer, got {meta.get('dim')!r}"[:200])
    if "n_items" in meta and not is_count(meta["n_items"]):
        raise InputError(f"{meta_path}: 'n_items' must be a non-negative integer, got {meta['n_items']!r}"[:200])
    if "dtype" in meta and meta["dtype"] not in FLOAT_KINDS:
        raise InputError(f"{meta_path}: 'dtype' must be one of {', '.join(FLOAT_KINDS)}, got {meta['dtype']!r}"[:200])
    return meta


@dataclass(frozen=True)
class StoreLayout:
    """A store directory as the planner sees it (:func:`store_shards`, for the local and the Dask
    engine alike; ``info`` describes it): validated ``meta``, committed ``shards``
    ``(index, npy, ids json)`` in order, and ``items_end``, the input items they cover."""

    directory: Path
    meta: dict
    shards: list
    items_end: int

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def info(self) -> dict:
        """What ``meta.json`` records about the encoder (``ENCODER_META_KEYS``; older stores' combined
        activation and fingerprint split, :func:`~whitenclip.readers.meta.split_encoder_meta`)."""
        meta = split_encoder_meta(self.meta)
        return {k: meta[k] for k in ENCODER_META_KEYS if k in meta}

    def check_shard(self, npy, shape, dtype) -> None:
        """Refuse a shard whose dimension (or dtype) differs from what ``meta.json`` records (its ids
        file is checked by :meth:`whitenclip.readers.npy.NpyFormat.shards`: one id and group per row)."""
        if len(shape) == 2 and shape[1] != self.dim:
            raise InputError(f"{npy}: shard has dimension {shape[1]}, store says {self.dim}")
        name = np.dtype(dtype).name
        if "dtype" in self.meta and name != self.meta["dtype"]:
            raise InputError(f"{npy}: shard holds {name}, store says {self.meta['dtype']}")


def read_store_layout(directory, *, allow_partial: bool = False) -> StoreLayout:
    """Validated layout of a store directory (see :class:`StoreLayout`).

    A store whose committed shards cover fewer items than ``meta.json``'s ``n_items`` (a killed
    ``embed``) raises :class:`InputError` naming the command that finishes it, unless
    ``allow_partial``; shards covering more items than ``n_items`` are refused always.
    """
    directory = Path(directory)
    meta = _read_store_meta(directory)
    shards = _shard_paths(directory)
    items_end = read_shard_ids(shards[-1][2])[1] if shards else 0
    total = meta.get("n_items")
    if total is not None and items_end > total:
        raise InputError(f"{directory}: shards cover {items_end} items, but meta.json says n_items = {total}")
    if total is not None and items_end < total and not allow_partial:
        rerun = meta.get("command") or f"whitenclip embed ... -o {directory}"
        raise InputError(f"{directory}: store is incomplete: {items_end} of {total} items; rerun `{rerun}` to "
                         "finish it (or pass --allow-partial to use the rows it has)")
    return StoreLayout(directory, meta, shards, items_end)


def store_shards(directory, *, allow_partial: bool = False) -> list[Shard]:
    """The ``.npy`` shards of a store, in order, each with its ids file and the encoder the store
    records; every shard must have the store's ``dim`` and ``dtype`` (:meth:`StoreLayout.check_shard`)."""
    layout = read_store_layout(directory, allow_partial=allow_partial)
    info = layout.info  # encoder, modality, normalisation, activation, fingerprint
    out = []
    for _, npy, ids in layout.shards:  # the .npy commits a shard
        shard, = NPY.shards(npy, ids=("json", str(ids)), meta=info)
        layout.check_shard(npy, (shard.n_rows, shard.dim), shard.dtype)
        out.append(shard)
    return out
