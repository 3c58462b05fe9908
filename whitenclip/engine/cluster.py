"""Running tasks: here or on a Dask cluster (a given client, a ``--scheduler``, or a
``LocalCluster`` started and closed here), and the binary merge tree both engines use."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Callable, Iterator

from whitenclip.engine.options import EngineOptions, check_scheduler_address
from whitenclip.errors import InputError


@contextlib.contextmanager
def dask_client(opts: EngineOptions) -> Iterator:
    """A ``distributed.Client``: the one in ``opts.client``, one connected to ``opts.scheduler``,
    or a fresh ``LocalCluster`` (processes, 1 thread per worker) closed on exit."""
    if opts.client is not None:
        yield opts.client
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError("--engine dask needs Dask: pip install 'whitenclip[dask]'") from None
    level = logging.INFO if opts.debug else logging.CRITICAL
    for name in ("distributed", "bokeh", "tornado"):
        logging.getLogger(name).setLevel(level)
    if opts.scheduler:
        check_scheduler_address(opts.scheduler)
        try:
            client = Client(opts.scheduler, timeout="30s")
        except (OSError, ValueError, TypeError) as exc:
            raise InputError(f"--scheduler {opts.scheduler}: cannot connect ({' '.join(str(exc).split())})") from None
        with contextlib.closing(client):
            yield client
        return
    workers = opts.workers or max(1, min(os.cpu_count() or 1, 8))
    blas1 = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=level, env=blas1)
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def runs_here(opts: EngineOptions, tasks) -> bool:
    """True when the tasks run in this process: ``--engine local``, or ``--engine dask`` with a
    single task and no cluster given (starting a LocalCluster for one task is pure overhead; the
    result is the same, as the merge tree is)."""
    if opts.engine == "local":
        return True
    if len(tasks) <= 1 and opts.client is None and not opts.scheduler:
        opts.say(f"one {'piece' if not tasks or len(tasks[0]) == 1 else 'task'}: running it in this process "
                 "(no LocalCluster needed)")
        return True
    return False


def tree_merge(items: list, merge: Callable) -> Any:
    """Pairwise merge in order, level by level: ((0,1),(2,3)),... an odd last item moves up."""
    while len(items) > 1:
        nxt = [merge(items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)]
        if len(items) % 2:
            nxt.append(items[-1])
        items = nxt
    return items[0]
