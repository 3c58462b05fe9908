"""What the commands read: embedding files, or raw images/captions embedded on the fly.

Every source offers the same surface as :class:`~whitenclip.readers.rows.EmbeddingFile`:
``path`` (a label), ``dim``, ``meta`` (encoder, modality, normalized) and
``iter_chunks(chunk_rows)`` yielding ``(ids, X)`` with X float64 of shape (m, d), so fitting,
scoring, diagnostics and information estimates need not care where rows come from.

Resolution rules for a command's INPUT list:

* every INPUT an embeddings file or store directory (or ``-`` whose first line is a vector of
  numbers) -> embedding sources;
* otherwise the INPUTs are raw (image directories/files, captions files, ``-`` captions) and are
  embedded with ``model`` (``--model``), else the encoder recorded in the whitener, else the
  default for the modality (:data:`DEFAULT_MODELS`). Mixing the two kinds is refused.
"""

from __future__ import annotations

import hashlib
import io
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from whitenclip.config import ENCODED_CHUNK_ITEMS
from whitenclip.errors import InputError
from whitenclip.readers.collect import collect_inputs
from whitenclip.readers.items import Inputs, is_table_path
from whitenclip.readers.meta import agreed_encoder_meta
from whitenclip.readers.pairs import PairSkipReport, read_pairs_table
from whitenclip.readers.plan import holds_embeddings, open_embeddings, read_text_vectors
from whitenclip.readers.rows import EmbeddingFile, iter_rows, label_ids
from whitenclip.readers.sidecar import read_groups_file
from whitenclip.readers.text import first_line, looks_like_vectors

DEFAULT_MODELS = {"text": "minilm", "image": "openclip:ViT-B-32/openai"}
"""Encoder used for raw inputs when neither --model nor a whitener names one."""


@dataclass
class EncodeOptions:
    """How raw inputs are embedded (the CLI's --model/--device/... options)."""

    model: str | None = None
    modality: str | None = None
    normalize: bool | None = None
    column: str | None = None
    """Caption column of a CSV, or embedding column of a parquet/Arrow table."""
    id_column: str | None = None
    """Row id column of a parquet/Arrow table of embeddings (:mod:`whitenclip.readers.table`), or of a
    captions CSV/table (each caption's id: the column's value, duplicates kept)."""
    strict: bool = False
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    num_workers: int | None = None
    decode: str = "auto"
    progress: bool = True
    allow_partial: bool = False
    group_column: str | bool | None = None
    """Captions CSV column naming each row's group (True: an image column when the header has one,
    see :data:`whitenclip.readers.items.IMAGE_COLUMNS`; None: no groups; False: no groups, and those a
    store records are dropped too)."""
    groups_file: str | None = None
    """A file of group ids, one line per input row (all INPUTs in order); an empty line: own group."""


@dataclass
class EncodedSource:
    """Raw inputs (a collected :class:`~whitenclip.readers.items.Inputs`) embedded chunk by chunk."""

    path: str
    inputs: object
    encoder: object
    options: EncodeOptions
    meta: dict = field(default_factory=dict)
    n_rows: int | None = None

    @property
    def dim(self) -> int:
        return int(self.encoder.dim)

    @property
    def groups(self) -> list | None:
        """Group id of each item (= row: captions are never skipped once collected), or None."""
        return getattr(self.inputs, "groups", None)

    def iter_chunks(self, chunk_rows: int = ENCODED_CHUNK_ITEMS, start_item: int = 0):
        """Yield ``(ids, X float64 (m, d))`` in input order; bad items are skipped and counted."""
        for ids, X, _ in self.iter_encoded(start_item=start_item, chunk_size=chunk_rows):
            yield ids, X.astype(np.float64)

    def iter_encoded(self, *, start_item: int = 0, chunk_size: int | None = None):
        """The encoder's own chunks ``(ids, X float32, items_end)`` (what store shards hold); with an id
        column (``Inputs.ids``) a chunk's ids are its captions' ids (captions are never skipped once
        collected, so the chunk's rows are items ``start..items_end``)."""
        from whitenclip.encoders import embed_items

        o = self.options
        own = getattr(self.inputs, "ids", None)
        start = start_item
        for ids, X, items_end in embed_items(self.encoder, self.inputs, batch_size=o.batch_size,
                                             num_workers=o.num_workers, progress=o.progress, start_item=start_item,
                                             chunk_size=chunk_size, decode=o.decode):
            if own is not None:
                if items_end - start != len(ids):  # pragma: no cover - embed_items keeps every caption
                    raise InputError(f"{self.path}: {items_end - start} captions gave {len(ids)} rows")
                ids = own[start:items_end]
            start = items_end
            yield ids, X, items_end

    @property
    def items_hash(self) -> str:
        """sha256 of the item list: a rerun with the same inputs has the same hash (resume check)."""
        h = hashlib.sha256()
        for item in self.inputs.items:
            h.update(item.encode("utf-8", "surrogatepass") + b"\0")
        own = getattr(self.inputs, "ids", None)
        if own is not None:  # another id column is another store (without one: the hash of older stores)
            h.update(b"\1ids\0")
            for row_id in own:
                h.update(str(row_id).encode("utf-8", "surrogatepass") + b"\0")
        return h.hexdigest()


