"""The settings of ``whitenclip simulate``: the names it knows (losses, data, encoders, metrics),
its limits, :class:`SimulationConfig` and its validation (:func:`make_config`)."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np

from whitenclip.errors import InputError
from whitenclip.results import Result

LOSSES = ("infonce", "aninfonce", "icon-tdist", "icon-label", "supervised", "untrained")
"""The default losses (all six of the issue)."""
EXTRA_LOSSES = ("aninfonce-sphere",)
"""Opt-in variants: ``aninfonce-sphere`` is AnInfoNCE on ``f(x)/(||f(x)|| sqrt(tau))`` (scale fixed)."""
DATASETS = ("gmm", "laplace", "binary", "digits")
LABELS = ("latent", "random")
ENCODERS = ("mlp", "linear", "cnn")
"""``mlp``: in-hidden-hidden-dim ReLU MLP; ``linear``: f(x) = W x (no bias); ``cnn``: two convs (digits only)."""
MIXINGS = ("mlp", "none")
"""How synthetic latents are observed: through a random invertible MLP g, or directly (x = z)."""
PRESETS = ("iclr2026",)
METRICS = ("norm_mean", "norm_cv", "ad_mean", "ad_pass", "dp_mean", "dp_pass", "w_norm_cv", "w_ad_mean", "w_ad_pass",
           "w_dp_mean", "w_dp_pass", "rank", "r2", "probe_acc", "train_loss", "z_norm_cv", "ad_pass_feature",
           "dp_pass_feature", "f_ad_mean", "f_ad_pass")
"""Keys of every run's metric history (None where a metric does not apply)."""

MAX_SEEDS = 64
"""Most seeds one run accepts (each seed trains every loss)."""
MAX_BATCH_BYTES = 2 * 1024**3
"""Largest working memory of one training step (the (2B, 2B) similarity matrices) accepted."""
N_CLASSES = 10
GMM_COMPONENTS = 10
TRIALS, SUBSET = 10, 500
DIGITS_HELDOUT = 599
DIGITS_TRAIN = 1797 - DIGITS_HELDOUT


@dataclasses.dataclass(frozen=True)
class SimulationConfig(Result):
    """The settings of one :func:`simulate` call (validated by :func:`make_config`)."""

    data: str = "gmm"
    latent_dim: int = 32
    dim: int = 64
    losses: tuple = LOSSES
    steps: int = 500
    batch_size: int = 256
    tau: float = 0.1
    seeds: int = 3
    lr: float = 1e-3
    hidden: int = 256
    n_eval: int = 5000
    evals: int = 10
    labels: str = "latent"
    device: str = "cpu"
    encoder: str = "mlp"
    mixing: str = "mlp"
    sparsity: float = 0.1
    train_size: int | None = None
    epochs: int | None = None
    eval_epochs: tuple | None = None

    @property
    def steps_per_epoch(self) -> int | None:
        """Optimiser steps in one pass over the fixed training set (the last partial batch is dropped)."""
        return None if self.epochs is None else self.train_size // self.batch_size

    @property
    def eval_steps(self) -> tuple[int, ...]:
        """Steps at which metrics are taken: 0 and ``evals`` evenly spaced steps up to ``steps``;
        with an epoch schedule, ``eval_epochs`` times the steps per epoch."""
        if self.epochs is not None:
            return tuple(e * self.steps_per_epoch for e in self.eval_epochs)
        return tuple(int(s) for s in np.unique(np.round(np.linspace(0, self.steps, self.evals + 1)).astype(int)))

    def to_dict(self) -> dict:
        return {**super().to_dict(), "eval_steps": list(self.eval_steps), "steps_per_epoch": self.steps_per_epoch}


# ---------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------
def parse_losses(spec) -> tuple[str, ...]:
    """``"infonce,supervised"`` (or a list) as a tuple of known loss names, order kept, no repeats."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip().lower() for n in names if n.strip()]
    if not names:
        raise InputError(f"--losses: give at least one of {', '.join(LOSSES)}")
    for n in names:
        if n not in LOSSES + EXTRA_LOSSES:
            raise InputError(f"--losses: unknown loss {n!r}; expected some of {', '.join(LOSSES + EXTRA_LOSSES)}")
    return tuple(dict.fromkeys(names))


def parse_eval_epochs(spec, epochs: int) -> tuple[int, ...]:
    """``"0,50,100"`` (or a list) as sorted distinct epochs in [0, epochs]; one-line InputError otherwise."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = set()
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            value = int(text)
        except ValueError:
            raise InputError(f"--eval-epochs: {text!r} is not an integer epoch") from None
        if not 0 <= value <= epochs:
            raise InputError(f"--eval-epochs: epoch {value} is outside 0..{epochs} (--epochs {epochs})")
        out.add(value)
    if not out:
        raise InputError("--eval-epochs: give at least one epoch, e.g. 0,50,100")
    return tuple(sorted(out | {0}))


