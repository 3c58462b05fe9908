"""whitenclip command line: parse arguments, call the library, render. Nothing else.

Data goes to stdout, logs and progress to stderr. Exit codes: 0 ok, 1 runtime failure,
2 usage or bad input (one-line message naming the file and row; ``--debug`` for a traceback).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Iterator, List, Optional

import typer
import typer.core
from rich.console import Console

from whitenclip import config
from whitenclip.errors import InputError, WhitenclipError, is_out_of_memory

# click's UsageError, as the click typer runs on raises it (typer may vendor its own click)
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class _OneLineUsageError(_UsageError):
    """A usage error (bad option value, unknown option, missing argument) shown as one line."""

    def show(self, file=None) -> None:
        command = self.ctx.command_path if self.ctx is not None else "whitenclip"
        from whitenclip.render import visible  # a bad path's control characters / undecodable bytes as escapes

        typer.echo(visible(f"whitenclip: error: {' '.join(self.format_message().split())} (see {command} --help)"),
                   file=file or sys.stderr)


class _OneLineUsageGroup(typer.core.TyperGroup):
    """Click's usage errors (usage, hint, error: 4 lines) become one line on stderr, exit 2."""

    def make_context(self, *args, **kwargs):
        with _one_line_usage():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _one_line_usage():
            return super().invoke(ctx)


@contextlib.contextmanager
def _one_line_usage():
    try:
        yield
    except _UsageError as exc:
        if isinstance(exc, _OneLineUsageError) or type(exc).__name__ == "NoArgsIsHelpError":
            raise  # (`whitenclip` alone prints its help)
        raise _OneLineUsageError(exc.format_message(), exc.ctx) from None


app = typer.Typer(
    name="whitenclip",
    help="Whitening, likelihoods, Gaussianity diagnostics and information estimates for contrastive embeddings.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=_OneLineUsageGroup,
)

_console = Console(stderr=True, highlight=False)
_state = {"debug": bool(os.environ.get("WHITENCLIP_DEBUG")), "quiet": False, "skips": 0}

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


# ---------------------------------------------------------------------------------------
# shared plumbing
# ---------------------------------------------------------------------------------------
def _print_line(message: str) -> None:
    """One line on stderr, shown literally: file names, ids and captions in ``message`` are data, never
    rich markup or ``:emoji:`` codes; control characters and undecodable bytes are written as escapes
    (:func:`whitenclip.render.rich_text`)."""
    from whitenclip.render import rich_text

    _console.print(rich_text(message), soft_wrap=True)


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    """Print ``whitenclip: error: message`` on stderr and exit with ``code``."""
    _print_line(f"whitenclip: error: {message}")
    raise typer.Exit(code)


def _log(message: str) -> None:
    """A progress/log line on stderr (silenced by --quiet)."""
    if not _state["quiet"]:
        _print_line(message)


MAX_SKIP_WARNINGS = 20
"""Skip warnings printed one by one; past this, one summary line says how many more there were."""


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if category.__name__ == "InputSkipWarning":
        _state["skips"] += 1
        if _state["skips"] > MAX_SKIP_WARNINGS:
            return
    _print_line(f"whitenclip: warning: {message}")


def _flush_skip_warnings() -> None:
    hidden = _state["skips"] - MAX_SKIP_WARNINGS
    if hidden > 0:
        _print_line(f"whitenclip: warning: ... and {hidden} more skipped item(s) not shown ({_state['skips']} in all)")
    _state["skips"] = 0


