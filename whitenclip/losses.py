"""Contrastive and supervised losses of ``whitenclip simulate``, as small torch functions.

Shapes: ``u`` and ``v`` are (N, d) embeddings of the two views of N items (row i of ``u`` and
row i of ``v`` are a positive pair); ``labels`` is (N,) int64. Every loss returns a scalar
(mean over anchors). The two views are stacked as ``h = [u; v]`` of shape (2N, d) wherever a
loss treats all 2N rows as anchors (NT-Xent, I-Con); the positive of row a is row
``a + N mod 2N``.

>>> import torch
>>> u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
>>> round(float(info_nce(u, u, tau=1.0)), 4)   # log(e + 2) - 1 for every anchor
0.5514
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["info_nce", "an_info_nce", "icon", "supervised_ce", "augmentation_graph", "label_graph",
           "gaussian_cosine_kernel", "student_t_kernel"]

_NEG = -1e30  # stands for log 0 on the diagonal (finite, so 0 * _NEG stays 0 in float32/64)


def _stack(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    if u.shape != v.shape or u.ndim != 2:
        raise ValueError(f"views must have the same (N, d) shape, got {tuple(u.shape)} and {tuple(v.shape)}")
    return torch.cat([u, v], dim=0)


def _positive_index(n: int, device=None) -> torch.Tensor:
    """Index of each of the 2N stacked rows' positive: a + N mod 2N."""
    return (torch.arange(2 * n, device=device) + n) % (2 * n)


