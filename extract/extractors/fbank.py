"""The 80-d log-mel filterbank (25 ms Hann window, 10 ms hop) at its native 100 rows/s.

The recipe is :func:`extract.models.fbank.log_mel_fbank` (see its docstring); ``input.window``
and ``input.hop`` (seconds) set the window and hop, ``dim`` the number of mel bands, and
``options`` may set ``n_fft`` (default: 512, or the next power of two above a longer window),
``f_min`` and ``f_max``.
"""

from __future__ import annotations

import numpy as np

from extract.catalog import FeatureSpec
from extract.errors import ConfigError
from extract.extractors.base import EXTRACTORS, AudioExtractor, AudioRows

_OPTIONS = ("n_fft", "f_min", "f_max")


@EXTRACTORS.register("fbank")
class LogMelFbank(AudioExtractor):
    """Log-mel filterbank rows for one waveform (no weights)."""

    name = "fbank"
    requires = ("torch",)
    needs_weights = False

    def __init__(self, spec: FeatureSpec, device: str = "cpu") -> None:
        super().__init__(spec, device)
        self.require_native_16k(spec, "fbank rows")
        unknown = sorted(set(spec.options) - set(_OPTIONS))
        if unknown:
            raise ConfigError(f"feature {spec.name!r}: unknown fbank options {unknown}; known: "
                              f"{', '.join(_OPTIONS)}")
        self.window = float(spec.input.get("window", 0.025))
        self.hop = float(spec.input.get("hop", 0.010))
        if self.hop <= 0 or self.window <= 0:
            raise ConfigError(f"feature {spec.name!r}: window {self.window} and hop {self.hop} "
                              "must be positive seconds")

    def extract(self, wav: np.ndarray, centers: np.ndarray | None = None) -> AudioRows:
        """(S,) float32 waveform → (T, dim) natural-log mel energies, times at window centres."""
        import torch

        from extract.models.fbank import frame_times, log_mel_fbank

        if centers is not None:
            raise ConfigError(f"feature {self.spec.name!r}: fbank is computed at its native "
                              "rate; centred windows are not supported")
        opts = dict(self.spec.options)
        win = int(round(self.window * self.spec.sample_rate))
        opts.setdefault("n_fft", max(512, 1 << max(0, win - 1).bit_length()))
        x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)).to(self.device)
        with torch.inference_mode():
            out = log_mel_fbank(x, sample_rate=self.spec.sample_rate, n_mels=self.spec.dim,
                                win_ms=self.window * 1000.0, hop_ms=self.hop * 1000.0, **opts)
        values = out.cpu().numpy().astype(np.float32, copy=False)
        return AudioRows({"": values}, frame_times(len(values), self.hop, self.window))
