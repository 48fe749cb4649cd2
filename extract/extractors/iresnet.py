"""``iresnet`` and ``iresnet_au``: insightface IResNet face embeddings (512-d, 112x112 input).

``iresnet`` loads an insightface ``backbone.pth``; ``iresnet_au`` loads the same keys plus an
optional ``au_head.*`` and writes per-AU probabilities as the extra ``aus`` when the checkpoint
has that head. ``options.depth`` (r18 | r34 | r50 | r100, optional) is checked against the
depth read from the checkpoint. Input: ``(x / 255 - 0.5) / 0.5``, resized to 112 if needed.
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

DEPTH_NAMES = ("r18", "r34", "r50", "r100")  # extract.models.iresnet.DEPTHS (kept torch-free)


@EXTRACTORS.register("iresnet")
class IResNetExtractor(TorchVisualExtractor):
    """IResNet embedding per aligned face crop."""

    name = "iresnet"
    OPTIONS: ClassVar[dict[str, tuple[Any, ...] | None]] = {"depth": (*DEPTH_NAMES, None)}

    def _check_depth(self, model: Any, source: Path) -> None:
        from extract.models.iresnet import DEPTHS

        depth = self.option("depth")
        layers = tuple(model.config["layers"])
        if depth is not None and layers != DEPTHS[depth]:
            found = next((name for name, d in DEPTHS.items() if d == layers), str(layers))
            raise ConfigError(f"checkpoint {source} is an IResNet of depth {found}, but "
                              f"features.yaml sets options.depth: {depth} for "
                              f"{self.spec.name!r}; fix options.depth or remove it")

    def build(self, source: Path) -> tuple[torch.nn.Module, dict[str, int]]:
        from extract.models.iresnet import IResNet

        model = IResNet.from_checkpoint(source)
        self._check_depth(model, source)
        return model, {"": model.embedding_dim}

    def preprocess(self, crops: np.ndarray) -> torch.Tensor:
        from extract.models.iresnet import preprocess_rgb

        return preprocess_rgb(crops)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"": self.model(x)}


@EXTRACTORS.register("iresnet_au")
class IResNetAUExtractor(IResNetExtractor):
    """IResNet embedding plus, when the checkpoint has an AU head, per-AU probabilities."""

    name = "iresnet_au"
    EXTRAS: ClassVar[tuple[str, ...]] = ("aus",)

    def build(self, source: Path) -> tuple[torch.nn.Module, dict[str, int]]:
        from extract.models.iresnet import IResNetAU

        model = IResNetAU.from_checkpoint(source)
        self._check_depth(model, source)
        declared = self.spec.extras.get("aus")
        if model.n_aus == 0 and declared is not None:
            raise ConfigError(f"checkpoint {source} has no AU head (au_head.*), but "
                              f"features.yaml declares extras: {{aus: {declared}}} for "
                              f"{self.spec.name!r}; remove extras or use a checkpoint with a head")
        if model.n_aus and declared is None:
            log.info("%s: %s has a %d-AU head; add extras: {aus: %d} to store its "
                     "probabilities", self.spec.name, source, model.n_aus, model.n_aus)
        widths = {"": model.embedding_dim}
        if model.n_aus:
            widths["aus"] = model.n_aus
        return model, widths

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(x)
        return {"": out["embedding"], **({"aus": out["au_probs"]} if "au_probs" in out else {})}
