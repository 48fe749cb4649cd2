"""Shared pieces of the PyTorch visual extractors: option checks, crop checks, the batch loop.

A subclass of :class:`TorchVisualExtractor` declares its options and extras, builds its model
in :meth:`~TorchVisualExtractor.build` (returning the widths it will write, checked against the
spec) and turns a preprocessed batch into named outputs in
:meth:`~TorchVisualExtractor.forward`. Heavy imports (torch) stay inside methods.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from extract.catalog import FeatureSpec
from extract.errors import ConfigError
from extract.extractors.base import VisualExtractor, to_device

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_crops(crops: np.ndarray, feature: str) -> np.ndarray:
    """``crops`` as a uint8 ``(N, H, W, 3)`` array, or a ValueError naming what came instead."""
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[-1] != 3:
        raise ValueError(f"feature {feature!r} expects RGB crops shaped (N, S, S, 3), got "
                         f"{crops.shape}")
    if crops.dtype != np.uint8:
        raise ValueError(f"feature {feature!r} expects uint8 crops, got {crops.dtype}")
    return crops


def dim_error(spec: FeatureSpec, source: object, got: int, what: str = "rows") -> ConfigError:
    """The error for a checkpoint whose output width differs from the declared ``dim``."""
    return ConfigError(f"checkpoint {source} gives {got}-d {what} but features.yaml declares "
                       f"dim {spec.dim} for {spec.name!r}; set dim or use another checkpoint")


def pil_resize(crops: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    """uint8 ``(N, H, W, 3)`` → ``(N, h, w, 3)`` with ``PIL.Image.resize`` and filter
    ``resample`` (PIL's numbering, as Hugging Face image processors store it: 0 nearest,
    1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming)."""
    from PIL import Image

    try:
        method = Image.Resampling(int(resample))
    except ValueError as exc:
        raise ConfigError(f"resample {resample!r} is not a PIL filter (0-5)") from exc
    h, w = size
    return np.stack([np.asarray(Image.fromarray(c).resize((w, h), method)) for c in crops])


def resize_normalize(crops: np.ndarray, size: tuple[int, int], mean: tuple[float, ...],
                     std: tuple[float, ...], scale: float = 1 / 255,
                     resample: int | None = None) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` → float ``(N, 3, h, w)``: resize to ``size`` when needed,
    ``x * scale``, then ``(x - mean) / std`` per channel.

    With ``resample`` (a PIL filter number) the resize is PIL's on the uint8 crops, as a Hugging
    Face image processor does it; without, a bilinear antialiased resize in torch.
    """
    import torch
    import torch.nn.functional as F

    crops = np.ascontiguousarray(crops)
    if resample is not None and tuple(crops.shape[1:3]) != tuple(size):
        crops = pil_resize(crops, tuple(size), resample)
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False,
                          antialias=True)
    x = x * scale
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


class TorchVisualExtractor(VisualExtractor):
    """A visual extractor backed by one PyTorch module, built once in :meth:`load`.

    Subclasses set ``OPTIONS`` (option name → allowed values, or ``None`` for any value) with
    ``DEFAULTS``, and ``EXTRAS`` (the extra output names they can produce). Every one also takes
    ``batch_size`` (crops per forward; the runner gathers crops across frame batches up to it).
    """

    requires: ClassVar[tuple[str, ...]] = ("torch",)
    honours_precision: ClassVar[bool] = True
    batched: ClassVar[bool] = True
    OPTIONS: ClassVar[dict[str, tuple[Any, ...] | None]] = {}
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    EXTRAS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: FeatureSpec, device: str = "cpu") -> None:
        super().__init__(spec, device)  # validates the spec
        self.model: Any = None

    # ------------------------------------------------------------------ config
    @classmethod
    def validate(cls, spec: FeatureSpec) -> None:
        """Raise one ConfigError listing every unknown or bad option and extra of ``spec``."""
        problems = []
        for key, value in spec.options.items():
            if key == "batch_size":
                if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                    problems.append(f"options.batch_size must be a positive integer, got "
                                    f"{value!r}")
            elif key not in cls.OPTIONS:
                known = sorted({*cls.OPTIONS, "batch_size"})
                problems.append(f"unknown option {key!r} (known: {known})")
            elif cls.OPTIONS[key] is not None and value not in cls.OPTIONS[key]:
                allowed = " | ".join(map(str, cls.OPTIONS[key]))
                problems.append(f"options.{key} is {value!r}; expected {allowed}")
        unknown = sorted(set(spec.extras) - set(cls.EXTRAS))
        if unknown:
            problems.append(f"unknown extras {unknown} (extractor {cls.name!r} can write: "
                            f"{list(cls.EXTRAS) or 'none'})")
        if problems:
            raise ConfigError(f"feature {spec.name!r}: " + "; ".join(problems))

    def option(self, key: str) -> Any:
        """``spec.options[key]``, else the extractor's default."""
        return self.spec.options.get(key, self.DEFAULTS.get(key))

    @property
    def batch_size(self) -> int | None:
        """Crops per forward (``options.batch_size``, set by ``--batch-size NAME=B``); None: the
        runner's frame batch."""
        value = self.spec.options.get("batch_size")
        return int(value) if value is not None else None

    # ----------------------------------------------------------------- compute
    def load(self) -> None:
        """Build the model on ``self.device`` (in eval mode) and check its output widths."""
        source = self.weights_path()
        model, widths = self.build(source)
        if widths[""] != self.spec.dim:
            raise dim_error(self.spec, source, widths[""], self.rows_label())
        for extra, dim in self.spec.extras.items():
            if extra not in widths:
                raise ConfigError(f"checkpoint {source} has no {extra!r} output, but features.yaml "
                                  f"declares extras.{extra} for {self.spec.name!r}; remove it")
            if widths[extra] != int(dim):
                raise ConfigError(f"checkpoint {source} gives {widths[extra]}-d {extra!r} rows "
                                  f"but features.yaml declares extras.{extra}: {dim} for "
                                  f"{self.spec.name!r}; set it to {widths[extra]}")
        self.model = model.to(self.device).eval()
        log.info("%s: loaded %s from %s on %s", self.spec.name, type(model).__name__, source,
                 self.device)

    def build(self, source: Any) -> tuple[torch.nn.Module, dict[str, int]]:
        """The model loaded from ``source`` and its output widths ({"": D, extra: d})."""
        raise NotImplementedError

    def rows_label(self) -> str:
        """What the main output is, for error messages ("rows", "cls rows", ...)."""
        return "rows"

    def preprocess(self, crops: np.ndarray) -> torch.Tensor:
        """uint8 ``(N, S, S, 3)`` RGB → the model's CPU input batch."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Model input on the device → {"": (N, D), extra: (N, d)} (extras may be a superset)."""
        raise NotImplementedError

    def extract(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        crops = check_crops(crops, self.spec.name)
        if self.model is None:
            self.load()
        wanted = {"": self.spec.dim, **{k: int(d) for k, d in self.spec.extras.items()}}
        if len(crops) == 0:
            return {k: np.zeros((0, d), dtype=np.float32) for k, d in wanted.items()}
        step = self.batch_size or len(crops)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in wanted}
        for i in range(0, len(crops), step):
            x = to_device(self.preprocess(crops[i:i + step]), self.device)
            with self.autocast():
                out = self.forward(x)
            for k in wanted:
                parts[k].append(out[k].float().cpu().numpy())
        return {k: np.concatenate(v) for k, v in parts.items()}