def _read_stdin_once() -> bytes:
    return sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()


def open_sources(paths, options: EncodeOptions | None = None, *, recorded: dict | None = None) -> list:
    """Resolve a command's INPUT list into sources (see module doc).

    ``recorded`` is the metadata of the whitener in use (encoder, modality, normalized): raw
    inputs are embedded with its encoder, and a modality or encoder that contradicts it is refused.
    """
    paths = [str(p) for p in paths]
    if not paths:
        raise InputError("no INPUT given (use - to read from stdin)")
    options = options or EncodeOptions()
    stdin = _read_stdin_once() if "-" in paths else None
    as_text = options.modality == "text"  # numeric-looking lines are captions then
    stdin_vectors = stdin is not None and not as_text and looks_like_vectors(first_line(stdin))
    holds = {p: stdin_vectors if p == "-" else holds_embeddings(p, as_text, options.column) for p in paths}
    kinds = {p: "embeddings" if holds[p] else "raw" for p in paths}
    if len(set(kinds.values())) > 1:
        emb = next(p for p, k in kinds.items() if k == "embeddings")
        raw = next(p for p, k in kinds.items() if k == "raw")
        raise InputError(f"inputs mix embeddings ({emb}) and raw images/captions ({raw}); pass them separately")
    if "embeddings" in kinds.values():
        if options.model:
            raise InputError("--model applies to raw images or captions; these inputs are embeddings already")
        tables = [p for p in paths if p != "-" and is_table_path(p)]
        if (options.column is not None or options.id_column is not None) and not tables:
            raise InputError(f"{paths[0]}: --column/--id-column name columns of a parquet/Arrow table (or a "
                             "captions CSV); these inputs hold embeddings without columns")
        sources = label_ids(_open_embedding(p, stdin, options.allow_partial,
                                            *((options.column, options.id_column) if p in tables else ()))
                            for p in paths)
        if isinstance(options.group_column, str):
            raise InputError(f"--group-column names a column of a captions CSV; {paths[0]} holds embeddings: "
                             "give their groups with --groups FILE (one id per row)")
        if options.group_column is False:
            for src in sources:
                src.groups = None
        if options.groups_file is not None:
            groups = read_groups_file(options.groups_file, sum(src.n_rows for src in sources))
            at = 0
            for src in sources:
                src.groups, at = groups[at:at + src.n_rows], at + src.n_rows
        for src in sources:  # a long read of a big file says how far it got (a line every ~15 s)
            src.progress = options.progress
        return sources
    return [_open_raw(paths, options, recorded or {}, stdin)]


def _open_embedding(path: str, stdin: bytes | None, allow_partial: bool = False, column: str | None = None,
                    id_column: str | None = None) -> EmbeddingFile:
    if path == "-":
        if not stdin or not stdin.strip():
            raise InputError("<stdin>: no vectors (input is empty)")
        return read_text_vectors(io.StringIO(stdin.decode("utf-8", "replace")), "<stdin>")
    return open_embeddings(path, allow_partial=allow_partial, column=column, id_column=id_column)


