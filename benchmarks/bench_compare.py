"""Benchmark ``whitenclip compare``: the permutation test's level and power on real captions, and
time / peak memory at n = m = 10,000, d = 768 against the CMMD reference formula and prdc.

Sections (full mode):

1. Level, one caption per image: MiniLM embeddings of the first caption of 2000 random Flickr8k
   images; 200 null splits (500 vs 500 captions of distinct images drawn from the pool), the
   fraction with p <= 0.05 (target 3.5-6.5%).
2. Level, 5 captions per image: 400 images x 5 captions; 200 null splits of 100 vs 100 images
   (500 captions a side), the test with the groups given (target 3.5-6.5%) and without (rows
   taken as exchangeable: expected to over-reject).
3. Power: REF = n clean captions (one per image), QUERY = n captions of other images, modified:
   typos at 3/8/20% of letters, word order shuffled, 5% / 20% of captions replaced by the
   out-of-domain sentences of ``data/captions_odd.txt``; n = 500 and 2000 per side; the fraction
   of draws with p <= 0.05, and cmmd / fd_inf / flagged items of one draw.
4. Time and peak RSS at n = m = 10,000, d = 768 (synthetic heavy-tailed rows), each in its own
   process: ``compare`` (all figures), its cmmd alone, the CMMD reference formula (three full
   n x n kernel matrices, numpy float64 as google-research/cmmd's ``distance.mmd``), and
   ``prdc.compute_prdc`` (three full distance matrices).

5. ``--moments-scale``: fd and kl from moments through the sharded path at 100k vs 100k and 1M vs 1M
   rows, d = 768: two synthetic sets written as .npy float32 shards of 100k rows (~3 GB a side at
   1M, in ``--scale-dir``, deleted afterwards), ``whitenclip compare REF_DIR QUERY_DIR --json`` in its
   own process; wall time and the child's peak RSS (``/usr/bin/time -v``, else ``os.wait4``).
   Peak RSS that does not grow with n shows the moments path streams the rows.

6. ``--severity``: the typo severities ranked (clean < typos 3% < 8% < 20%) by fd (plug-in), cmmd and
   the test statistic (``test_statistic`` of ``compare``) on section 3's draws at n = 500 (10 draws) and
   2000 (3): each figure's mean over the draws, and in how many draws it orders the four conditions.

MiniLM embeddings are cached in ``--cache`` (the first full run embeds ~14,000 captions on the CPU).

Usage: python benchmarks/bench_compare.py [--quick] [--cache DIR] [--prepare] [--moments-scale] [--severity]
(``--quick``: synthetic data, tiny sizes, a smoke run of every section in seconds; it prints no
target verdicts. ``--prepare``: only fill the embedding cache.)
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = REPO.parent / "shared" / "datasets" / "flickr8k" / "all_captions.txt"
ODD = REPO / "data" / "captions_odd.txt"
LEVEL_TARGET = (0.035, 0.065)
SPLITS = 200
UNGROUPED_SPLITS = 100


# ---------------------------------------------------------------------------------------- data
def _typos(text: str, rate: float, rng: np.random.Generator) -> str:
    """Replace ``rate`` of the letters by random lowercase letters."""
    chars = list(text)
    letters = [i for i, c in enumerate(chars) if c.isalpha()]
    k = int(round(rate * len(letters)))
    for i in rng.choice(letters, size=min(k, len(letters)), replace=False) if letters else []:
        chars[i] = chr(ord("a") + int(rng.integers(26)))
    return "".join(chars)


def _shuffle_words(text: str, rng: np.random.Generator) -> str:
    words = text.split()
    return " ".join(words[i] for i in rng.permutation(len(words)))


def caption_sets() -> dict[str, list[str]]:
    """The caption lists the real-data sections embed (deterministic, seed 0)."""
    by_image: dict[str, list[str]] = {}
    with open(CAPTIONS, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            by_image.setdefault(row["image"], []).append(row["caption"].strip())
    images = [k for k, v in by_image.items() if len(v) >= 5]
    images = [images[i] for i in np.random.default_rng(0).permutation(len(images))]
    base = [by_image[i][0] for i in images[2400:4400]]
    rng = np.random.default_rng(1)
    sets = {"pool": [by_image[i][0] for i in images[:2000]],
            "grouped": [c for i in images[2000:2400] for c in by_image[i][:5]],
            "base": base,
            "shuffled": [_shuffle_words(c, rng) for c in base]}
    for rate in (0.08, 0.03, 0.20):
        sets[f"typos{int(rate * 100)}"] = [_typos(c, rate, rng) for c in base]
    sets["odd"] = [line.strip() for line in open(ODD, encoding="utf-8") if line.strip()]
    return sets


def embedded(name: str, texts: list[str], cache: Path) -> np.ndarray:
    """MiniLM embeddings (raw, float64) of ``texts``, cached by content hash."""
    key = hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]
    path = cache / f"minilm_{name}_{key}.npy"
    if not path.is_file():
        from whitenclip import load_encoder
        from whitenclip.encoders import embed

        t = time.perf_counter()
        enc = load_encoder("minilm", device="cpu")
        X = embed(enc, texts, modality="text", progress=False)[1]
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path, X)
        print(f"  embedded {name}: {len(texts)} captions in {time.perf_counter() - t:.0f} s", flush=True)
    return np.load(path).astype(np.float64)


# ---------------------------------------------------------------------------------------- sections
def level(pool: np.ndarray, n: int, splits: int, permutations: int, groups=None, label: str = "", quick=False):
    from whitenclip.comparison.kernel import permutation_test

    t = time.perf_counter()
    rejected = 0
    if groups is None:
        for s in range(splits):
            idx = np.random.default_rng(s).permutation(pool.shape[0])[:2 * n]
            rejected += permutation_test(pool[idx[:n]], pool[idx[n:]], n_permutations=permutations,
                                         seed=s)["pvalue"] <= 0.05
    else:
        groups = np.asarray(groups)
        uniq = np.unique(groups)
        for s in range(splits):
            g = np.random.default_rng(s).permutation(uniq)
            a, b = np.isin(groups, g[:n]), np.isin(groups, g[n:2 * n])
            rejected += permutation_test(pool[a], pool[b], groups_x=groups[a], groups_y=groups[b],
                                         n_permutations=permutations, seed=s)["pvalue"] <= 0.05
    rate = rejected / splits
    verdict = "" if quick else ("  (target 3.5-6.5%: " + ("met" if LEVEL_TARGET[0] <= rate <= LEVEL_TARGET[1]
                                                          else "MISSED") + ")")
    print(f"  {label:<58} {rejected:>4}/{splits} = {100 * rate:5.1f}%  ({time.perf_counter() - t:.0f} s){verdict}",
          flush=True)
    return rate


def power(ref_pool, queries: dict, odd, ns, draws: dict, permutations: int):
    from whitenclip.comparison import compare
    from whitenclip.comparison.kernel import permutation_test

    print(f"  {'condition':<22} {'n':>5} {'rejected':>9} {'cmmd':>8} {'fd_inf':>8} {'flagged':>8} {'of them odd':>11}")
    for n in ns:
        for cond, Q in queries.items():
            t = time.perf_counter()
            hits, shown = 0, None
            for s in range(draws[n]):
                rng = np.random.default_rng([n, s])
                R = ref_pool[rng.choice(ref_pool.shape[0], n, replace=False)]
                qi = rng.choice(Q.shape[0], n, replace=False)
                Qs, is_odd = Q[qi].copy(), np.zeros(n, dtype=bool)
                if cond.startswith("odd"):
                    k = int(round(float(cond[3:].rstrip("%")) / 100 * n))
                    Qs[:k] = odd[rng.integers(odd.shape[0], size=k)]
                    is_odd[:k] = True
                if s == 0:
                    shown = compare(R, Qs, n_permutations=permutations, verdict=False, seed=s).queries[0]
                    p = shown.pvalue
                    odd_hits = sum(is_odd[int(item["id"])] for item in shown.flagged)
                else:
                    p = permutation_test(R, Qs, n_permutations=permutations, seed=s)["pvalue"]
                hits += p <= 0.05
            print(f"  {cond:<22} {n:>5} {hits:>4}/{draws[n]:<4} {shown.cmmd:8.3f} {shown.fd_inf:8.3f} "
                  f"{shown.n_flagged:>8} {odd_hits:>11}  ({time.perf_counter() - t:.0f} s)", flush=True)


def severity(ref_pool, queries: dict, ns, draws: dict, permutations: int, quick: bool = False):
    """Section 6: fd (plug-in), cmmd and the test statistic of ``queries`` (in increasing severity) on
    section 3's draws; the mean over the draws and, unless ``quick``, in how many draws each figure
    orders the conditions strictly."""
    from whitenclip.comparison import compare

    figures = ("fd", "cmmd", "test_statistic")
    print(f"  {'condition':<22} {'n':>5} {'draws':>5} {'fd':>9} {'cmmd':>9} {'test statistic':>15}")
    for n in ns:
        t = time.perf_counter()
        values = np.empty((len(queries), draws[n], len(figures)))
        for c, (cond, Q) in enumerate(queries.items()):
            for s in range(draws[n]):
                rng = np.random.default_rng([n, s])  # section 3's draw
                R = ref_pool[rng.choice(ref_pool.shape[0], n, replace=False)]
                Qs = Q[rng.choice(Q.shape[0], n, replace=False)]
                r = compare(R, Qs, n_permutations=permutations, verdict=False, seed=s).queries[0]
                values[c, s] = [getattr(r, f) for f in figures]
            m = values[c].mean(axis=0)
            print(f"  {cond:<22} {n:>5} {draws[n]:>5} {m[0]:9.4f} {m[1]:9.4f} {m[2]:15.6f}", flush=True)
        if not quick:
            ordered = np.all(np.diff(values, axis=0) > 0, axis=0).sum(axis=0)  # per figure: draws in order
            in_mean = np.all(np.diff(values.mean(axis=1), axis=0) > 0, axis=0)
            print(f"  n = {n}: ordered {' < '.join(queries)} by "
                  + ", ".join(f"{f} {'yes' if ok else 'NO'} (mean; {k}/{draws[n]} draws)"
                              for f, ok, k in zip(figures, in_mean, ordered))
                  + f"  ({time.perf_counter() - t:.0f} s)", flush=True)


_CHILD = r"""
import json, sys, time, resource
import numpy as np
what, n, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
A = rng.standard_normal((d, d)) / d ** 0.5 * np.linspace(2, 0.1, d)
X = rng.standard_t(5, size=(n, d)) @ A + 0.3
Y = rng.standard_t(5, size=(n, d)) @ A + 0.3 + 0.02 * rng.standard_normal(d)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
if what == "compare":
    from whitenclip.comparison import compare
    r = compare(X, Y, seed=0).queries[0]
    value = r.cmmd
