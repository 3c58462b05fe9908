"""Train small encoders with InfoNCE-family losses on generated data and watch Gaussianity appear.

*InfoNCE induces a Gaussian distribution* (ICLR 2026) shows that contrastive training drives
features towards a Gaussian while supervised training does not. :func:`simulate` reproduces the
experiment offline: it generates data, trains one encoder per (loss, seed) and, at a schedule of
steps (step 0 included), measures the paper's metrics with whitenclip's own diagnostics
(:func:`whitenclip.diagnostics.coordinate_tests`, :func:`~whitenclip.diagnostics.chi_cv`,
:class:`whitenclip.whitening.Whitener`).

Data (seeded; one task per seed):

* synthetic latents ``z`` in R^k: ``gmm`` (10 components, means N(0, I), unit covariance; label =
  component), ``laplace`` (iid Laplace(0, 1)) or ``binary`` (iid Bernoulli(0.1)); for the last
  two the label is ``argmax(z[:, :10])``. ``labels="random"`` replaces labels by uniform draws
  independent of z (unlearnable labels). Observations ``x = g(z)`` through a random invertible
  leaky-ReLU MLP (3 square layers, unit-norm columns, each layer re-drawn until its condition
  number is below the 25th percentile of 100 draws, as in the cl-ica / AnInfoNCE experiments);
  positives ``z' = z + N(0, diag(1/lambda))``, ``lambda = linspace(5, 25, k)``.
* ``digits``: scikit-learn's 8x8 digits (1797 images); two views by random shift (<= 1 px),
  rotation (<= 10 degrees) and Gaussian pixel noise (sd 0.1); label = digit. One third of the
  images (599) is held out.

Metrics (on the L2-normalised embedding ``e = f(x)/||f(x)||`` of held-out rows; ``w`` its
whitened coordinates under a PCA whitener fitted on those rows):

* ``norm_mean``, ``norm_cv``: mean and CV of ``||f(x)||`` (raw encoder output); ``w_norm_cv``: CV of ``||w||``, against
  ``chi_cv(rank)`` for an exact Gaussian;
* ``ad_mean, ad_pass, dp_mean, dp_pass`` (raw coordinates of e) and ``w_*`` (whitened): the
  per-coordinate protocol of :func:`~whitenclip.diagnostics.coordinate_tests` (10 subsets of 500
  rows, AD pass at A2 < 0.752, DP pass at p > 0.05);
* ``r2`` (synthetic only): held-out R^2 of the least-squares affine map e -> z fitted on 5000
  other rows (mean over the k latent coordinates); ``probe_acc``: held-out accuracy of a
  least-squares (ridge 1e-3) linear classifier e -> one-hot label fitted on the same rows.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from whitenclip.errors import InputError
from whitenclip.results import Result, json_safe

LOSSES = ("infonce", "aninfonce", "icon-tdist", "icon-label", "supervised", "untrained")
"""The default losses (all six of the issue)."""
EXTRA_LOSSES = ("aninfonce-sphere",)
"""Opt-in variants: ``aninfonce-sphere`` is AnInfoNCE on ``f(x)/(||f(x)|| sqrt(tau))`` (scale fixed)."""
DATASETS = ("gmm", "laplace", "binary", "digits")
LABELS = ("latent", "random")
METRICS = ("norm_mean", "norm_cv", "ad_mean", "ad_pass", "dp_mean", "dp_pass", "w_norm_cv", "w_ad_mean", "w_ad_pass",
           "w_dp_mean", "w_dp_pass", "rank", "r2", "probe_acc", "train_loss")
"""Keys of every run's metric history (None where a metric does not apply)."""

MAX_SEEDS = 64
"""Most seeds one run accepts (each seed trains every loss)."""
MAX_BATCH_BYTES = 2 * 1024**3
"""Largest working memory of one training step (the (2B, 2B) similarity matrices) accepted."""
N_CLASSES = 10
GMM_COMPONENTS = 10
TRIALS, SUBSET = 10, 500
DIGITS_HELDOUT = 599


# ---------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------
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

    @property
    def eval_steps(self) -> tuple[int, ...]:
        """Steps at which metrics are taken: 0 and ``evals`` evenly spaced steps up to ``steps``."""
        return tuple(int(s) for s in np.unique(np.round(np.linspace(0, self.steps, self.evals + 1)).astype(int)))

    def to_dict(self) -> dict:
        return {**super().to_dict(), "eval_steps": list(self.eval_steps)}


