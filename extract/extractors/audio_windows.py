"""Shared pieces of the PyTorch audio extractors: options, window plans, rows at given centres.

Windowing (ECAPA, DeepSpectrum, any windowed feature), the same convention as
:func:`extract.models.spectrogram_image.windows`:

* without ``centers``: windows of ``W = round(window * sr)`` samples start every
  ``round(hop * sr)`` samples from sample 0 until the signal is covered (the last one
  zero-padded; a signal shorter than one window gives one zero-padded window);
* with ``centers`` (seconds from the waveform start): window ``i`` starts at sample
  ``floor(centers[i] * sr - W / 2 + 0.5)``; parts outside the signal are zeros.

Row times are the window centres ``(start + W / 2) / sr``. A row is valid (mask True) when its
centre lies inside the signal, ``0 <= centre <= S / sr``; rows outside are zeros, mask False.

Frame-rate features (``hf_speech``) answer ``centers`` with :func:`rows_at_centers`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from extract.catalog import FeatureSpec
from extract.errors import ConfigError
from extract.extractors.base import AudioExtractor, AudioRows, to_device

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- inputs


def as_wave(wav: np.ndarray, feature: str) -> np.ndarray:
    """``wav`` as a contiguous float32 ``(S,)`` array, or a ValueError naming what came instead."""
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise ValueError(f"feature {feature!r} expects a mono waveform shaped (S,), got "
                         f"{wav.shape}")
    if not np.issubdtype(wav.dtype, np.floating):
        raise ValueError(f"feature {feature!r} expects float samples in [-1, 1], got {wav.dtype}")
    return np.ascontiguousarray(wav, dtype=np.float32)


def as_centers(centers: np.ndarray | None, feature: str) -> np.ndarray | None:
    """``centers`` as finite float64 ``(N,)`` seconds (or None)."""
    if centers is None:
        return None
    c = np.asarray(centers, dtype=np.float64).reshape(-1)
    bad = c[~np.isfinite(c)]
    if bad.size:
        raise ValueError(f"feature {feature!r}: centers must be finite seconds, got "
                         f"{bad[:5].tolist()}")
    return c


def centers_mask(centers: np.ndarray, duration: float) -> np.ndarray:
    """True where a centre lies inside the signal ``[0, duration]`` seconds."""
    return (centers >= 0.0) & (centers <= duration)


@contextlib.contextmanager
def full_precision(device: str) -> Iterator[None]:
    """inference_mode with autocast off: front ends stay float32 inside the runner's autocast."""
    import torch

    with torch.inference_mode(), torch.autocast(torch.device(device).type, enabled=False):
        yield


def dim_error(spec: FeatureSpec, source: object, got: int, what: str = "rows") -> ConfigError:
    """The error for a checkpoint whose output width differs from the declared ``dim``."""
    return ConfigError(f"checkpoint {source} gives {got}-d {what} but features.yaml declares "
                       f"dim {spec.dim} for {spec.name!r}; set dim or use another checkpoint")


