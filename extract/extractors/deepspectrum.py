"""``deepspectrum``: DenseNet-121 embeddings of mel-spectrogram pictures, as DeepSpectrum computes
them (Amiriparian et al., 2017; DeepSpectrum 0.6.9, ``-m mel``), 1024-d.

Every default is DeepSpectrum's; each step is an option:

* **Rate** (``input.sample_rate``): ``native`` keeps the file's own sample rate (DeepSpectrum
  reads audio with ``librosa.load(sr=None)``), and the FFT is sized from it (``options.n_fft``
  null: next power of two of 25 ms, 512 at 16 kHz, 2048 at 44.1 / 48 kHz). A number resamples
  to that rate first (DeepSpectrum's ``-sr``).
* **Windows** (``input.window`` s, default 1, every ``input.hop`` s, default 0.1): chunk ``n``
  is ``[n hop, n hop + window)`` for ``n < max(S // hop, 1)``. ``options.tail: shorten``
  (DeepSpectrum) cuts chunks at the end of the signal, so the last ones are shorter and their
  picture is stretched over the full width; chunks shorter than ``n_fft`` are dropped.
  ``tail: pad`` (the project's earlier rule) instead places windows until the signal is
  covered and zero-pads the last one, which pulls the dB floor into edge windows. With
  ``centers`` (``rate: frames``) a window is centred on each time and, with ``shorten``, cut to
  the signal (a row whose cut window is shorter than ``n_fft``, or whose centre lies outside
  the signal, is zeros with mask False).
* **Picture** (:mod:`extract.models.spectrogram_image`): ``n_mels`` (128) bands, dB relative to
  the window's peak, colour map ``colormap`` (viridis) autoscaled per window (or fixed
  ``db_limits``), ``freq_axis: symlog`` (librosa's mel axis: base 2, linear below 1 kHz; or
  ``mel``: equal bands), drawn at ``plot_size`` (227) px.
* **Network input**: resized to ``image_size`` (224) with ``PIL.Image.resize`` and filter
  ``resize`` (bicubic, Pillow's default, as DeepSpectrum's Keras extractor does), scaled to
  [0, 1] and ImageNet-normalised (Keras' DenseNet ``preprocess_input``).

Weights: DeepSpectrum's default network is Keras' ImageNet DenseNet121
(``densenet121_weights_tf_dim_ordering_tf_kernels.h5`` or its ``_notop`` twin); both load here
(:mod:`extract.models.densenet`), as does a torchvision DenseNet state dict (different
ImageNet weights, so different numbers). The row is the pooled ``forward_features`` (Keras'
``avg_pool`` layer). Row times are the centres of the audio each picture shows (for a
shortened chunk, the centre of the part inside the signal); with ``centers``, the centres.
``batch_size`` (32) pictures go through the network at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from extract.catalog import FeatureSpec
from extract.errors import ConfigError
from extract.extractors.audio_windows import (
    WindowedAudioExtractor,
    as_centers,
    as_wave,
    centers_mask,
    cut_windows,
    full_precision,
    plan_windows,
    positive,
)
from extract.extractors.base import EXTRACTORS, AudioRows, to_device

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NATIVE = "native"
TAILS = ("shorten", "pad")


def configured_rate(spec: FeatureSpec) -> int | None:
    """``input.sample_rate`` of a DeepSpectrum spec: an int, or None for ``native``."""
    value = spec.input.get("sample_rate", NATIVE)
    return None if value == NATIVE else int(value)


def fft_size(n_fft: int | None, sample_rate: int) -> int:
    """``n_fft``, or DeepSpectrum's default for ``sample_rate`` (next power of two of 25 ms)."""
    if n_fft is not None:
        return int(n_fft)
    from extract.models.spectrogram_image import deepspectrum_n_fft

    return deepspectrum_n_fft(sample_rate)


@dataclass(frozen=True)
class Segments:
    """The audio behind each row: ``[start, stop)`` samples, zero-padded to ``pad_to`` if set."""

    starts: np.ndarray  # (N,) int64, may lie outside the signal when padded
    stops: np.ndarray  # (N,) int64
    times: np.ndarray  # (N,) float64 row times, seconds
    mask: np.ndarray  # (N,) bool: a row with a picture behind it
    pad_to: int | None  # every segment is this long, zeros outside the signal (tail: pad)