def _handles_errors(func):
    """Run a command with whitenclip's error manners: one line on stderr and a meaningful exit code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            # PIL's DecompressionBombWarning names no file; inputs.load_image warns naming it
            warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit")
            warnings.showwarning = _show_warning
            try:
                return func(*args, **kwargs)
            except (typer.Exit, typer.Abort):
                raise
            except InputError as exc:
                _reraise_in_debug()
                _fail(str(exc), EXIT_USAGE)
            except WhitenclipError as exc:
                _reraise_in_debug()
                _fail(str(exc), EXIT_FAILURE)
            except BrokenPipeError:
                _silence_stdout()
                raise typer.Exit(EXIT_OK)
            except KeyboardInterrupt:
                _fail("interrupted", 130)
            except MemoryError:
                _reraise_in_debug()
                _fail(out_of_memory_hint(func), EXIT_FAILURE)
            except Exception as exc:  # an unexpected failure still gets one line, never a traceback
                _reraise_in_debug()
                if is_out_of_memory(exc):  # e.g. "libtorch_cpu.so: failed to map segment" under prlimit --as
                    _fail(out_of_memory_hint(func), EXIT_FAILURE)
                _fail(f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())} "
                      "(rerun with --debug for a traceback)", EXIT_FAILURE)
            finally:
                _flush_skip_warnings()

    return wrapper


def out_of_memory_hint(command) -> str:
    """The out-of-memory line: names --chunk-rows only to commands that have that option."""
    import inspect

    has_chunks = "chunk_rows" in inspect.signature(command).parameters
    return "out of memory (try " + ("smaller --chunk-rows or " if has_chunks else "") + "fewer or smaller inputs)"


def _reraise_in_debug() -> None:
    if _state["debug"]:
        raise


def _silence_stdout() -> None:
    with contextlib.suppress(Exception):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _given_options(free) -> list[str]:
    """Options of the running command typed on the command line (not defaults, not env), except ``free``."""
    import importlib

    # the click typer runs on (typer may vendor its own, as for _UsageError above)
    core = sys.modules[next(c for c in typer.Context.__mro__ if c.__module__.endswith(".core")).__module__]
    ctx = importlib.import_module(core.__name__.rsplit(".", 1)[0] + ".globals").get_current_context()
    return [p.opts[0] for p in ctx.command.params if p.name not in free and p.opts
            and ctx.get_parameter_source(p.name) is core.ParameterSource.COMMANDLINE]


def _print_version(value: bool) -> None:
    if value:
        from whitenclip import __version__

        typer.echo(f"whitenclip {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _global_options(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or log lines on stderr."),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print whitenclip's version and exit."),
) -> None:
    if debug:
        _enable_debug()
    _state["quiet"] = quiet


def _set_quiet(value: bool) -> bool:
    if value:
        _state["quiet"] = True
    return value


def _set_debug(value: bool) -> bool:
    if value:
        _enable_debug()
    return value


def _enable_debug() -> None:
    """--debug: tracebacks on errors, and the hub / open_clip log lines that are hidden otherwise."""
    import logging

    _state["debug"] = True
    os.environ["WHITENCLIP_DEBUG"] = "1"
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("whitenclip").setLevel(logging.DEBUG)


# -q/--quiet and --debug are accepted after the subcommand too (`whitenclip fit X -o W -q`)
QuietOpt = typer.Option(False, "--quiet", "-q", callback=_set_quiet, expose_value=False,
                        help="No progress or log lines on stderr.")
DebugOpt = typer.Option(False, "--debug", callback=_set_debug, expose_value=False, hidden=True)
AllowPartialOpt = typer.Option(False, "--allow-partial", help="Use a store left incomplete by a killed `embed` (default: refuse).")


def _render(result, fmt: str) -> None:
    """Data on stdout: ``result`` as a table, JSON or rows (see :mod:`whitenclip.render`)."""
    from whitenclip.render import render

    render(result, fmt)


# ---------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------
def _open_sources(inputs: List[str], encoding=None, *, recorded: Optional[dict] = None):
    """Resolve INPUTs into sources: embedding files / stores / stdin vectors, or raw images and
    captions embedded with ``encoding`` (an :class:`~whitenclip.sources.EncodeOptions`)."""
    from whitenclip.sources import EncodeOptions, open_sources

    encoding = encoding or EncodeOptions()
    encoding.progress = encoding.progress and not _state["quiet"]
    return open_sources(inputs, encoding, recorded=recorded)


def _encode_options(model, modality, normalize, column, strict, device, precision, batch_size, num_workers,
                    allow_partial: bool = False, decode: str = "auto", groups: tuple | None = None,
                    id_column: Optional[str] = None):
    """EncodeOptions of the shared options; ``groups`` = (--group-column, --groups, --no-groups) of the
    commands that read groups (fit, embed: an image column is then the default group column)."""
    from whitenclip.sources import EncodeOptions

    group_column, groups_file, no_groups = groups or (None, None, False)
    _check_group_options(group_column, groups_file, no_groups)
    return EncodeOptions(model=model, modality=modality.value if modality else None, normalize=normalize,
                         column=column, strict=strict, device=device, precision=precision.value,
                         batch_size=batch_size, num_workers=num_workers, allow_partial=allow_partial, decode=decode,
                         group_column=False if no_groups else (group_column or (True if groups else None)),
                         groups_file=None if groups_file is None else str(groups_file), id_column=id_column)


def _check_group_options(group_column, groups_file, no_groups: bool) -> None:
    """Refuse contradictory group options in one line: --no-groups with either of the others, and
    --group-column (ids from a column) with --groups FILE (ids from a file)."""
    if no_groups and (group_column is not None or groups_file is not None):
        raise InputError("--no-groups contradicts --group-column/--groups; give one of them")
    if group_column is not None and groups_file is not None:
        raise InputError(f"--group-column {group_column} and --groups {groups_file} both give the group ids (from a "
                         "column, from a file); give one of them")


def _report_skips(sources) -> None:
    from whitenclip.sources import skip_summary

    summary = skip_summary(sources)
    if summary:
        _log(f"inputs: {summary}")


def _whitener_and_rows(inputs, whitener: Optional[Path], encoding, *, drop_nonfinite: bool = False):
    """The optional whitener and every input row (raw inputs embedded with its encoder)."""
    from whitenclip.sources import read_all_rows

    wh = _load_whitener(whitener) if whitener is not None else None
    sources = _open_sources(inputs, encoding, recorded=_recorded(wh) if wh is not None else None)
    X = read_all_rows(sources, drop_nonfinite=drop_nonfinite)
    _report_skips(sources)
    return wh, X


def _report_skips_of(report) -> None:
    if report.n_skipped:
        _log(f"inputs: {report.summary()}")


def _load_whitener(path: Path):
    from whitenclip.whitening import Whitener

    return Whitener.load(path)


def _parse_shrinkage(value: Optional[str], allow_auto: bool = False):
    from whitenclip.whitening import parse_shrinkage

    parsed = parse_shrinkage(value, allow_auto=allow_auto)
    if isinstance(parsed, float) and not 0.0 <= parsed <= 1.0:  # NaN too: refused before any input is read
        raise InputError(f"--shrinkage must be none, ledoit-wolf, oas or a number in [0, 1]; got {value}")
    return parsed


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

# Engine options shared by fit, moments, entropy, score and gaussianity-report (logic: whitenclip/engine.py).
EngineOpt = typer.Option("local", "--engine", help="local (this process) or dask (a LocalCluster, or --scheduler).")
DaskWorkersOpt = typer.Option(None, "--workers", min=1, max=256, help="Dask LocalCluster worker processes, 1-256 (default: cores, at most 8).")
SchedulerOpt = typer.Option(None, "--scheduler", help="Address of an existing Dask scheduler, e.g. tcp://host:8786.")
MomentsDirOpt = typer.Option(None, "--moments-dir", help="Keep piece moments here; a rerun skips pieces already there.")


def _engine(engine: str, workers, scheduler, moments_dir, **kw):
    """EngineOptions of the --engine/--workers/--scheduler/--moments-dir options."""
    from whitenclip.engine import EngineOptions

    return EngineOptions(engine=engine, workers=workers, scheduler=scheduler, moments_dir=moments_dir,
                         debug=_state["debug"], log=_log, **kw)


class RowFormat(str, Enum):
    tsv = "tsv"
    csv = "csv"
    jsonl = "jsonl"


# ---------------------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------------------
@app.command()
@_handles_errors
def fit(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Embeddings (.npy/.npz/.safetensors, store dirs, - for stdin vectors) or raw images/captions."),
    output: str = typer.Option(..., "--output", "-o", help="Whitener artifact to write (.safetensors)."),
    method: Method = typer.Option(Method.pca, "--method", help="Form of W: pca (W-CLIP), zca or cholesky."),
    shrinkage: str = typer.Option("auto", "--shrinkage", help="auto (oas when n < 10 d rows, else none; recorded in the artifact), none (the exact sample covariance), ledoit-wolf, oas, or a float in [0, 1]."),
    floor: float = typer.Option(1e-10, "--floor", min=0.0, max=1.0, help="Drop eigenvalues below floor x the largest."),
    rank: Optional[int] = typer.Option(None, "--rank", min=1, max=2 ** 53, help="Keep at most this many directions."),
    drop_nonfinite: bool = typer.Option(False, "--drop-nonfinite", help="Skip rows holding NaN/inf instead of failing."),
    chunk_rows: int = typer.Option(config.CHUNK_ROWS, "--chunk-rows", min=1, help="Rows read per chunk (memory vs speed)."),
    fast_gram: bool = typer.Option(False, "--fast-gram", help="Chunk Gram products in float32: ~2x faster fit, eigenvalues below ~1e-5 x the largest lose accuracy."),
    save_embeddings: Optional[Path] = typer.Option(None, "--save-embeddings", help="Also keep the embeddings of raw inputs in this store directory."),
    calibration: bool = typer.Option(True, "--calibration/--no-calibration", help="Keep a seeded sample of reference rows and store their leave-one-out distances for the distribution-free pvalue_conformal (default: on)."),
    calibration_rows: int = typer.Option(config.CALIBRATION_ROWS, "--calibration-rows", min=2, max=1 << 20, help="Reference rows sampled for calibration (p-value resolution 1/(m+1); whole groups)."),
    group_column: Optional[str] = GroupColumnOpt, groups: Optional[Path] = GroupsOpt, no_groups: bool = NoGroupsOpt,
    allow_partial: bool = AllowPartialOpt,
    model: Optional[str] = ModelOpt, modality: Optional[Modality] = ModalityOpt, normalize: Optional[bool] = NormalizeOpt,
    column: Optional[str] = ColumnOpt, id_column: Optional[str] = IdColumnOpt, strict: bool = StrictOpt, device: str = DeviceOpt,
    precision: Precision = PrecisionOpt, batch_size: Optional[int] = BatchOpt, num_workers: Optional[int] = WorkersOpt, decode: Decode = DecodeOpt,
    _quiet: bool = QuietOpt, _debug: bool = DebugOpt,
    engine: str = EngineOpt, workers: Optional[int] = DaskWorkersOpt, scheduler: Optional[str] = SchedulerOpt,
    moments_dir: Optional[Path] = MomentsDirOpt,
) -> None:
    """Fit a whitening transform on reference embeddings, moments files or raw images/captions (streaming)."""
    from whitenclip.outputs import check_output_dir, check_output_file, check_output_tree
    from whitenclip.sources import EncodedSource, embed_to_store, source_meta
    from whitenclip.whitening import fit_whitener_streaming

    check_output_file(output, inputs=inputs, suffix=".safetensors")
    if save_embeddings is not None:
        check_output_dir(save_embeddings, inputs=inputs)
        check_output_tree(save_embeddings, inputs=[*inputs, groups], option="--save-embeddings")
    shrink = _parse_shrinkage(shrinkage, allow_auto=True)
    _check_group_options(group_column, groups, no_groups)
    eng = _engine(engine, workers, scheduler, moments_dir, chunk_rows=chunk_rows, allow_partial=allow_partial,
                  column=column, id_column=id_column, groups_file=None if groups is None else str(groups),
                  no_groups=no_groups)
    if eng.handles(inputs):  # moments files, shard directories/globs, --engine dask
        from whitenclip.engine import fit_whitener

        if group_column:
            raise InputError("--group-column names a column of a captions CSV; the sharded path reads embeddings: "
                             "give their groups with --groups FILE (one id per row), or record them with `embed`")

        wh, _ = fit_whitener(inputs, eng, method=method.value, shrinkage=shrink, floor=floor, rank=rank,
                             drop_nonfinite=drop_nonfinite, gram="float32" if fast_gram else "float64",
                             calibration=calibration, calibration_rows=calibration_rows)
        wh.save(output)
        _log(f"fitted {method.value} whitener on {wh.n_samples_} rows x {wh.n_features_} dims, rank {wh.rank_}"
             + (f", calibrated on {wh.n_cal_} rows in {wh.calibration_groups_} groups" if wh.calibration_groups_ else "")
             + f" -> {output}")
        _note_few_rows(wh)
        return
    encoding = _encode_options(model, modality, normalize, column, strict, device, precision, batch_size,
                               num_workers, allow_partial, decode=decode.value, groups=(group_column, groups, no_groups),
                               id_column=id_column)
    sources = _open_sources(inputs, encoding)
    raw = [s for s in sources if isinstance(s, EncodedSource)]
    if save_embeddings is not None and not raw:
        raise InputError("--save-embeddings keeps the embeddings of raw images/captions; these inputs are embeddings already")
    if raw and (save_embeddings is not None or shrink == "ledoit-wolf"):  # rows needed twice: embed once, to a store
        sources = embed_to_store(raw, save_embeddings)
    wh, stats = fit_whitener_streaming(
        sources, method=method.value, shrinkage=shrink, floor=floor, rank=rank,
        drop_nonfinite=drop_nonfinite, chunk_rows=chunk_rows, extra_metadata=source_meta(sources),
        gram="float32" if fast_gram else "float64", calibration=calibration, calibration_rows=calibration_rows,
    )
    wh.save(output)
    _report_skips(raw)
    _log(f"fitted {method.value} whitener on {wh.n_samples_} rows x {wh.n_features_} dims, rank {wh.rank_}"
         + (f" (dropped {stats.dropped_nonfinite} non-finite rows)" if stats.dropped_nonfinite else "")
         + (f", calibrated on {wh.n_cal_} rows in {wh.calibration_groups_} groups" if wh.calibration_groups_ else "")
         + f" -> {output}")
    _note_few_rows(wh)


def _note_few_rows(wh) -> None:
    """What ``--shrinkage auto`` chose, in one line; then one note when the fit had n < 5 d rows and no
    shrinkage (text: whitening.few_rows_note). A degenerate calibration was said by the fit's warning."""
    from whitenclip.whitening import few_rows_note

    if wh.shrinkage_rule_ and wh.shrinkage_choice_ is not None:
        _log(f"shrinkage {wh.shrinkage_rule_} (intensity {wh.shrinkage_:.3g}); --shrinkage none keeps the exact "
             "sample covariance")
    elif wh.shrinkage_rule_:
        _log(f"shrinkage {wh.shrinkage_rule_}")
    note = few_rows_note(wh.n_samples_, wh.n_features_, wh.shrinkage_choice_, wh.rank_)
    if note:
        _log(note)


