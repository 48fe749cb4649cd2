"""Temporal encoders (filled by import): lstm, gru, transformer, identity; classic
baselines svm, logreg, ridge (scikit-learn read-outs on pooled features)."""

from fuse.model.encoders import classic, identity, rnn, transformer  # noqa: F401  (registration)
from fuse.model.encoders.base import ENCODERS, TemporalEncoder, build_encoder

__all__ = ["ENCODERS", "TemporalEncoder", "build_encoder"]
