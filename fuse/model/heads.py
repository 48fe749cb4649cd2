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


@POOLS.register("mean")
class MeanPool(nn.Module):
    """Mean over the non-padding steps: (B, L, H) → (B, H)."""

    def __init__(self, dim: int) -> None:
        super().__init__()

    def forward(self, h: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        keep = (~pad).unsqueeze(-1).to(h.dtype)  # (B, L, 1)
        return (h * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)


@POOLS.register("attention")
class AttentionPool(nn.Module):
    """Softmax-weighted sum with one learned score per step: (B, L, H) → (B, H)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, h: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        logits = self.score(h).squeeze(-1).masked_fill(pad, float("-inf"))  # (B, L)
        weights = torch.softmax(logits, dim=1).nan_to_num(0.0)  # all-padding rows: zeros
        return torch.einsum("bl,blh->bh", weights, h)