elif what == "cmmd":
    from whitenclip.comparison.kernel import cmmd
    value = cmmd(X, Y)["cmmd"]
elif what == "cmmd-reference":
    x = X / np.linalg.norm(X, axis=1, keepdims=True); y = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    xs, ys = np.diag(x @ x.T), np.diag(y @ y.T); g = 1 / (2 * 10 ** 2)
    kxx = np.mean(np.exp(-g * (-2 * x @ x.T + xs[:, None] + xs[None, :])))
    kxy = np.mean(np.exp(-g * (-2 * x @ y.T + xs[:, None] + ys[None, :])))
    kyy = np.mean(np.exp(-g * (-2 * y @ y.T + ys[:, None] + ys[None, :])))
    value = 1000 * (kxx + kyy - 2 * kxy)
elif what == "prdc":
    import contextlib, io
    from prdc import compute_prdc
    with contextlib.redirect_stdout(io.StringIO()):
        value = compute_prdc(X, Y, 5)["coverage"]
elif what == "prdc-ours":
    from whitenclip.comparison.items import prdc
    value = prdc(X, Y, 5)["coverage"]
sec = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"what": what, "seconds": sec, "peak_mib": peak / 1024, "data_mib": base / 1024,
                  "value": float(value)}))
"""


def timing(n: int, d: int, what=("compare", "cmmd", "cmmd-reference", "prdc-ours", "prdc")):
    print(f"  {'what':<16} {'seconds':>8} {'peak RSS MiB':>13} {'(after data)':>13} {'value':>12}")
    for w in what:
        out = subprocess.run([sys.executable, "-c", _CHILD, w, str(n), str(d)], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
        if out.returncode:
            print(f"  {w:<16} failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {w:<16} {r['seconds']:8.1f} {r['peak_mib']:13.0f} {r['data_mib']:13.0f} {r['value']:12.6g}",
              flush=True)


def _write_shards(folder: Path, side: int, first: int, count: int, rows: int, d: int) -> None:
    """Shards ``first`` .. ``first + count - 1`` of one synthetic set: float32 normal rows with scales
    falling from 2 to 0.1 over the dimensions (the query set shifted by 0.01 and scaled by 1.02)."""
    folder.mkdir(parents=True, exist_ok=True)
    scale = np.linspace(2.0, 0.1, d, dtype=np.float32) * (1.0 if side == 0 else 1.02)
    shift = np.float32(0.0 if side == 0 else 0.01)
    for i in range(first, first + count):
        Z = np.random.default_rng([side, i]).standard_normal((rows, d), dtype=np.float32)
        Z *= scale
        Z += shift
        np.save(folder / f"part{i:04d}.npy", Z)


def _timed_child(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB of the child, its stdout): ``/usr/bin/time -v`` when present, else
    ``os.wait4`` (the same kernel figure)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t = time.perf_counter()
    if Path("/usr/bin/time").is_file():
        out = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t
        if out.returncode:
            raise RuntimeError(out.stderr.strip()[-500:])
        kb = next(int(line.split(":")[1]) for line in out.stderr.splitlines() if "Maximum resident set size" in line)
        return wall, kb / 1024, out.stdout
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise RuntimeError(err.read().strip()[-500:])
        return wall, usage.ru_maxrss / 1024, out.read()


def moments_scale(sizes: list[int], shard_rows: int, d: int, folder: Path) -> None:
    """Section 5: ``whitenclip compare`` on two folders of .npy shards (the sharded moments path) at each
    size in ``sizes`` (multiples of ``shard_rows``, increasing: shards are added to the same folders)."""
    if folder.exists():
        raise SystemExit(f"{folder} exists: give an empty --scale-dir")
    need = 2 * max(sizes) * d * 4
    free = shutil.disk_usage(folder.parent).free
    if need > 0.8 * free:
        raise SystemExit(f"{folder.parent}: {need / 2**30:.1f} GiB needed, {free / 2**30:.1f} GiB free")
    print(f"  {'rows a side':>12} {'shards':>7} {'write s':>8} {'compare s':>10} {'peak RSS MiB':>13} "
          f"{'fd':>10} {'kl(ref||q)':>11} {'kl(q||ref)':>11}")
    try:
        have = 0
        for n in sizes:
            t = time.perf_counter()
            k = n // shard_rows
            for side, name in enumerate(("ref", "query")):
                _write_shards(folder / name, side, have, k - have, shard_rows, d)
            have = k
            written = time.perf_counter() - t
            wall, peak, out = _timed_child([sys.executable, "-m", "whitenclip.cli", "compare", str(folder / "ref"),
                                            str(folder / "query"), "--json", "--no-verdict"])
            r = json.loads(out.strip().splitlines()[-1])
            print(f"  {r['n_ref']:>12} {k:>7} {written:8.0f} {wall:10.1f} {peak:13.0f} {r['fd']:10.4f} "
                  f"{r['kl_ref_query']:11.5f} {r['kl_query_ref']:11.5f}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="synthetic data, tiny sizes: a smoke run (no verdicts)")
    ap.add_argument("--prepare", action="store_true", help="only embed the captions into --cache")
    ap.add_argument("--cache", default="/tmp/whitenclip-bench-compare", help="MiniLM embedding cache")
    ap.add_argument("--sections", default="1,2,3,4", help="comma-separated sections of the full mode to run")
    ap.add_argument("--moments-scale", action="store_true",
                    help="only section 5: fd/kl from moments of .npy shards at 100k and 1M rows a side, d = 768")
    ap.add_argument("--severity", action="store_true",
                    help="only section 6: typo severities ranked by fd, cmmd and the test statistic")
    ap.add_argument("--scale-dir", default="/tmp/whitenclip-bench-moments",
                    help="folder for the section-5 shards (must not exist; deleted afterwards)")
    args = ap.parse_args()
    cache = Path(args.cache)
    if args.moments_scale:
        print(f"## 5. fd and kl from moments (sharded path), d = 768, shards of 100k float32 rows, "
              f"{time.strftime('%Y-%m-%d %H:%M')} UTC, {os.cpu_count()} CPUs")
        moments_scale([100_000, 1_000_000], 100_000, 768, Path(args.scale_dir))
        return
    if args.quick:
        rng = np.random.default_rng(0)
        pool = np.abs(rng.standard_t(3, size=(400, 16))) + 1
        print("## 1-2. Level (quick: synthetic heavy-tailed rows; times and rates mean nothing)")
        level(pool, 50, 10, 49, label="one row per unit, 50 vs 50", quick=True)
        level(pool, 10, 10, 49, groups=np.repeat(np.arange(80), 5), label="groups of 5, 10 vs 10 groups", quick=True)
        print("## 3. Power (quick)")
        q = {"shifted": pool + 0.5, "odd5%": pool}
        power(pool, q, pool[:20] * 3, [100], {100: 2}, 49)
        print("## 4. Time and peak RSS (quick: n = m = 500, d = 32)")
        timing(500, 32)
        print("## 5. fd and kl from moments (quick: shards of 2000 rows, d = 32)")
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            moments_scale([2000, 6000], 2000, 32, Path(tmp) / "shards")
        print("## 6. Severity ranking (quick)")
        severity(pool, {"clean": pool[::-1], "shift 0.2": pool + 0.2, "shift 0.5": pool + 0.5}, [100], {100: 2}, 49,
                 quick=True)
        return
    sections = {int(s) for s in args.sections.split(",")}
    if not CAPTIONS.is_file():
        print(f"real-data sections skipped: {CAPTIONS} absent")
        sets = None
    else:
        texts = caption_sets()
        wanted = texts if args.prepare or args.severity or 3 in sections else {k: texts[k] for k in ("pool", "grouped")}
        sets = {name: embedded(name, t, cache) for name, t in wanted.items()} if sections & {1, 2, 3} or args.severity \
            else None
        if args.prepare:
            return
    if args.severity:
        if sets is None:
            return
        print(f"## 6. Typo severity ranked by fd (plug-in), cmmd and the test statistic (section 3's draws, B = 199), "
              f"{time.strftime('%Y-%m-%d %H:%M')} UTC")
        severity(sets["pool"], {"clean": sets["base"], "typos 3%": sets["typos3"], "typos 8%": sets["typos8"],
                                "typos 20%": sets["typos20"]}, [500, 2000], {500: 10, 2000: 3}, 199)
        return
    print(f"# bench_compare (full), {time.strftime('%Y-%m-%d %H:%M')} UTC, {os.cpu_count()} CPUs")
    if sets is not None and 1 in sections:
        print(f"## 1. Level, one caption per image (MiniLM, 2000-caption pool; {SPLITS} null splits, B = 199)")
        level(sets["pool"], 500, SPLITS, 199, label="500 vs 500 captions of distinct images")
    if sets is not None and 2 in sections:
        print(f"## 2. Level, 5 captions per image (400 images; {SPLITS} null splits of 100 vs 100 images, B = 199)")
        groups = np.repeat(np.arange(400), 5)
        level(sets["grouped"], 100, SPLITS, 199, groups=groups, label="groups given (whole images permuted)")
        _ungrouped(sets["grouped"], groups)
    if sets is not None and 3 in sections:
        print("## 3. Power (REF: clean captions; QUERY: captions of other images, modified; B = 199)")
        queries = {"clean (null)": sets["base"], "typos 3%": sets["typos3"], "typos 8%": sets["typos8"],
                   "typos 20%": sets["typos20"], "word order shuffled": sets["shuffled"],
                   "odd5%": sets["base"], "odd20%": sets["base"]}
        power(sets["pool"], queries, sets["odd"], [500, 2000], {500: 10, 2000: 3}, 199)
    if 4 in sections:
        print("## 4. Time and peak RSS at n = m = 10,000, d = 768 (synthetic t5 rows; one process each)")
        timing(10_000, 768)


def _ungrouped(X, groups):
    """The same grouped splits with the groups ignored (rows permuted one by one)."""
    from whitenclip.comparison.kernel import permutation_test

    t = time.perf_counter()
    rejected = 0
    uniq = np.unique(groups)
    for s in range(UNGROUPED_SPLITS):
        g = np.random.default_rng(s).permutation(uniq)
        a, b = np.isin(groups, g[:100]), np.isin(groups, g[100:200])
        rejected += permutation_test(X[a], X[b], n_permutations=199, seed=s)["pvalue"] <= 0.05
    print(f"  {'groups ignored (rows permuted; not valid here)':<58} {rejected:>4}/{UNGROUPED_SPLITS} = {100 * rejected / UNGROUPED_SPLITS:5.1f}%  "
          f"({time.perf_counter() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
