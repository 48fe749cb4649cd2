"""LSTM and GRU encoders with a hidden state carried across consecutive segments (paper 004)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from fuse.config import EncoderConfig
from fuse.model.encoders.base import ENCODERS, State, TemporalEncoder


class RNNEncoder(TemporalEncoder):
    """A stacked (bi)directional RNN; rows shorter than L are packed so padding never
    reaches the outputs or the returned state."""

    cell: ClassVar[type[nn.RNNBase]]
    carries_state = True

    def __init__(self, cfg: EncoderConfig, in_dim: int) -> None:
        super().__init__()
        self.rnn = self.cell(in_dim, cfg.hidden, num_layers=cfg.layers, batch_first=True,
                             dropout=cfg.dropout if cfg.layers > 1 else 0.0,
                             bidirectional=cfg.bidirectional)
        self.out_dim = cfg.hidden * (2 if cfg.bidirectional else 1)

    @classmethod
    def check(cls, cfg: EncoderConfig) -> list[str]:
        problems = []
        if cfg.hidden < 1 or cfg.layers < 1:
            problems.append(f"model.encoder: hidden and layers must be >= 1, got {cfg.hidden}, "
                            f"{cfg.layers}")
        if cfg.bidirectional and cfg.carry_state:
            problems.append("model.encoder.carry_state: a bidirectional RNN cannot carry its "
                            "state into the next segment; set carry_state=false or "
                            "bidirectional=false")
        return problems

    def forward(self, x: torch.Tensor, pad: torch.Tensor,
                state: State = None) -> tuple[torch.Tensor, State]:
        # x: (B, L, E); pad: (B, L) True at padding
        lengths = (~pad).sum(dim=1)  # (B,)
        if bool((lengths == x.shape[1]).all()):
            out, state = self.rnn(x, state)  # (B, L, H)
            return out, state
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True,
                                      enforce_sorted=False)
        out, state = self.rnn(packed, state)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out, state  # (B, L, H)

    @staticmethod
    def keep_state(state: State, keep: torch.Tensor) -> State:
        if state is None:
            return None
        k = keep.to(dtype=_first(state).dtype)[None, :, None]  # (1, B, 1)
        if isinstance(state, tuple):
            return tuple(s * k for s in state)
        return state * k


def _first(state: State) -> torch.Tensor:
    return state[0] if isinstance(state, tuple) else state


@ENCODERS.register("lstm")
class LSTMEncoder(RNNEncoder):
    cell = nn.LSTM


@ENCODERS.register("gru")
class GRUEncoder(RNNEncoder):
    cell = nn.GRU
