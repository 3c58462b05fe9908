"""Time the default `whitenclip simulate` run against a bare training loop of the same networks.

Peer: a plain torch loop that trains the same MLP (k-256-256-dim) with NT-Xent for the same total
number of steps (losses x seeds x steps), with no data generation through g, no metrics and no
bookkeeping. The ratio simulate / peer says what the experiment around the training costs.

    python benchmarks/bench_simulate.py            # the default run: gmm, six losses, 500 steps, 3 seeds
    python benchmarks/bench_simulate.py --quick    # smoke run (seconds, no timing claims)
    python benchmarks/bench_simulate.py --json-out run.json   # also keep the full result
    python benchmarks/bench_simulate.py --preset   # `simulate --preset iclr2026` against a bare loop of its steps
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _timed_loop(net, total_steps: int, k: int, batch: int, tau: float, lr: float, noise: float) -> tuple[float, float]:
    """Train `net` with NT-Xent and Adam on Gaussian inputs and Gaussian-noise views; (wall, CPU) seconds."""
    import torch

    from whitenclip.losses import info_nce

    opt = torch.optim.Adam(net.parameters(), lr)
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(total_steps):
        x = torch.randn(batch, k)
        loss = info_nce(net(x), net(x + noise * torch.randn(batch, k)), tau)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - w0, time.process_time() - c0


def bare_loop(total_steps: int, k: int, dim: int, batch: int, tau: float) -> tuple[float, float]:
    """The default run's training steps alone: the k-256-256-dim MLP."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(k, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(),
                              torch.nn.Linear(256, dim))
    return _timed_loop(net, total_steps, k, batch, tau, lr=1e-3, noise=0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke run")
    ap.add_argument("--json-out", type=Path, help="write the simulation result as JSON here")
    ap.add_argument("--data", default="gmm")
    ap.add_argument("--preset", action="store_true", help="time `simulate --preset iclr2026` (the 5-minute claim)")
    args = ap.parse_args()
    if args.preset:
        return preset_main(args)

    import torch

    from whitenclip.render import render, to_json
    from whitenclip.simulate import make_config, simulate

    if args.quick:
        cfg = make_config(data=args.data, losses="infonce,supervised,untrained", steps=20, seeds=1, n_eval=600,
                          evals=2, device="cpu")
    else:
        cfg = make_config(data=args.data, device="cpu")
    torch.set_num_threads(1)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}, 1 thread", flush=True)
    result = simulate(cfg, threads=1)
    trained = sum(1 for loss in cfg.losses if loss != "untrained")
    peer_wall, peer_cpu = bare_loop(trained * cfg.seeds * cfg.steps, cfg.latent_dim, cfg.dim, cfg.batch_size, cfg.tau)
    render(result, "table")
    print(f"simulate ({len(cfg.losses)} losses x {cfg.seeds} seeds x {cfg.steps} steps, {len(cfg.eval_steps)} evals): "
          f"{result.wall_seconds:.1f} s wall, {result.cpu_seconds:.1f} s CPU")
    print(f"peer (bare NT-Xent loop, {trained * cfg.seeds * cfg.steps} steps): {peer_wall:.1f} s wall, "
          f"{peer_cpu:.1f} s CPU")
    if not args.quick:
        print(f"ratio simulate / peer: {result.wall_seconds / peer_wall:.2f} wall, "
              f"{result.cpu_seconds / peer_cpu:.2f} CPU")
    for run in result.runs:
        print(f"  {run.loss:<11} seed {run.seed}: {run.seconds:6.1f} s wall {run.cpu_seconds:6.1f} s CPU  "
              f"AD pass {run.initial('ad_pass'):.3f} -> {run.final('ad_pass'):.3f}  "
              f"white {run.initial('w_ad_pass'):.3f} -> {run.final('w_ad_pass'):.3f}"
              + (f"  Lambda max/min {run.extra['lambda_ratio']:.2f}, mean ||f|| {run.final('norm_mean'):.1f}"
                 if "lambda" in run.extra else ""))
    if args.json_out:
        args.json_out.write_text(to_json(result) + "\n")


def bare_linear_loop(total_steps: int, k: int, dim: int, batch: int, tau: float, lr: float) -> tuple[float, float]:
    """The preset's synthetic training steps alone: a bias-free linear map, NT-Xent, Adam, Gaussian-noise views."""
    import torch

    torch.manual_seed(0)
    return _timed_loop(torch.nn.Linear(k, dim, bias=False), total_steps, k, batch, tau, lr=lr, noise=0.3)


def preset_main(args) -> None:
    """Time the preset (every data set, 3 seeds) and a bare loop of its synthetic steps; print the table."""
    import torch

    from whitenclip.render import render, to_json
    from whitenclip.simulate import PRESET_SYNTHETIC, preset_configs, run_preset

    torch.set_num_threads(1)
    configs = preset_configs("iclr2026", seeds=2 if args.quick else 3, device="cpu", smoke=args.quick)
    load0 = os.getloadavg()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load0[0]:.1f} {load0[1]:.1f} "
          f"{load0[2]:.1f}; torch {torch.__version__}, 1 thread" + (" (--quick: smoke sizes, no timing claims)"
                                                                    if args.quick else ""), flush=True)
    result = run_preset("iclr2026", configs=configs, threads=1)
    render(result, "table")
    cfg = configs["laplace"]
    steps = 3 * cfg.seeds * cfg.steps
    peer_wall, peer_cpu = bare_linear_loop(steps, cfg.latent_dim, cfg.dim, cfg.batch_size, cfg.tau,
                                           PRESET_SYNTHETIC["lr"])
    load1 = os.getloadavg()
    print(f"preset: {result.wall_seconds:.1f} s wall, {result.cpu_seconds:.1f} s CPU; "
          f"peer (bare linear NT-Xent loop, {steps} steps): {peer_wall:.1f} s wall, {peer_cpu:.1f} s CPU; "
          f"load average at the end {load1[0]:.1f} {load1[1]:.1f} {load1[2]:.1f}")
    for res in result.results:
        secs = sum(r.seconds for r in res.runs)
        print(f"  {res.config.data:<8} {len(res.runs)} runs, {secs:.1f} s wall, "
              f"{sum(r.cpu_seconds for r in res.runs):.1f} s CPU")
    if args.json_out:
        args.json_out.write_text(to_json(result) + "\n")


if __name__ == "__main__":
    main()
