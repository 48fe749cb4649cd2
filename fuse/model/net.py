"""The fusion network, built from a :class:`ModelSpec` (what the data gives) and the config."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from fuse.config import ModelConfig
from fuse.model.encoders import build_encoder
from fuse.model.encoders.base import State
from fuse.model.encoders.classic import is_classic
from fuse.model.heads import POOLS, FCHead


@dataclass
class ModelSpec:
    """The data-dependent part of a model: saved in checkpoints so ``predict`` can rebuild it."""

    features: list[str]  # input features in column order
    dims: list[int]  # their widths
    mask_channels: bool  # one validity channel per feature appended to the input
    out_dim: int  # outputs per step (frame) or per video
    level: str  # frame: one output per step; video: pooled over time

    def to_dict(self) -> dict:
        return asdict(self)


class FusionNet(nn.Module):
    """Per-feature projection → concatenation + FC (paper 004 eq. 1) → temporal encoder →
    (per-video: pooling) → FC head.

    With a classic encoder (svm, logreg, ridge) there is nothing to learn by gradient: the
    z-scored features go straight to the (non-learned) pooling and a linear read-out whose
    weights a scikit-learn fit sets (:mod:`fuse.training.classic`)."""

    def __init__(self, spec: ModelSpec, cfg: ModelConfig) -> None:
        super().__init__()
        self.spec = spec
        self.classic = is_classic(cfg.encoder.name)
        self.proj = None
        self.fuse = None
        width = sum(spec.dims)
        if self.classic:
            self.encoder = build_encoder(cfg.encoder, width)
        else:
            if cfg.proj_dim > 0:
                self.proj = nn.ModuleList(
                    nn.Sequential(nn.Linear(d, cfg.proj_dim), nn.ReLU(), nn.Dropout(cfg.dropout))
                    for d in spec.dims)
                width = cfg.proj_dim * len(spec.dims)
            width += len(spec.dims) if spec.mask_channels else 0
            self.fuse = nn.Sequential(nn.Linear(width, cfg.fusion_dim), nn.Dropout(cfg.dropout))
            self.encoder = build_encoder(cfg.encoder, cfg.fusion_dim)
        self.pool = POOLS.get(cfg.pool)(self.encoder.out_dim) if spec.level == "video" else None
        width = self.pool.out_dim if self.pool is not None else self.encoder.out_dim
        if self.classic:
            self.head = nn.Linear(width, spec.out_dim).requires_grad_(False)  # fitted read-out
        else:
            self.head = FCHead(width, cfg.head, spec.out_dim, cfg.dropout)

    def embed(self, x: torch.Tensor, valid: torch.Tensor, pad: torch.Tensor,
              state: State = None) -> tuple[torch.Tensor, State]:
        """Everything before the head: (B, L, H) per frame, (B, H) per video."""
        # x: (B, L, D) z-scored features; valid: (B, L, F); pad: (B, L) True at padding
        h = x
        if not self.classic:
            parts = list(torch.split(x, self.spec.dims, dim=-1))  # F × (B, L, D_f)
            if self.proj is not None:
                parts = [p(part) for p, part in zip(self.proj, parts, strict=True)]
            if self.spec.mask_channels:
                parts.append(valid)
            h = self.fuse(torch.cat(parts, dim=-1))  # (B, L, E)
        h, state = self.encoder(h, pad, state)  # (B, L, H)
        if self.pool is not None:
            h = self.pool(h, pad)  # (B, H)
        return h, state

    def forward(self, x: torch.Tensor, valid: torch.Tensor, pad: torch.Tensor,
                state: State = None) -> tuple[torch.Tensor, State]:
        h, state = self.embed(x, valid, pad, state)
        return self.head(h), state  # (B, L, C) per frame, (B, C) per video