@dataclasses.dataclass(frozen=True)
class RunHistory(Result):
    """Metrics of one (loss, seed) run at each evaluated step.

    ``metrics[name][i]`` is the value at ``steps[i]`` (None where it does not apply); ``extra``
    holds loss-specific final state (AnInfoNCE's learned ``Lambda``).
    """

    loss: str
    seed: int
    steps: tuple
    metrics: dict
    seconds: float
    cpu_seconds: float
    extra: dict = dataclasses.field(default_factory=dict)

    def final(self, name: str):
        """The metric's value at the last evaluated step."""
        return self.metrics[name][-1]

    def initial(self, name: str):
        """The metric's value at step 0."""
        return self.metrics[name][0]


@dataclasses.dataclass(frozen=True)
class SimulationResult(Result):
    """Every run's metric history, the exact-Gaussian references and where embeddings were saved.

    ``reference``: ``ad_pass``, ``dp_pass``, ``ad_mean``, ``dp_mean`` of an exact Gaussian under
    the same protocol, ``w_norm_cv`` = chi_cv(d) for the embedding dim d.
    """

    config: SimulationConfig
    runs: tuple
    reference: dict
    wall_seconds: float
    cpu_seconds: float
    stores: dict = dataclasses.field(default_factory=dict)

    def summary(self) -> dict:
        """``{loss: {metric: {mean, sd, min, max, n, initial_mean}}}`` over seeds, at the final step.

        ``sd`` is the sample standard deviation (ddof=1; 0 for one seed).
        """
        out: dict = {}
        for loss in self.config.losses:
            runs = [r for r in self.runs if r.loss == loss]
            out[loss] = {}
            for name in METRICS:
                vals = np.array([r.final(name) for r in runs if r.final(name) is not None], dtype=float)
                init = np.array([r.initial(name) for r in runs if r.initial(name) is not None], dtype=float)
                if vals.size == 0:
                    out[loss][name] = None
                    continue
                out[loss][name] = {"mean": float(vals.mean()), "sd": float(vals.std(ddof=1)) if vals.size > 1 else 0.0,
                                   "min": float(vals.min()), "max": float(vals.max()), "n": int(vals.size),
                                   "values": vals.tolist(),
                                   "initial_mean": float(init.mean()) if init.size else None}
        return out

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "reference": json_safe(self.reference),
                "summary": json_safe(self.summary()), "runs": [r.to_dict() for r in self.runs],
                "wall_seconds": self.wall_seconds, "cpu_seconds": self.cpu_seconds, "stores": dict(self.stores)}


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


def make_config(*, data: str = "gmm", latent_dim: int = 32, dim: int = 64, losses=LOSSES, steps: int = 500,
                batch_size: int = 256, tau: float = 0.1, seeds: int = 3, lr: float = 1e-3, hidden: int = 256,
                n_eval: int = 5000, evals: int = 10, labels: str = "latent", device: str = "auto") -> SimulationConfig:
    """A validated :class:`SimulationConfig`; bad values raise :class:`~whitenclip.errors.InputError` (one line)."""
    data = str(data).lower()
    if data not in DATASETS:
        raise InputError(f"--data: unknown data {data!r}; expected one of {', '.join(DATASETS)}")
    if labels not in LABELS:
        raise InputError(f"--labels: unknown labels {labels!r}; expected one of {', '.join(LABELS)}")
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
                            device=_device_name(device))


def _device_name(device: str) -> str:
    """``auto``/``cpu``/``cuda[:N]`` checked by :func:`whitenclip.encoders.resolve_device`, as a string."""
    from whitenclip.encoders import resolve_device

    return str(resolve_device(device))


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------
def invertible_mlp(k: int, rng: np.random.Generator, *, layers: int = 3, slope: float = 0.2,
                   probe_draws: int = 100) -> Callable[[np.ndarray], np.ndarray]:
    """A random invertible map g: R^k -> R^k, ``g = W_L o leaky o ... o leaky o W_1`` (float64).

    Each W_l is (k, k) with U(-1, 1) entries and unit-norm columns, re-drawn until its condition
    number is below the 25th percentile of ``probe_draws`` draws; leaky-ReLU slope ``slope``.
    """

    def draw():
        W = rng.uniform(-1.0, 1.0, (k, k))
        return W / np.linalg.norm(W, axis=0, keepdims=True)

    threshold = np.quantile([np.linalg.cond(draw()) for _ in range(probe_draws)], 0.25)
    weights = []
    for _ in range(layers):
        W = draw()
        while np.linalg.cond(W) > threshold:
            W = draw()
        weights.append(W)

    def g(z: np.ndarray) -> np.ndarray:
        h = z
        for i, W in enumerate(weights):
            h = h @ W
            if i < len(weights) - 1:
                h = np.where(h > 0, h, slope * h)
        return h

    return g


