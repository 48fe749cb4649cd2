"""``deepspectrum``: DenseNet-121 embeddings of mel-spectrogram pictures (DeepSpectrum), 1024-d.

Each window (``input.window`` seconds, default 1.0, every ``input.hop``, default 0.1, or centred
on the given ``centers``; zero-padded at the edges, see :mod:`extract.extractors.audio_windows`)
becomes a DeepSpectrum picture (:func:`extract.models.spectrogram_image.spectrogram_images`:
librosa-style mel power spectrogram, dB, per-window autoscale through a matplotlib colour
map, ``image_size`` pixels square), which is scaled to [0, 1], ImageNet-normalised and fed to a
DenseNet whose pooled ``forward_features`` is the row. Weights: a torchvision-format DenseNet
state dict (ImageNet ``densenet121`` for DeepSpectrum). Row times are the window centres.

Options: ``n_mels`` (128), ``colormap`` (viridis), ``image_size`` (224), ``n_fft`` (null:
DeepSpectrum's next power of two of 25 ms, 512 at 16 kHz), ``db_limits`` (null: per-window
autoscale; ``[low, high]`` dB keeps loudness), ``batch_size`` (32).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from extract.catalog import FeatureSpec
from extract.errors import ConfigError
from extract.extractors.audio_windows import (
    WindowedAudioExtractor,
    full_precision,
    positive,
)
from extract.extractors.base import EXTRACTORS

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@EXTRACTORS.register("deepspectrum")
class DeepSpectrumExtractor(WindowedAudioExtractor):
    """DenseNet features of viridis mel-spectrogram images of audio windows."""

    name = "deepspectrum"
    OPTIONS: ClassVar[dict[str, Any]] = {
        "batch_size": 32, "n_mels": 128, "colormap": "viridis", "image_size": 224, "n_fft": None,
        "db_limits": None,
    }
    DEFAULT_WINDOW: ClassVar[float] = 1.0
    DEFAULT_HOP: ClassVar[float] = 0.1

    @classmethod
    def check_options(cls, spec: FeatureSpec) -> None:
        super().check_options(spec)
        opts = {**cls.OPTIONS, **spec.options}
        positive(spec, "options.n_mels", opts["n_mels"], integer=True)
        positive(spec, "options.image_size", opts["image_size"], integer=True)
        if not isinstance(opts["colormap"], str):
            raise ConfigError(f"feature {spec.name!r}: options.colormap must be a matplotlib "
                              f"colour map name, got {opts['colormap']!r}")
        n_fft = opts["n_fft"]
        if n_fft is not None:
            positive(spec, "options.n_fft", n_fft, integer=True)
        else:
            n = int(0.025 * spec.sample_rate)
            n_fft = 1 << (n - 1).bit_length()
        window = spec.input.get("window", cls.DEFAULT_WINDOW)
        if round(float(window) * spec.sample_rate) < n_fft:
            raise ConfigError(f"feature {spec.name!r}: input.window {window} s is shorter than "
                              f"n_fft = {n_fft} samples")
        limits = opts["db_limits"]
        if limits is not None and not (
            isinstance(limits, list | tuple) and len(limits) == 2
            and all(isinstance(v, int | float) for v in limits) and limits[1] > limits[0]
        ):
            raise ConfigError(f"feature {spec.name!r}: options.db_limits is {limits!r}; expected "
                              "null or [low, high] dB with high > low")

    def build(self, source: Path) -> tuple[torch.nn.Module, int]:
        from extract.models.densenet import DenseNet
        from extract.models.spectrogram_image import colormap_lut

        colormap_lut(self.option("colormap"))  # an unknown name fails here, before any audio
        model = DenseNet.from_checkpoint(source)
        return model, model.embedding_dim

    def images(self, windows: torch.Tensor) -> torch.Tensor:
        """``(n, W)`` windows → ``(n, 3, size, size)`` float ImageNet-normalised pictures."""
        import torch

        from extract.models.spectrogram_image import spectrogram_images

        limits = self.option("db_limits")
        with full_precision(self.device):
            rgb = spectrogram_images(
                windows, self.spec.sample_rate, n_fft=self.option("n_fft"),
                n_mels=int(self.option("n_mels")), size=int(self.option("image_size")),
                cmap=self.option("colormap"), db_limits=tuple(limits) if limits else None,
            )
            x = rgb.permute(0, 3, 1, 2).float().div_(255.0)
            mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
            return (x - mean) / std

    def embed(self, windows: torch.Tensor) -> torch.Tensor:
        """``(n, W)`` windows → ``(n, D)`` pooled DenseNet features."""
        x = self.images(windows)
        with self.autocast():
            return self.model.forward_features(x)