def _open_raw(paths: list[str], options: EncodeOptions, recorded: dict, stdin: bytes | None) -> EncodedSource:
    from whitenclip.encoders import check_activation, load_encoder

    inputs = collect_inputs(paths, modality=options.modality, column=options.column, strict=options.strict,
                            stdin=io.BytesIO(stdin) if stdin is not None else None,
                            group_column=options.group_column or None, id_column=options.id_column)
    if options.groups_file is not None:
        if inputs.modality != "text":
            raise InputError("--groups applies to captions and embeddings; images are embedded one row per file")
        inputs.groups = read_groups_file(options.groups_file, len(inputs.items))
    modality = inputs.modality
    label = ", ".join(paths)
    if recorded.get("modality") and recorded["modality"] != modality:
        raise InputError(f"{label}: holds {modality} inputs, but the whitener was fitted on "
                         f"{recorded['modality']} embeddings (pass --modality if detection is wrong)")
    model = _choose_model(options.model, recorded, modality, label)
    normalize = _choose_normalize(options.normalize, recorded, label)
    encoder = load_encoder(model, normalize=normalize, device=options.device, precision=options.precision)
    check_activation(encoder, recorded, f"{label}: the whitener")
    meta = {k: v for k, v in encoder.meta(modality).items() if k != "dim"}
    return EncodedSource(label, inputs, encoder, options, meta)


def _choose_model(model: str | None, recorded: dict, modality: str, label: str) -> str:
    from whitenclip.encoders import parse_spec

    wanted = recorded.get("encoder")
    if model and wanted and str(parse_spec(model)) != wanted:
        raise InputError(f"{label}: --model {model} differs from the whitener's encoder {wanted}; "
                         "scores are only meaningful with the encoder the whitener was fitted on")
    if model:
        return model
    if wanted:
        return wanted
    if recorded:  # a whitener without an encoder (fitted on embedding files)
        raise InputError(f"{label}: the whitener records no encoder (it was fitted on embedding files); "
                         "pass --model, or embed the inputs yourself")
    return DEFAULT_MODELS[modality]


def _choose_normalize(normalize: bool | None, recorded: dict, label: str) -> bool:
    was = recorded.get("normalized")
    if normalize is not None and was is not None and bool(normalize) != bool(was):
        raise InputError(f"{label}: the whitener was fitted on {'L2-normalised' if was else 'raw'} features; "
                         f"drop --{'no-' if was else ''}normalize")
    if normalize is not None:
        return bool(normalize)
    return bool(was) if was is not None else False


def skip_summary(sources) -> str:
    """One line on what raw sources skipped ("" when nothing was skipped or sources are files)."""
    parts = [s.inputs.skips.summary() for s in sources if isinstance(s, EncodedSource)]
    return "; ".join(p for p in parts if p)


def source_meta(sources) -> dict:
    """Encoder / modality / normalisation / activation / encoder fingerprint all sources agree on
    (``ENCODER_META_KEYS``; None where unknown)."""
    return agreed_encoder_meta((s.meta for s in sources), "inputs")


def read_all_rows(sources, *, drop_nonfinite: bool = False) -> np.ndarray:
    """Every row of the sources in memory, (n, d) float64 (for analyses that need all rows at once)."""
    parts = [X for _, X in iter_rows(sources, drop_nonfinite=drop_nonfinite)]
    if not parts:
        raise InputError(f"{', '.join(s.path for s in sources)}: no usable rows")
    return np.concatenate(parts)


def write_store(src: EncodedSource, directory, *, dtype: str = "float32", shard_items: int | None = None,
                command: str | None = None, log=None) -> int:
    """Embed one raw source into a store directory, resuming after committed shards.

    ``command`` (the command line that writes the store) is recorded so that an incomplete store
    can say how to finish it. Returns the number of rows the store holds.
    """
    from whitenclip.writers import StoreWriter

    meta = {**src.meta, "items_hash": src.items_hash, "n_items": len(src.inputs.items)}
    if command:
        meta["command"] = command
    writer = StoreWriter(directory, dim=src.dim, dtype=dtype, meta=meta)
    if writer.resume_item and log is not None:
        log(f"{directory}: resuming after item {writer.resume_item} of {len(src.inputs.items)} "
            f"({writer.n_rows} rows kept)")
    start, groups = writer.resume_item, src.groups
    for ids, X, items_end in src.iter_encoded(start_item=writer.resume_item, chunk_size=shard_items):
        shard_groups = groups[start:items_end] if groups is not None and items_end - start == len(ids) else None
        writer.write_shard(ids, X, items_end, groups=shard_groups)
        start = items_end
    return writer.n_rows


