#!/usr/bin/env python
"""Engine benchmark: `whitenclip fit` on sharded .npy embeddings, --engine local vs --engine dask.

Not a test. One run writes seeded float32 shards (CLIP-like spectrum, large mean) and measures,
each contender in its own subprocess (interleaved, best and worst of --repeats):

  local      `whitenclip fit DIR -o W --engine local`         (one process, threaded BLAS)
  dask-2     `whitenclip fit DIR -o W --engine dask --workers 2` (LocalCluster: 2 processes,
             1 thread and 1 BLAS thread each; start-up and shut-down included)

Columns: wall s (whole subprocess), CPU s (user + sys of the subprocess and every descendant:
the Dask workers included), and the driver's peak RSS (ru_maxrss of the driver process itself,
LocalCluster's scheduler included, workers excluded) for 8 vs 64 shards of the same total.
Also: the Dask overhead on a 1-shard fit (dask-2 minus local, same rows; one piece runs on the
driver, no cluster is started), and on `moments` of that shard cut into 2 pieces ("1/2p"), which
does start the 2-worker LocalCluster: the cluster's own start-up and shut-down cost.

    python benchmarks/bench_engine.py [--rows 400000] [--dim 768] [--repeats 2] [--workdir DIR]
    python benchmarks/bench_engine.py --quick          # seconds: a smoke run, no timing claims
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def write_shards(directory: Path, rows: int, dim: int, shards: int, seed: int = 0) -> None:
    """``shards`` .npy files of float32 rows (uneven sizes) totalling ``rows`` x ``dim``."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    scale = np.geomspace(1.0, 1e-3, dim).astype(np.float32)
    mean = rng.normal(0, 0.3, dim).astype(np.float32)
    cuts = np.linspace(0, rows, shards + 1).astype(int)
    for i, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:])):
        block = np.empty((hi - lo, dim), dtype=np.float32)
        for s in range(0, hi - lo, 50_000):
            m = min(50_000, hi - lo - s)
            block[s:s + m] = mean + rng.standard_normal((m, dim), dtype=np.float32) * scale
        np.save(directory / f"img_emb_{i}.npy", block)


def run_driver(args: list[str]) -> dict:
    """Run the CLI in a subprocess that reports its own peak RSS; wall and CPU of the whole tree."""
    code = ("import json, resource, sys\n"
            "from whitenclip.cli import app\n"
            "try:\n    app(sys.argv[1:], standalone_mode=False)\n"
            "finally:\n"
            "    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "    sys.stderr.write('\\nDRIVER ' + json.dumps(rss) + '\\n')\n")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, "-q", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{proc.stderr[-3000:]}")
    rss_kib = int(proc.stderr.rsplit("DRIVER ", 1)[1].split()[0])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "driver_rss_mib": rss_kib / 1024}


def fit_args(src: Path, out: Path, engine: str, pieces: int | None = None) -> list[str]:
    extra = ["--engine", "dask", "--workers", "2"] if engine == "dask" else []
    if pieces:  # `moments` with --piece-rows: forces a cluster even for one shard
        n = sum(int(np.load(p, mmap_mode="r").shape[0]) for p in src.iterdir())
        return ["moments", str(src), "-o", str(out), "--piece-rows", str(-(-n // pieces)), *extra]
    return ["fit", str(src), "-o", str(out), *extra]


def load_avg() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (a few seconds), no timing claims")
    a = ap.parse_args()
    if a.quick:
        a.rows, a.dim, a.repeats = 4_000, 16, 1
    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench-engine-"))
    try:
        layouts = {k: work / f"shards{k}" for k in (8, 64, 1)}
        for k, d in layouts.items():
            if not d.exists():
                write_shards(d, a.rows if k != 1 else a.rows // 8, a.dim, k)
        for d in layouts.values():  # warm the page cache: every contender reads from RAM
            for p in d.iterdir():
                with open(p, "rb") as fh:
                    while fh.read(1 << 24):
                        pass
        out = work / "W.safetensors"
        results: dict[str, list[dict]] = {}
        plan = [("local 8", 8, "local", None), ("dask-2 8", 8, "dask", None), ("dask-2 64", 64, "dask", None),
                ("local 1", 1, "local", None), ("dask-2 1", 1, "dask", None),
                ("local 1/2p", 1, "local", 2), ("dask-2 1/2p", 1, "dask", 2)]
        if a.quick:
            plan = [("local 8", 8, "local", None), ("dask-2 8", 8, "dask", None)]
        for _ in range(a.repeats):
            for name, k, eng, pieces in plan:
                results.setdefault(name, []).append(run_driver(fit_args(layouts[k], out, eng, pieces)))
        print(f"fit of {a.rows} x {a.dim} float32 rows in 8 / 64 shards (1-shard rows: {a.rows // 8}); "
              f"{a.repeats} interleaved repeats; cores {os.cpu_count()}; load avg {load_avg()}")
        print(f"{'contender':<12} {'wall s best':>11} {'worst':>7} {'CPU s best':>10} {'driver RSS MiB':>15}")
        for name, rs in results.items():
            print(f"{name:<12} {min(r['wall'] for r in rs):>11.2f} {max(r['wall'] for r in rs):>7.2f} "
                  f"{min(r['cpu'] for r in rs):>10.2f} {max(r['driver_rss_mib'] for r in rs):>15.0f}")
        if a.quick:
            print("(quick run: smoke test only, no timing claims)")
            return
        best = {n: min(r["wall"] for r in rs) for n, rs in results.items()}
        cpu = {n: min(r["cpu"] for r in rs) for n, rs in results.items()}
        rss = {n: max(r["driver_rss_mib"] for r in rs) for n, rs in results.items()}
        summary = {
            "dask2_over_local_wall_8_shards": best["dask-2 8"] / best["local 8"],
            "dask2_over_local_cpu_8_shards": cpu["dask-2 8"] / cpu["local 8"],
            "driver_rss_64_over_8_shards": rss["dask-2 64"] / rss["dask-2 8"],
            "dask_overhead_1_shard_s": best["dask-2 1"] - best["local 1"],
            "dask_overhead_1_shard_forced_cluster_s": best["dask-2 1/2p"] - best["local 1/2p"],
        }
        print(json.dumps(summary, indent=2))
    finally:
        if a.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
