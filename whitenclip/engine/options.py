"""How to run: :class:`EngineOptions` (the engine options of the CLI, checked when built), when the
sharded path must run, and the check of a ``--scheduler`` address."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from whitenclip.config import CHUNK_ROWS
from whitenclip.engine.parts import is_moments_file
from whitenclip.errors import InputError
from whitenclip.readers.plan import PIECE_ROWS, is_glob

ENGINES = ("local", "dask")


@dataclass
class EngineOptions:
    """How to run: ``engine`` local|dask, ``workers`` (LocalCluster size), ``scheduler`` (address
    of an existing cluster), ``moments_dir`` (keep/resume piece parts), ``piece_rows``,
    ``client`` (an existing ``distributed.Client``, e.g. in tests), ``debug`` (cluster logs)."""

    engine: str = "local"
    workers: int | None = None
    scheduler: str | None = None
    moments_dir: Path | None = None
    piece_rows: int = PIECE_ROWS
    chunk_rows: int = CHUNK_ROWS
    client: Any = None
    debug: bool = False
    log: Callable[[str], None] | None = None
    allow_partial: bool = False  # read incomplete stores (--allow-partial), as the local path does
    column: str | None = None  # embedding column of parquet/Arrow inputs (--column)
    id_column: str | None = None  # their id column (--id-column)
    groups_file: str | None = None  # group ids, one line per input row in plan order (--groups FILE)
    no_groups: bool = False  # ignore the groups a store records (--no-groups)

    def __post_init__(self):
        self.engine = str(getattr(self.engine, "value", self.engine))
        if self.engine not in ENGINES:
            raise InputError(f"--engine must be one of {', '.join(ENGINES)}; got {self.engine!r}")
        if self.engine == "local" and (self.workers is not None or self.scheduler is not None):
            raise InputError("--workers and --scheduler need --engine dask")
        if self.workers is not None and self.workers < 1:
            raise InputError(f"--workers must be >= 1, got {self.workers}")
        if self.scheduler is not None:
            check_scheduler_address(str(self.scheduler))
        if self.no_groups and self.groups_file is not None:
            raise InputError("--no-groups contradicts --groups; give one of them")
        for name in ("piece_rows", "chunk_rows"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")

    def handles(self, inputs) -> bool:
        """True when the sharded path must run: --engine dask, --moments-dir, a moments file, a
        glob pattern or a directory that is not a whitenclip store among the INPUTs."""
        return (self.engine == "dask" or self.moments_dir is not None
                or any(is_moments_file(p) or _needs_sharding(p) for p in map(str, inputs)))

    def say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)


def _needs_sharding(p: str) -> bool:
    """A glob, or a directory of embedding shards (not a store, not a folder of images)."""
    if p == "-":
        return False
    if is_glob(p):
        return True
    d = Path(p)
    if not d.is_dir() or (d / "meta.json").is_file():
        return False
    if (d / "img_emb").is_dir() or (d / "text_emb").is_dir():
        return True
    return any(c.suffix.lower() in (".npy", ".safetensors") and c.is_file() for c in d.iterdir())


SCHEDULER_SCHEMES = ("tcp", "tls", "inproc", "ucx", "ws", "wss")


def check_scheduler_address(address: str) -> None:
    """Refuse (exit 2, one line) a ``--scheduler`` that no Dask client could connect to:
    ``SCHEME://HOST:PORT`` with a scheme Dask knows, or ``HOST:PORT`` (tcp).

    >>> check_scheduler_address("tcp://10.0.0.1:8786")
    >>> check_scheduler_address("foo://x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    whitenclip.errors.InputError: --scheduler foo://x: unknown scheme 'foo' (expected tcp://HOST:PORT; ...)
    """
    scheme, _, rest = address.rpartition("://")
    scheme = scheme or "tcp"
    if scheme not in SCHEDULER_SCHEMES:
        raise InputError(f"--scheduler {address}: unknown scheme {scheme!r} (expected tcp://HOST:PORT; known: "
                         f"{', '.join(SCHEDULER_SCHEMES)})")
    host, _, port = rest.rpartition(":")
    if scheme != "inproc" and not (host and port.isdigit() and 0 < int(port) < 65536):
        raise InputError(f"--scheduler {address}: expected {scheme}://HOST:PORT")