def shortened_segments(n_samples: int, sample_rate: int, win_s: float, hop_s: float,
                       n_fft: int, centers: np.ndarray | None = None) -> Segments:
    """DeepSpectrum's chunks (``tail: shorten``): see the module docstring."""
    win = int(round(win_s * sample_rate))
    if centers is not None:
        first = np.floor(centers * sample_rate - win / 2.0 + 0.5).astype(np.int64)
        starts = np.clip(first, 0, n_samples)
        stops = np.clip(first + win, 0, n_samples)
        mask = centers_mask(centers, n_samples / sample_rate) & (stops - starts >= n_fft)
        return Segments(starts, stops, centers.astype(np.float64), mask, None)
    hop = max(1, int(round(hop_s * sample_rate)))
    count = max(n_samples // hop, 1) if n_samples else 0
    starts = np.arange(count, dtype=np.int64) * hop
    stops = np.minimum(starts + win, n_samples)
    keep = stops - starts >= n_fft  # DeepSpectrum cannot plot shorter chunks and drops them
    starts, stops = starts[keep], stops[keep]
    times = (starts + stops) / 2.0 / sample_rate
    return Segments(starts, stops, times, np.ones(len(starts), bool), None)


def padded_segments(n_samples: int, sample_rate: int, win_s: float, hop_s: float,
                    centers: np.ndarray | None = None) -> Segments:
    """Windows covering the signal, the last zero-padded (``tail: pad``)."""
    plan = plan_windows(n_samples, sample_rate, win_s, hop_s, centers)
    return Segments(plan.starts, plan.starts + plan.win, plan.times, plan.mask, plan.win)


@EXTRACTORS.register("deepspectrum")
class DeepSpectrumExtractor(WindowedAudioExtractor):
    """DenseNet features of DeepSpectrum's mel-spectrogram pictures of audio windows."""

    name = "deepspectrum"
    OPTIONS: ClassVar[dict[str, Any]] = {
        "batch_size": 32, "n_mels": 128, "colormap": "viridis", "n_fft": None,
        "db_limits": None, "freq_axis": "symlog", "plot_size": 227, "image_size": 224,
        "resize": "bicubic", "tail": "shorten",
    }
    DEFAULT_WINDOW: ClassVar[float] = 1.0
    DEFAULT_HOP: ClassVar[float] = 0.1

    @classmethod
    def rate_problem(cls, spec: FeatureSpec) -> str | None:
        value = spec.input.get("sample_rate", NATIVE)
        if value == NATIVE or (isinstance(value, int) and not isinstance(value, bool)
                               and value > 0):
            return None
        return (f"input.sample_rate is {value!r}; expected native (the file's own rate, "
                "DeepSpectrum's default) or a rate in Hz")

    @classmethod
    def check_options(cls, spec: FeatureSpec) -> None:
        from extract.models.spectrogram_image import FREQ_AXES, RESIZE_FILTERS

        super().check_options(spec)
        opts = {**cls.OPTIONS, **spec.options}
        for key in ("n_mels", "plot_size", "image_size"):
            positive(spec, f"options.{key}", opts[key], integer=True)
        if not isinstance(opts["colormap"], str):
            raise ConfigError(f"feature {spec.name!r}: options.colormap must be a matplotlib "
                              f"colour map name, got {opts['colormap']!r}")
        for key, allowed in (("freq_axis", FREQ_AXES), ("resize", RESIZE_FILTERS),
                             ("tail", TAILS)):
            if opts[key] not in allowed:
                raise ConfigError(f"feature {spec.name!r}: options.{key} is {opts[key]!r}; "
                                  f"expected {' | '.join(allowed)}")
        if opts["n_fft"] is not None:
            positive(spec, "options.n_fft", opts["n_fft"], integer=True)
        if cls.rate_problem(spec) is None and configured_rate(spec) is not None:
            cls.check_window(spec, configured_rate(spec))
        limits = opts["db_limits"]
        if limits is not None and not (
            isinstance(limits, list | tuple) and len(limits) == 2
            and all(isinstance(v, int | float) for v in limits) and limits[1] > limits[0]
        ):
            raise ConfigError(f"feature {spec.name!r}: options.db_limits is {limits!r}; expected "
                              "null or [low, high] dB with high > low")

    @classmethod
    def check_window(cls, spec: FeatureSpec, sample_rate: int) -> int:
        """``n_fft`` at ``sample_rate``; a ConfigError when a window is shorter than it."""
        n_fft = fft_size(spec.options.get("n_fft"), sample_rate)
        window = spec.input.get("window", cls.DEFAULT_WINDOW)
        if round(float(window) * sample_rate) < n_fft:
            raise ConfigError(f"feature {spec.name!r}: input.window {window} s is shorter than "
                              f"n_fft = {n_fft} samples at {sample_rate} Hz")
        return n_fft

    @property
    def input_rate(self) -> int | None:
        return configured_rate(self.spec)

    def build(self, source: Path) -> tuple[torch.nn.Module, int]:
        from extract.models.densenet import DenseNet
        from extract.models.spectrogram_image import colormap_lut

        colormap_lut(self.option("colormap"))  # an unknown name fails here, before any audio
        model = DenseNet.from_checkpoint(source)
        return model, model.embedding_dim

    # ---------------------------------------------------------------- compute
    def extract_at(self, wav: np.ndarray, sample_rate: int,
                   centers: np.ndarray | None = None) -> AudioRows:
        return self.extract(wav, centers, sample_rate=sample_rate)

    def extract(self, wav: np.ndarray, centers: np.ndarray | None = None,
                sample_rate: int | None = None) -> AudioRows:
        """``(S,)`` float32 waveform at ``sample_rate`` (required for ``native``) → one row per
        window; see the module docstring."""
        import torch

        wav = as_wave(wav, self.spec.name)
        centers = as_centers(centers, self.spec.name)
        rate = self.rate_of(sample_rate)
        n_fft = self.check_window(self.spec, rate)
        if self.model is None:
            self.load()
        if self.option("tail") == "pad":
            seg = padded_segments(len(wav), rate, self.window_s, self.hop_s, centers)
        else:
            seg = shortened_segments(len(wav), rate, self.window_s, self.hop_s, n_fft, centers)
        out = np.zeros((len(seg.times), self.spec.dim), dtype=np.float32)
        batch = int(self.option("batch_size"))
        for rows, chunk in self.batches(wav, seg, batch):
            x = to_device(torch.from_numpy(chunk), self.device)
            out[rows] = self.embed_at(x, rate).float().cpu().numpy()
        out[~seg.mask] = 0.0
        return AudioRows({"": out}, seg.times, None if seg.mask.all() else seg.mask)

    def rate_of(self, sample_rate: int | None) -> int:
        """The rate of the waveform at hand: the configured one, or the given native rate."""
        want = self.input_rate
        if want is None:
            if sample_rate is None:
                raise ValueError(f"feature {self.spec.name!r} reads audio at the file's own "
                                 "sample rate (input.sample_rate: native); pass sample_rate")
            return int(sample_rate)
        if sample_rate is not None and int(sample_rate) != want:
            raise ValueError(f"feature {self.spec.name!r} needs audio at {want} Hz; got "
                             f"{sample_rate} Hz")
        return want

    @staticmethod
    def batches(wav: np.ndarray, seg: Segments, batch: int):
        """``(row indices, (n, L) windows)``: rows with a picture, grouped by window length."""
        valid = np.flatnonzero(seg.mask)
        if seg.pad_to is not None:
            for i in range(0, len(valid), batch):
                rows = valid[i:i + batch]
                yield rows, cut_windows(wav, seg.starts[rows], seg.pad_to)
            return
        lengths = seg.stops - seg.starts
        for length in np.unique(lengths[valid]):
            same = valid[lengths[valid] == length]
            for i in range(0, len(same), batch):
                rows = same[i:i + batch]
                idx = seg.starts[rows][:, None] + np.arange(int(length))[None, :]
                yield rows, np.ascontiguousarray(wav[idx])

    def images(self, windows: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """``(n, L)`` windows → ``(n, 3, image_size, image_size)`` ImageNet-normalised pictures."""
        import torch

        from extract.models.spectrogram_image import resize_images, spectrogram_images

        rate = self.rate_of(sample_rate)
        limits = self.option("db_limits")
        with full_precision(self.device):
            rgb = spectrogram_images(
                windows, rate, n_fft=self.option("n_fft"), n_mels=int(self.option("n_mels")),
                size=int(self.option("plot_size")), cmap=self.option("colormap"),
                db_limits=tuple(limits) if limits else None,
                freq_axis=self.option("freq_axis"),
            )
            rgb = resize_images(rgb, int(self.option("image_size")), self.option("resize"))
            x = rgb.permute(0, 3, 1, 2).float().div_(255.0)
            mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
            return (x - mean) / std

    def embed_at(self, windows: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """``(n, L)`` windows at ``sample_rate`` → ``(n, D)`` pooled DenseNet features."""
        x = self.images(windows, sample_rate)
        with self.autocast():
            return self.model.forward_features(x)

    def embed(self, windows: torch.Tensor) -> torch.Tensor:
        return self.embed_at(windows, self.rate_of(None))