def make_config(*, data: str = "gmm", latent_dim: int = 32, dim: int = 64, losses=LOSSES, steps: int | None = None,
                batch_size: int = 256, tau: float = 0.1, seeds: int = 3, lr: float = 1e-3, hidden: int = 256,
                n_eval: int = 5000, evals: int = 10, labels: str = "latent", device: str = "auto",
                encoder: str | None = None, mixing: str = "mlp", sparsity: float = 0.1, train_size: int | None = None,
                epochs: int | None = None, eval_epochs=None) -> SimulationConfig:
    """A validated :class:`SimulationConfig`; bad values raise :class:`~whitenclip.errors.InputError` (one line).

    Schedules: ``steps`` (default 500) draws fresh rows every step; ``epochs`` trains over a fixed
    set of ``train_size`` rows (default 10000 synthetic, the 1198 training images for digits),
    ``train_size // batch_size`` steps per epoch, and evaluates at ``eval_epochs`` (default:
    ``evals`` evenly spaced epochs; epoch 0 always). The two schedules exclude each other.
    """
    data = str(data).lower()
    if data not in DATASETS:
        raise InputError(f"--data: unknown data {data!r}; expected one of {', '.join(DATASETS)}")
    if labels not in LABELS:
        raise InputError(f"--labels: unknown labels {labels!r}; expected one of {', '.join(LABELS)}")
    encoder = ("cnn" if data == "digits" else "mlp") if encoder in (None, "", "auto") else str(encoder).lower()
    if encoder not in ENCODERS:
        raise InputError(f"--encoder: unknown encoder {encoder!r}; expected one of {', '.join(ENCODERS)}")
    if encoder == "cnn" and data != "digits":
        raise InputError(f"--encoder cnn needs image inputs (--data digits), not --data {data}")
    if mixing not in MIXINGS:
        raise InputError(f"--mixing: unknown mixing {mixing!r}; expected one of {', '.join(MIXINGS)}")
    if not (isinstance(sparsity, (int, float)) and 0 < sparsity < 1):
        raise InputError(f"--sparsity must be in (0, 1), got {sparsity}")
    if epochs is None:
        if train_size is not None:
            raise InputError("--train-size needs --epochs (the step schedule draws fresh rows every step)")
        if eval_epochs is not None:
            raise InputError("--eval-epochs needs --epochs")
        steps = 500 if steps is None else steps
    else:
        if steps is not None:
            raise InputError("--steps and --epochs exclude each other: give one schedule")
        if not isinstance(epochs, (int, np.integer)) or epochs < 1:
            raise InputError(f"--epochs must be a positive integer, got {epochs}")
        if train_size is None:
            train_size = DIGITS_TRAIN if data == "digits" else 10_000
        if not isinstance(train_size, (int, np.integer)) or train_size < 1:
            raise InputError(f"--train-size must be a positive integer, got {train_size}")
        if data == "digits" and train_size > DIGITS_TRAIN:
            raise InputError(f"--train-size {train_size}: digits has {DIGITS_TRAIN} training images")
        if train_size < batch_size:
            raise InputError(f"--train-size {train_size} is smaller than --batch-size {batch_size} "
                             "(an epoch would have no full batch)")
        if eval_epochs is None:
            eval_epochs = tuple(int(e) for e in np.unique(np.round(np.linspace(0, epochs, evals + 1)).astype(int)))
        else:
            eval_epochs = parse_eval_epochs(eval_epochs, int(epochs))
        steps = int(epochs) * (int(train_size) // int(batch_size))
    for name, value in (("--latent-dim", latent_dim), ("--dim", dim), ("--steps", steps),
                        ("--batch-size", batch_size), ("--seeds", seeds), ("--hidden", hidden),
                        ("--n-eval", n_eval), ("--evals", evals)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value}")
    for name, value in (("--tau", tau), ("--lr", lr)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise InputError(f"{name} must be a positive finite number, got {value}")
    if batch_size < 2:
        raise InputError(f"--batch-size must be at least 2 (contrastive losses need negatives), got {batch_size}")
    if dim < 2:
        raise InputError(f"--dim must be at least 2 (the metrics use L2-normalised rows: in 1 dimension every "
                         f"row is +1 or -1), got {dim}")
    if seeds > MAX_SEEDS:
        raise InputError(f"--seeds {seeds}: at most {MAX_SEEDS} (each seed trains every loss)")
    step_bytes = 12 * (2 * batch_size) ** 2 * 4 + 8 * 2 * batch_size * max(hidden, dim) * 4
    if step_bytes > MAX_BATCH_BYTES:
        raise InputError(f"--batch-size {batch_size}: a training step would need ~{step_bytes / 1024**3:.1f} GiB "
                         f"(limit {MAX_BATCH_BYTES / 1024**3:.0f} GiB); use a smaller batch")
    eval_bytes = seeds * 3 * n_eval * (latent_dim + dim + hidden) * 8
    if eval_bytes > MAX_BATCH_BYTES:
        raise InputError(f"--seeds {seeds} x --n-eval {n_eval}: held-out sets would need "
                         f"~{eval_bytes / 1024**3:.1f} GiB; use fewer seeds or rows")
    if data == "digits" and latent_dim != 32:
        warnings.warn("--latent-dim is ignored for --data digits (the latent is the image)", stacklevel=2)
    if n_eval < SUBSET:
        raise InputError(f"--n-eval must be at least {SUBSET} (rows per Gaussianity-test subset), got {n_eval}")
    return SimulationConfig(data=data, latent_dim=int(latent_dim), dim=int(dim), losses=parse_losses(losses),
                            steps=int(steps), batch_size=int(batch_size), tau=float(tau), seeds=int(seeds),
                            lr=float(lr), hidden=int(hidden), n_eval=int(n_eval), evals=int(evals), labels=labels,
                            device=_device_name(device), encoder=encoder, mixing=mixing, sparsity=float(sparsity),
                            train_size=None if epochs is None else int(train_size),
                            epochs=None if epochs is None else int(epochs),
                            eval_epochs=None if epochs is None else tuple(eval_epochs))


def _device_name(device: str) -> str:
    """``auto``/``cpu``/``cuda[:N]`` checked by :func:`whitenclip.encoders.resolve_device`, as a string."""
    from whitenclip.encoders import resolve_device

    return str(resolve_device(device))
