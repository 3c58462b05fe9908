"""Hugging Face cache and network manners shared by the hub-loading backends (``openclip:``, ``hf:``, ``st:``)."""

from __future__ import annotations

import contextlib
import os

from whitenclip.encoders.base import short_text
from whitenclip.errors import InputError

NET_PROBE_TIMEOUT = 4.0
"""Seconds the one connectivity check before a download may take (uncached weights only)."""


def _hub_offline() -> bool:
    from huggingface_hub import constants

    check = getattr(constants, "is_offline_mode", None)
    return bool(check() if check is not None else constants.HF_HUB_OFFLINE)


def _hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _hub_cached(repo_id: str, filename: str) -> str | None:
    """Path of ``repo_id/filename`` in the Hugging Face cache (``main`` revision), else None."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo_id, filename)
    return path if isinstance(path, str) and os.path.isfile(path) else None


def probe_network(url: str, timeout: float = NET_PROBE_TIMEOUT) -> str | None:
    """One ``HEAD url`` with a short timeout: None when a server answers, else the reason (str).

    Honours ``HTTPS_PROXY``/``HTTP_PROXY``. Any HTTP status or a TLS error counts as reachable
    (the downloader may trust other certificates); only failing name resolution, refused or
    timed-out connections count as unreachable.
    """
    import ssl
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLError):
            return None
        reason = exc.reason
        return (getattr(reason, "strerror", None) or str(reason)) if reason else "unreachable"
    except (TimeoutError, OSError) as exc:
        return "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
    return None


def _require_network(spec: str, what: str, url: str, hint: str) -> None:
    """Raise one line when weights ``what`` are not cached and ``url``'s server cannot be reached.

    ``hint`` (the backend's offline choices) ends the message.
    """
    from urllib.parse import urlsplit

    if _hub_offline():
        raise InputError(f"cannot load {spec}: {what} is not in the Hugging Face cache ({_hub_cache_dir()}) "
                         f"and HF_HUB_OFFLINE is set; {hint}")
    reason = probe_network(url)
    if reason is not None:
        raise InputError(f"cannot load {spec}: {what} is not cached ({_hub_cache_dir()}) and "
                         f"{urlsplit(url).netloc} cannot be reached ({reason}); {hint}")


def is_local_model(arg: str) -> bool:
    """True when ``NAME_OR_PATH`` names a local folder (an existing directory, or path-like: ``/``, ``.``, ``~``)."""
    return os.path.isdir(os.path.expanduser(arg)) or arg.startswith(("/", ".", "~"))


def name_or_path(kind: str, arg: str | None, spec: str, example: str) -> str:
    """The ``NAME_OR_PATH`` of ``kind:NAME_OR_PATH`` (``hf:``, ``st:``): a hub name as given, or a local
    folder as an absolute path; an empty one is refused naming ``example``."""
    name = (arg or "").strip()
    if not name:
        raise InputError(f"encoder spec {spec!r}: expected {kind}:NAME_OR_PATH ({example}, or a local model folder)")
    if is_local_model(name):
        folder = os.path.abspath(os.path.expanduser(name))
        if os.path.isdir(folder):  # before torch or transformers is imported: a refusal costs nothing
            check_model_files(f"{kind}:{folder}", folder)
        return folder
    check_repo_id(name, spec)
    return name


def check_repo_id(repo: str, spec: str) -> None:
    """Refuse (one line, exit 2) a hub name that no hub repo can have, before anything is imported or
    fetched: ``huggingface_hub.utils.validate_repo_id`` (``NAME`` or ``ORG/NAME`` of letters, digits,
    ``-``, ``_``, ``.``, at most 96 characters), which would otherwise fail deep inside a loader."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError:
        raise InputError(f"encoder spec {short_text(spec)!r}: {short_text(repo)!r} is neither a local folder nor a hub "
                         "repo id (NAME or ORG/NAME: letters, digits, '-', '_', '.'; at most 96 characters; "
                         "local folders start with /, ./ or ~)") from None


def hub_location(spec: str, name: str, needed: tuple[str, ...], hint: str, *,
                 any_of: tuple[str, ...] = (), default_org: str | None = None) -> tuple[str, bool]:
    """Where a ``hf:``/``st:`` model loads from: ``(folder or repo id, local_files_only)``.

    A local folder must exist. A hub repo (``default_org/NAME`` when NAME has no ``/``) loads from
    the Hugging Face cache when all ``needed`` files and one of ``any_of`` (weights) are there; else
    the network is checked once (one line within seconds when it is down or ``HF_HUB_OFFLINE`` is
    set, as for ``openclip:`` tags).
    """
    from huggingface_hub import constants

    if is_local_model(name):
        folder = os.path.abspath(os.path.expanduser(name))
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise InputError(f"cannot load {spec}: {folder} is a file, not a model folder; {hint}")
        if not os.path.isdir(folder):
            raise InputError(f"cannot load {spec}: model folder {folder} not found; {hint}")
        with os.scandir(folder) as entries:
            empty = next(entries, None) is None
        if empty:
            raise InputError(f"cannot load {spec}: model folder {folder} is empty; {hint}")
        check_model_files(spec, folder)
        return folder, True
    repo = name if "/" in name or default_org is None else f"{default_org}/{name}"
    check_repo_id(repo, spec)
    if all(_hub_cached(repo, f) for f in needed) and (not any_of or any(_hub_cached(repo, f) for f in any_of)):
        check_model_files(spec, os.path.dirname(_hub_cached(repo, needed[0])))  # the cached snapshot
        return repo, True
    _require_network(spec, f"hub repo {repo}", constants.ENDPOINT, hint)
    return repo, False


_TOKENIZER_PREFIXES = ("tokenizer", "vocab", "merges", "spiece", "sentencepiece", "special_tokens_map",
                       "added_tokens", "bpe")
_TOKENIZER_SUFFIXES = (".model", ".spm", ".tiktoken", ".vocab")
_TEXT_SUFFIXES = (".json", ".txt", *_TOKENIZER_SUFFIXES)


def model_file_limit(name: str) -> int | None:
    """Largest size read for a model folder's file ``name``: tokenizer files
    :data:`~whitenclip.config.MAX_TOKENIZER_FILE_BYTES`, other JSON/text files (configs)
    :data:`~whitenclip.config.MAX_CONFIG_FILE_BYTES`, weights (``.safetensors``, ``.bin``...) None.

    >>> model_file_limit("tokenizer.json") == 64 << 20, model_file_limit("config.json") == 16 << 20
    (True, True)
    >>> model_file_limit("model.safetensors") is None
    True
    """
    from whitenclip.config import MAX_CONFIG_FILE_BYTES, MAX_TOKENIZER_FILE_BYTES

    low = name.lower()
    if low.endswith(".index.json"):  # a sharded checkpoint's weight map: grows with the parameters
        return None
    if low.startswith(_TOKENIZER_PREFIXES) or low.endswith(_TOKENIZER_SUFFIXES):
        return MAX_TOKENIZER_FILE_BYTES
    return MAX_CONFIG_FILE_BYTES if low.endswith(_TEXT_SUFFIXES) else None


def check_model_files(spec: str, folder: str, depth: int = 2) -> None:
    """Refuse (one line, exit 2), before anything is loaded, a model folder holding a tokenizer or
    config file above its :func:`model_file_limit`: the tokenizer libraries read such files whole and
    build their vocabulary in memory (a 400 MB ``tokenizer.json`` took 9 GB and minutes, then failed).
    Sub-folders (sentence-transformers' ``1_Pooling/``...) are looked at ``depth`` levels down."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return  # the loader names an unreadable folder
    for entry in entries:
        try:
            if entry.is_dir() and depth > 0 and not entry.name.startswith("."):
                check_model_files(spec, entry.path, depth - 1)
                continue
            limit = model_file_limit(entry.name) if entry.is_file() else None
            size = entry.stat().st_size if limit is not None else 0
        except OSError:
            continue
        if limit is not None and size > limit:
            kind = "tokenizer" if limit != model_file_limit("config.json") else "config"
            raise InputError(f"cannot load {spec}: {entry.path} is {size / 2**20:.0f} MiB, above the "
                             f"{limit >> 20} MiB whitenclip reads for a model's {kind} file (real ones are far "
                             "smaller; this one would take gigabytes of memory to load)")


@contextlib.contextmanager
def quiet_transformers():
    """transformers' info logs and progress bars off while a model loads (restored after)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
