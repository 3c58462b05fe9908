"""clip-retrieval embedding folders: ``img_emb/img_emb_N.npy`` (or ``text_emb/``) with row ids
from ``metadata/metadata_N.parquet`` (its ``key``, ``image_path``, ``url`` or ``caption`` column)
when pyarrow is installed (``pip install whitenclip[parquet]``), else the row index."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from whitenclip.errors import InputError
from whitenclip.readers.base import Piece, Shard
from whitenclip.readers.npy import NpyFormat

_CLIP_EMB = re.compile(r"^(img|text)_emb_(\d+)\.npy$")


_ID_COLUMNS = ("key", "image_path", "url", "caption")


def is_clip_retrieval(d: Path) -> bool:
    """True when folder ``d`` holds clip-retrieval embeddings (``img_emb/``, ``text_emb/``, or their files)."""
    return any((d / name).is_dir() for name in ("img_emb", "text_emb")) or any(_CLIP_EMB.match(p.name)
                                                                               for p in d.iterdir())


class ClipRetrievalFormat(NpyFormat):
    """One ``img_emb_N.npy`` shard; ids ``("parquet", PATH, COLUMN)`` from its metadata file."""

    name = "clip_retrieval"

    def folder(self, d: Path) -> list[Shard]:
        """The shards of a clip-retrieval folder, in the order of their numbers."""
        subdirs = [d / name for name in ("img_emb", "text_emb") if (d / name).is_dir()]
        if len(subdirs) > 1:
            raise InputError(f"{d}: holds both img_emb/ and text_emb/; name the one to read ({subdirs[0]})")
        if subdirs:
            return self._shards_of(subdirs[0], d / "metadata")
        return self._shards_of(d, d.parent / "metadata")

    def _shards_of(self, emb_dir: Path, meta_dir: Path) -> list[Shard]:
        found = sorted(((int(m.group(2)), m.group(1), p) for p in emb_dir.iterdir() if (m := _CLIP_EMB.match(p.name))))
        if not found:
            raise InputError(f"{emb_dir}: no img_emb_N.npy / text_emb_N.npy files")
        out = []
        for index, kind, p in found:
            ids = None
            parquet = meta_dir / f"metadata_{index}.parquet"
            if parquet.is_file():
                ids = _parquet_ids(parquet)
            meta = {"modality": "image" if kind == "img" else "text"}
            shard, = self.shards(p, ids=ids, meta=meta, sidecar=False)
            if ids is not None and _parquet_rows(parquet) != shard.n_rows:
                raise InputError(f"{parquet}: {_parquet_rows(parquet)} metadata rows for {shard.n_rows} embeddings "
                                 f"in {p}")
            out.append(shard)
        return out

    def ids(self, piece: Piece) -> list[str] | None:
        src = piece.shard.ids
        if src is None:
            return None
        import pyarrow.parquet as pq

        with _parquet_errors(src[1]):
            table = pq.read_table(src[1], columns=[src[2]])
            return [str(v) for v in table.column(0).slice(piece.start, piece.n_rows).to_pylist()]

    def groups(self, piece: Piece) -> list | None:
        return None


def _parquet_ids(path: Path):
    try:
        import pyarrow.parquet as pq
    except ImportError:  # ids are optional: fall back to row indices
        return None
    with _parquet_errors(path):
        names = pq.ParquetFile(path).schema_arrow.names
    col = next((c for c in _ID_COLUMNS if c in names), None)
    return ("parquet", str(path), col) if col else None


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    with _parquet_errors(path):
        return int(pq.ParquetFile(path).metadata.num_rows)


@contextlib.contextmanager
def _parquet_errors(path):
    """A corrupt or foreign metadata parquet (pyarrow's ArrowInvalid, OSError...) -> InputError."""
    try:
        yield
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: not a readable parquet file ({' '.join(str(exc).split())[:200]})") from None


FORMAT = ClipRetrievalFormat()
