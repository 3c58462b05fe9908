"""The data of ``whitenclip simulate`` (seeded): synthetic latents observed through a random
invertible MLP, scikit-learn's 8x8 digits with augmented views, and each seed's held-out,
probe-fit and fixed training rows."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from whitenclip.simulate.config import DIGITS_HELDOUT, GMM_COMPONENTS, N_CLASSES, SimulationConfig


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

    def __init__(self, kind: str, k: int, seed: int, labels: str = "latent", *, mixing: str = "mlp",
                 sparsity: float = 0.1):
        self.kind, self.k, self.labels, self.sparsity = kind, k, labels, sparsity
        self.direct = mixing == "none"
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x51A7]))
        self.means = rng.standard_normal((GMM_COMPONENTS, k))
        self.lam = np.linspace(5.0, 25.0, k)
        self.g = (lambda z: z) if self.direct else invertible_mlp(k, rng)
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
            z = (rng.random((n, self.k)) < self.sparsity).astype(np.float64)
            if self.direct:  # observed directly, an all-zero row has no direction: one random bit is set in every row
                z[np.arange(n), rng.integers(0, self.k, n)] = 1.0
            y = np.argmax(z[:, :self.n_classes] + 1e-3 * rng.random((n, self.n_classes)), axis=1)
        if self.labels == "random":
            y = rng.integers(0, self.n_classes, n)
        return z, y

    def views(self, z: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The anchor ``g(z)`` and a fresh positive ``g(z + N(0, diag(1/lambda)))``."""
        z_pos = z + rng.standard_normal(z.shape) / np.sqrt(self.lam)
        return self.g(z), self.g(z_pos)

    def sample(self, n: int, rng: np.random.Generator):
        z, y = self.latent(n, rng)
        x, x_pos = self.views(z, rng)
        return x, x_pos, z, y


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


def _eval_sets(config: SimulationConfig, seed: int):
    """Task, held-out rows (inputs, z, y, ids) and probe-fit rows of one seed (same for every loss)."""
    if config.data == "digits":
        task = DigitsTask(seed, config.labels)
        X_ev = task.images[task.heldout][:, None]
        X_fit = task.images[task.train][:, None]
        ids = [f"digits-{i}" for i in task.heldout]
        return task, (X_ev, None, task.target[task.heldout], ids), (X_fit, None, task.target[task.train])
    task = SyntheticTask(config.data, config.latent_dim, seed, config.labels, mixing=config.mixing,
                         sparsity=config.sparsity)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xE7A1]))
    X_ev, _, z_ev, y_ev = task.sample(config.n_eval, rng)
    X_fit, _, z_fit, y_fit = task.sample(config.n_eval, rng)
    ids = [f"{config.data}-seed{seed}-{i}" for i in range(config.n_eval)]
    return task, (X_ev, z_ev, y_ev, ids), (X_fit, z_fit, y_fit)


def _train_set(config: SimulationConfig, seed: int, task):
    """The fixed training rows of the epoch schedule (latents and labels; None for digits or steps)."""
    if config.epochs is None or config.data == "digits":
        return None
    return task.latent(config.train_size, np.random.default_rng(np.random.SeedSequence([seed, 0x7A15])))
