"""``vit`` and ``vit_mae``: Vision Transformer face embeddings via transformers.

Weights: a Hugging Face id (resolved from the local HF cache) or a local folder holding
``config.json`` and the weights (what ``save_pretrained`` writes). ``vit`` loads ``ViTModel``
(e.g. ``nateraw/vit-age-classifier``; a classifier head in the checkpoint is ignored);
``vit_mae`` loads the ``ViTMAEModel`` encoder (e.g. ``facebook/vit-mae-base``) with masking off:
``mask_ratio=0`` and a fixed identity shuffle, so every patch is encoded, in the original
order, deterministically. Options: ``pool`` = ``cls`` (the CLS token of the last hidden state)
or ``mean`` (the mean of the patch tokens). Preprocessing follows the checkpoint's
``preprocessor_config.json`` (mean, std, rescale, and the ``resample`` filter: bicubic for
``facebook/vit-mae-base``) when present, else ImageNet statistics and bilinear (the ViT image
processor's defaults); crops of another size are resized to the model's ``image_size`` with PIL
and that filter, on the uint8 crops, as the image processor does.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from extract.errors import ConfigError
from extract.extractors.base import EXTRACTORS
from extract.extractors.visual_common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TorchVisualExtractor,
    resize_normalize,
)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PREPROCESSOR_FILE = "preprocessor_config.json"
BILINEAR = 2  # PIL's number for bilinear: ViTImageProcessor's default resample


def _triple(value: float | list[float], key: str, source: Path) -> tuple[float, ...]:
    values = [value] * 3 if isinstance(value, int | float) else list(value)
    if len(values) != 3:
        raise ConfigError(f"{source / PREPROCESSOR_FILE}: {key} {value!r} is not 3 values")
    return tuple(float(v) for v in values)


def read_preprocessing(folder: Path) -> dict[str, Any]:
    """mean, std, scale and resample from ``preprocessor_config.json`` (ImageNet statistics
    and bilinear, the ViT image processor's defaults, without one)."""
    path = folder / PREPROCESSOR_FILE
    if not path.is_file():
        log.warning("%s has no %s; using ImageNet mean/std, bilinear resize", folder,
                    PREPROCESSOR_FILE)
        return {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "scale": 1 / 255,
                "resample": BILINEAR}
    cfg = json.loads(path.read_text())
    resample = cfg.get("resample", BILINEAR)
    if not (isinstance(resample, int) and not isinstance(resample, bool)
            and 0 <= resample <= 5):
        raise ConfigError(f"{path}: resample {resample!r} is not a PIL filter number (0-5)")
    out: dict[str, Any] = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "scale": 1.0,
                           "resample": resample}
    if cfg.get("do_normalize", True):
        out["mean"] = _triple(cfg.get("image_mean", IMAGENET_MEAN), "image_mean", folder)
        out["std"] = _triple(cfg.get("image_std", IMAGENET_STD), "image_std", folder)
    if cfg.get("do_rescale", True):
        out["scale"] = float(cfg.get("rescale_factor", 1 / 255))
    return out


def _pair(size: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


class _HFVisionExtractor(TorchVisualExtractor):
    """Shared loading, preprocessing and pooling of the transformers ViT-family encoders."""

    requires: ClassVar[tuple[str, ...]] = ("torch", "transformers")
    OPTIONS: ClassVar[dict[str, tuple[Any, ...] | None]] = {"pool": ("cls", "mean")}
    DEFAULTS: ClassVar[dict[str, Any]] = {"pool": "cls"}
    MODEL_TYPE: ClassVar[str]  # config.json model_type this extractor loads
    SUGGEST: ClassVar[dict[str, str]] = {"vit": "vit", "vit_mae": "vit_mae"}

    def model_class(self) -> Any:
        raise NotImplementedError

    def load_kwargs(self) -> dict[str, Any]:
        """Extra ``from_pretrained`` arguments (config overrides, constructor flags)."""
        return {}

    def build(self, source: Path) -> tuple[torch.nn.Module, dict[str, int]]:
        import torch

        config_file = source / "config.json"
        if not config_file.is_file():
            raise ConfigError(f"weights {source} for {self.spec.name!r} must be a Hugging Face "
                              "model folder with config.json (what save_pretrained writes)")
        model_type = json.loads(config_file.read_text()).get("model_type")
        if model_type != self.MODEL_TYPE:
            hint = (f"; use extractor {self.SUGGEST[model_type]!r}"
                    if model_type in self.SUGGEST else "")
            raise ConfigError(f"checkpoint {source} is a {model_type!r} model; extractor "
                              f"{self.name!r} loads model_type {self.MODEL_TYPE!r}{hint}")
        cls = self.model_class()
        try:
            model, info = cls.from_pretrained(
                str(source), local_files_only=True, dtype=torch.float32,
                output_loading_info=True, **self.load_kwargs())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load {cls.__name__} from {source}: {exc}") from exc
        missing = sorted(info.get("missing_keys", ()))
        if missing:
            shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
            raise ConfigError(f"checkpoint {source} lacks {len(missing)} encoder weights of "
                              f"{cls.__name__} ({shown}); it is not a full {self.MODEL_TYPE} "
                              "encoder")
        self.image_size = _pair(model.config.image_size)
        self.prep = read_preprocessing(source)
        return model, {"": int(model.config.hidden_size)}

    def rows_label(self) -> str:
        return f"{self.option('pool')}-pooled rows (hidden_size)"

    def preprocess(self, crops: np.ndarray) -> torch.Tensor:
        return resize_normalize(crops, self.image_size, self.prep["mean"], self.prep["std"],
                                self.prep["scale"], resample=self.prep["resample"])

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, 1 + P, H) last hidden state → (N, H)."""
        return hidden[:, 0] if self.option("pool") == "cls" else hidden[:, 1:].mean(dim=1)


@EXTRACTORS.register("vit")
class ViTExtractor(_HFVisionExtractor):
    """transformers ``ViTModel`` (no pooler) embedding per face crop."""

    name = "vit"
    MODEL_TYPE = "vit"

    def model_class(self) -> Any:
        from transformers import ViTModel

        return ViTModel

    def load_kwargs(self) -> dict[str, Any]:
        return {"add_pooling_layer": False}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"": self.pool(self.model(pixel_values=x).last_hidden_state)}


@EXTRACTORS.register("vit_mae")
class ViTMAEExtractor(_HFVisionExtractor):
    """transformers ``ViTMAEModel`` encoder with masking off; embedding per face crop."""

    name = "vit_mae"
    MODEL_TYPE = "vit_mae"

    def model_class(self) -> Any:
        from transformers import ViTMAEModel

        return ViTMAEModel

    def load_kwargs(self) -> dict[str, Any]:
        return {"mask_ratio": 0.0}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        import torch

        n_patches = self.model.embeddings.patch_embeddings.num_patches
        # argsort of 0..P-1 is the identity: no shuffle, every patch kept in its place
        noise = torch.arange(n_patches, device=x.device, dtype=torch.float32)
        hidden = self.model(pixel_values=x, noise=noise.expand(len(x), -1)).last_hidden_state
        if hidden.shape[1] != n_patches + 1:
            raise RuntimeError(f"ViTMAE returned {hidden.shape[1] - 1} of {n_patches} patch "
                               "tokens; masking is not off (config.mask_ratio "
                               f"{self.model.config.mask_ratio})")
        return {"": self.pool(hidden)}
