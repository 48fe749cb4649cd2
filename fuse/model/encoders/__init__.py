"""Temporal encoders (filled by import): lstm, gru, transformer, identity."""

from fuse.model.encoders import identity, rnn, transformer  # noqa: F401  (registration)
from fuse.model.encoders.base import ENCODERS, TemporalEncoder, build_encoder

__all__ = ["ENCODERS", "TemporalEncoder", "build_encoder"]
