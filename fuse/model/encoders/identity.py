"""No temporal context: each step on its own (the per-frame baseline)."""

from __future__ import annotations

import torch

from fuse.config import EncoderConfig
from fuse.model.encoders.base import ENCODERS, State, TemporalEncoder


@ENCODERS.register("identity")
class IdentityEncoder(TemporalEncoder):
    def __init__(self, cfg: EncoderConfig, in_dim: int) -> None:
        super().__init__()
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor, pad: torch.Tensor,
                state: State = None) -> tuple[torch.Tensor, State]:
        return x, None
