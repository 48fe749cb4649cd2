"""The temporal-encoder interface and registry."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from extract.registry import Registry
from fuse.config import EncoderConfig

State = Any  # an encoder's carried state (an RNN's hidden tensors), or None


class TemporalEncoder(nn.Module):
    """Maps (B, L, E) fused steps to (B, L, H) context-aware steps.

    ``forward(x, pad, state)`` returns the outputs and the state after each row's last valid
    step; encoders that carry no state return None.
    """

    carries_state: ClassVar[bool] = False
    out_dim: int

    @classmethod
    def check(cls, cfg: EncoderConfig) -> list[str]:
        """Problems with ``cfg`` for this encoder (no torch work)."""
        return []

    def forward(self, x: torch.Tensor, pad: torch.Tensor,
                state: State = None) -> tuple[torch.Tensor, State]:
        raise NotImplementedError

    @staticmethod
    def keep_state(state: State, keep: torch.Tensor) -> State:
        """Zero the state of rows where ``keep`` (B,) is False."""
        return state


ENCODERS: Registry[type[TemporalEncoder]] = Registry("temporal encoder")


def build_encoder(cfg: EncoderConfig, in_dim: int) -> TemporalEncoder:
    import fuse.model.encoders  # noqa: F401  (fills the registry)

    return ENCODERS.get(cfg.name)(cfg, in_dim)


def detach_state(state: State) -> State:
    """Cut the graph between segments (truncated back-propagation through time)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()