class SyntheticTask:
    """Latent z, labels, observations x = g(z) and positive views x' = g(z + N(0, diag(1/lambda))).

    ``sample(n, rng)`` returns float64 arrays ``x (n, k), x_pos (n, k), z (n, k), y (n,)``.
    """

    def __init__(self, kind: str, k: int, seed: int, labels: str = "latent"):
        self.kind, self.k, self.labels = kind, k, labels
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x51A7]))
        self.means = rng.standard_normal((GMM_COMPONENTS, k))
        self.lam = np.linspace(5.0, 25.0, k)
        self.g = invertible_mlp(k, rng)
        self.n_classes = GMM_COMPONENTS if kind == "gmm" else min(N_CLASSES, k)
        self.in_shape = (k,)

    def latent(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "gmm":
            y = rng.integers(0, GMM_COMPONENTS, n)
            z = self.means[y] + rng.standard_normal((n, self.k))
        elif self.kind == "laplace":
            z = rng.laplace(0.0, 1.0, (n, self.k))
            y = np.argmax(z[:, :self.n_classes], axis=1)
        else:
            z = (rng.random((n, self.k)) < 0.1).astype(np.float64)
            y = np.argmax(z[:, :self.n_classes] + 1e-3 * rng.random((n, self.n_classes)), axis=1)
        if self.labels == "random":
            y = rng.integers(0, self.n_classes, n)
        return z, y

    def sample(self, n: int, rng: np.random.Generator):
        z, y = self.latent(n, rng)
        z_pos = z + rng.standard_normal(z.shape) / np.sqrt(self.lam)
        return self.g(z), self.g(z_pos), z, y


class DigitsTask:
    """scikit-learn's 8x8 digits in [0, 1], split into training and held-out images (seeded)."""

    def __init__(self, seed: int, labels: str = "latent"):
        from sklearn.datasets import load_digits

        d = load_digits()
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0xD161]))
        order = rng.permutation(len(d.target))
        self.images = d.images.astype(np.float64) / 16.0
        self.target = d.target.astype(np.int64)
        if labels == "random":
            self.target = rng.integers(0, 10, len(self.target))
        self.heldout, self.train = order[:DIGITS_HELDOUT], order[DIGITS_HELDOUT:]
        self.n_classes, self.in_shape = 10, (1, 8, 8)


def augment(images, generator, *, max_shift: float = 1.0, max_degrees: float = 10.0, noise: float = 0.1):
    """Random view of (n, 1, 8, 8) images: rotation, shift (pixels) and Gaussian noise (torch)."""
    import torch
    import torch.nn.functional as F

    n = images.shape[0]
    dev = images.device
    ang = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_degrees)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * max_shift * (2.0 / images.shape[-1])
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(dev, images.dtype), list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")
    return out + noise * torch.randn(out.shape, generator=generator).to(dev, images.dtype)


# ---------------------------------------------------------------------------------------
# encoders
# ---------------------------------------------------------------------------------------
def make_encoder(config: SimulationConfig, in_dim: int):
    """MLP ``in -> hidden -> hidden -> dim`` (ReLU) for synthetic data; a small CNN for digits."""
    import torch.nn as nn

    if config.data == "digits":
        return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 4 * 4, config.hidden), nn.ReLU(),
                             nn.Linear(config.hidden, config.dim))
    h = config.hidden
    return nn.Sequential(nn.Linear(in_dim, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, config.dim))


# ---------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------
def _affine_lstsq(E: np.ndarray, T: np.ndarray, ridge: float = 0.0) -> np.ndarray:
    A = np.hstack([E, np.ones((E.shape[0], 1))])
    G = A.T @ A
    G[np.diag_indices_from(G)] += ridge * E.shape[0]
    return np.linalg.lstsq(G, A.T @ T, rcond=None)[0]


def _apply(B: np.ndarray, E: np.ndarray) -> np.ndarray:
    return E @ B[:-1] + B[-1]


