"""Training one (loss, seed) run: the encoder networks, the optimiser and batches (:class:`_Run`),
and the loop that records the metrics at the evaluated steps (:func:`_train_one`)."""

from __future__ import annotations

import math
import time

import numpy as np

from whitenclip.errors import InputError
from whitenclip.simulate.config import METRICS, SimulationConfig
from whitenclip.simulate.data import DigitsTask, augment
from whitenclip.simulate.metrics import embedding_metrics
from whitenclip.simulate.results import RunHistory


def make_encoder(config: SimulationConfig, in_dim: int):
    """The ``config.encoder`` network: ``mlp`` (``in -> hidden -> hidden -> dim``, ReLU), ``linear``
    (``f(x) = W x``, W of shape (dim, in), no bias) or ``cnn`` (two 3x3 convs, max-pool, two linear
    layers; digits only). On digits, ``mlp`` and ``linear`` see the flattened 64 pixels."""
    import torch.nn as nn

    if config.encoder == "cnn":
        return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 4 * 4, config.hidden), nn.ReLU(),
                             nn.Linear(config.hidden, config.dim))
    pre = [nn.Flatten()] if config.data == "digits" else []
    in_dim = 64 if config.data == "digits" else in_dim
    if config.encoder == "linear":
        return nn.Sequential(*pre, nn.Linear(in_dim, config.dim, bias=False))
    h = config.hidden
    return nn.Sequential(*pre, nn.Linear(in_dim, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, config.dim))



class _Run:
    """One (loss, seed) training run: encoder, optional head / Lambda, optimiser, batches."""

    def __init__(self, config: SimulationConfig, loss: str, seed: int, task, in_dim: int, train=None):
        import torch

        self.config, self.loss, self.seed, self.task = config, loss, seed, task
        self.train = train  # epoch schedule: (z, y) of the fixed synthetic training rows, or digits indices
        self.order, self.cursor = None, 0
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

    def _next_rows(self) -> np.ndarray:
        """Positions in the fixed training set of the next batch: a fresh permutation every epoch."""
        B = self.config.batch_size
        if self.order is None or self.cursor + B > len(self.order):
            self.order, self.cursor = self.rng.permutation(self.config.train_size), 0
        rows = self.order[self.cursor:self.cursor + B]
        self.cursor += B
        return rows

    def batch(self):
        import torch

        B = self.config.batch_size
        epochs = self.config.epochs is not None
        if isinstance(self.task, DigitsTask):
            pool = self.task.train[:self.config.train_size] if epochs else self.task.train
            idx = pool[self._next_rows()] if epochs else pool[self.rng.integers(0, len(pool), B)]
            imgs = torch.as_tensor(self.task.images[idx], dtype=torch.float32)[:, None]
            x, x_pos = augment(imgs, self.gen), augment(imgs, self.gen)
            y = torch.as_tensor(self.task.target[idx])
        else:
            if epochs:
                rows = self._next_rows()
                z, y = self.train[0][rows], self.train[1][rows]
                x, x_pos = self.task.views(z, self.rng)
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
        if not math.isfinite(out):  # the options made training diverge: bad input, one line naming them
            raise InputError(f"{self.loss} seed {self.seed}: training diverged (the loss is no longer a finite "
                             f"number) with --lr {c.lr:g} and --tau {c.tau:g}; lower --lr or raise --tau")
        return out

    def embed(self, X: np.ndarray) -> np.ndarray:
        import torch

        self.encoder.eval()
        with torch.no_grad():
            parts = [self.encoder(torch.as_tensor(X[i:i + 4096], dtype=torch.float32, device=self.device)).cpu()
                     for i in range(0, len(X), 4096)]
        self.encoder.train()
        return torch.cat(parts).double().numpy()



def _train_one(config, loss, seed, task, X_ev, z_ev, y_ev, X_fit, z_fit, y_fit, subsets, bar, train=None):
    wall0, cpu0 = time.perf_counter(), time.process_time()
    run = _Run(config, loss, seed, task, X_ev.shape[1] if X_ev.ndim == 2 else 1, train=train)
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
