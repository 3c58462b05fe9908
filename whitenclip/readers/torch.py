"""``.pt`` / ``.pth`` files: a 2-D float tensor, or a dict holding one under ``embeddings``
(optional ``ids``: a list of strings), read with ``torch.load(weights_only=True)`` (never
unpickled). The file is loaded whole when planned (a pickle has no header to read alone); the
rows travel with the shard."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from whitenclip.errors import InputError
from whitenclip.readers.base import Format, Piece, Shard, check_ids, check_matrix, one_line


def torch_load(path):
    """``torch.load(path, map_location="cpu", weights_only=True)`` (never unpickles), without torch's
    "Validating sparse tensor invariants" warning: sparse tensors are refused after loading, so
    the command's one error line is all the user sees."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Validating sparse tensor invariants")
        return torch.load(str(path), map_location="cpu", weights_only=True)


def torch_load_error(exc: BaseException) -> str:
    """What :func:`torch_load` refused, in one short line: the unpickler's own reason when there is
    one (torch's advice to retry with its unsafe unpickler is left out, as are its terminal colour codes).

    >>> torch_load_error(RuntimeError("Weights only load failed. Re-run \\x1b[1munsafely\\x1b[0m. "
    ...     "WeightsUnpickler error: Unsupported global: GLOBAL fractions.Fraction was not an allowed global. More."))
    'Unsupported global: GLOBAL fractions.Fraction was not an allowed global'
    """
    text = " ".join(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(exc)).split())
    _, found, reason = text.partition("WeightsUnpickler error:")
    if found:
        text = reason.strip().split(". ")[0].rstrip(".")
    return (text[:197] + "...") if len(text) > 200 else (text or type(exc).__name__)


def _load_rows(p: Path) -> tuple[np.ndarray, list | None]:
    """``(rows, ids or None)`` of a torch file of embeddings (see the module doc), checked."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        raise InputError(f"{p}: reading .pt files needs torch") from None
    try:
        obj = torch_load(p)
    except Exception as exc:
        raise InputError(f"{p}: not a readable torch file with weights_only=True ({torch_load_error(exc)}); "
                         "only tensors and dicts of tensors are read, never pickled objects") from None
    ids = None
    if isinstance(obj, dict):
        if "embeddings" not in obj:
            found = sorted(map(str, obj))
            raise InputError(f"{p}: a dict in a .pt file must hold a tensor under 'embeddings' (found {found})")
        ids, obj = obj.get("ids"), obj["embeddings"]
        if ids is not None:
            if not isinstance(ids, (list, tuple)):
                raise InputError(f"{p}: 'ids' must be a list of strings")
    if not isinstance(obj, torch.Tensor):
        raise InputError(f"{p}: expected a 2-D float tensor (or a dict with 'embeddings'), got {type(obj).__name__}")
    if obj.layout != torch.strided:
        raise InputError(f"{p}: holds a sparse tensor ({str(obj.layout).replace('torch.', '')}); "
                         "save a dense one (tensor.to_dense())")
    if not obj.is_floating_point() or obj.dtype == torch.bfloat16:
        raise InputError(f"{p}: expected float16/32/64 embeddings, got dtype {str(obj.dtype).replace('torch.', '')}")
    try:
        arr = obj.detach().cpu().numpy()
    except Exception as exc:
        raise InputError(f"{p}: tensor cannot be read as an array ({one_line(exc)})") from None
    n, _ = check_matrix(str(p), arr.shape, arr.dtype)
    check_ids(p, ids, n)
    return arr, None if ids is None else [str(i) for i in ids]


class TorchFormat(Format):
    """A torch file of embeddings (see the module doc): one whole piece; ``locator`` is
    ``(rows, ids or None)``."""

    name = "torch"

    def shards(self, path) -> list[Shard]:
        arr, ids = _load_rows(Path(path))
        return [Shard(str(path), arr.shape[0], arr.shape[1], arr.dtype.str, 0, "whole",
                      None if ids is None else ("recorded",), {}, (arr, ids), self.name)]

    def read(self, piece: Piece, chunk_rows: int) -> Iterator[tuple[int, np.ndarray, list | None]]:
        arr = piece.shard.locator[0]
        for lo in range(piece.start, piece.stop, chunk_rows):
            yield lo, np.array(arr[lo:min(lo + chunk_rows, piece.stop)], dtype=np.float64), None

    def ids(self, piece: Piece) -> list[str] | None:
        ids = piece.shard.locator[1]
        return None if ids is None else ids[piece.start:piece.stop]


FORMAT = TorchFormat()
