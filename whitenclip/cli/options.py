"""Option declarations shared by several commands (typer reads their defaults), and the choices they take."""

from __future__ import annotations

from enum import Enum

import typer

from whitenclip.cli.base import _set_debug, _set_quiet

# -q/--quiet and --debug are accepted after the subcommand too (`whitenclip fit X -o W -q`)
QuietOpt = typer.Option(False, "--quiet", "-q", callback=_set_quiet, expose_value=False,
                        help="No progress or log lines on stderr.")
DebugOpt = typer.Option(False, "--debug", callback=_set_debug, expose_value=False, hidden=True)
AllowPartialOpt = typer.Option(False, "--allow-partial", help="Use a store left incomplete by a killed `embed` (default: refuse).")


class Method(str, Enum):
    pca = "pca"
    zca = "zca"
    cholesky = "cholesky"


class Modality(str, Enum):
    image = "image"
    text = "text"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class Decode(str, Enum):
    auto = "auto"
    cpu = "cpu"
    gpu = "gpu"


# Options for raw inputs, shared by every command that reads INPUTs (typer reads the defaults).
ModelOpt = typer.Option(None, "--model", "-m", envvar="WHITENCLIP_MODEL", show_envvar=True,
                        help="Encoder for raw images/captions: openclip:ARCH/TAG (images default to "
                             "openclip:ViT-B-32/openai; weights from the Hugging Face cache, else downloaded once; "
                             "HF_HUB_OFFLINE=1: cache only), openclip:hf-hub:ORG/REPO (an open_clip model on the hub), openclip:ARCH@PATH (local checkpoint; OpenAI weights need "
                             "ARCH-quickgelu, e.g. openclip:ViT-L-14-quickgelu@PATH), minilm (text, offline; raw mean-pooled "
                             "features), hf:NAME_OR_PATH (a transformers vision-language model with get_image_features/"
                             "get_text_features: CLIP, SigLIP, ...; hub name or save_pretrained folder), "
                             "st:NAME_OR_PATH (a sentence-transformers model: exactly its encode, with its own "
                             "pooling and its Normalize layer when it has one), or a plugin's KIND[:ARG].")
ModalityOpt = typer.Option(None, "--modality", help="image or text (default: detected from the inputs).")
NormalizeOpt = typer.Option(None, "--normalize/--no-normalize", help="L2-normalise features (default: raw, as W-CLIP; or as the whitener records).")
ColumnOpt = typer.Option(None, "--column", help="Caption column of a CSV input or parquet/Arrow table (a string column), or the embedding column (list<float>) of a table (default: a table's only list<float> column, else caption/text/sentence).")
IdColumnOpt = typer.Option(None, "--id-column", help="Row id column of a parquet/Arrow table of embeddings (default: 'id' when present, else the row index), or of a captions CSV/table (default: the caption itself); ids may repeat, rows stay distinct.")
GroupColumnOpt = typer.Option(None, "--group-column", help="Column of a captions CSV or parquet/Arrow table naming each caption's group (e.g. its image); default: an image/image_id/filename... column when there is one.")
GroupsOpt = typer.Option(None, "--groups", help="File of group ids, one line per input row (rows of one group: one image, clip or source).")
NoGroupsOpt = typer.Option(False, "--no-groups", help="Treat every row as independent (no image-column default, no recorded groups).")
StrictOpt = typer.Option(False, "--strict", help="Fail on the first bad image or caption instead of skipping it.")
DeviceOpt = typer.Option("auto", "--device", envvar="WHITENCLIP_DEVICE", show_envvar=True, help="auto, cpu, cuda or cuda:N.")
PrecisionOpt = typer.Option(Precision.auto, "--precision", help="Autocast on CUDA: auto (fp16), fp32, fp16, bf16.")
BatchOpt = typer.Option(None, "--batch-size", min=1, help="Items per forward pass (default 64 images / 128 captions).")
WorkersOpt = typer.Option(None, "--num-workers", min=0, max=64, help="Image decode worker processes, 0-64 (default: one per core, at most 8).")
DecodeOpt = typer.Option(Decode.auto, "--decode", help="Image decoding: cpu (PIL in the workers), gpu (JPEGs decoded, resized and normalised on the device; other files on the CPU), auto (gpu on CUDA, else cpu).")

# Engine options shared by fit, moments, entropy, score and gaussianity-report (logic: whitenclip/engine/).
EngineOpt = typer.Option("local", "--engine", help="local (this process) or dask (a LocalCluster, or --scheduler).")
DaskWorkersOpt = typer.Option(None, "--workers", min=1, max=256, help="Dask LocalCluster worker processes, 1-256 (default: cores, at most 8).")
SchedulerOpt = typer.Option(None, "--scheduler", help="Address of an existing Dask scheduler, e.g. tcp://host:8786.")
MomentsDirOpt = typer.Option(None, "--moments-dir", help="Keep piece moments here; a rerun skips pieces already there.")


class RowFormat(str, Enum):
    tsv = "tsv"
    csv = "csv"
    jsonl = "jsonl"
