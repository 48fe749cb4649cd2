"""Masked losses: only valid label entries (not -5 / -1 / NaN, not padding) contribute."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _none(ref: torch.Tensor) -> torch.Tensor:
    """A zero that keeps the graph (a batch without one valid label)."""
    return ref.sum() * 0.0


def mse(pred: torch.Tensor, y: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """Mean squared error over valid entries; all of shape (..., K)."""
    if not ok.any():
        return _none(pred)
    return F.mse_loss(pred.float()[ok], y[ok])


def ccc_loss(pred: torch.Tensor, y: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """1 - mean over targets of the CCC over the batch's valid entries (paper 004 eq. 5)."""
    p, t, m = pred.float().reshape(-1, pred.shape[-1]), y.reshape(-1, y.shape[-1]), ok.reshape(
        -1, ok.shape[-1]).float()  # (N, K)
    n = m.sum(dim=0)  # (K,)
    if not bool((n > 1).any()):
        return _none(pred)
    n1 = n.clamp(min=1.0)
    mp, mt = (p * m).sum(0) / n1, (t * m).sum(0) / n1  # (K,)
    dp, dt = (p - mp) * m, (t - mt) * m
    cov = (dp * dt).sum(0) / n1
    var_p, var_t = (dp**2).sum(0) / n1, (dt**2).sum(0) / n1
    ccc = 2 * cov / (var_p + var_t + (mp - mt) ** 2 + 1e-8)  # (K,)
    used = n > 1
    return 1.0 - ccc[used].mean()


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, ok: torch.Tensor,
                  gamma: float = 0.0, alpha: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over valid entries of ``-alpha_t (1 - p_t)^gamma log p_t`` (paper 001 eq. 9, the
    focal loss): plain CE with ``gamma`` 0 and no ``alpha``; ``alpha`` (C,) weighs each entry
    by its true class (focal alpha, or class-balanced weights)."""
    if not ok.any():
        return _none(logits)
    logp = F.log_softmax(logits.float()[ok], dim=-1)  # (M, C)
    cls = target[ok].long()  # (M,)
    logp_t = logp.gather(1, cls[:, None]).squeeze(1)  # (M,)
    loss = -logp_t
    if gamma > 0:
        loss = (1 - logp_t.exp()) ** gamma * loss
    if alpha is not None:
        loss = alpha.to(loss.device, loss.dtype)[cls] * loss
    return loss.mean()


def symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor,
                 ok: torch.Tensor) -> torch.Tensor:
    """R-Drop's ½ (KL(a‖b) + KL(b‖a)) between two dropout passes, mean over valid entries."""
    if not ok.any():
        return _none(logits_a)
    la = F.log_softmax(logits_a.float()[ok], dim=-1)
    lb = F.log_softmax(logits_b.float()[ok], dim=-1)
    kl_ab = (la.exp() * (la - lb)).sum(-1)
    kl_ba = (lb.exp() * (lb - la)).sum(-1)
    return 0.5 * (kl_ab + kl_ba).mean()


def binary_cross_entropy(logits: torch.Tensor, y: torch.Tensor,
                         ok: torch.Tensor) -> torch.Tensor:
    if not ok.any():
        return _none(logits)
    return F.binary_cross_entropy_with_logits(logits.float()[ok], y[ok])