def positive(spec: FeatureSpec, where: str, value: Any, integer: bool = False) -> float | int:
    """``value`` as a positive number (int when ``integer``), else a ConfigError naming it."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    if ok and integer:
        ok = float(value).is_integer()
    if not ok:
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"feature {spec.name!r}: {where} must be {kind}, got {value!r}")
    return int(value) if integer else float(value)


# --------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class WindowPlan:
    """Where every window of one waveform lies."""

    starts: np.ndarray  # (N,) int64 first sample of each window (may be < 0 or past the end)
    times: np.ndarray  # (N,) float64 window centres, seconds
    win: int  # samples per window
    mask: np.ndarray  # (N,) bool: centre inside the signal


def plan_windows(n_samples: int, sample_rate: int, win_s: float, hop_s: float,
                 centers: np.ndarray | None = None) -> WindowPlan:
    """Windows every ``hop_s`` covering the signal, or centred on ``centers`` (module docstring)."""
    win = int(round(win_s * sample_rate))
    if win < 1:
        raise ConfigError(f"window {win_s} s is shorter than one sample at {sample_rate} Hz")
    if centers is not None:
        starts = np.floor(centers * sample_rate - win / 2.0 + 0.5).astype(np.int64)
        mask = centers_mask(centers, n_samples / sample_rate)
    else:
        hop = max(1, int(round(hop_s * sample_rate)))
        n = 0 if n_samples == 0 else 1 + math.ceil(max(n_samples - win, 0) / hop)
        starts = np.arange(n, dtype=np.int64) * hop
        mask = np.ones(n, dtype=bool)
    times = (starts + win / 2.0) / sample_rate
    return WindowPlan(starts, times, win, mask)


def cut_windows(wav: np.ndarray, starts: np.ndarray, win: int) -> np.ndarray:
    """``(len(starts), win)`` windows of ``wav``, zeros outside it (pads only the span needed)."""
    if len(starts) == 0:
        return np.zeros((0, win), dtype=wav.dtype)
    n = len(wav)
    lo, hi = int(starts.min()), int(starts.max()) + win
    span = np.zeros(hi - lo, dtype=wav.dtype)
    a, b = max(lo, 0), min(hi, n)
    if b > a:
        span[a - lo:b - lo] = wav[a:b]
    view = np.lib.stride_tricks.sliding_window_view(span, win)
    return view[starts - lo].copy()


def iter_window_batches(wav: np.ndarray, plan: WindowPlan,
                        batch_size: int) -> Iterator[tuple[slice, np.ndarray]]:
    """``(rows, windows)`` per batch of ``batch_size`` windows; ``rows`` indexes the plan."""
    for i in range(0, len(plan.starts), batch_size):
        rows = slice(i, min(i + batch_size, len(plan.starts)))
        yield rows, cut_windows(wav, plan.starts[rows], plan.win)


# --------------------------------------------------------------------------- rows at centres


def rows_at_centers(values: np.ndarray, frame_times: np.ndarray, centers: np.ndarray,
                    duration: float, mode: str | float = "nearest") -> AudioRows:
    """Rows of a frame-rate feature at ``centers`` (times = the centres).

    ``mode``: ``"nearest"`` takes the frame whose centre is nearest; a number ``w`` averages the
    frames whose centres lie in ``[c - w/2, c + w/2]``; ``"segment"`` (ViPER) averages the frames
    between the midpoints to the neighbouring centres (the first segment starts at the first
    centre, the last ends at the last one; ``centers`` must be sorted). A window holding no frame
    falls back to the nearest one. Centres outside ``[0, duration]`` give zero rows, mask False.
    """
    n, dim = len(centers), values.shape[1]
    mask = centers_mask(centers, duration) & (len(frame_times) > 0)
    out = np.zeros((n, dim), dtype=np.float32)
    if not mask.any():
        return AudioRows({"": out}, centers.copy(), mask)
    idx = np.searchsorted(frame_times, centers)  # first frame at or after each centre
    before = np.clip(idx - 1, 0, len(frame_times) - 1)
    after = np.clip(idx, 0, len(frame_times) - 1)
    closer = np.abs(centers - frame_times[before]) <= np.abs(frame_times[after] - centers)
    nearest = np.where(closer, before, after)
    if mode == "nearest":
        out[mask] = values[nearest[mask]]
        return AudioRows({"": out}, centers.copy(), None if mask.all() else mask)
    if mode == "segment":
        if np.any(np.diff(centers) < 0):
            raise ValueError("centers must be sorted for options.at_centers: segment")
        mids = (centers[1:] + centers[:-1]) / 2.0
        lo = np.concatenate([centers[:1], mids])
        hi = np.concatenate([mids, centers[-1:]])
    else:
        lo, hi = centers - float(mode) / 2.0, centers + float(mode) / 2.0
    first = np.searchsorted(frame_times, lo, side="left")
    last = np.searchsorted(frame_times, hi, side="right")
    empty = last <= first
    first = np.where(empty, nearest, first)
    last = np.where(empty, nearest + 1, last)
    csum = np.concatenate([np.zeros((1, dim)), np.cumsum(values, axis=0, dtype=np.float64)])
    means = (csum[last] - csum[first]) / (last - first)[:, None]
    out[mask] = means[mask].astype(np.float32)
    return AudioRows({"": out}, centers.copy(), None if mask.all() else mask)


def check_at_centers(spec: FeatureSpec, value: Any) -> str | float:
    """``options.at_centers``: ``nearest``, ``segment`` or a positive window in seconds."""
    if value in ("nearest", "segment"):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    raise ConfigError(f"feature {spec.name!r}: options.at_centers is {value!r}; expected "
                      "nearest | segment | a window in seconds (> 0)")


# --------------------------------------------------------------------------- base classes


class TorchAudioExtractor(AudioExtractor):
    """An audio extractor backed by one PyTorch module, built once in :meth:`load`.

    Subclasses set ``OPTIONS`` (option name → default) and may check values in
    :meth:`check_options`; :meth:`build` returns the model and the width it writes.
    """

    requires: ClassVar[tuple[str, ...]] = ("torch",)
    honours_precision: ClassVar[bool] = True
    batched: ClassVar[bool] = True
    OPTIONS: ClassVar[dict[str, Any]] = {}

    def __init__(self, spec: FeatureSpec, device: str = "cpu") -> None:
        super().__init__(spec, device)  # validates the spec
        self.model: Any = None

    @classmethod
    def validate(cls, spec: FeatureSpec) -> None:
        """Raise one ConfigError listing every unknown option, extra or bad value of ``spec``."""
        problems = [f"unknown option {k!r} (known: {', '.join(sorted(cls.OPTIONS)) or 'none'})"
                    for k in spec.options if k not in cls.OPTIONS]
        if spec.extras:
            problems.append(f"unknown extras {sorted(spec.extras)} (extractor {cls.name!r} "
                            "writes none)")
        rate = cls.rate_problem(spec)
        if rate:
            problems.append(rate)
        try:
            cls.check_options(spec)
        except ConfigError as exc:
            problems.append(str(exc).removeprefix(f"feature {spec.name!r}: "))
        if problems:
            raise ConfigError(f"feature {spec.name!r}: " + "; ".join(problems))

    @classmethod
    def check_options(cls, spec: FeatureSpec) -> None:
        """Raise ConfigError for a bad option value (hook)."""

    @classmethod
    def rate_problem(cls, spec: FeatureSpec) -> str | None:
        """What is wrong with ``input.sample_rate`` (hook; the default wants 16000)."""
        if spec.sample_rate != 16000:
            return f"input.sample_rate is {spec.sample_rate}; {cls.name} needs 16000"
        return None

    def option(self, key: str) -> Any:
        """``spec.options[key]``, else the extractor's default."""
        return self.spec.options.get(key, self.OPTIONS.get(key))

    def load(self) -> None:
        """Build the model on ``self.device`` in eval mode and check its width against ``dim``."""
        source = self.weights_path()
        model, width = self.build(source)
        if width != self.spec.dim:
            raise dim_error(self.spec, source, width)
        self.model = model.to(self.device).eval()
        log.info("%s: loaded %s from %s on %s", self.spec.name, type(model).__name__, source,
                 self.device)

    def build(self, source: Path) -> tuple[torch.nn.Module, int]:
        """The model loaded from ``source`` and the width of its rows."""
        raise NotImplementedError


