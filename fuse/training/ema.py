"""Exponential moving average of the weights (paper 001: decay 0.99)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A shadow copy updated after every step: ``shadow = d·shadow + (1 − d)·weights``."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for s, p in zip(self.shadow.parameters(), model.parameters(), strict=True):
            s.lerp_(p.detach(), 1.0 - self.decay)
        for s, b in zip(self.shadow.buffers(), model.buffers(), strict=True):
            s.copy_(b)