def embedding_metrics(F_eval: np.ndarray, *, subsets, seed: int, F_fit: np.ndarray | None = None,
                      y_fit=None, y_eval=None, n_classes: int = N_CLASSES, z_fit=None, z_eval=None) -> dict:
    """The paper's metrics of raw encoder outputs ``F_eval`` (n, d), plus R^2 and probe accuracy.

    Coordinates are those of the L2-normalised rows; whitened ones come from a PCA
    :class:`~whitenclip.whitening.Whitener` fitted on them (rank-deficient directions dropped).
    ``F_fit`` / ``y_fit`` / ``z_fit``: rows the probe and the latent regression are fitted on;
    they are scored on ``F_eval`` / ``y_eval`` / ``z_eval``.
    """
    from whitenclip.diagnostics import coordinate_tests
    from whitenclip.errors import RankDeficiencyWarning
    from whitenclip.whitening import Whitener

    F_eval = np.asarray(F_eval, dtype=np.float64)
    raw_norm = np.linalg.norm(F_eval, axis=1)
    E = F_eval / np.maximum(raw_norm, 1e-300)[:, None]
    out: dict = dict.fromkeys(METRICS)
    out["norm_mean"] = float(raw_norm.mean())
    out["norm_cv"] = float(raw_norm.std() / raw_norm.mean()) if raw_norm.mean() > 0 else None
    raw = coordinate_tests(E, subsets=subsets, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankDeficiencyWarning)
        wh = Whitener(method="pca", calibration=False).fit(E)
    white = coordinate_tests(E, subsets=subsets, seed=seed, transform=wh.transform)
    for prefix, res in (("", raw), ("w_", white)):
        for key in ("ad_mean", "ad_pass", "dp_mean", "dp_pass"):
            out[prefix + key] = res.get(key)
    w_norm = np.linalg.norm(wh.transform(E), axis=1)
    out["w_norm_cv"] = float(w_norm.std() / w_norm.mean())
    out["rank"] = int(wh.rank_)
    if F_fit is not None:
        F_fit = np.asarray(F_fit, dtype=np.float64)
        E_fit = F_fit / np.maximum(np.linalg.norm(F_fit, axis=1), 1e-300)[:, None]
        if z_fit is not None:
            pred = _apply(_affine_lstsq(E_fit, z_fit), E)
            sst = ((z_eval - z_eval.mean(0)) ** 2).sum(0)
            out["r2"] = float(np.mean(1.0 - ((z_eval - pred) ** 2).sum(0) / sst))
        if y_fit is not None:
            onehot = np.eye(n_classes)[y_fit]
            pred = _apply(_affine_lstsq(E_fit, onehot, ridge=1e-3), E).argmax(1)
            out["probe_acc"] = float(np.mean(pred == y_eval))
    return out


def gaussian_reference(n_rows: int, dim: int, seed: int = 0) -> dict:
    """What an exact Gaussian scores: AD/DP pass rates and means under the same protocol, chi_cv(dim)."""
    from whitenclip.diagnostics import chi_cv, expected_gaussian_rates

    ref = dict(expected_gaussian_rates(min(n_rows, SUBSET), TRIALS if n_rows > SUBSET else 1, seed))
    ref["w_norm_cv"] = chi_cv(dim)
    return ref


