"""Output heads ({FC, Dropout, ReLU} blocks then an FC) and pooling over time."""

from __future__ import annotations

import torch
from torch import nn

from extract.registry import Registry


class FCHead(nn.Sequential):
    """``hidden`` blocks of {FC, Dropout, ReLU} (paper 002), then FC to ``out_dim``."""

    def __init__(self, in_dim: int, hidden: list[int], out_dim: int, dropout: float) -> None:
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_dim, width), nn.Dropout(dropout), nn.ReLU()]
            in_dim = width
        layers.append(nn.Linear(in_dim, out_dim))
        super().__init__(*layers)


POOLS: Registry[type[nn.Module]] = Registry("pooling")
STAT_EPS = 1e-5  # variance floor of statistics pooling (sqrt stays differentiable)


def _weighted_stats(h: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and std over time: h (B, L, H), w (B, L) summing to 1 (or 0) per row."""
    mean = torch.einsum("bl,blh->bh", w, h)  # (B, H)
    var = torch.einsum("bl,blh->bh", w, h * h) - mean * mean
    return mean, var.clamp(min=STAT_EPS).sqrt()


def _uniform(pad: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) equal weights over the non-padding steps."""
    keep = (~pad).to(dtype)
    return keep / keep.sum(dim=1, keepdim=True).clamp(min=1.0)


@POOLS.register("mean")
class MeanPool(nn.Module):
    """Mean over the non-padding steps: (B, L, H) → (B, H)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out_dim = dim

    def forward(self, h: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        keep = (~pad).unsqueeze(-1).to(h.dtype)  # (B, L, 1)
        return (h * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)


@POOLS.register("mean_std")
class StatsPool(nn.Module):
    """Statistics pooling: mean and standard deviation over the non-padding steps,
    concatenated: (B, L, H) → (B, 2H)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out_dim = 2 * dim

    def forward(self, h: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        return torch.cat(_weighted_stats(h, _uniform(pad, h.dtype)), dim=-1)


@POOLS.register("attention")
class AttentionPool(nn.Module):
    """Softmax-weighted sum with one learned score per step: (B, L, H) → (B, H)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)
        self.out_dim = dim

    def forward(self, h: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        logits = self.score(h).squeeze(-1).masked_fill(pad, float("-inf"))  # (B, L)
        weights = torch.softmax(logits, dim=1).nan_to_num(0.0)  # all-padding rows: zeros
        return torch.einsum("bl,blh->bh", weights, h)


@POOLS.register("attentive_stats")
class AttentiveStatsPool(nn.Module):
    """Attentive statistics pooling (Okabe et al., 2018): a small attention net (H → A, tanh,
    → 1) scores each step; the softmax-weighted mean and standard deviation are concatenated:
    (B, L, H) → (B, 2H)."""

    def __init__(self, dim: int, attention_dim: int = 128) -> None:
        super().__init__()
        self.attend = nn.Sequential(nn.Linear(dim, attention_dim), nn.Tanh(),
                                    nn.Linear(attention_dim, 1))
        self.out_dim = 2 * dim

    def forward(self, h: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        logits = self.attend(h).squeeze(-1).masked_fill(pad, float("-inf"))  # (B, L)
        weights = torch.softmax(logits, dim=1).nan_to_num(0.0)
        return torch.cat(_weighted_stats(h, weights), dim=-1)
