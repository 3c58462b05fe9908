"""The simulate command: train small encoders on generated data and follow the Gaussianity of their
embeddings along training."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from whitenclip.cli.base import _given_options, _handles_errors, _log, _render, _state
from whitenclip.cli.options import DebugOpt, QuietOpt
from whitenclip.errors import InputError


@_handles_errors
def simulate(
    data: str = typer.Option("gmm", "--data",
                             help="gmm, laplace, binary (generated latents) or digits (scikit-learn 8x8 images)."),
    latent_dim: int = typer.Option(32, "--latent-dim", help="Dimension k of the generated latent z."),
    dim: int = typer.Option(64, "--dim", help="Embedding dimension of the encoders."),
    losses: str = typer.Option("infonce,aninfonce,icon-tdist,icon-label,supervised,untrained", "--losses",
                               help="Comma-separated: infonce, aninfonce, icon-tdist, icon-label, supervised, "
                                    "untrained (aninfonce-sphere: opt-in)."),
    steps: Optional[int] = typer.Option(None, "--steps",
                                        help="Training steps per run, fresh rows every step (default 500)."),
    encoder: str = typer.Option("auto", "--encoder", help="mlp, linear (f(x) = Wx) or cnn (digits); "
                                                          "auto: cnn for digits, mlp otherwise."),
    mixing: str = typer.Option("mlp", "--mixing", help="Synthetic inputs: mlp (x = g(z), random invertible MLP) "
                                                       "or none (x = z)."),
    sparsity: float = typer.Option(0.1, "--sparsity", help="Probability of a 1 in --data binary."),
    train_size: Optional[int] = typer.Option(None, "--train-size",
                                             help="Rows of the fixed training set of --epochs (default 10000; "
                                                  "digits: its 1198 training images)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Train EPOCHS passes over a fixed training set "
                                                                "(instead of --steps)."),
    eval_epochs: Optional[str] = typer.Option(None, "--eval-epochs",
                                              help="Comma-separated epochs to evaluate at, e.g. 0,50,100 "
                                                   "(default: --evals evenly spaced)."),
    preset: Optional[str] = typer.Option(None, "--preset",
                                         help="iclr2026: the paper's synthetic table (and the digits stand-in for "
                                              "CIFAR-10) beside ours; fixes every setting but --seeds."),
    batch_size: int = typer.Option(256, "--batch-size", help="Pairs per training step."),
    tau: float = typer.Option(0.1, "--tau", help="Temperature of InfoNCE and of I-Con's Gaussian kernel."),
    seeds: int = typer.Option(3, "--seeds", help="Seeds 0..N-1 (a fresh task and encoder init per seed)."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate."),
    evals: int = typer.Option(10, "--evals", help="Metric evaluations after step 0 (evenly spaced)."),
    n_eval: int = typer.Option(5000, "--n-eval", help="Held-out rows the metrics are computed on (synthetic data)."),
    labels: str = typer.Option("latent", "--labels",
                               help="latent (component / argmax of z) or random (unlearnable)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    threads: int = typer.Option(1, "--threads", min=1,
                                help="CPU threads for torch and BLAS (1 is fastest for these small models)."),
    save_embeddings: Optional[Path] = typer.Option(None, "--save-embeddings",
                                                   help="Write DIR/<loss>/seed<S>/ stores of the final held-out "
                                                        "embeddings."),
    out: Optional[Path] = typer.Option(None, "--output", "-o",
                                       help="Write simulate.html (curves) and simulate.json into this directory."),
    out_alias: Optional[Path] = typer.Option(None, "--out", hidden=True),
    as_json: bool = typer.Option(False, "--json", help="Print the whole result as one JSON object on stdout."),
    _quiet: bool = QuietOpt, _debug: bool = DebugOpt,
) -> None:
    """Train small encoders with InfoNCE, AnInfoNCE, I-Con and cross-entropy on generated data.

    Reports the Gaussianity metrics of their embeddings along training (the paper's table).
    """
    from whitenclip.outputs import check_output_dir, check_output_tree
    from whitenclip.render import write_html
    from whitenclip.simulate import make_config
    from whitenclip.simulate import simulate as run_simulation

    out = out if out is not None else out_alias
    progress = not _state["quiet"]  # a bar on a terminal, plain lines at a steady cadence otherwise
    if preset is not None:
        from whitenclip.simulate import preset_configs, run_preset

        if out is not None or save_embeddings is not None:
            raise InputError("--preset prints its table (or --json); -o and --save-embeddings are not supported")
        fixed = _given_options(("preset", "seeds", "device", "threads", "as_json", "_quiet", "_debug"))
        if fixed:
            raise InputError(f"--preset {preset} fixes every setting but --seeds, --device and --threads; "
                             f"drop {', '.join(fixed)}")
        configs = preset_configs(preset, seeds=seeds, device=device)
        _log(f"simulate --preset {preset}: {len(configs)} data sets x {seeds} seeds (laplace, gmm, binary: "
             "linear encoder; digits: CNN, infonce and supervised)")
        result = run_preset(preset, configs=configs, progress=progress, threads=threads)
        _log(f"simulate: {result.wall_seconds:.1f} s wall, {result.cpu_seconds:.1f} s CPU")
        _render(result, "json" if as_json else "table")
        return
    for directory in (out, save_embeddings):
        if directory is not None:
            check_output_dir(directory)
    if out is not None and save_embeddings is not None:  # the page's files must not land in (or over) the stores
        check_output_tree(out, inputs=[save_embeddings], what="the --save-embeddings folder")
    config = make_config(data=data, latent_dim=latent_dim, dim=dim, losses=losses, steps=steps, batch_size=batch_size,
                         tau=tau, seeds=seeds, lr=lr, evals=evals, n_eval=n_eval, labels=labels, device=device,
                         encoder=encoder, mixing=mixing, sparsity=sparsity, train_size=train_size, epochs=epochs,
                         eval_epochs=eval_epochs)
    if save_embeddings is not None:  # before the first log line: a refusal is the only line on stderr
        from whitenclip.simulate import check_store_dirs

        check_store_dirs(save_embeddings, config)
    _log(f"simulate: {len(config.losses)} loss(es) x {config.seeds} seed(s), {config.steps} steps on {config.data} "
         f"({config.encoder} encoder), "
         f"device {config.device}")
    result = run_simulation(config, save_embeddings=save_embeddings, progress=progress, threads=threads)
    _log(f"simulate: {result.wall_seconds:.1f} s wall, {result.cpu_seconds:.1f} s CPU")
    if out is not None:
        written = write_html(result, out)
        _log(f"wrote {written['html']} and {written['json']}")
    if save_embeddings is not None:
        _log(f"wrote {len(result.stores)} embedding stores under {save_embeddings} "
             f"(try: whitenclip gaussianity-report {save_embeddings}/{config.losses[0]}/seed0)")
    _render(result, "json" if as_json else "table")