# ---------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------
class _Run:
    """One (loss, seed) training run: encoder, optional head / Lambda, optimiser, batches."""

    def __init__(self, config: SimulationConfig, loss: str, seed: int, task, in_dim: int):
        import torch

        self.config, self.loss, self.seed, self.task = config, loss, seed, task
        self.device = torch.device(config.device)
        torch.manual_seed(seed)  # the same initial encoder for every loss of a seed
        self.encoder = make_encoder(config, in_dim).to(self.device)
        params = list(self.encoder.parameters())
        self.head = self.raw_lambda = None
        if loss == "supervised":
            self.head = torch.nn.Linear(config.dim, task.n_classes).to(self.device)
            params += list(self.head.parameters())
        if loss.startswith("aninfonce"):
            self.raw_lambda = torch.nn.Parameter(torch.zeros(config.dim, device=self.device))
            params.append(self.raw_lambda)
        self.opt = torch.optim.Adam(params, lr=config.lr)
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 0xBA7C]))  # same batches for every loss
        self.gen = torch.Generator().manual_seed(seed + 0xA06)

    def batch(self):
        import torch

        B = self.config.batch_size
        if isinstance(self.task, DigitsTask):
            idx = self.task.train[self.rng.integers(0, len(self.task.train), B)]
            imgs = torch.as_tensor(self.task.images[idx], dtype=torch.float32)[:, None]
            x, x_pos = augment(imgs, self.gen), augment(imgs, self.gen)
            y = torch.as_tensor(self.task.target[idx])
        else:
            x, x_pos, _, y = self.task.sample(B, self.rng)
            x, x_pos = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(x_pos, dtype=torch.float32)
            y = torch.as_tensor(y)
        return x.to(self.device), x_pos.to(self.device), y.to(self.device)

    def step(self) -> float:
        import torch.nn.functional as F

        from whitenclip import losses as L

        x, x_pos, y = self.batch()
        c = self.config
        if self.loss == "supervised":
            value = L.supervised_ce(self.head(self.encoder(x)), y)
        else:
            u, v = self.encoder(x), self.encoder(x_pos)
            if self.loss == "infonce":
                value = L.info_nce(u, v, c.tau)
            elif self.loss == "aninfonce":
                value = L.an_info_nce(u, v, self.raw_lambda)
            elif self.loss == "aninfonce-sphere":  # the scale of f fixed: Lambda / tau acts on unit vectors
                scale = 1.0 / math.sqrt(c.tau)
                value = L.an_info_nce(F.normalize(u, dim=1) * scale, F.normalize(v, dim=1) * scale, self.raw_lambda)
            elif self.loss == "icon-tdist":
                value = L.icon(u, v, L.augmentation_graph(u.shape[0], u.device), "student-t")
            elif self.loss == "icon-label":
                value = L.icon(u, v, L.label_graph(y), "gaussian", tau=c.tau)
            else:
                raise ValueError(f"no training step for loss {self.loss!r}")
        self.opt.zero_grad(set_to_none=True)
        value.backward()
        self.opt.step()
        out = float(value.detach())
        if not math.isfinite(out):
            raise FloatingPointError(f"{self.loss} seed {self.seed}: the training loss became {out}")
        return out

    def embed(self, X: np.ndarray) -> np.ndarray:
        import torch

        self.encoder.eval()
        with torch.no_grad():
            parts = [self.encoder(torch.as_tensor(X[i:i + 4096], dtype=torch.float32, device=self.device)).cpu()
                     for i in range(0, len(X), 4096)]
        self.encoder.train()
        return torch.cat(parts).double().numpy()


def _eval_sets(config: SimulationConfig, seed: int):
    """Task, held-out rows (inputs, z, y, ids) and probe-fit rows of one seed (same for every loss)."""
    if config.data == "digits":
        task = DigitsTask(seed, config.labels)
        X_ev = task.images[task.heldout][:, None]
        X_fit = task.images[task.train][:, None]
        ids = [f"digits-{i}" for i in task.heldout]
        return task, (X_ev, None, task.target[task.heldout], ids), (X_fit, None, task.target[task.train])
    task = SyntheticTask(config.data, config.latent_dim, seed, config.labels)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xE7A1]))
    X_ev, _, z_ev, y_ev = task.sample(config.n_eval, rng)
    X_fit, _, z_fit, y_fit = task.sample(config.n_eval, rng)
    ids = [f"{config.data}-seed{seed}-{i}" for i in range(config.n_eval)]
    return task, (X_ev, z_ev, y_ev, ids), (X_fit, z_fit, y_fit)


def _check_store_dirs(save_dir: Path, config: SimulationConfig) -> None:
    for loss in config.losses:
        for seed in range(config.seeds):
            d = save_dir / loss / f"seed{seed}"
            if d.exists() and (not d.is_dir() or any(d.iterdir())):
                raise InputError(f"{d}: already exists and is not empty; choose a new --save-embeddings directory")


def simulate(config: SimulationConfig, *, save_embeddings=None, progress: bool = False,
             threads: int | None = None) -> SimulationResult:
    """Train every (loss, seed) of ``config`` and record the metrics at ``config.eval_steps``.

    Runs are sequential; torch uses at most ``threads`` (default: the machine's cores) threads.
    ``save_embeddings``: a directory receiving ``<loss>/seed<S>/`` stores of the final
    L2-normalised held-out embeddings (float32; the same rows for every loss of a seed).
    ``progress``: a rich progress bar per run on stderr.
    """
    import torch

    save_dir = Path(save_embeddings) if save_embeddings is not None else None
    if save_dir is not None:
        _check_store_dirs(save_dir, config)
    from threadpoolctl import threadpool_limits

    cores = os.cpu_count() or 1
    n_threads = max(1, min(cores, threads or 1))
    old_threads = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    runs, stores = [], {}
    bar = _progress_bar() if progress else None
    try:
        with threadpool_limits(limits=n_threads):
            _run_all(config, save_dir, runs, stores, bar)
    finally:
        torch.set_num_threads(old_threads)
        if bar is not None:
            bar.stop()
    ref = gaussian_reference(_n_eval(config), config.dim)
    return SimulationResult(config=config, runs=tuple(runs), reference=ref,
                            wall_seconds=time.perf_counter() - wall0, cpu_seconds=time.process_time() - cpu0,
                            stores=stores)


