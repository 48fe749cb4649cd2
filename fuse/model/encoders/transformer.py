"""A transformer encoder over one segment (no state between segments), with positions."""

from __future__ import annotations

import math

import torch
from torch import nn

from fuse.config import EncoderConfig
from fuse.model.encoders.base import ENCODERS, State, TemporalEncoder

POSITIONS = ("sinusoidal", "learned", "none")


@ENCODERS.register("transformer")
class TransformerEncoder(TemporalEncoder):
    def __init__(self, cfg: EncoderConfig, in_dim: int) -> None:
        super().__init__()
        self.inp = nn.Linear(in_dim, cfg.hidden) if in_dim != cfg.hidden else nn.Identity()
        self.pos_kind = cfg.pos_encoding
        if cfg.pos_encoding == "learned":
            self.pos = nn.Parameter(torch.zeros(cfg.max_len, cfg.hidden))
            nn.init.normal_(self.pos, std=0.02)
        elif cfg.pos_encoding == "sinusoidal":
            self.register_buffer("pos", sinusoid(cfg.max_len, cfg.hidden), persistent=False)
        layer = nn.TransformerEncoderLayer(cfg.hidden, cfg.heads, cfg.ff_dim, cfg.dropout,
                                           batch_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.out_dim = cfg.hidden

    @classmethod
    def check(cls, cfg: EncoderConfig) -> list[str]:
        problems = []
        if cfg.heads < 1 or cfg.hidden % cfg.heads:
            problems.append(f"model.encoder: hidden ({cfg.hidden}) must be a multiple of heads "
                            f"({cfg.heads})")
        if cfg.pos_encoding not in POSITIONS:
            problems.append(f"model.encoder.pos_encoding: {cfg.pos_encoding!r} is not one of "
                            f"{', '.join(POSITIONS)}")
        if cfg.layers < 1 or cfg.ff_dim < 1 or cfg.max_len < 1:
            problems.append("model.encoder: layers, ff_dim and max_len must be >= 1")
        return problems

    def forward(self, x: torch.Tensor, pad: torch.Tensor,
                state: State = None) -> tuple[torch.Tensor, State]:
        h = self.inp(x)  # (B, L, H)
        if self.pos_kind != "none":
            h = h + self._positions(h.shape[1], h.device).to(h.dtype)
        return self.blocks(h, src_key_padding_mask=pad), None  # (B, L, H)

    def _positions(self, length: int, device: torch.device) -> torch.Tensor:
        """(length, H) position table; sinusoids grow on demand, learned ones cannot."""
        if length <= self.pos.shape[0]:
            return self.pos[:length]
        if self.pos_kind == "sinusoidal":
            return sinusoid(length, self.pos.shape[1]).to(device)
        raise ValueError(f"a segment of {length} steps exceeds model.encoder.max_len="
                         f"{self.pos.shape[0]} (learned positions)")


def sinusoid(length: int, dim: int) -> torch.Tensor:
    """(length, dim) sine / cosine positions (Vaswani et al.)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table
