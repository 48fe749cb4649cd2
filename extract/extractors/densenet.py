"""``densenet``: DenseNet (e.g. DenseNet-121) face embeddings from a torchvision-format checkpoint
or Keras ``.h5`` DenseNet weights (see :mod:`extract.models.densenet`).

Options: ``output`` = ``pooled`` (the ``forward_features`` embedding, 1024-d for DenseNet-121)
or ``logits`` (the checkpoint's own classifier head, e.g. a 342-d FER head). Input: RGB crops
resized to 224x224, ImageNet mean/std.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from extract.errors import ConfigError
from extract.extractors.base import EXTRACTORS
from extract.extractors.visual_common import TorchVisualExtractor

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

INPUT_SIZE = 224


@EXTRACTORS.register("densenet")
class DenseNetExtractor(TorchVisualExtractor):
    """DenseNet pooled features or head logits per face crop."""

    name = "densenet"
    OPTIONS: ClassVar[dict[str, tuple[Any, ...] | None]] = {"output": ("pooled", "logits")}
    DEFAULTS: ClassVar[dict[str, Any]] = {"output": "pooled"}

    def build(self, source: Path) -> tuple[torch.nn.Module, dict[str, int]]:
        from extract.models.densenet import DenseNet

        model = DenseNet.from_checkpoint(source)
        logits = self.option("output") == "logits"
        if logits and model.classifier is None:
            raise ConfigError(f"feature {self.spec.name!r}: options.output is logits but "
                              f"{source} has no classifier (weights without a top); use pooled")
        return model, {"": model.config["num_classes"] if logits else model.embedding_dim}

    def rows_label(self) -> str:
        return f"{self.option('output')} rows (options.output)"

    def preprocess(self, crops: np.ndarray) -> torch.Tensor:
        from extract.models.densenet import preprocess_rgb

        return preprocess_rgb(crops, size=INPUT_SIZE)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.option("output") == "logits":
            return {"": self.model(x)}
        return {"": self.model.forward_features(x)}