def write_embeddings_file(src: EncodedSource, path, *, dtype: str = "float32") -> int:
    """Embed one raw source into one ``.npy`` file, with its ids (and groups, encoder) in
    ``NAME.ids.json`` beside it (:func:`whitenclip.writers.write_npy`); returns the row count.
    Not resumable: a rerun embeds everything again and replaces both files."""
    from whitenclip.writers import write_npy

    groups = src.groups

    def chunks():
        start = 0
        for ids, X, items_end in src.iter_encoded():
            shard_groups = groups[start:items_end] if groups is not None and items_end - start == len(ids) else None
            start = items_end
            yield ids, X, shard_groups

    return write_npy(path, chunks(), dim=src.dim, dtype=dtype, max_rows=len(src.inputs.items), meta=dict(src.meta))


def embed_to_store(raw_sources, directory=None) -> list:
    """Embed raw sources into a store (``directory``, or a temporary one removed at exit) and
    return the store as an embeddings source: for commands that need the rows twice."""
    import atexit
    import shutil
    import tempfile

    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="whitenclip-embeddings-"))
        atexit.register(shutil.rmtree, directory, True)
        directory.rmdir()
    for src in raw_sources:
        write_store(src, directory, dtype="float32")
    return [open_embeddings(directory)]


# ---------------------------------------------------------------------------------------
# image-caption pairs (mi --pairs)
# ---------------------------------------------------------------------------------------
@dataclass
class PairedEmbeddings:
    """Row i of ``X`` (image) and row i of ``Y`` (caption) embed the same table row ``ids[i]``."""

    ids: list
    X: np.ndarray
    Y: np.ndarray
    skips: object
    meta: dict


def embed_pairs(path, options: EncodeOptions, *, image_col: str = "image", text_col: str = "caption",
                image_root=None) -> PairedEmbeddings:
    """Embed both sides of an image-caption table with one two-tower encoder (e.g. CLIP).

    Each distinct image is embedded once; rows whose image cannot be decoded are dropped from
    both sides together, so row i of X and Y always belong to the same table row.
    """
    from whitenclip.encoders import embed, load_encoder

    skips = PairSkipReport(strict=options.strict)
    rows = read_pairs_table(path, image_col=image_col, text_col=text_col, image_root=image_root, skips=skips)
    skips.rows_of_image = Counter(img for _, img, _ in rows)
    model = options.model or DEFAULT_MODELS["image"]
    encoder = load_encoder(model, normalize=bool(options.normalize), device=options.device, precision=options.precision)
    for modality in ("image", "text"):
        encoder.check_modality(modality)
    unique_images = list(dict.fromkeys(img for _, img, _ in rows))
    kw = {"batch_size": options.batch_size, "progress": options.progress}
    img_ids, img_X = embed(encoder, Inputs(unique_images, "image", skips), num_workers=options.num_workers,
                           decode=options.decode, **kw)
    by_image = {img: k for k, img in enumerate(img_ids)}
    kept = [r for r in rows if r[1] in by_image]
    if not kept:
        raise InputError(f"{path}: none of the table's images could be embedded ({skips.summary()})")
    _, Y = embed(encoder, Inputs([c for _, _, c in kept], "text", skips), **kw)
    X = img_X[[by_image[img] for _, img, _ in kept]]
    meta = {"encoder": encoder.spec, "normalized": encoder.normalize, "activation": encoder.activation,
            "encoder_fingerprint": encoder.fingerprint}
    return PairedEmbeddings([i for i, _, _ in kept], X.astype(np.float64), Y.astype(np.float64), skips, meta)
