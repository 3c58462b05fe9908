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

MiniLM embeddings are cached in ``--cache`` (the first full run embeds ~14,000 captions on the CPU).

Usage: python benchmarks/bench_compare.py [--quick] [--cache DIR] [--prepare]
(``--quick``: synthetic data, tiny sizes, a smoke run of every section in seconds; it prints no
target verdicts. ``--prepare``: only fill the embedding cache.)
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="synthetic data, tiny sizes: a smoke run (no verdicts)")
    ap.add_argument("--prepare", action="store_true", help="only embed the captions into --cache")
    ap.add_argument("--cache", default="/tmp/whitenclip-bench-compare", help="MiniLM embedding cache")
    ap.add_argument("--sections", default="1,2,3,4", help="comma-separated sections of the full mode to run")
    args = ap.parse_args()
    cache = Path(args.cache)
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
        return
    sections = {int(s) for s in args.sections.split(",")}
    if not CAPTIONS.is_file():
        print(f"real-data sections skipped: {CAPTIONS} absent")
        sets = None
    else:
        texts = caption_sets()
        wanted = texts if args.prepare or 3 in sections else {k: texts[k] for k in ("pool", "grouped")}
        sets = {name: embedded(name, t, cache) for name, t in wanted.items()} if sections & {1, 2, 3} else None
        if args.prepare:
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