def info_nce(u: torch.Tensor, v: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """NT-Xent (SimCLR's InfoNCE) over the 2N stacked views.

    With ``h = normalize([u; v])`` (rows of unit norm), ``s_ab = h_a . h_b / tau`` and p(a) the
    positive of a::

        loss = 1/(2N) sum_a [ -s_{a,p(a)} + log sum_{b != a} exp(s_ab) ]

    >>> import torch
    >>> u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> round(float(info_nce(u, -u, tau=1.0)), 4)  # positive at cosine -1: 1 + log(2 + 1/e)
    1.862
    """
    h = F.normalize(_stack(u, v), dim=1)
    s = h @ h.T / tau
    s = s.masked_fill(torch.eye(s.shape[0], dtype=torch.bool, device=s.device), float("-inf"))
    return F.cross_entropy(s, _positive_index(u.shape[0], s.device))


def an_info_nce(u: torch.Tensor, v: torch.Tensor, raw_lambda: torch.Tensor) -> torch.Tensor:
    """AnInfoNCE (anisotropic InfoNCE) with a learned diagonal precision.

    ``Lambda = softplus(raw_lambda)`` of shape (d,); the similarity of anchor u_i and candidate
    v_j is ``s_ij = -1/2 (u_i - v_j)^T diag(Lambda) (u_i - v_j)`` (a Gaussian log-kernel), and::

        loss = 1/N sum_i [ -s_ii + log sum_j exp(s_ij) ]      (candidates: the N rows of v)

    ``u, v`` are the raw (unnormalised) encoder outputs; there is no temperature (Lambda is it).

    >>> import math, torch
    >>> u = torch.tensor([[0.0], [1.0]]); raw = torch.tensor([math.log(math.e - 1)])  # Lambda = 1
    >>> round(float(an_info_nce(u, u, raw)), 4)  # log(1 + exp(-1/2)) for both anchors
    0.4741
    """
    if u.shape != v.shape or u.ndim != 2 or raw_lambda.shape != (u.shape[1],):
        raise ValueError(f"views (N, d) and raw_lambda (d,) expected, got {tuple(u.shape)}, {tuple(v.shape)}, "
                         f"{tuple(raw_lambda.shape)}")
    lam = F.softplus(raw_lambda)
    # (u - v)^T L (u - v) = u^T L u + v^T L v - 2 u^T L v: (N, N) without an (N, N, d) tensor
    s = -0.5 * ((u * u * lam).sum(1)[:, None] + (v * v * lam).sum(1)[None, :] - 2.0 * (u * lam) @ v.T)
    return F.cross_entropy(s, torch.arange(u.shape[0], device=u.device))


# ---------------------------------------------------------------------------------------
# I-Con: KL between a target neighbourhood p(.|a) and a learned kernel q(.|a)
# ---------------------------------------------------------------------------------------
def augmentation_graph(n: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """p(b|a) of shape (2N, 2N): all mass on a's other view (the SimCLR target)."""
    p = torch.zeros(2 * n, 2 * n, device=device, dtype=dtype)
    p[torch.arange(2 * n, device=device), _positive_index(n, device)] = 1.0
    return p


def label_graph(labels: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """p(b|a) of shape (2N, 2N): uniform over the b != a sharing a's label (SupCon's target)."""
    y = torch.cat([labels, labels])
    same = (y[:, None] == y[None, :]) & ~torch.eye(y.shape[0], dtype=torch.bool, device=y.device)
    same = same.to(dtype)
    return same / same.sum(1, keepdim=True)  # every row has its own other view, so no row is empty


def gaussian_cosine_kernel(h: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """log q(b|a), shape (2N, 2N): q(b|a) ∝ exp(cos(h_a, h_b) / tau) over b != a (SimCLR's kernel)."""
    z = F.normalize(h, dim=1)
    s = (z @ z.T / tau).masked_fill(torch.eye(h.shape[0], dtype=torch.bool, device=h.device), float("-inf"))
    return torch.log_softmax(s, dim=1)


def student_t_kernel(h: torch.Tensor, dof: float = 1.0) -> torch.Tensor:
    """log q(b|a), shape (2N, 2N): q(b|a) ∝ (1 + ||h_a - h_b||^2 / dof)^(-(dof+1)/2) over b != a (t-SNE's).

    Distances are taken on the raw (unnormalised) embeddings.
    """
    d2 = torch.cdist(h, h).pow(2)
    s = -(dof + 1) / 2 * torch.log1p(d2 / dof)
    s = s.masked_fill(torch.eye(h.shape[0], dtype=torch.bool, device=h.device), float("-inf"))
    return torch.log_softmax(s, dim=1)


def icon(u: torch.Tensor, v: torch.Tensor, p: torch.Tensor, kernel: str = "gaussian", *, tau: float = 0.1,
         dof: float = 1.0) -> torch.Tensor:
    """I-Con loss: mean over the 2N anchors a of KL(p(.|a) || q(.|a)).

    ``p`` is a (2N, 2N) row-stochastic target (zero diagonal), e.g. :func:`augmentation_graph` or
    :func:`label_graph`; ``q`` is :func:`gaussian_cosine_kernel` (``kernel="gaussian"``, tau) or
    :func:`student_t_kernel` (``kernel="student-t"``, dof) on ``h = [u; v]``::

        loss = 1/(2N) sum_a sum_b p(b|a) [log p(b|a) - log q(b|a)]      (0 log 0 = 0)

    With the augmentation graph and the Gaussian cosine kernel this equals :func:`info_nce`
    (p is one-hot, so the KL is the cross-entropy).
    """
    h = _stack(u, v)
    if p.shape != (h.shape[0], h.shape[0]):
        raise ValueError(f"target graph must be ({h.shape[0]}, {h.shape[0]}), got {tuple(p.shape)}")
    if kernel == "gaussian":
        log_q = gaussian_cosine_kernel(h, tau)
    elif kernel == "student-t":
        log_q = student_t_kernel(h, dof)
    else:
        raise ValueError(f"unknown I-Con kernel {kernel!r}; expected gaussian or student-t")
    log_q = log_q.masked_fill(~torch.isfinite(log_q), _NEG)
    log_p = torch.where(p > 0, torch.log(p.clamp_min(1e-38)), torch.zeros_like(p))
    return (p * (log_p - log_q)).sum(1).mean()


def supervised_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of a linear classifier head: mean_i [-logits_i[y_i] + log sum_c exp(logits_ic)].

    ``logits`` is (N, C) = head(features); the features before the head are the embedding.

    >>> import torch
    >>> round(float(supervised_ce(torch.zeros(3, 4), torch.tensor([0, 1, 2]))), 4)  # log 4
    1.3863
    """
    return F.cross_entropy(logits, labels)

