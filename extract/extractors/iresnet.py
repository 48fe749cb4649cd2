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


#: The 12 action units of Aff-Wild2 / ABAW, in the order of its annotation files (the default
#: column names of a 12-AU head; fuse.labels.affwild2.AU_NAMES reads labels in this order).
ABAW_AUS = ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25",
            "AU26")


@EXTRACTORS.register("iresnet_au")
class IResNetAUExtractor(IResNetExtractor):
    """IResNet embedding plus, when the checkpoint has an AU head, per-AU probabilities.

    ``options.au_names``: the AU of each head output, in order (recorded as the ``labels`` of
    ``<name>.aus``); a 12-AU head without it is taken to be in the ABAW order (:data:`ABAW_AUS`),
    a head of another width needs it.
    """

    name = "iresnet_au"
    EXTRAS: ClassVar[tuple[str, ...]] = ("aus",)
    OPTIONS: ClassVar[dict[str, tuple[Any, ...] | None]] = {**IResNetExtractor.OPTIONS,
                                                            "au_names": None}

    @classmethod
    def validate(cls, spec: Any) -> None:
        super().validate(spec)
        count = spec.extras.get("aus")
        names = spec.options.get("au_names")
        if names is not None and not (
                isinstance(names, list | tuple) and names and len(set(names)) == len(names)
                and all(isinstance(n, str) and n for n in names)):
            raise ConfigError(f"feature {spec.name!r}: options.au_names must be a list of "
                              f"distinct AU names, got {names!r}")
        if count is None:
            return
        if names is None and count != len(ABAW_AUS):
            raise ConfigError(f"feature {spec.name!r}: extras.aus is {count}; name its AUs in "
                              "head order with options.au_names (only a 12-AU head defaults "
                              "to the ABAW order)")
        if names is not None and len(names) != count:
            raise ConfigError(f"feature {spec.name!r}: options.au_names has {len(names)} names "
                              f"but extras.aus is {count}")

    def au_names(self) -> list[str]:
        """The AU of each ``aus`` column, in order."""
        return [str(n) for n in self.spec.options.get("au_names") or ABAW_AUS]

    def output_labels(self) -> dict[str, list[str]]:
        """``<name>.aus``: the AU names."""
        if "aus" not in self.spec.extras:
            return {}
        return {f"{self.spec.name}.aus": self.au_names()}

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
