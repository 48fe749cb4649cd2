"""Label adapters (filled by import): Aff-Wild2 VA / EXPR / AU, Hume-Reaction, generic CSV."""

from fuse.labels import affwild2, generic, hume  # noqa: F401  (registration)
from fuse.labels.base import LABEL_FORMATS, LabelSet, Predictions, VideoLabels, get_adapter

__all__ = ["LABEL_FORMATS", "LabelSet", "Predictions", "VideoLabels", "get_adapter"]