class WindowedAudioExtractor(TorchAudioExtractor):
    """One embedding per window: every ``input.hop`` or centred on the given ``centers``.

    Subclasses implement :meth:`embed` (a float32 ``(n, W)`` batch on the device → ``(n, D)``).
    """

    OPTIONS: ClassVar[dict[str, Any]] = {"batch_size": 32}
    DEFAULT_WINDOW: ClassVar[float] = 1.0
    DEFAULT_HOP: ClassVar[float] = 0.1

    @classmethod
    def check_options(cls, spec: FeatureSpec) -> None:
        positive(spec, "options.batch_size", spec.options.get("batch_size", 1), integer=True)
        positive(spec, "input.window", spec.input.get("window", cls.DEFAULT_WINDOW))
        positive(spec, "input.hop", spec.input.get("hop", cls.DEFAULT_HOP))

    @property
    def window_s(self) -> float:
        return float(self.spec.input.get("window", self.DEFAULT_WINDOW))

    @property
    def hop_s(self) -> float:
        return float(self.spec.input.get("hop", self.DEFAULT_HOP))

    def embed(self, windows: torch.Tensor) -> torch.Tensor:
        """``(n, W)`` float32 windows on the device → ``(n, D)`` embeddings."""
        raise NotImplementedError

    def extract(self, wav: np.ndarray, centers: np.ndarray | None = None) -> AudioRows:
        """(S,) float32 16 kHz waveform → one row per window, times at the window centres."""
        import torch

        wav = as_wave(wav, self.spec.name)
        centers = as_centers(centers, self.spec.name)
        if self.model is None:
            self.load()
        plan = plan_windows(len(wav), self.spec.sample_rate, self.window_s, self.hop_s, centers)
        out = np.zeros((len(plan.starts), self.spec.dim), dtype=np.float32)
        batch = int(self.option("batch_size"))
        for rows, wins in iter_window_batches(wav, plan, batch):
            x = to_device(torch.from_numpy(wins), self.device)
            out[rows] = self.embed(x).float().cpu().numpy()
        out[~plan.mask] = 0.0
        return AudioRows({"": out}, plan.times, None if plan.mask.all() else plan.mask)