# ---------------------------------------------------------------------------------------
# embed
# ---------------------------------------------------------------------------------------
class StoreDtype(str, Enum):
    float32 = "float32"
    float16 = "float16"


@app.command()
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


# ---------------------------------------------------------------------------------------
# score
# ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def _row_sink(output: Optional[Path]) -> Iterator:
    """stdout, or a file written atomically (renamed into place only when all rows are written)."""
    if output is None or str(output) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    from whitenclip.stores import atomic_write

    with atomic_write(output, "w", errors="surrogateescape") as fh:  # a file name's bytes, as on stdout
        yield fh


@contextlib.contextmanager
def _score_sink(output: Optional[str], columns, fmt: str) -> Iterator:
    """Yield ``add(table)`` writing score tables: one parquet file for ``-o NAME.parquet``, else ``fmt`` rows
    on stdout or a file, the header written with the first rows (a run failing before them writes nothing)."""
    from whitenclip.render import render_rows
    from whitenclip.render.tables import header_line
    from whitenclip.tables import is_parquet_output, parquet_score_writer

    if is_parquet_output(output):
        with parquet_score_writer(output, columns) as add:
            yield add
        return
    header = [header_line(columns, fmt)]
    with _row_sink(output) as fh:
        def add(table) -> None:
            fh.write((header.pop() if header else "") + render_rows(table, fmt, header=False))

        yield add
        if header:
            fh.write(header.pop())


