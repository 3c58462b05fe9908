"""The embed command: raw images or captions into a store directory or one .npy file."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from whitenclip.cli.base import _handles_errors, _log
from whitenclip.cli.options import (
    BatchOpt,
    ColumnOpt,
    DebugOpt,
    Decode,
    DecodeOpt,
    DeviceOpt,
    GroupColumnOpt,
    GroupsOpt,
    IdColumnOpt,
    Modality,
    ModalityOpt,
    ModelOpt,
    NoGroupsOpt,
    NormalizeOpt,
    Precision,
    PrecisionOpt,
    QuietOpt,
    StrictOpt,
    WorkersOpt,
)
from whitenclip.cli.reading import _encode_options, _open_sources, _report_skips
from whitenclip.errors import InputError


class StoreDtype(str, Enum):
    float32 = "float32"
    float16 = "float16"


@_handles_errors
def embed(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Image directories/files, captions files (.txt, or CSV with --column), parquet/Arrow caption tables, or - for stdin."),
    output: str = typer.Option(..., "--output", "-o", help="Store directory to write (resumed when it exists), or one NAME.npy file (its ids in NAME.ids.json beside it; not resumable)."),
    dtype: StoreDtype = typer.Option(StoreDtype.float32, "--dtype", help="Stored precision of the shards (or of the .npy)."),
    shard_items: Optional[int] = typer.Option(None, "--shard-items", min=1, help="Input items per shard (exactly; default 4096 captions / 1024 images)."),
    group_column: Optional[str] = GroupColumnOpt, groups: Optional[Path] = GroupsOpt, no_groups: bool = NoGroupsOpt,
    model: Optional[str] = ModelOpt, modality: Optional[Modality] = ModalityOpt, normalize: Optional[bool] = NormalizeOpt,
    column: Optional[str] = ColumnOpt, id_column: Optional[str] = IdColumnOpt, strict: bool = StrictOpt, device: str = DeviceOpt,
    precision: Precision = PrecisionOpt, batch_size: Optional[int] = BatchOpt, num_workers: Optional[int] = WorkersOpt, decode: Decode = DecodeOpt,
    _quiet: bool = QuietOpt, _debug: bool = DebugOpt,
) -> None:
    """Embed images or captions into a store directory (shards written atomically; a killed run resumes) or one .npy."""
    import shlex

    from whitenclip.outputs import check_embed_output
    from whitenclip.sources import EncodedSource, write_embeddings_file, write_store

    as_file = check_embed_output(output, inputs=[*inputs, groups])
    if shard_items is not None and shard_items < 1:
        raise InputError(f"--shard-items must be a positive number of items, got {shard_items}")
    encoding = _encode_options(model, modality, normalize, column, strict, device, precision, batch_size, num_workers,
                               decode=decode.value, groups=(group_column, groups, no_groups), id_column=id_column)
    sources = _open_sources(inputs, encoding)
    if not all(isinstance(s, EncodedSource) for s in sources):
        raise InputError("embed reads raw images or captions; these inputs are embeddings already")
    src = sources[0]
    if as_file:
        n_rows = write_embeddings_file(src, output, dtype=dtype.value)
        _report_skips(sources)
        _log(f"embedded {n_rows} {src.meta['modality']} rows with {src.meta['encoder']} (dim {src.dim}) -> {output} "
             f"(ids in {as_file})")
        return
    rerun = ["whitenclip", "embed", *inputs, "-o", str(output), "--model", str(src.meta["encoder"]),
             *(["--normalize"] if src.meta.get("normalized") else []), *(["--column", column] if column else []),
             *(["--id-column", id_column] if id_column else []),
             *(["--group-column", group_column] if group_column else []), *(["--groups", str(groups)] if groups else []),
             *(["--no-groups"] if no_groups else []),
             *(["--modality", modality.value] if modality else [])]
    n_rows = write_store(src, output, dtype=dtype.value, shard_items=shard_items, command=shlex.join(rerun), log=_log)
    _report_skips(sources)
    _log(f"embedded {n_rows} {src.meta['modality']} rows with {src.meta['encoder']} (dim {src.dim}) -> {output}")
