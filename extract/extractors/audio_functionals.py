"""openSMILE functionals (eGeMAPSv02 88-d, ComParE_2016 6373-d): one row per clip, or per
sliding window.

``options.feature_set`` names an ``opensmile.FeatureSet``; ``options.window`` and
``options.hop`` (seconds, both > 0, or both absent / 0) ask for windows:

* no window (default): **one row per clip**, the functionals of the whole waveform; its
  timestamp is the **centre of the clip's audio** (half its duration after the waveform start),
  so ``nearest`` / ``mean`` alignment onto any grid of the clip finds it;
* windows: rows for windows starting at 0, hop, 2·hop, … that fit inside the audio, plus one
  ending exactly at the end when the last one stops short of it (every sample is covered); a
  clip shorter than one window gets one row over the whole clip. Each row's timestamp is the
  centre of its window.

A row whose functionals are not all finite (openSMILE fills segments that are too short with
NaN) is stored as zeros with mask False. Values are stored as float32: ComParE functionals
reach ~1e11, far beyond float16.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

from extract.catalog import FeatureSpec
from extract.errors import ConfigError
from extract.extractors.audio_lld import INT16_MAX
from extract.extractors.base import EXTRACTORS, AudioExtractor, AudioRows

log = logging.getLogger(__name__)

#: Functionals width of the sets whose width we know (checked against ``dim`` early).
WIDTH = {"eGeMAPSv02": 88, "ComParE_2016": 6373}
OPTIONS = ("feature_set", "window", "hop")


@EXTRACTORS.register("opensmile_functionals")
class OpenSmileFunctionals(AudioExtractor):
    """openSMILE functionals per clip or per window (no weights; CPU only)."""

    name = "opensmile_functionals"
    requires = ("opensmile",)
    needs_weights = False
    store_dtype = "float32"

    def __init__(self, spec: FeatureSpec, device: str = "cpu") -> None:
        super().__init__(spec, device)
        self.feature_set, self.window, self.hop = self._options(spec)
        self._smile: Any = None

    @classmethod
    def validate(cls, spec: FeatureSpec) -> None:
        cls._options(spec)

    @classmethod
    def _options(cls, spec: FeatureSpec) -> tuple[str, float, float]:
        """(feature set, window, hop); every problem in one ConfigError."""
        problems = []
        if spec.sample_rate != 16000:
            problems.append(f"input.sample_rate is {spec.sample_rate}, but audio is decoded at "
                            "16000 Hz")
        opts = spec.options
        problems += [f"unknown option {k!r} (known: {', '.join(OPTIONS)})" for k in opts
                     if k not in OPTIONS]
        if spec.extras:
            problems.append(f"unknown extras {sorted(spec.extras)} (functionals write none)")
        feature_set = str(opts.get("feature_set", "eGeMAPSv02"))
        window, hop = opts.get("window") or 0, opts.get("hop") or 0
        try:
            window, hop = float(window), float(hop)
        except (TypeError, ValueError):
            problems.append(f"options.window / options.hop must be seconds, got {window!r}, "
                            f"{hop!r}")
            window = hop = 0.0
        if (window > 0) != (hop > 0) or window < 0 or hop < 0:
            problems.append(f"options.window and options.hop: give both (seconds > 0) for "
                            f"sliding windows, or neither for one row per clip; got {window}, "
                            f"{hop}")
        if window > 0 and hop > 0 and not (isinstance(spec.rate, int | float)
                                           and abs(spec.rate * hop - 1.0) < 1e-6):
            problems.append(f"options.window / hop give a row every {hop} s: set rate to "
                            f"{1.0 / hop:g} (rows per second; rate: clip is one row per clip)")
        elif window <= 0 and spec.rate != "clip":
            problems.append(f"one row per clip: set rate: clip (got {spec.rate!r}), or give "
                            "options.window and options.hop for windows")
        width = WIDTH.get(feature_set)
        if width is not None and width != spec.dim:
            problems.append(f"dim {spec.dim} does not match {feature_set} functionals "
                            f"({width} columns)")
        if problems:
            raise ConfigError(f"feature {spec.name!r}: " + "; ".join(problems))
        return feature_set, window, hop

    def load(self) -> None:
        import opensmile

        if self.feature_set not in opensmile.FeatureSet.__members__:
            raise ConfigError(f"feature {self.spec.name!r}: options.feature_set "
                              f"{self.feature_set!r} is not an openSMILE feature set; known: "
                              f"{', '.join(opensmile.FeatureSet.__members__)}")
        self._smile = opensmile.Smile(feature_set=opensmile.FeatureSet[self.feature_set],
                                      feature_level=opensmile.FeatureLevel.Functionals)

    def column_names(self) -> list[str]:
        """The stored columns, in order (openSMILE's functional names)."""
        if self._smile is None:
            self.load()
        return list(self._smile.feature_names)

    def segments(self, duration: float) -> np.ndarray:
        """(S, 2) [start, end] seconds of the rows of a clip lasting ``duration``."""
        if self.window <= 0 or duration <= self.window:
            return np.array([[0.0, duration]])
        starts = np.arange(0.0, duration - self.window + 1e-9, self.hop)
        if starts[-1] + self.window < duration - 1e-9:  # the tail: one window ending at the end
            starts = np.append(starts, duration - self.window)
        return np.stack([starts, starts + self.window], axis=1)

    def extract(self, wav: np.ndarray, centers: np.ndarray | None = None) -> AudioRows:
        """(S,) float32 16 kHz waveform → (1, D) per clip or (W, D) per window."""
        if centers is not None:
            raise ConfigError(f"feature {self.spec.name!r}: functionals are per clip or per "
                              "window; centred windows are not supported")
        if self._smile is None:
            self.load()
        sr = self.spec.sample_rate
        wav = np.clip(np.asarray(wav, dtype=np.float32), -1.0, INT16_MAX)
        segments = self.segments(len(wav) / sr)
        rows = []
        for start, end in segments:
            part = wav[int(round(start * sr)) : int(round(end * sr))]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "segment too short": NaN row
                frame = self._smile.process_signal(part, sr)
            rows.append(frame.to_numpy(dtype=np.float32).reshape(-1)[: self.spec.dim])
        values = np.stack(rows).astype(np.float32)
        mask = np.isfinite(values).all(axis=1)
        values[~mask] = 0.0
        if not mask.all():
            log.debug("%s: %d of %d rows not finite (segment too short)", self.spec.name,
                      int((~mask).sum()), len(mask))
        return AudioRows({"": values}, segments.mean(axis=1), mask)
