"""What ``whitenclip info`` says about embeddings, and which kind of file ``info`` was given."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from whitenclip.errors import InputError
from whitenclip.outputs import npy_ids_path
from whitenclip.readers.items import is_table_path
from whitenclip.readers.plan import is_embedding_path, open_embeddings
from whitenclip.readers.safetensors import parse_safetensors_header
from whitenclip.readers.store import read_store_layout
from whitenclip.results import Result


@dataclass(frozen=True)
class EmbeddingsSummary(Result):
    """What ``whitenclip info`` shows about embeddings (a store directory, a ``.npy`` with its ids,
    ``.npz``, ``.safetensors``, ``.pt``, a table): ``kind``, ``n_rows`` x ``dim`` of ``dtype``,
    ``shards`` (files or table units read), ``n_items``/``complete`` (stores: the inputs ``meta.json``
    records, and whether the shards cover them all), ``ids`` (where row ids come from: ``recorded``,
    ``column NAME`` or ``row index``), ``n_groups`` (distinct groups recorded, None when none),
    ``encoder`` (what the files record: ``ENCODER_META_KEYS``) and ``command`` (a store's ``embed`` line)."""

    path: str
    kind: str
    n_rows: int
    dim: int
    dtype: str
    shards: int
    ids: str
    n_groups: int | None = None
    n_items: int | None = None
    complete: bool | None = None
    encoder: dict = field(default_factory=dict)
    command: str | None = None


def describe_embeddings(path, *, column: str | None = None, id_column: str | None = None) -> EmbeddingsSummary:
    """:class:`EmbeddingsSummary` of an embeddings path (an incomplete store is described, not refused)."""
    p = Path(path)
    src = open_embeddings(p, allow_partial=True, column=column, id_column=id_column)
    n_items = complete = command = None
    if p.is_dir() and not is_table_path(p):
        kind = "store"
        layout = read_store_layout(p, allow_partial=True)
        n_items = layout.meta.get("n_items")
        complete = None if n_items is None else layout.items_end >= n_items
        command = layout.meta.get("command")
    else:
        kind = "table" if is_table_path(p) else p.suffix.lower().lstrip(".") or "text vectors"
    tables = [s.locator[0] for s in src.shards if s.kind == "table"]
    if tables:
        named = tables[0].id_column
        ids = f"column {named}" if named else "row index"
    elif any(s.ids is not None for s in src.shards):
        ids = f"recorded ({npy_ids_path(p).name})" if kind == "npy" else "recorded"
    else:
        ids = "row index"
    groups = {g for g in src.groups or () if g is not None}
    encoder = {k: v for k, v in src.meta.items() if v is not None}
    return EmbeddingsSummary(path=str(p), kind=kind, n_rows=src.n_rows, dim=src.dim, dtype=src.dtype,
                             shards=len(src.shards), ids=ids, n_groups=len(groups) if src.groups else None,
                             n_items=n_items, complete=complete, encoder=encoder, command=command)


def artifact_kind(path) -> str:
    """What ``whitenclip info PATH`` describes: ``"whitener"`` (a ``.safetensors`` whitener artifact, or
    anything else it cannot tell, so the whitener loader's refusal names the problem), ``"moments"``
    (``whitenclip moments`` output) or ``"embeddings"`` (a store or table folder, an embeddings file); a
    file of another kind (a captions CSV...) is refused in one line."""
    p = Path(path)
    if p.is_dir():
        return "embeddings" if is_embedding_path(p) else "whitener"
    if p.suffix.lower() == ".safetensors" and p.is_file():
        try:
            tensors, meta = parse_safetensors_header(p)
        except InputError:
            return "whitener"
        if meta.get("format") == "whitenclip-moments":
            return "moments"
        if meta.get("format") != "whitenclip-whitener" and "embeddings" in tensors:
            return "embeddings"
        return "whitener"
    if p.is_file() and not is_embedding_path(p):
        raise InputError(f"{p}: info describes whiteners and moments files (.safetensors), store directories and "
                         "embeddings files (.npy, .npz, .safetensors, .pt, .h5, parquet/Arrow); this is none of them")
    return "embeddings" if is_embedding_path(p) and p.exists() else "whitener"
