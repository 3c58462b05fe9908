"""The :func:`simulate` entry point: every (loss, seed) run in turn, thread limits, the progress
display and the ``--save-embeddings`` stores."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from whitenclip.errors import InputError
from whitenclip.simulate.config import DIGITS_HELDOUT, SimulationConfig
from whitenclip.simulate.data import _eval_sets, _train_set
from whitenclip.simulate.metrics import _subsets, gaussian_reference
from whitenclip.simulate.results import SimulationResult
from whitenclip.simulate.training import _train_one


def check_store_dirs(save_dir, config: SimulationConfig) -> None:
    """Refuse (before any training) a ``--save-embeddings`` folder whose ``<loss>/seed<S>/`` stores exist."""
    save_dir = Path(save_dir)
    for loss in config.losses:
        for seed in range(config.seeds):
            d = save_dir / loss / f"seed{seed}"
            if d.exists() and (not d.is_dir() or any(d.iterdir())):
                raise InputError(f"{d}: already exists and is not empty; choose a new --save-embeddings directory")


def simulate(config: SimulationConfig, *, save_embeddings=None, progress: bool = False,
             threads: int | None = None) -> SimulationResult:
    """Train every (loss, seed) of ``config`` and record the metrics at ``config.eval_steps``.

    Runs are sequential; torch uses at most ``threads`` (default: the machine's cores) threads.
    ``save_embeddings``: a directory receiving ``<loss>/seed<S>/`` stores of the final
    L2-normalised held-out embeddings (float32; the same rows for every loss of a seed).
    ``progress``: a rich progress bar per run on stderr (plain lines when stderr is not a terminal).
    """
    import torch

    save_dir = Path(save_embeddings) if save_embeddings is not None else None
    if save_dir is not None:
        check_store_dirs(save_dir, config)
    from threadpoolctl import threadpool_limits

    cores = os.cpu_count() or 1
    n_threads = max(1, min(cores, threads or 1))
    old_threads = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    runs, stores = [], {}
    bar = _progress_bar() if progress else None
    try:
        with threadpool_limits(limits=n_threads):
            _run_all(config, save_dir, runs, stores, bar)
    finally:
        torch.set_num_threads(old_threads)
        if bar is not None:
            bar.stop()
    ref = gaussian_reference(_n_eval(config), config.dim)
    return SimulationResult(config=config, runs=tuple(runs), reference=ref,
                            wall_seconds=time.perf_counter() - wall0, cpu_seconds=time.process_time() - cpu0,
                            stores=stores)


def _n_eval(config: SimulationConfig) -> int:
    return DIGITS_HELDOUT if config.data == "digits" else config.n_eval


def _run_all(config, save_dir, runs: list, stores: dict, bar) -> None:
    for seed in range(config.seeds):
        np.random.seed(seed)  # nothing should use the global state, but seed it anyway
        task, (X_ev, z_ev, y_ev, ids), (X_fit, z_fit, y_fit) = _eval_sets(config, seed)
        train = _train_set(config, seed, task)
        subsets = _subsets(len(X_ev), seed)
        for loss in config.losses:
            hist, E = _train_one(config, loss, seed, task, X_ev, z_ev, y_ev, X_fit, z_fit, y_fit, subsets, bar,
                                 train=train)
            runs.append(hist)
            if save_dir is not None:
                path = _save_store(save_dir / loss / f"seed{seed}", E, ids, config, loss)
                stores[f"{loss}/seed{seed}"] = str(path)


def _progress_bar():
    """A rich bar per run on a terminal; off a terminal, plain lines (steps, rate, ETA) at a steady cadence."""
    from whitenclip.progress import LineBoard, is_terminal

    if not is_terminal():
        return LineBoard(unit="steps")
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True), transient=False)
    bar.start()
    return bar


def _save_store(directory: Path, E: np.ndarray, ids: list[str], config: SimulationConfig, loss: str) -> Path:
    from whitenclip.writers import StoreWriter

    meta = {"encoder": f"simulate:{loss}", "modality": "image" if config.data == "digits" else "synthetic",
            "normalized": True, "source": f"whitenclip simulate --data {config.data}"}
    directory.parent.mkdir(parents=True, exist_ok=True)  # DIR/<loss>/ (the parent of DIR was checked by the caller)
    writer = StoreWriter(directory, dim=E.shape[1], dtype="float32", meta={**meta, "n_items": len(ids)})
    writer.write_shard(ids, E.astype(np.float32), items_end=len(ids))
    return directory