@app.command()
@_handles_errors
def score(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Embeddings, raw images/captions (embedded with the whitener's encoder), or - for stdin."),
    whitener: Path = typer.Option(..., "--whitener", "-w", help="Whitener artifact from `whitenclip fit`."),
    fmt: RowFormat = typer.Option(RowFormat.tsv, "--format", "-f", help="Row format on stdout."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Write rows to this file (atomically) instead of stdout; a name ending in .parquet writes parquet (needs pyarrow); with the sharded path, DIR/ (trailing slash or an existing folder) writes one file per shard."),
    drop_nonfinite: bool = typer.Option(False, "--drop-nonfinite", help="Skip rows holding NaN/inf instead of failing."),
    chunk_rows: int = typer.Option(config.CHUNK_ROWS, "--chunk-rows", min=1, help="Rows scored per chunk."),
    fdr: Optional[float] = typer.Option(None, "--fdr", help="Add a qvalue column (Benjamini-Hochberg over all rows' pvalue_conformal) and log how many rows have q <= FDR (rows are written at the end)."),
    allow_partial: bool = AllowPartialOpt,
    model: Optional[str] = ModelOpt, modality: Optional[Modality] = ModalityOpt, normalize: Optional[bool] = NormalizeOpt,
    column: Optional[str] = ColumnOpt, id_column: Optional[str] = IdColumnOpt, strict: bool = StrictOpt, device: str = DeviceOpt,
    precision: Precision = PrecisionOpt, batch_size: Optional[int] = BatchOpt, num_workers: Optional[int] = WorkersOpt, decode: Decode = DecodeOpt,
    _quiet: bool = QuietOpt, _debug: bool = DebugOpt,
    engine: str = EngineOpt, workers: Optional[int] = DaskWorkersOpt, scheduler: Optional[str] = SchedulerOpt,
    moments_dir: Optional[Path] = MomentsDirOpt,
) -> None:
    """Score each row: id, loglik (W-CLIP), logpdf, sqnorm, pvalue (Hotelling, Gaussian), pvalue_conformal (any law)."""
    from whitenclip.likelihood import (
        QVALUE_COLUMN,
        CalibrationWarning,
        ScoreTable,
        conformal_unavailable,
        score_columns,
        with_qvalues,
    )
    from whitenclip.likelihood import score as score_rows
    from whitenclip.outputs import check_output_dir, check_output_file, wants_directory
    from whitenclip.render import render_rows
    from whitenclip.render.tables import header_line
    from whitenclip.stores import RowStats, iter_rows
    from whitenclip.tables import is_parquet_output

    if is_parquet_output(output) and "--format" in _given_options(()):
        raise InputError(f"{output}: a .parquet output is written as parquet; --format {fmt.value} names a text "
                         "format: drop --format, or give another file name")
    eng = _engine(engine, workers, scheduler, moments_dir, chunk_rows=chunk_rows, allow_partial=allow_partial,
                  column=column, id_column=id_column)
    sharded = eng.handles(inputs)
    if output is not None and str(output) != "-":
        if sharded and wants_directory(output):  # one output file per shard: each checked by write_scores
            check_output_dir(output, inputs=[*inputs, whitener])
        else:
            check_output_file(output, inputs=[*inputs, whitener])
    if fdr is not None and not 0.0 < fdr < 1.0:
        raise InputError(f"--fdr must be in (0, 1), got {fdr}")
    if fdr is not None and sharded:
        raise InputError("--fdr needs every row's p-value at once; the sharded path writes rows piece by piece")
    wh = _load_whitener(whitener)
    unavailable = conformal_unavailable(wh)
    if fdr is not None and unavailable:
        raise InputError(f"{whitener}: --fdr needs pvalue_conformal: "
                         + ("this whitener has no calibration distances" if wh.calibration_ is None else unavailable))
    if wh.calibration_ is None:
        _log(f"{whitener}: {unavailable}")
    elif unavailable:  # degenerate: said even with --quiet (never a silent column of 1.0)
        from whitenclip.whitening import DegenerateCalibrationWarning

        warnings.warn(f"{whitener}: {unavailable}", DegenerateCalibrationWarning, stacklevel=1)
    if sharded:  # rows in input order; -o NAME.parquet: one file; -o DIR (an existing directory): one file per shard
        from whitenclip.engine import iter_scores, write_scores

        if is_parquet_output(output):
            n_rows = 0
            with _score_sink(output, score_columns(wh), fmt.value) as add:
                for _, table in iter_scores(inputs, eng, wh, drop_nonfinite=drop_nonfinite):
                    add(table)
                    n_rows += table.n_rows
        else:
            n_rows = write_scores(inputs, eng, wh, output=output, header=header_line(score_columns(wh), fmt.value),
                                  suffix=fmt.value, format_rows=lambda table: render_rows(table, fmt.value, header=False),
                                  drop_nonfinite=drop_nonfinite, protected=[whitener])
        _log(f"scored {n_rows} rows")
        return
    encoding = _encode_options(model, modality, normalize, column, strict, device, precision, batch_size,
                               num_workers, allow_partial, decode=decode.value, id_column=id_column)
    sources = _open_sources(inputs, encoding, recorded=_recorded(wh))
    for src in sources:
        if src.dim != wh.n_features_:
            raise InputError(f"{src.path}: rows have dimension {src.dim}, whitener {whitener} expects {wh.n_features_}")
    stats = RowStats()
    columns = (*score_columns(wh), QVALUE_COLUMN) if fdr is not None else score_columns(wh)
    with _score_sink(output, columns, fmt.value) as add, warnings.catch_warnings():
        warnings.simplefilter("once", CalibrationWarning)
        held = []  # --fdr: q-values need every row's p-value
        for ids, X in iter_rows(sources, drop_nonfinite=drop_nonfinite, stats=stats, chunk_rows=chunk_rows):
            table = score_rows(wh, X, ids, name=inputs[0] if len(inputs) == 1 else "INPUT")
            if fdr is None:
                add(table)
            else:
                held.append(table)
        if fdr is not None:
            table = with_qvalues(ScoreTable.concat(held, ids=[i for t in held for i in t.row_ids()], calibrated=True))
            add(table)
            _log(f"{int((table.qvalue <= fdr).sum())} of {table.n_rows} rows have qvalue <= {fdr:g} "
                 "(Benjamini-Hochberg on pvalue_conformal)")
    _report_skips(sources)
    _log(f"scored {stats.kept} rows" + (f", skipped {stats.dropped_nonfinite} non-finite" if stats.dropped_nonfinite else ""))


def _recorded(wh) -> dict:
    """What a whitener records about its inputs' encoder (``ENCODER_META_KEYS``; None if unknown)."""
    from whitenclip.encoders.base import ENCODER_META_KEYS

    return {k: wh.metadata_.get(k) for k in ENCODER_META_KEYS}


# ---------------------------------------------------------------------------------------
# info
# ---------------------------------------------------------------------------------------
@app.command()
@_handles_errors
def info(
    whitener: Path = typer.Argument(..., metavar="ARTIFACT", help="Whitener artifact (.safetensors), moments file, store directory or embeddings file (.npy with its .ids.json, .npz, .safetensors, .pt, table)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    _quiet: bool = QuietOpt, _debug: bool = DebugOpt,
) -> None:
    """Describe an artifact: a whitener (metadata, spectrum, condition number, calibration), a moments file,
    or embeddings (a store: rows, dim, shards, encoder, ids and groups)."""
    from whitenclip.stores import artifact_kind

    kind = artifact_kind(whitener)
    if kind == "moments":
        from whitenclip.moments import summarize_moments

        _render(summarize_moments(whitener), "json" if as_json else "table")
        return
    if kind == "embeddings":
        from whitenclip.stores import describe_embeddings

        _render(describe_embeddings(whitener), "json" if as_json else "table")
        return
    from whitenclip.whitening import DegenerateCalibrationWarning, summarize

    wh = _load_whitener(whitener)
    if wh.calibration_degenerate_:  # stdout has it in calibration.warning; stderr says it in one line
        warnings.warn(f"{whitener}: {wh.calibration_degenerate_}; `score` leaves pvalue_conformal out",
                      DegenerateCalibrationWarning, stacklevel=1)
    _render(summarize(wh, whitener), "json" if as_json else "table")


# ---------------------------------------------------------------------------------------
# import-wclip
# ---------------------------------------------------------------------------------------
@app.command("import-wclip")
@_handles_errors
def import_wclip_cmd(
    mean: Path = typer.Option(..., "--mean", help="The paper's mean_*.pt (loaded with weights_only=True)."),
    matrix: Path = typer.Option(..., "--matrix", help="The paper's w_mat_*.pt whitening matrix W."),
    output: str = typer.Option(..., "--output", "-o", help="Whitener artifact to write (.safetensors)."),
    n_samples: Optional[int] = typer.Option(None, "--n-samples", min=2, help="Rows W was fitted on (enables the calibrated p-value)."),
    modality: Optional[str] = typer.Option(None, "--modality", help="image or text (recorded in the artifact)."),
    _quiet: bool = QuietOpt, _debug: bool = DebugOpt,
) -> None:
    """Convert the W-CLIP paper's released mean and whitening matrix into a whitener artifact."""
    from whitenclip.outputs import check_output_file
    from whitenclip.whitening import import_wclip

    check_output_file(output, inputs=[mean, matrix], suffix=".safetensors")
    wh = import_wclip(mean, matrix, n_samples=n_samples, modality=modality)
    wh.save(output)
    c = wh.metadata_["conditioning"]
    _log(f"imported W ({wh.n_features_}x{wh.n_features_}): covariance eigenvalues {c['lambda_min']:.3g}..{c['lambda_max']:.3g} "
         f"({c['decades']:.1f} decades) -> {output}")


# ---------------------------------------------------------------------------------------
# gaussianity-report
# ---------------------------------------------------------------------------------------
@app.command("gaussianity-report")
@_handles_errors
def gaussianity_report_cmd(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Embeddings (.npy/.npz/.safetensors, store dirs, - for stdin vectors) or raw images/captions."),
    whitener: Optional[Path] = typer.Option(None, "--whitener", "-w", help="Whitener artifact (default: fit one on the inputs themselves)."),
    out: Optional[Path] = typer.Option(None, "--output", "-o", help="Write report.json, report.html and figures/ into this directory."),
    out_alias: Optional[Path] = typer.Option(None, "--out", hidden=True),
    as_json: bool = typer.Option(False, "--json", help="Print the whole report as one JSON object on stdout."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of every random choice (subsets, directions, Gaussian references)."),
    trials: int = typer.Option(10, "--trials", min=1, help="Random row subsets for the per-coordinate tests."),
    subset: int = typer.Option(500, "--subset", min=2, help="Rows per subset."),
    projections: int = typer.Option(1000, "--projections", min=1, help="Random unit directions of the centred data."),
    drop_nonfinite: bool = typer.Option(False, "--drop-nonfinite", help="Skip rows holding NaN/inf instead of failing."),
    allow_partial: bool = AllowPartialOpt,
    model: Optional[str] = ModelOpt, modality: Optional[Modality] = ModalityOpt, normalize: Optional[bool] = NormalizeOpt,
    column: Optional[str] = ColumnOpt, id_column: Optional[str] = IdColumnOpt, strict: bool = StrictOpt, device: str = DeviceOpt,
    precision: Precision = PrecisionOpt, batch_size: Optional[int] = BatchOpt, num_workers: Optional[int] = WorkersOpt, decode: Decode = DecodeOpt,
    _quiet: bool = QuietOpt, _debug: bool = DebugOpt,
    engine: str = EngineOpt, workers: Optional[int] = DaskWorkersOpt, scheduler: Optional[str] = SchedulerOpt,
    moments_dir: Optional[Path] = MomentsDirOpt,
) -> None:
    """How close the embeddings are to a Gaussian: per-coordinate AD/DP tests, norms, projections, Mardia, verdict."""
    from whitenclip.diagnostics import gaussianity_report
    from whitenclip.outputs import check_output_dir
    from whitenclip.render import write_html

    out = out if out is not None else out_alias  # --out: the option's name before 0.2
    if out is not None:
        from whitenclip.outputs import check_output_files

        check_output_dir(out, inputs=[*inputs, whitener])
        check_output_files([out / "report.json", out / "report.html"], inputs=[*inputs, whitener])
    eng = _engine(engine, workers, scheduler, moments_dir, allow_partial=allow_partial, column=column,
                  id_column=id_column)
    if eng.handles(inputs):  # rows read piece by piece (shards, --engine dask): the same X, the same report
        from whitenclip.engine import gather_rows

        wh = _load_whitener(whitener) if whitener else None
        X = gather_rows(inputs, eng, drop_nonfinite=drop_nonfinite)
    else:
        encoding = _encode_options(model, modality, normalize, column, strict, device, precision, batch_size,
                                   num_workers, allow_partial, decode=decode.value, id_column=id_column)
        wh, X = _whitener_and_rows(inputs, whitener, encoding, drop_nonfinite=drop_nonfinite)
    if wh is None:
        _log(f"no --whitener: fitting a pca whitener on the {X.shape[0]} input rows themselves")
    report = gaussianity_report(X, wh, trials=trials, subset=subset, projections=projections, seed=seed)
    if report.whitener.held_out is not None:
        _log(f"n={report.n} <= rank+1={report.rank + 1}: whitened figures from a held-out "
             f"{report.whitener.held_out['shrinkage_rule']} whitening (2 folds); "
             f"{len(report.verdict.untested)} part(s) not testable, listed in the report")
    if out is not None:
        written = write_html(report, out)
        _log(f"wrote {written['html']} and {written['json']}")
    _render(report, "json" if as_json else "table")


# ---------------------------------------------------------------------------------------
# moments / merge-moments (sharded and multi-machine fits; logic in whitenclip/engine.py)
# ---------------------------------------------------------------------------------------
@app.command()
@_handles_errors
def moments(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Embeddings: .npy/.safetensors, shard dirs, quoted globs, stores."),
    output: str = typer.Option(..., "--output", "-o", help="Moments file to write (.moments.safetensors)."),
    drop_nonfinite: bool = typer.Option(False, "--drop-nonfinite", help="Skip rows holding NaN/inf instead of failing."),
    fast_gram: bool = typer.Option(False, "--fast-gram", help="Chunk Gram products in float32."),
    piece_rows: int = typer.Option(config.PIECE_ROWS, "--piece-rows", min=1, help="Rows per piece (one task)."),
    chunk_rows: int = typer.Option(config.CHUNK_ROWS, "--chunk-rows", min=1, help="Rows read per chunk inside a piece."),
    calibration_rows: int = typer.Option(config.CALIBRATION_ROWS, "--calibration-rows", min=0, max=1 << 20, help="Size of the mergeable row sample kept for the conformal calibration of `fit` (0: none)."),
    engine: str = EngineOpt, workers: Optional[int] = DaskWorkersOpt, scheduler: Optional[str] = SchedulerOpt,
    moments_dir: Optional[Path] = MomentsDirOpt, allow_partial: bool = AllowPartialOpt,
    column: Optional[str] = ColumnOpt, id_column: Optional[str] = IdColumnOpt,
    groups: Optional[Path] = GroupsOpt, no_groups: bool = NoGroupsOpt,
    _quiet: bool = QuietOpt, _debug: bool = DebugOpt,
) -> None:
    """Count, mean, centred scatter, power sums and a calibration sample of embeddings, with metadata and input hash."""
    from whitenclip.engine import compute_moments
    from whitenclip.outputs import check_output_file

    check_output_file(output, inputs=inputs, suffix=".safetensors")
    eng = _engine(engine, workers, scheduler, moments_dir, piece_rows=piece_rows, chunk_rows=chunk_rows,
                  allow_partial=allow_partial, column=column, id_column=id_column,
                  groups_file=None if groups is None else str(groups), no_groups=no_groups)
    part = compute_moments(inputs, eng, drop_nonfinite=drop_nonfinite, gram="float32" if fast_gram else "float64",
                           calibration_rows=calibration_rows)
    part.save(output)
    _log(f"moments of {part.n} rows x {part.n_features} dims ({part.stats.get('pieces', 0)} piece(s)"
         + (f", dropped {part.stats['dropped_nonfinite']} non-finite" if part.stats.get("dropped_nonfinite") else "")
         + f") -> {output}")


@app.command("merge-moments")
@_handles_errors
def merge_moments_cmd(
    parts: List[Path] = typer.Argument(..., metavar="PART...", help="Moments files from `whitenclip moments`."),
    output: str = typer.Option(..., "--output", "-o", help="Merged moments file to write."),
    _quiet: bool = QuietOpt, _debug: bool = DebugOpt,
) -> None:
    """Exact merge of moments files (refuses other dimension/encoder/modality/normalisation and parts given twice)."""
    from whitenclip.engine import merge_moment_files
    from whitenclip.outputs import check_output_file

    check_output_file(output, inputs=parts, suffix=".safetensors")
    part = merge_moment_files(parts)
    part.save(output)
    _log(f"merged {len(parts)} part(s): {part.n} rows x {part.n_features} dims -> {output}")


# --- diagnostics commands go here ---

# --- information commands go here ---
# ---------------------------------------------------------------------------------------
# entropy / mi
# ---------------------------------------------------------------------------------------
class Base(str, Enum):
    e = "e"
    two = "2"


def _ci_options(bootstrap: Optional[int], seed: int) -> dict:
    """--bootstrap B replaces the default group-jackknife interval by B bootstrap resamples."""
    if bootstrap is not None and bootstrap < 2:
        raise InputError(f"--bootstrap needs at least 2 resamples for an interval, got {bootstrap}; "
                         "200 or more are sensible (1000+ for a 99% interval)")
    return {"ci": "jackknife" if bootstrap is None else "bootstrap", "n_boot": bootstrap or 200, "random_state": seed}


@app.command()
@_handles_errors
def entropy(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Embeddings (.npy/.npz/.safetensors, store dirs, - for stdin vectors) or raw images/captions."),
    whitener: Optional[Path] = typer.Option(None, "--whitener", "-w", help="Measure in this whitener's kept subspace (entropy stays in input units)."),
    base: Base = typer.Option(Base.e, "--base", help="Units: e (nats) or 2 (bits)."),
    bootstrap: Optional[int] = typer.Option(None, "--bootstrap", help="CI from B bootstrap resamples (default: group jackknife; the bootstrap needs rank << n)."),
    knn_dims: int = typer.Option(16, "--knn-dims", min=0, help="Leading principal components for the k-NN cross-check, fitted on one half of the rows and taken on the other (its figures are over these components only; skipped with the reason below 10 rows per component; 0: off)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed for row groups, resamples and subsamples."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    allow_partial: bool = AllowPartialOpt,
    model: Optional[str] = ModelOpt, modality: Optional[Modality] = ModalityOpt, normalize: Optional[bool] = NormalizeOpt,
    column: Optional[str] = ColumnOpt, id_column: Optional[str] = IdColumnOpt, strict: bool = StrictOpt, device: str = DeviceOpt,
    precision: Precision = PrecisionOpt, batch_size: Optional[int] = BatchOpt, num_workers: Optional[int] = WorkersOpt, decode: Decode = DecodeOpt,
    _quiet: bool = QuietOpt, _debug: bool = DebugOpt,
    engine: str = EngineOpt, workers: Optional[int] = DaskWorkersOpt, scheduler: Optional[str] = SchedulerOpt,
    moments_dir: Optional[Path] = MomentsDirOpt,
) -> None:
    """Differential entropy of the Gaussian fitted to embeddings: bias-corrected, with CI and a k-NN check."""
    from whitenclip.information import GaussianEntropy

    eng = _engine(engine, workers, scheduler, moments_dir, allow_partial=allow_partial, column=column,
                  id_column=id_column)
    if eng.handles(inputs):  # moments files, shards, --engine dask: Gaussian entropy from moments alone
        from whitenclip.engine import entropy_summary

        result = entropy_summary(inputs, eng, base=base.value, whitener=_load_whitener(whitener) if whitener else None)
    else:
        encoding = _encode_options(model, modality, normalize, column, strict, device, precision, batch_size,
                                   num_workers, allow_partial, decode=decode.value, id_column=id_column)
        wh, X = _whitener_and_rows(inputs, whitener, encoding)
        est = GaussianEntropy(base=base.value, knn_dims=knn_dims, whitener=wh, **_ci_options(bootstrap, seed))
        result = est.fit(X).result()
    _render(result, "json" if as_json else "table")


class PairBy(str, Enum):
    id = "id"
    row = "row"


def _side_error(exc: InputError, option: str) -> InputError:
    """A reader's refusal naming --column, renamed to the side's own option (--x-column, --y-column)."""
    return InputError(str(exc).replace("--column/", f"{option}/").replace("--column", option))


def _mi_sides(x_side, y_side, id_column, model, encoding: dict) -> list:
    """``[(ids, rows, ids kind)]`` of mi's X and Y (each ``(path, column)``): embeddings read as they are,
    raw images/captions embedded with ``model`` (default: the modality's, minilm for captions)."""
    import numpy as np

    from whitenclip.information import ids_kind
    from whitenclip.sources import holds_embeddings
    from whitenclip.stores import iter_rows

    sides = [(path, column, option) for (path, column), option in ((x_side, "--x-column"), (y_side, "--y-column"))]
    raw = []
    for path, column, option in sides:
        try:
            raw.append(path == "-" or not holds_embeddings(path, column=column))
        except InputError as exc:
            raise _side_error(exc, option) from None
    if model and not any(raw):
        raise InputError("--model applies to raw images or captions; X and Y are embeddings already")
    out = []
    for (path, column, option), is_raw in zip(sides, raw):
        options = _encode_options(model if is_raw else None, None, column=column,
                                  id_column=None if is_raw and not all(raw) else id_column, **encoding)
        try:
            sources = _open_sources([path], options)
            ids, parts = [], []
            for chunk_ids, rows in iter_rows(sources):
                ids.extend(chunk_ids)
                parts.append(rows)
        except InputError as exc:
            raise _side_error(exc, option) from None
        if not parts:
            raise InputError(f"{path}: no usable rows")
        _report_skips(sources)
        out.append((ids, np.concatenate(parts), ids_kind(sources[0])))
    return out


@app.command()
@_handles_errors
def mi(
    x: Optional[str] = typer.Argument(None, metavar="[X]", help="One side of each pair, e.g. images: embeddings (.npy/.npz/.safetensors, store dir, table) or raw images/captions (embedded with --model; captions default to minilm)."),
    y: Optional[str] = typer.Argument(None, metavar="[Y]", help="The other side (X again with --x-column/--y-column: two columns of one table); paired with X by id or by row (see above, --pair-by)."),
    x_column: Optional[str] = typer.Option(None, "--x-column", help="Embedding column (list<float>) of X when it is a parquet/Arrow table (default: its only one), or its caption column when X is a captions CSV."),
    y_column: Optional[str] = typer.Option(None, "--y-column", help="Embedding column of Y when it is a table (e.g. text_emb beside --x-column image_emb), or its caption column."),
    id_column: Optional[str] = IdColumnOpt,
    pair_by: Optional[PairBy] = typer.Option(None, "--pair-by", help="Pair rows by id (refused when a side has no ids; a caption store's ids are its captions) or by row (row i with row i); default: by id when both sides carry real ids, else by row."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="CSV of image-caption pairs to embed with --model (instead of X Y)."),
    image_col: str = typer.Option("image", "--image-col", help="Image column of --pairs."),
    text_col: str = typer.Option("caption", "--text-col", help="Caption column of --pairs."),
    image_root: Optional[Path] = typer.Option(None, "--image-root", help="Folder that --pairs image paths are relative to (default: the CSV's folder)."),
    shrinkage: Optional[str] = typer.Option(None, "--shrinkage", help="none, ledoit-wolf, oas, or a float in [0, 1] (no bias correction then)."),
    base: Base = typer.Option(Base.e, "--base", help="Units: e (nats) or 2 (bits)."),
    bootstrap: Optional[int] = typer.Option(None, "--bootstrap", help="CI from B bootstrap resamples (default: group jackknife; the bootstrap needs rank << n)."),
    ksg_dims: int = typer.Option(2, "--ksg-dims", min=0, help="Top canonical pairs for the KSG cross-check, run on held-out canonical variates with a permutation null (0: off)."),
    pointwise: bool = typer.Option(False, "--pointwise", help="Write TSV id<TAB>pmi (pointwise MI of each pair) on stdout: held-out values when the cross-fitted estimate is the headline."),
    groups: Optional[Path] = typer.Option(None, "--groups", help="File of group ids, one line per pair: pairs of one group (one image, clip or source) share a cross-fitting fold."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed for row groups, resamples and subsamples."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    allow_partial: bool = AllowPartialOpt,
    model: Optional[str] = ModelOpt, normalize: Optional[bool] = NormalizeOpt, strict: bool = StrictOpt,
    device: str = DeviceOpt, precision: Precision = PrecisionOpt, batch_size: Optional[int] = BatchOpt,
    num_workers: Optional[int] = WorkersOpt, decode: Decode = DecodeOpt,
    _quiet: bool = QuietOpt, _debug: bool = DebugOpt,
) -> None:
    """Mutual information between paired embeddings (or raw images/captions), from canonical correlations (Gaussian), with CI.

    Pairing: by id when both X and Y carry real ids (id columns, integer ones included; .npz/.safetensors
    ids; image paths); by row (row i with row i) when either side has no ids or its ids are its own
    captions (caption stores, captions files); --pair-by id|row chooses explicitly.
    """
    from whitenclip.information import GaussianMI, pair_rows
    from whitenclip.sources import embed_pairs

    if pointwise and as_json:
        raise InputError("--pointwise and --json both write stdout; choose one")
    shrink, ci_options = _parse_shrinkage(shrinkage), _ci_options(bootstrap, seed)  # bad values: before any work
    if pairs is not None:
        if x is not None or y is not None:
            raise InputError("give either X Y embeddings or --pairs TABLE, not both")
        if x_column or y_column or id_column or pair_by is not None:
            raise InputError("--x-column/--y-column/--id-column/--pair-by apply to X Y inputs; --pairs "
                             "takes --image-col and --text-col (each of its rows is a pair)")
        encoding = _encode_options(model, None, normalize, None, strict, device, precision, batch_size, num_workers, decode=decode.value)
        encoding.progress = not _state["quiet"]
        paired = embed_pairs(pairs, encoding, image_col=image_col, text_col=text_col, image_root=image_root)
        ids, X, Y = paired.ids, paired.X, paired.Y
        _report_skips_of(paired.skips)
    elif x is None or y is None:
        raise InputError("mi needs two inputs X Y (embeddings, or raw images/captions embedded with --model), "
                         "or --pairs TABLE")
    else:
        encoding = dict(normalize=normalize, strict=strict, device=device, precision=precision, batch_size=batch_size,
                        num_workers=num_workers, allow_partial=allow_partial, decode=decode.value)
        (ids, X, kind_x), (ids_y, Y, kind_y) = _mi_sides((x, x_column), (y, y_column), id_column, model, encoding)
        ids, X, Y, how = pair_rows(ids, X, ids_y, Y, x, y, kinds=(kind_x, kind_y),
                                   pair_by=None if pair_by is None else pair_by.value)
    if X.shape[0] != Y.shape[0]:
        raise InputError(f"{x} has {X.shape[0]} rows but {y} has {Y.shape[0]}; mi needs paired rows (row i with row i)")
    if groups is not None:
        from whitenclip.sources import read_groups_file

        groups = read_groups_file(groups, X.shape[0])
    if pairs is None and how == "id":  # after the last refusal: an error stays the only line on stderr
        _log(f"mi: {x} and {y} list the same ids in another order; rows paired by id")
    elif pairs is None and pair_by is None and "captions" in (kind_x, kind_y) and "none" not in (kind_x, kind_y):
        _log(f"mi: {x if kind_x == 'captions' else y}'s ids are its captions: rows paired by position, row i with "
             "row i (--pair-by id pairs them by id)")
    names = (x, y) if pairs is None else (f"{pairs} (images)", f"{pairs} (captions)")
    with warnings.catch_warnings():
        if pointwise:  # its refusal of a deterministic relation is then the one line
            warnings.filterwarnings("ignore", message="mi: deterministic relation")
        est = GaussianMI(base=base.value, shrinkage=shrink, ksg_dims=ksg_dims, **ci_options).fit(X, Y, groups=groups,
                                                                                               names=names)
    result = est.result()
    if pointwise:
        from whitenclip.render.information import pointwise_summary

        _render(est.pointwise_result(X, Y, ids), "tsv")
        _log(pointwise_summary(result))
        return
    _render(result, "json" if as_json else "table")


@app.command()
@_handles_errors
def simulate(
    data: str = typer.Option("gmm", "--data",
                             help="gmm, laplace, binary (generated latents) or digits (scikit-learn 8x8 images)."),
    latent_dim: int = typer.Option(32, "--latent-dim", help="Dimension k of the generated latent z."),
    dim: int = typer.Option(64, "--dim", help="Embedding dimension of the encoders."),
    losses: str = typer.Option("infonce,aninfonce,icon-tdist,icon-label,supervised,untrained", "--losses",
                               help="Comma-separated: infonce, aninfonce, icon-tdist, icon-label, supervised, "
                                    "untrained (aninfonce-sphere: opt-in)."),
    steps: Optional[int] = typer.Option(None, "--steps",
                                        help="Training steps per run, fresh rows every step (default 500)."),
    encoder: str = typer.Option("auto", "--encoder", help="mlp, linear (f(x) = Wx) or cnn (digits); "
                                                          "auto: cnn for digits, mlp otherwise."),
    mixing: str = typer.Option("mlp", "--mixing", help="Synthetic inputs: mlp (x = g(z), random invertible MLP) "
                                                       "or none (x = z)."),
    sparsity: float = typer.Option(0.1, "--sparsity", help="Probability of a 1 in --data binary."),
    train_size: Optional[int] = typer.Option(None, "--train-size",
                                             help="Rows of the fixed training set of --epochs (default 10000; "
                                                  "digits: its 1198 training images)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Train EPOCHS passes over a fixed training set "
                                                                "(instead of --steps)."),
    eval_epochs: Optional[str] = typer.Option(None, "--eval-epochs",
                                              help="Comma-separated epochs to evaluate at, e.g. 0,50,100 "
                                                   "(default: --evals evenly spaced)."),
    preset: Optional[str] = typer.Option(None, "--preset",
                                         help="iclr2026: the paper's synthetic table (and the digits stand-in for "
                                              "CIFAR-10) beside ours; fixes every setting but --seeds."),
    batch_size: int = typer.Option(256, "--batch-size", help="Pairs per training step."),
    tau: float = typer.Option(0.1, "--tau", help="Temperature of InfoNCE and of I-Con's Gaussian kernel."),
    seeds: int = typer.Option(3, "--seeds", help="Seeds 0..N-1 (a fresh task and encoder init per seed)."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate."),
    evals: int = typer.Option(10, "--evals", help="Metric evaluations after step 0 (evenly spaced)."),
    n_eval: int = typer.Option(5000, "--n-eval", help="Held-out rows the metrics are computed on (synthetic data)."),
    labels: str = typer.Option("latent", "--labels",
                               help="latent (component / argmax of z) or random (unlearnable)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    threads: int = typer.Option(1, "--threads", min=1,
                                help="CPU threads for torch and BLAS (1 is fastest for these small models)."),
    save_embeddings: Optional[Path] = typer.Option(None, "--save-embeddings",
                                                   help="Write DIR/<loss>/seed<S>/ stores of the final held-out "
                                                        "embeddings."),
    out: Optional[Path] = typer.Option(None, "--output", "-o",
                                       help="Write simulate.html (curves) and simulate.json into this directory."),
    out_alias: Optional[Path] = typer.Option(None, "--out", hidden=True),
    as_json: bool = typer.Option(False, "--json", help="Print the whole result as one JSON object on stdout."),
    _quiet: bool = QuietOpt, _debug: bool = DebugOpt,
) -> None:
    """Train small encoders with InfoNCE, AnInfoNCE, I-Con and cross-entropy on generated data.

    Reports the Gaussianity metrics of their embeddings along training (the paper's table).
    """
    from whitenclip.outputs import check_output_dir, check_output_tree
    from whitenclip.render import write_html
    from whitenclip.simulate import make_config
    from whitenclip.simulate import simulate as run_simulation

    out = out if out is not None else out_alias
    progress = not _state["quiet"]  # a bar on a terminal, plain lines at a steady cadence otherwise
    if preset is not None:
        from whitenclip.simulate import preset_configs, run_preset

        if out is not None or save_embeddings is not None:
            raise InputError("--preset prints its table (or --json); -o and --save-embeddings are not supported")
        fixed = _given_options(("preset", "seeds", "device", "threads", "as_json", "_quiet", "_debug"))
        if fixed:
            raise InputError(f"--preset {preset} fixes every setting but --seeds, --device and --threads; "
                             f"drop {', '.join(fixed)}")
        configs = preset_configs(preset, seeds=seeds, device=device)
        _log(f"simulate --preset {preset}: {len(configs)} data sets x {seeds} seeds (laplace, gmm, binary: "
             "linear encoder; digits: CNN, infonce and supervised)")
        result = run_preset(preset, configs=configs, progress=progress, threads=threads)
        _log(f"simulate: {result.wall_seconds:.1f} s wall, {result.cpu_seconds:.1f} s CPU")
        _render(result, "json" if as_json else "table")
        return
    for directory in (out, save_embeddings):
        if directory is not None:
            check_output_dir(directory)
    if out is not None and save_embeddings is not None:  # the page's files must not land in (or over) the stores
        check_output_tree(out, inputs=[save_embeddings], what="the --save-embeddings folder")
    config = make_config(data=data, latent_dim=latent_dim, dim=dim, losses=losses, steps=steps, batch_size=batch_size,
                         tau=tau, seeds=seeds, lr=lr, evals=evals, n_eval=n_eval, labels=labels, device=device,
                         encoder=encoder, mixing=mixing, sparsity=sparsity, train_size=train_size, epochs=epochs,
                         eval_epochs=eval_epochs)
    if save_embeddings is not None:  # before the first log line: a refusal is the only line on stderr
        from whitenclip.simulate import check_store_dirs

        check_store_dirs(save_embeddings, config)
    _log(f"simulate: {len(config.losses)} loss(es) x {config.seeds} seed(s), {config.steps} steps on {config.data} "
         f"({config.encoder} encoder), "
         f"device {config.device}")
    result = run_simulation(config, save_embeddings=save_embeddings, progress=progress, threads=threads)
    _log(f"simulate: {result.wall_seconds:.1f} s wall, {result.cpu_seconds:.1f} s CPU")
    if out is not None:
        written = write_html(result, out)
        _log(f"wrote {written['html']} and {written['json']}")
    if save_embeddings is not None:
        _log(f"wrote {len(result.stores)} embedding stores under {save_embeddings} "
             f"(try: whitenclip gaussianity-report {save_embeddings}/{config.losses[0]}/seed0)")
    _render(result, "json" if as_json else "table")


# ---------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------
def _compare_side(path: str, encoding, eng, recorded):
    """(rows or moments, ids, groups, encoder meta) of one compare INPUT: moments via the sharded path
    (moments files, shard folders, --engine dask), else every row (raw inputs embedded)."""
    import numpy as np

    from whitenclip.sources import source_meta
    from whitenclip.stores import iter_rows

    if eng.handles([path]):
        from whitenclip.engine import compute_moments

        return compute_moments([path], eng), None, None, recorded
    sources = _open_sources([path], encoding, recorded=recorded)
    ids, parts = [], []
    for chunk_ids, X in iter_rows(sources):
        ids += chunk_ids
        parts.append(X)
    _report_skips(sources)
    if not parts:
        raise InputError(f"{path}: no usable rows")
    groups = [g for src in sources for g in (getattr(src, "groups", None) or [])] or None
    if groups is not None and len(groups) != len(ids):
        groups = None
    return np.concatenate(parts), ids, groups, recorded if recorded is not None else source_meta(sources)


@app.command()
@_handles_errors
def compare(
    ref: str = typer.Argument(..., metavar="REF", help="Reference set: embeddings, a store, a table, moments file, or raw images/captions."),
    queries: List[str] = typer.Argument(..., metavar="QUERY...", help="One or more sets to compare with REF (same kinds of input); several are ranked."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per QUERY, one per line, in the order given."),
    max_rows: int = typer.Option(10_000, "--max-rows", min=10, help="Rows per set (seeded subsample, whole groups) for cmmd, the test and prdc."),
    permutations: int = typer.Option(1000, "--permutations", min=1, max=100_000, help="Permutations of the two-sample test (p resolution 1/(B+1))."),
    nearest_k: int = typer.Option(5, "--nearest-k", min=1, help="k of precision/recall/density/coverage."),
    fdr: float = typer.Option(0.1, "--fdr", min=0.0, max=1.0, help="Flag QUERY rows with Benjamini-Hochberg q <= FDR (conformal p-values under REF)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of subsamples, folds, features and permutations."),
    verdict: bool = typer.Option(True, "--verdict/--no-verdict", help="One-line Gaussianity verdict per set (cheap diagnostics on 2000 rows)."),
    group_column: Optional[str] = GroupColumnOpt, no_groups: bool = NoGroupsOpt,
    allow_partial: bool = AllowPartialOpt,
    model: Optional[str] = ModelOpt, modality: Optional[Modality] = ModalityOpt, normalize: Optional[bool] = NormalizeOpt,
    column: Optional[str] = ColumnOpt, id_column: Optional[str] = IdColumnOpt, strict: bool = StrictOpt, device: str = DeviceOpt,
    precision: Precision = PrecisionOpt, batch_size: Optional[int] = BatchOpt, num_workers: Optional[int] = WorkersOpt, decode: Decode = DecodeOpt,
    _quiet: bool = QuietOpt, _debug: bool = DebugOpt,
    engine: str = EngineOpt, workers: Optional[int] = DaskWorkersOpt, scheduler: Optional[str] = SchedulerOpt,
) -> None:
    """Compare REF with QUERY sets: fd, kl (Gaussian), cmmd and a permutation test (any law), which items differ."""
    from whitenclip.comparison import compare as run_compare

    if not 0.0 < fdr < 1.0:
        raise InputError(f"--fdr must be in (0, 1), got {fdr}")
    eng = _engine(engine, workers, scheduler, None, allow_partial=allow_partial, column=column, id_column=id_column,
                  no_groups=no_groups)
    encoding = _encode_options(model, modality, normalize, column, strict, device, precision, batch_size,
                               num_workers, allow_partial, decode=decode.value,
                               groups=(group_column, None, no_groups), id_column=id_column)
    R, _, ref_groups, recorded = _compare_side(ref, encoding, eng, None)
    sides = [_compare_side(q, encoding, eng, recorded) for q in queries]
    result = run_compare(R, [s[0] for s in sides], names=[ref, *queries], ref_groups=ref_groups,
                         query_groups=[s[2] for s in sides], query_ids=[s[1] for s in sides], max_rows=max_rows,
                         n_permutations=permutations, nearest_k=nearest_k, fdr=fdr, seed=seed, verdict=verdict)
    if as_json:
        from whitenclip.render.compare import json_lines

        sys.stdout.write(json_lines(result))
        sys.stdout.flush()
        return
    _render(result, "table")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
