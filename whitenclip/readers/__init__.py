"""Reading every input whitenclip takes: one module per format, one interface, one scanner.

Embeddings (:mod:`~whitenclip.readers.base` defines the interface: a format plans shards from
headers and reads a piece's rows in chunks; :mod:`~whitenclip.readers.plan` is the scanner both
engines use):

* :mod:`~whitenclip.readers.npy` (``.npy`` with ``NAME.ids.json``), :mod:`~whitenclip.readers.npz`,
  :mod:`~whitenclip.readers.safetensors`, :mod:`~whitenclip.readers.torch` (``.pt``/``.pth``),
  :mod:`~whitenclip.readers.hdf5` (``.h5``/``.hdf5``), :mod:`~whitenclip.readers.text` (text vectors),
  :mod:`~whitenclip.readers.table` (parquet, Arrow IPC, ``save_to_disk``),
  :mod:`~whitenclip.readers.store` (whitenclip stores), :mod:`~whitenclip.readers.clip_retrieval`;
* :mod:`~whitenclip.readers.rows`: :class:`EmbeddingFile` (one path read in this process) and the
  row checks; :mod:`~whitenclip.readers.summary`: what ``info`` says.

Raw items (images and captions, turned into rows by :mod:`whitenclip.encoders`):
:mod:`~whitenclip.readers.items` (the vocabulary: :class:`Inputs`, :class:`SkipReport`),
:mod:`~whitenclip.readers.images`, :mod:`~whitenclip.readers.captions`,
:mod:`~whitenclip.readers.caption_tables`, :mod:`~whitenclip.readers.collect`.

A new format is one module: a :class:`~whitenclip.readers.base.Format` subclass named ``FORMAT``
(``shards`` from headers, ``read`` a piece), its suffix in :data:`whitenclip.readers.plan.EMBEDDING_SUFFIXES`,
and its fuzz strategy in ``tests/test_fuzz_readers.py``.
"""

from __future__ import annotations

import importlib

_LAZY = {"Piece": "base", "Shard": "base", "discover_shards": "plan", "finite_piece_rows": "plan",
         "iter_piece_rows": "plan", "open_embeddings": "plan", "plan_pieces": "plan", "read_embeddings": "plan",
         "EmbeddingFile": "rows", "iter_rows": "rows"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    """The names above, imported on first use (PEP 562): importing one reader (``readers.items``
    to classify paths) does not load the others."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f"whitenclip.readers.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'whitenclip.readers' has no attribute {name!r}")
