"""Where the per-piece work runs: in this process (``local``) or on a Dask cluster (``dask``).

The work is planned by :mod:`whitenclip.readers.plan` into pieces (a run of rows of one shard each:
a byte range of one file, a run of a table's row groups; :mod:`whitenclip.readers.base`).
Every task reads one piece and returns its :class:`~whitenclip.moments.MomentsPart` (count,
float64 mean, centred scatter, power sums for Ledoit-Wolf, and for ``fit`` a bottom-m reservoir
of rows for the conformal calibration, keyed by shard path and row, or by group id when the
inputs have groups, so that its merge is exact);
consecutive small pieces (tiny shards) are
packed into one task of at most ``piece_rows`` rows (:func:`pack_tasks`), so the task and merge
counts follow the rows, not the layout (a folder of 20,000 one-row files is a handful of tasks);
parts are merged as a binary tree
in task order: level by level, part 2k with part 2k+1 (an odd last part moves up unchanged).
The tree is the same on both engines, so results do not depend on which worker ran what, and
on Dask the merges run on the workers: the driver receives one (d, d) scatter, never one per
piece.

What travels: to a task, a :class:`~whitenclip.readers.base.Piece` (path, row range, a few hundred
bytes); back from a task, to another task, its part (8 d^2 + O(d) bytes); to the driver, the
final part. ``score`` sends the whitener to each worker once and gets back each piece's scores
(5 numbers and an id per row); ``gaussianity-report`` needs every row on the driver (its
statistics are whole-sample), so there each task returns its piece's rows.

``--moments-dir DIR`` keeps each piece's part as ``DIR/piece-NNNNNN-<key>-<content>.moments.safetensors``
(key: the file's path, row range, header layout and the settings; content: the blake2b hash of the
piece's bytes, taken while reading them). A rerun re-hashes the piece's byte range (no arithmetic:
0.2-0.35x the cost of recomputing it, :func:`piece_content_hash`) and loads the saved part only
when the hashes agree, so a shard rewritten with the same size and mtime (``cp -p``, ``rsync -a``)
is read again. ``DIR`` may not be, or lie inside, an input folder (:func:`check_moments_dir`).

Dask is optional (``pip install whitenclip[dask]``); ``LocalCluster`` is started inside
:func:`dask_client` (processes, one thread and one BLAS thread per worker, no dashboard, logs
silenced unless ``debug``) and always closed.

Modules, one concern each (each imports only those listed before it):

* :mod:`~whitenclip.engine.parts`    moments files, and the saved piece parts of ``--moments-dir``;
* :mod:`~whitenclip.engine.options`  :class:`EngineOptions` and the ``--scheduler`` check;
* :mod:`~whitenclip.engine.tasks`    per-piece work on the workers and the packing into tasks;
* :mod:`~whitenclip.engine.cluster`  where tasks run (here, or a Dask client) and the merge tree;
* :mod:`~whitenclip.engine.drivers`  compute_moments, fit_whitener, iter_scores, gather_rows;
* :mod:`~whitenclip.engine.entropy`  Gaussian entropy from moments alone;
* :mod:`~whitenclip.engine.writing`  score files: stdout, one file, or one per shard.
"""

from __future__ import annotations

from whitenclip.engine.cluster import dask_client, runs_here, tree_merge
from whitenclip.engine.drivers import (
    compute_moments,
    fit_whitener,
    gather_rows,
    iter_scores,
    piece_group_plan,
    plan,
    shard_position_base,
)
from whitenclip.engine.entropy import entropy_from_moments, entropy_summary
from whitenclip.engine.options import ENGINES, SCHEDULER_SCHEMES, EngineOptions, check_scheduler_address
from whitenclip.engine.parts import (
    PIECE_SUFFIX,
    check_moments_dir,
    is_moments_file,
    merge_moment_files,
    piece_content_hash,
    piece_key,
)
from whitenclip.engine.tasks import (
    FAULT_ENV,
    merge_two,
    pack_tasks,
    piece_moments,
    piece_rows,
    piece_scores,
    task_moments,
    task_rows,
    task_scores,
)
from whitenclip.engine.writing import shard_output_names, write_scores

__all__ = [
    "ENGINES", "FAULT_ENV", "PIECE_SUFFIX", "SCHEDULER_SCHEMES", "EngineOptions", "check_moments_dir",
    "check_scheduler_address", "compute_moments", "dask_client", "entropy_from_moments", "entropy_summary",
    "fit_whitener", "gather_rows", "is_moments_file", "iter_scores", "merge_moment_files", "merge_two",
    "pack_tasks", "piece_content_hash", "piece_group_plan", "piece_key", "piece_moments", "piece_rows",
    "piece_scores", "plan", "runs_here", "shard_output_names", "shard_position_base", "task_moments",
    "task_rows", "task_scores", "tree_merge", "write_scores",
]