def _n_eval(config: SimulationConfig) -> int:
    return DIGITS_HELDOUT if config.data == "digits" else config.n_eval


def _run_all(config, save_dir, runs: list, stores: dict, bar) -> None:
    for seed in range(config.seeds):
        np.random.seed(seed)  # nothing should use the global state, but seed it anyway
        task, (X_ev, z_ev, y_ev, ids), (X_fit, z_fit, y_fit) = _eval_sets(config, seed)
        subsets = _subsets(len(X_ev), seed)
        for loss in config.losses:
            hist, E = _train_one(config, loss, seed, task, X_ev, z_ev, y_ev, X_fit, z_fit, y_fit, subsets, bar)
            runs.append(hist)
            if save_dir is not None:
                path = _save_store(save_dir / loss / f"seed{seed}", E, ids, config, loss)
                stores[f"{loss}/seed{seed}"] = str(path)


def _subsets(n: int, seed: int):
    from whitenclip.diagnostics import draw_subsets

    return draw_subsets(n, TRIALS, SUBSET, np.random.default_rng(seed))


def _progress_bar():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True), transient=False)
    bar.start()
    return bar


def _train_one(config, loss, seed, task, X_ev, z_ev, y_ev, X_fit, z_fit, y_fit, subsets, bar):
    wall0, cpu0 = time.perf_counter(), time.process_time()
    run = _Run(config, loss, seed, task, X_ev.shape[1] if X_ev.ndim == 2 else 1)
    steps = config.eval_steps
    history: dict = {m: [] for m in METRICS}
    task_id = bar.add_task(f"{loss} seed {seed}", total=config.steps if loss != "untrained" else 1) if bar else None

    def evaluate(train_loss):
        F_ev = run.embed(X_ev)
        m = embedding_metrics(F_ev, subsets=subsets, seed=seed, F_fit=run.embed(X_fit), y_fit=y_fit, y_eval=y_ev,
                              n_classes=task.n_classes, z_fit=z_fit, z_eval=z_ev)
        m["train_loss"] = train_loss
        return m, F_ev

    metrics, F_ev = evaluate(None)
    for m in METRICS:
        history[m].append(metrics[m])
    recent: list[float] = []
    for step in range(1, config.steps + 1):
        if loss == "untrained":
            break
        recent.append(run.step())
        if bar is not None:
            bar.update(task_id, advance=1)
        if step in steps:
            metrics, F_ev = evaluate(float(np.mean(recent)))
            recent = []
            for m in METRICS:
                history[m].append(metrics[m])
    if loss == "untrained":  # nothing changes: the step-0 values hold at every step
        for m in METRICS:
            history[m] = history[m] * len(steps)
        if bar is not None:
            bar.update(task_id, advance=1)
    extra = {}
    if run.raw_lambda is not None:
        import torch.nn.functional as F

        lam = F.softplus(run.raw_lambda.detach()).cpu().double().numpy()
        extra["lambda"] = lam.tolist()
        extra["lambda_ratio"] = float(lam.max() / max(lam.min(), 1e-300))
    hist = RunHistory(loss=loss, seed=seed, steps=steps, metrics={k: tuple(v) for k, v in history.items()},
                      seconds=time.perf_counter() - wall0, cpu_seconds=time.process_time() - cpu0, extra=extra)
    E = F_ev / np.maximum(np.linalg.norm(F_ev, axis=1), 1e-300)[:, None]
    return hist, E


def _save_store(directory: Path, E: np.ndarray, ids: list[str], config: SimulationConfig, loss: str) -> Path:
    from whitenclip.stores import StoreWriter

    meta = {"encoder": f"simulate:{loss}", "modality": "image" if config.data == "digits" else "synthetic",
            "normalized": True, "source": f"whitenclip simulate --data {config.data}"}
    directory.parent.mkdir(parents=True, exist_ok=True)  # DIR/<loss>/ (the parent of DIR was checked by the caller)
    writer = StoreWriter(directory, dim=E.shape[1], dtype="float32", meta={**meta, "n_items": len(ids)})
    writer.write_shard(ids, E.astype(np.float32), items_end=len(ids))
    return directory
