"""alibi-detect's ``MMDDrift`` beside ``whitenclip compare``'s permutation test (never run in CI).

Run it from a virtualenv holding alibi-detect (it starts whitenclip's side with ``--ours-python``):

    python3 -m venv /tmp/alibi-venv && /tmp/alibi-venv/bin/pip install "alibi-detect[torch]==0.13.*"
    /tmp/alibi-venv/bin/python benchmarks/alibi_compare.py [--ours-python .venv/bin/python]

Both sides read the MiniLM embeddings cached by ``benchmarks/bench_compare.py --prepare`` (``--cache``)
and run the same draws as its sections 1 and 3, each side in its own process:

1. Level: the first ``--splits`` of bench_compare's null splits (500 vs 500 captions of distinct
   images from the 2000-caption pool): the fraction rejected at 0.05.
2. Power at n = ``--n`` (500; 2000 with ``--n 2000 --draws 3``): bench_compare's conditions and draws
   (typos, shuffled words, out-of-domain rows).
3. Time and peak RSS at n = m = ``--n-time`` (10,000), d = 768: bench_compare's synthetic t5 rows.

theirs: ``MMDDrift(x_ref, backend="pytorch", p_val=0.05)`` with its defaults (Gaussian RBF kernel, sigma
from the median heuristic on the reference, 100 permutations), rejected when ``is_drift`` (p < 0.05);
ours: :func:`whitenclip.comparison.kernel.permutation_test` with ``--permutations`` (default 100, the
same as alibi's), rejected at p <= 0.05.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
CONDITIONS = ("clean (null)", "typos 3%", "typos 8%", "typos 20%", "word order shuffled", "odd5%", "odd20%")
CACHE_NAMES = {"clean (null)": "base", "typos 3%": "typos3", "typos 8%": "typos8", "typos 20%": "typos20",
               "word order shuffled": "shuffled", "odd5%": "base", "odd20%": "base"}


def _load(cache: Path, name: str) -> np.ndarray:
    found = sorted(cache.glob(f"minilm_{name}_*.npy"))
    if len(found) != 1:
        raise SystemExit(f"{cache}: expected one minilm_{name}_*.npy (run bench_compare.py --prepare), found "
                         f"{len(found)}")
    return np.load(found[0], allow_pickle=False).astype(np.float64)


def _tester(side: str, permutations: int):
    """f(X, Y, seed) -> rejected at 0.05, for one side."""
    if side == "theirs":
        import torch
        from alibi_detect.cd import MMDDrift

        torch.manual_seed(0)

        def test(X, Y, seed):
            torch.manual_seed(seed)
            cd = MMDDrift(X.astype(np.float32), backend="pytorch", p_val=0.05, n_permutations=permutations,
                          device="cpu")
            return bool(cd.predict(Y.astype(np.float32))["data"]["is_drift"])
    else:
        from whitenclip.comparison.kernel import permutation_test

        def test(X, Y, seed):
            return permutation_test(X, Y, n_permutations=permutations, seed=seed)["pvalue"] <= 0.05
    return test


def worker(side: str, task: str, args) -> dict:
    cache = Path(args.cache)
    test = _tester(side, args.permutations)  # imports (torch, alibi) outside the times
    t = time.perf_counter()
    if task == "level":
        pool = _load(cache, "pool")
        n, hits = 500, 0
        for s in range(args.splits):  # bench_compare.level's splits
            idx = np.random.default_rng(s).permutation(pool.shape[0])[:2 * n]
            hits += test(pool[idx[:n]], pool[idx[n:]], s)
        out = {"rejected": hits, "of": args.splits}
    elif task.startswith("power:"):
        cond = task.split(":", 1)[1]
        ref_pool, Q, odd = _load(cache, "pool"), _load(cache, CACHE_NAMES[cond]), _load(cache, "odd")
        n, hits = args.n, 0
        for s in range(args.draws):  # bench_compare.power's draws
            rng = np.random.default_rng([n, s])
            R = ref_pool[rng.choice(ref_pool.shape[0], n, replace=False)]
            Qs = Q[rng.choice(Q.shape[0], n, replace=False)].copy()
            if cond.startswith("odd"):
                k = int(round(float(cond[3:].rstrip("%")) / 100 * n))
                Qs[:k] = odd[rng.integers(odd.shape[0], size=k)]
            hits += test(R, Qs, s)
        out = {"rejected": hits, "of": args.draws}
    elif task == "time":
        n, d = args.n_time, 768
        rng = np.random.default_rng(0)  # bench_compare's _CHILD rows
        A = rng.standard_normal((d, d)) / d ** 0.5 * np.linspace(2, 0.1, d)
        X = rng.standard_t(5, size=(n, d)) @ A + 0.3
        Y = rng.standard_t(5, size=(n, d)) @ A + 0.3 + 0.02 * rng.standard_normal(d)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t = time.perf_counter()
        out = {"rejected": int(test(X, Y, 0)), "of": 1, "data_mib": base}
    else:
        raise SystemExit(f"unknown task {task}")
    out.update(seconds=time.perf_counter() - t, peak_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def _run(python: str, side: str, task: str, args) -> dict:
    cmd = [python, str(HERE), "--worker", side, task, "--cache", args.cache, "--splits", str(args.splits),
           "--draws", str(args.draws), "--n", str(args.n), "--n-time", str(args.n_time),
           "--permutations", str(args.permutations)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if out.returncode:
        tail = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"
        return {"error": f"exit {out.returncode}: {tail}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default="/tmp/whitenclip-bench-compare", help="bench_compare's embedding cache")
    ap.add_argument("--ours-python", default=str(REPO / ".venv" / "bin" / "python"),
                    help="the interpreter with whitenclip installed")
    ap.add_argument("--splits", type=int, default=100, help="null splits of section 1")
    ap.add_argument("--draws", type=int, default=10, help="draws per power condition (section 2)")
    ap.add_argument("--n", type=int, default=500, help="rows per side of the power draws (section 2; 500 or 2000)")
    ap.add_argument("--n-time", type=int, default=10_000, help="rows per set of the timing (d = 768)")
    ap.add_argument("--permutations", type=int, default=100, help="permutations of both tests (alibi's default)")
    ap.add_argument("--sections", default="1,2,3", help="comma-separated sections to run")
    ap.add_argument("--worker", nargs=2, metavar=("SIDE", "TASK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args)))
        return
    sides = {"ours": args.ours_python, "theirs": sys.executable}
    sections = {int(s) for s in args.sections.split(",")}
    print(f"# alibi_compare, {time.strftime('%Y-%m-%d %H:%M')} UTC, {os.cpu_count()} CPUs, B = {args.permutations}")
    tasks = ([("level", f"level: {args.splits} null splits, 500 vs 500")] if 1 in sections else []) + \
        ([(f"power:{c}", f"power n={args.n}: {c}") for c in CONDITIONS] if 2 in sections else []) + \
        ([("time", f"time: n = m = {args.n_time}, d = 768")] if 3 in sections else [])
    print(f"  {'task':<40} {'ours':>12} {'theirs':>12} {'s ours':>8} {'s theirs':>9} {'ratio':>6} "
          f"{'MiB ours':>9} {'MiB theirs':>10}")
    for task, label in tasks:
        r = {side: _run(python, side, task, args) for side, python in sides.items()}
        cell = {s: r[s]["error"][:60] if "error" in r[s] else f"{r[s]['rejected']}/{r[s]['of']}" for s in r}
        if any("error" in v for v in r.values()):
            print(f"  {label:<40} {cell['ours']:>12} {cell['theirs']}", flush=True)
            continue
        o, t = r["ours"], r["theirs"]
        print(f"  {label:<40} {cell['ours']:>12} {cell['theirs']:>12} {o['seconds']:8.1f} {t['seconds']:9.1f} "
              f"{o['seconds'] / t['seconds']:6.2f} {o['peak_mib']:9.0f} {t['peak_mib']:10.0f}", flush=True)


if __name__ == "__main__":
    main()
