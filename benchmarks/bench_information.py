"""Benchmark whitenclip.information on Gaussian tasks with known answers.

Prints time and error for:

1. MI between paired blocks of growing dimension p (canonical correlations known):
   GaussianMI (bias-corrected and plug-in), KSG on the full blocks (our ``ksg_mi``, a
   Kraskov-1 baseline), and sklearn's ``mutual_info_regression`` (1-D only: it estimates
   MI between each feature and a scalar target).
2. Entropy of N(0, Sigma) of growing d: plug-in, bias-corrected, and Kozachenko-Leonenko on
   all d (where feasible) as the nonparametric peer.
3. The acceptance timing: MI on 40,000 pairs x (384 + 384) dims with the CLI defaults
   (jackknife CI, KSG check on 2 canonical pairs), as a ratio to the numpy plug-in
   (``np.cov`` of the joint + three ``slogdet``) measured in the same run.
4. Shrinkage intensities of ``GaussianMI(shrinkage="ledoit-wolf" | "oas")``: whitenclip's
   (from the covariance the fit already holds, ``whitenclip.whitening``) against scikit-learn's
   ``ledoit_wolf_shrinkage`` / ``oas`` on the scaled rows, same values, time ratio.
5. ``entropy -w``: the k-NN check runs on the input rows' own principal components, which costs
   one more covariance + eigh when a whitener is given; time ratio with / without a whitener.
6. n close to d (issue 17): the cross-fitted estimate on d_x = d_y = 512, n = 500 blocks with a 1/i
   spectrum and 20 canonical correlations of 0.8 (true MI 10.2 nats), isotropic and shuffled
   variants; MiniLM embeddings of captions 1 and 2 of the same Flickr8k image at n = 300, 1000,
   4000 images and with Y shuffled (embeddings cached in ``--flickr-cache``). Section 1 also prints
   the cross-fitted estimate (and which one is the headline) beside the in-sample one.

Usage: python benchmarks/bench_information.py [--quick]
(``--quick``: tiny sizes, a smoke run of every section in seconds; its times mean nothing.)
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
import warnings

import numpy as np
from sklearn.feature_selection import mutual_info_regression

from whitenclip.information import GaussianEntropy, GaussianMI, knn_entropy, ksg_mi
from whitenclip.whitening import Whitener

LOG_2PI_E = math.log(2 * math.pi * math.e)


def paired(n, rho, rng):
    p = rho.size
    z1, z2 = rng.standard_normal((n, p)), rng.standard_normal((n, p))
    x = z1 @ (rng.standard_normal((p, p)) + 3 * np.eye(p))
    y = (rho * z1 + np.sqrt(1 - rho**2) * z2) @ (rng.standard_normal((p, p)) + 3 * np.eye(p))
    return x, y, -0.5 * float(np.log1p(-rho**2).sum())


def _logdet(M):
    return np.linalg.slogdet(M)[1]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def bench_mi(n, dims, ksg_max_dim):
    print(f"\n## MI, n = {n}, canonical correlations linspace(0.8, 0.2, p) (nats; error = est - true)")
    print(f"{'p':>5} {'true':>8} | {'gauss-bc':>9} {'err':>7} {'s':>6} | {'plug-in':>8} {'err':>7} | "
          f"{'x-fit':>8} {'err%':>6} {'s':>6} {'headline':>12} | "
          f"{'KSG':>8} {'err':>7} {'s':>6} | {'sklearn':>8} {'err':>7} {'s':>6}")
    rng = np.random.default_rng(0)
    for p in dims:
        x, y, true = paired(n, np.linspace(0.8, 0.2, p), rng)
        est, t_g = timed(lambda x=x, y=y: GaussianMI(ksg_dims=0, folds=0).fit(x, y))
        cf, t_c = timed(lambda x=x, y=y: GaussianMI(ksg_dims=0, ci=None).fit(x, y))
        c = cf.crossfit_["mi"]
        row = (f"{p:>5} {true:>8.3f} | {est.mi_:>9.3f} {est.mi_ - true:>+7.3f} {t_g:>6.2f} | "
               f"{est.mi_plugin_:>8.3f} {est.mi_plugin_ - true:>+7.3f} | "
               f"{c:>8.3f} {100 * (c - true) / true:>+6.1f} {t_c:>6.2f} {cf.headline_:>12} | ")
        if p <= ksg_max_dim:
            k, t_k = timed(lambda x=x, y=y: ksg_mi(x, y))
            row += f"{k:>8.3f} {k - true:>+7.3f} {t_k:>6.2f} | "
        else:
            row += f"{'-':>8} {'-':>7} {'-':>6} | "
        if p == 1:
            s, t_s = timed(lambda x=x, y=y: mutual_info_regression(x, y[:, 0], n_neighbors=3, random_state=0)[0])
            row += f"{s:>8.3f} {s - true:>+7.3f} {t_s:>6.2f}"
        else:
            row += f"{'-':>8} {'-':>7} {'-':>6}"
        print(row, flush=True)


def spectrum_pairs(n, d=512, m=20, rho=0.8, isotropic=False, seed=0, shuffle=False):
    """Blocks shaped like real embeddings (variance of direction i ~ 1/i, or equal), ``m`` canonical
    correlations ``rho`` in the ``m`` highest-variance directions, random rotations; true MI."""
    from scipy.stats import ortho_group

    rng = np.random.default_rng(seed)
    var = np.ones(d) if isotropic else 1.0 / np.arange(1, d + 1)
    zx, e = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    zy = e.copy()
    zy[:, :m] = rho * zx[:, :m] + math.sqrt(1 - rho**2) * e[:, :m]
    X = (zx * np.sqrt(var)) @ ortho_group.rvs(d, random_state=seed + 1)
    Y = (zy * np.sqrt(var)) @ ortho_group.rvs(d, random_state=seed + 2)
    if shuffle:
        Y = Y[rng.permutation(n)]
    return X, Y, (0.0 if shuffle else -0.5 * m * math.log(1 - rho**2))


def _mi_line(tag, X, Y, true=None):
    res, t = timed(lambda: GaussianMI(ksg_dims=0, ci=None).fit(X, Y).result())
    cf = res.crossfit
    err = "" if not true else f" ({100 * (cf.mi - true) / true:+.0f}% of {true:.2f})"
    print(f"{tag:<34} cross-fitted {cf.mi:8.3f} [{cf.ci[0]:.3f}, {cf.ci[1]:.3f}]{err}; in-sample {res.mi:8.3f} "
          f"(ranks {res.rank_x} x {res.rank_y}); headline {res.headline}; (k, m) per fold "
          f"{sorted(set(cf.ranks))}; d_eff {res.effective_dims[0]:.0f} + {res.effective_dims[1]:.0f}; "
          f"detectable {res.detectable}; {t:.1f} s", flush=True)
    print(f"{'':<34} note: {res.note}", flush=True)


def bench_crossfit(n=500, d=512):
    print(f"\n## n close to d: cross-fitted MI, d_x = d_y = {d}, n = {n}, 20 canonical correlations of 0.8")
    for iso in (False, True):
        for shuffle in (False, True):
            X, Y, true = spectrum_pairs(n, d, isotropic=iso, shuffle=shuffle)
            _mi_line(f"{'isotropic' if iso else '1/i spectrum'}{', Y shuffled' if shuffle else ''}", X, Y, true)


def bench_flickr(sizes, cache):
    """Captions 1 and 2 of the same Flickr8k image (MiniLM), and the same with Y shuffled."""
    import csv
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "flickr8k" / "all_captions.txt"
    if not src.is_file():
        print(f"\n## Flickr8k caption pairs: skipped ({src} absent)")
        return
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    by_image: dict = {}
    with open(src, newline="") as fh:
        for row in csv.DictReader(fh):
            by_image.setdefault(row["image"], []).append(row["caption"])
    images = [k for k, v in by_image.items() if len(v) >= 2]
    files = [cache / f"minilm_caption{j + 1}.npy" for j in (0, 1)]
    if not all(f.is_file() for f in files):
        from whitenclip import load_encoder
        from whitenclip.encoders import embed

        enc = load_encoder("minilm", device="cpu")
        for j, f in enumerate(files):
            np.save(f, embed(enc, [by_image[i][j] for i in images], modality="text")[1])
    A, B = (np.load(f).astype(np.float64) for f in files)
    print(f"\n## Flickr8k: MiniLM embeddings of captions 1 and 2 of the same image (d = 384 + 384; cache {cache})")
    rng = np.random.default_rng(0)
    for n in sizes:
        idx = rng.choice(A.shape[0], n, replace=False)
        _mi_line(f"n = {n} images", A[idx], B[idx])
        _mi_line(f"n = {n} images, Y shuffled", A[idx], B[idx][np.random.default_rng(1).permutation(n)])


def bench_entropy(ns, dims, knn_max_dim):
    print("\n## Entropy of N(0, Sigma), Sigma = A A^T / d + 0.1 I (nats; error = est - true)")
    print(f"{'n':>6} {'d':>5} {'true':>9} | {'bias-corr err':>13} {'CI half':>7} {'s':>6} | "
          f"{'plug-in err':>11} | {'KL all d err':>12} {'s':>6}")
    rng = np.random.default_rng(1)
    for n in ns:
        for d in dims:
            A = rng.standard_normal((d, d)) / math.sqrt(d)
            cov = A @ A.T + 0.1 * np.eye(d)
            X = rng.standard_normal((n, d)) @ np.linalg.cholesky(cov).T
            true = 0.5 * (d * LOG_2PI_E + np.linalg.slogdet(cov)[1])
            est, t_e = timed(lambda X=X: GaussianEntropy(knn_dims=0).fit(X))
            half = 0.5 * (est.ci_[1] - est.ci_[0])
            row = (f"{n:>6} {d:>5} {true:>9.2f} | {est.entropy_ - true:>+13.2f} {half:>7.2f} {t_e:>6.2f} | "
                   f"{est.entropy_plugin_ - true:>+11.2f} | ")
            if d <= knn_max_dim:
                kl, t_k = timed(lambda X=X: knn_entropy(X))
                row += f"{kl - true:>+12.2f} {t_k:>6.2f}"
            else:
                row += f"{'-':>12} {'-':>6}"
            print(row, flush=True)


def bench_shrinkage(n, p, repeats=3):
    from sklearn import covariance

    print(f"\n## Shrinkage intensity, {n} pairs x ({p} + {p}) dims: whitenclip vs scikit-learn (same run)")
    rng = np.random.default_rng(3)
    x, y, _ = paired(n, np.linspace(0.9, 0.0, p), rng)
    J = np.hstack([x - x.mean(0), y - y.mean(0)])
    S = np.cov(J, rowvar=False)
    est = GaussianMI(shrinkage="oas", ksg_dims=0, ci=None)
    for method, ref_fn in (("ledoit-wolf", covariance.ledoit_wolf_shrinkage),
                           ("oas", lambda Z: covariance.oas(Z, assume_centered=True)[1])):
        est.shrinkage = method
        ours, theirs = [], []
        for _ in range(repeats):  # interleaved
            (a, _mus), t = timed(lambda: est._shrinkage(J, p, S))
            ours.append(t)

            def sk():
                var = np.diag(S)
                Z = J / np.sqrt(np.repeat([var[:p].mean(), var[p:].mean()], [p, p]))
                if method == "ledoit-wolf":
                    return ref_fn(Z, assume_centered=True)
                return ref_fn(Z)

            b, t = timed(sk)
            theirs.append(t)
        print(f"{method:>12}: whitenclip {a:.10f} in {min(ours):.3f} s, scikit-learn {b:.10f} in {min(theirs):.3f} s "
              f"(best of {repeats}); |diff| {abs(a - b):.1e}; scikit-learn / whitenclip time "
              f"{min(theirs) / max(min(ours), 1e-9):.0f}x (scikit-learn recomputes the covariance of the scaled rows; "
              "the fit already holds it)")


def bench_entropy_whitener(n, d, repeats=3):
    print(f"\n## entropy with and without a whitener (k-NN check on the rows' own PCs), n = {n}, d = {d}")
    rng = np.random.default_rng(4)
    X = rng.uniform(-1, 1, size=(n, d)) @ rng.standard_normal((d, d))
    wh = Whitener(method="pca").fit(X)
    plain_t, via_t = [], []
    for _ in range(repeats):  # interleaved
        plain, t = timed(lambda: GaussianEntropy().fit(X))
        plain_t.append(t)
        via, t = timed(lambda: GaussianEntropy(whitener=wh).fit(X))
        via_t.append(t)
    same = all(abs(plain.knn_[k] - via.knn_[k]) < 1e-8 for k in ("entropy", "gap"))
    print(f"entropy {plain.entropy_:.3f} / {via.entropy_:.3f} nats; k-NN gap {plain.knn_['gap']:.4f} / "
          f"{via.knn_['gap']:.4f} (equal: {same}); time best of {repeats}: {min(plain_t):.2f} s without, "
          f"{min(via_t):.2f} s with the whitener -> ratio {min(via_t) / min(plain_t):.2f}x")


def bench_acceptance(n=40_000, p=384):
    print(f"\n## Acceptance: MI on {n} pairs x ({p} + {p}) dims, CLI defaults")
    rng = np.random.default_rng(2)
    x, y, true = paired(n, np.linspace(0.9, 0.0, p), rng)

    def numpy_plugin():
        S = np.cov(np.hstack([x, y]), rowvar=False)
        return 0.5 * (_logdet(S[:p, :p]) + _logdet(S[p:, p:]) - _logdet(S))

    runs = []
    for _ in range(3):  # interleaved, so both see the same machine load
        ref, t_ref = timed(numpy_plugin)
        est, t = timed(lambda: GaussianMI().fit(x, y))
        runs.append((t, t_ref))
    _, t_pmi = timed(lambda: est.pointwise(x, y))
    print(f"true MI {true:.3f} nats; whitenclip {est.mi_:.3f} (plug-in {est.mi_plugin_:.3f}), "
          f"95% CI [{est.ci_[0]:.3f}, {est.ci_[1]:.3f}], KSG top-2 {est.ksg_['mi']:.3f} vs Gaussian "
          f"{est.ksg_['gaussian_mi']:.3f}")
    t, t_ref = min(r[0] for r in runs), min(r[1] for r in runs)
    print(f"GaussianMI().fit: best {t:.2f} s, worst {max(r[0] for r in runs):.2f} s of 3 (target < 10 s); "
          f"numpy plug-in (np.cov + 3 slogdet; no CI, no correction) best {t_ref:.2f} s -> ratio "
          f"{t / t_ref:.1f}x; pointwise MI of all pairs {t_pmi:.2f} s; load average {os.getloadavg()[0]:.1f}")
    print(f"numpy plug-in value {ref:.3f} (== our plug-in: {abs(ref - est.mi_plugin_) < 1e-6})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, seconds, no timing claims")
    ap.add_argument("--flickr-cache", default="/tmp/whitenclip-bench-flickr",
                    help="where the MiniLM embeddings of the Flickr8k captions are kept between runs")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; numpy {np.__version__}; "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.quick:
        print("--quick: smoke run on tiny sizes; the times printed mean nothing")
        bench_mi(1000, [1, 2], ksg_max_dim=2)
        bench_entropy([500], [8], knn_max_dim=8)
        bench_shrinkage(500, 16, repeats=1)
        bench_entropy_whitener(500, 16, repeats=1)
        bench_acceptance(2000, 16)
        bench_crossfit(120, 32)
    else:
        bench_crossfit()
        bench_flickr([300, 1000, 4000], args.flickr_cache)
        bench_mi(10_000, [1, 2, 4, 16, 64, 256], ksg_max_dim=16)
        bench_entropy([1000, 5000], [16, 64, 256, 768], knn_max_dim=16)
        bench_shrinkage(10_000, 384)
        bench_entropy_whitener(5000, 768)
        bench_acceptance()


if __name__ == "__main__":
    main()
