"""Log-mel filterbank front ends (batched torch; CPU or CUDA).

Two front ends live here:

* :func:`log_mel_fbank` is the project's own 80-d ``fbank`` feature (see its docstring for the
  exact recipe) with :func:`frame_times` giving the centre time of every row.
* :class:`SpeechBrainFbank` re-implements the front end of SpeechBrain's ECAPA VoxCeleb recipe
  (``speechbrain.lobes.features.Fbank(n_mels=80)`` followed by
  ``InputNormalization(norm_type="sentence", std_norm=False)``), the input that the published
  ``spkrec-ecapa-voxceleb`` embedding model was trained on.

:func:`mel_filter_bank` (HTK or Slaney mel scale, librosa-style triangles) is shared with
:mod:`extract.models.spectrogram_image`.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import numpy as np
import torch
from torch import nn

from extract.errors import ConfigError

log = logging.getLogger(__name__)

MelScale = Literal["htk", "slaney"]

_SLANEY_F_SP = 200.0 / 3.0  # Hz per mel below the break frequency
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_LOGSTEP = math.log(6.4) / 27.0


# --------------------------------------------------------------------------- input handling


def as_batch(wav: np.ndarray | torch.Tensor, name: str = "wav") -> tuple[torch.Tensor, bool, bool]:
    """``(N, S)`` float32 tensor from a 1-D or 2-D array; also (was_numpy, was_1d)."""
    was_numpy = not torch.is_tensor(wav)
    x = torch.from_numpy(np.asarray(wav)) if was_numpy else wav
    if x.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-D (S,) or 2-D (N, S); got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must hold float samples in [-1, 1]; got dtype {x.dtype}")
    was_1d = x.ndim == 1
    x = x.to(torch.float32)
    return (x.unsqueeze(0) if was_1d else x), was_numpy, was_1d


def _restore(out: torch.Tensor, was_numpy: bool, was_1d: bool) -> np.ndarray | torch.Tensor:
    """Drop the batch axis added for a 1-D input and convert back to numpy if needed."""
    if was_1d:
        out = out[0]
    return out.cpu().numpy() if was_numpy else out


def _ms_to_samples(ms: float, sample_rate: int, what: str) -> int:
    n = int(round(sample_rate * ms / 1000.0))
    if n < 1:
        raise ConfigError(f"{what}={ms} ms is shorter than one sample at {sample_rate} Hz")
    return n


# --------------------------------------------------------------------------- mel filters


def hz_to_mel(hz: np.ndarray | float, scale: MelScale = "htk") -> np.ndarray:
    """Hz to mel: HTK ``2595 log10(1 + f/700)`` or Slaney (linear < 1 kHz, log above)."""
    hz = np.asarray(hz, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    if scale != "slaney":
        raise ConfigError(f"unknown mel scale {scale!r}; expected 'htk' or 'slaney'")
    mel = hz / _SLANEY_F_SP
    high = hz >= _SLANEY_MIN_LOG_HZ
    min_log_mel = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP
    safe = np.maximum(hz, _SLANEY_MIN_LOG_HZ)
    return np.where(high, min_log_mel + np.log(safe / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP, mel)


def mel_to_hz(mel: np.ndarray | float, scale: MelScale = "htk") -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    if scale != "slaney":
        raise ConfigError(f"unknown mel scale {scale!r}; expected 'htk' or 'slaney'")
    min_log_mel = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP
    high = mel >= min_log_mel
    return np.where(
        high,
        _SLANEY_MIN_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (mel - min_log_mel)),
        mel * _SLANEY_F_SP,
    )


def mel_filter_bank(
    n_fft: int,
    n_mels: int,
    sample_rate: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    scale: MelScale = "htk",
    norm: Literal["slaney"] | None = None,
) -> np.ndarray:
    """Triangular mel filters, ``(n_fft // 2 + 1, n_mels)`` float64.

    ``n_mels + 2`` edge frequencies are equally spaced in mel between ``f_min`` and ``f_max``
    (default Nyquist); filter ``m`` rises linearly (in Hz) from edge ``m`` to a peak of 1 at edge
    ``m + 1`` and falls to 0 at edge ``m + 2``, evaluated at the FFT bin frequencies
    ``k * sample_rate / n_fft`` (the librosa / ``transformers.audio_utils`` construction).
    ``norm="slaney"`` scales each filter to unit area (``2 / (f[m+2] - f[m])``).
    """
    f_max = sample_rate / 2.0 if f_max is None else float(f_max)
    if not 0.0 <= f_min < f_max <= sample_rate / 2.0:
        raise ConfigError(
            f"need 0 <= f_min < f_max <= {sample_rate / 2}; got f_min={f_min}, f_max={f_max}"
        )
    if n_mels < 1 or n_fft < 2:
        raise ConfigError(f"need n_mels >= 1 and n_fft >= 2; got n_mels={n_mels}, n_fft={n_fft}")
    edges_mel = np.linspace(hz_to_mel(f_min, scale), hz_to_mel(f_max, scale), n_mels + 2)
    edges = mel_to_hz(edges_mel, scale)
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    widths = np.diff(edges)
    ramps = edges[None, :] - fft_freqs[:, None]  # (n_freqs, n_mels + 2)
    lower = -ramps[:, :-2] / widths[:-1]
    upper = ramps[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(lower, upper))
    if norm == "slaney":
        filters *= 2.0 / (edges[2:] - edges[:-2])[None, :]
    elif norm is not None:
        raise ConfigError(f"unknown mel filter norm {norm!r}; expected None or 'slaney'")
    if np.any(filters.max(axis=0) == 0.0):
        log.warning("some of the %d mel filters are empty at n_fft=%d", n_mels, n_fft)
    return filters


def mel_band_centers(
    n_mels: int,
    sample_rate: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    scale: MelScale = "htk",
) -> np.ndarray:
    """Peak frequency (Hz) of each filter of :func:`mel_filter_bank`, ``(n_mels,)``."""
    f_max = sample_rate / 2.0 if f_max is None else float(f_max)
    edges_mel = np.linspace(hz_to_mel(f_min, scale), hz_to_mel(f_max, scale), n_mels + 2)
    return mel_to_hz(edges_mel, scale)[1:-1]


# --------------------------------------------------------------------------- project fbank


def log_mel_fbank(
    wav: np.ndarray | torch.Tensor,
    sample_rate: int = 16000,
    n_mels: int = 80,
    win_ms: float = 25.0,
    hop_ms: float = 10.0,
    n_fft: int = 512,
    f_min: float = 20.0,
    f_max: float | None = None,
    log_floor: float = 1e-10,
) -> np.ndarray | torch.Tensor:
    """The project's ``fbank`` feature: 80-d natural-log mel filterbank energies.

    Exactly, for each signal (no dither, pre-emphasis, DC removal or mean normalisation):

    1. frames of ``win = round(sr * win_ms / 1000)`` samples (400 at 16 kHz) every
       ``hop = round(sr * hop_ms / 1000)`` samples (160), frame ``t`` covering samples
       ``[t * hop, t * hop + win)``; only whole frames inside the signal, so
       ``T = 1 + (S - win) // hop`` (0 rows when ``S < win``);
    2. each frame times a periodic Hann window of ``win`` samples
       (``0.5 - 0.5 cos(2 pi n / win)``), zero-padded to ``n_fft`` (512) points;
    3. power spectrum ``|rfft|^2`` (``n_fft // 2 + 1`` bins, no scaling);
    4. ``n_mels`` triangular filters on the HTK mel scale from ``f_min`` (20 Hz) to ``f_max``
       (default Nyquist), peak 1, no area normalisation (:func:`mel_filter_bank`);
    5. ``log(max(energy, log_floor))`` with ``log_floor = 1e-10`` (so silence gives -23.03).

    Row ``t`` is centred at ``frame_times(T, hop_s, win_s)[t] = (t * hop + win / 2) / sr``.

    Args:
        wav: ``(S,)`` or ``(N, S)`` float samples (numpy or torch, any device); a batch must
            share one length ``S``.

    Returns:
        ``(T, n_mels)`` or ``(N, T, n_mels)`` float32, numpy for numpy input, else a tensor on
        the input's device.
    """
    x, was_numpy, was_1d = as_batch(wav)
    win = _ms_to_samples(win_ms, sample_rate, "win_ms")
    hop = _ms_to_samples(hop_ms, sample_rate, "hop_ms")
    if n_fft < win:
        raise ConfigError(f"n_fft={n_fft} is shorter than the {win}-sample window")
    fb = torch.from_numpy(mel_filter_bank(n_fft, n_mels, sample_rate, f_min, f_max, "htk"))
    fb = fb.to(device=x.device, dtype=torch.float32)
    if x.shape[-1] < win:
        out = x.new_zeros((x.shape[0], 0, n_mels))
        return _restore(out, was_numpy, was_1d)
    frames = x.unfold(-1, win, hop)  # (N, T, win)
    window = torch.hann_window(win, periodic=True, device=x.device, dtype=torch.float32)
    spec = torch.fft.rfft(frames * window, n=n_fft, dim=-1)
    power = spec.real.square() + spec.imag.square()
    out = torch.log(torch.clamp(power @ fb, min=log_floor))
    return _restore(out, was_numpy, was_1d)


def frame_times(n_frames: int, hop_s: float = 0.010, win_s: float = 0.025) -> np.ndarray:
    """Centre time (s) of each of ``n_frames`` rows: ``t * hop_s + win_s / 2``, float64."""
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0; got {n_frames}")
    return np.arange(n_frames, dtype=np.float64) * hop_s + win_s / 2.0


# --------------------------------------------------------------------------- SpeechBrain


def _sb_to_mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def speechbrain_filter_bank(
    n_mels: int = 80,
    n_fft: int = 400,
    sample_rate: int = 16000,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> torch.Tensor:
    """SpeechBrain's frozen triangular ``Filterbank`` matrix, ``(n_fft // 2 + 1, n_mels)``.

    Mirrors ``speechbrain.processing.features.Filterbank`` in float32: ``n_mels + 2`` points
    equally spaced on the HTK mel scale, centres ``hz[1:-1]``, and each filter a triangle
    *symmetric in Hz* around its centre with half-width ``hz[m + 1] - hz[m]`` (the distance to
    the lower neighbour), peak 1, evaluated on ``linspace(0, sr // 2, n_fft // 2 + 1)``. This
    differs from :func:`mel_filter_bank`, whose triangles end at the upper neighbour.
    """
    f_max = sample_rate / 2.0 if f_max is None else float(f_max)
    if not 0.0 <= f_min < f_max:
        raise ConfigError(f"need 0 <= f_min < f_max; got f_min={f_min}, f_max={f_max}")
    mel = torch.linspace(_sb_to_mel(f_min), _sb_to_mel(f_max), n_mels + 2)
    hz = 700 * (10 ** (mel / 2595) - 1)
    band = (hz[1:] - hz[:-1])[:-1]
    f_central = hz[1:-1]
    all_freqs = torch.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    slope = (all_freqs[None, :] - f_central[:, None]) / band[:, None]  # (n_mels, n_freqs)
    tri = torch.minimum(slope + 1.0, -slope + 1.0)
    return torch.clamp(tri, min=0.0).transpose(0, 1).contiguous()


def check_lengths(lengths: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
    """Relative lengths ``(N,)`` in ``(0, 1]`` (all ones when ``None``)."""
    if lengths is None:
        return torch.ones(n, device=device)
    lengths = torch.as_tensor(lengths, dtype=torch.float32, device=device)
    if lengths.shape != (n,):
        raise ValueError(f"lengths must have shape ({n},); got {tuple(lengths.shape)}")
    if bool(((lengths <= 0) | (lengths > 1)).any()):
        raise ValueError(f"relative lengths must lie in (0, 1]; got {lengths.tolist()}")
    return lengths


#: SpeechBrain's ``make_padding_mask`` tolerance (frames ``j < lengths * T - 1e-6`` are valid).
PADDING_EPS = 1e-6


def valid_frames(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """Frames that count per item, as current SpeechBrain's ``make_padding_mask`` counts them:
    ``#{j : j < lengths * T - 1e-6}`` (float32), i.e. ``ceil(lengths * T - 1e-6)``.
    SpeechBrain <= 1.0.3 used ``round(lengths * T)`` instead (one frame fewer for fractional
    parts below one half)."""
    steps = torch.arange(t, device=lengths.device)
    return (steps[None, :] < (lengths.float() * t - PADDING_EPS)[:, None]).sum(dim=1)


def sentence_mean_norm(feats: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """SpeechBrain ``InputNormalization(norm_type="sentence", std_norm=False)``.

    Subtracts from every frame of item ``i`` (padding included, ``avoid_padding_norm=False``)
    the mean over its valid frames, counted as current SpeechBrain does
    (:func:`valid_frames`); no variance scaling. ``feats``: ``(N, T, F)``; ``lengths``:
    relative lengths ``(N,)`` (default all 1, where every version agrees).
    """
    n, t = feats.shape[:2]
    lengths = check_lengths(lengths, n, feats.device)
    count = valid_frames(lengths, t).clamp(min=1)  # SpeechBrain would divide by 0 here
    mask = (torch.arange(t, device=feats.device)[None, :] < count[:, None]).to(feats.dtype)
    mean = (feats * mask[:, :, None]).sum(dim=1, keepdim=True) / count[:, None, None]
    return feats - mean


class SpeechBrainFbank(nn.Module):
    """SpeechBrain's ECAPA VoxCeleb front end: ``Fbank(n_mels=80)`` + sentence mean norm.

    Matched (from the SpeechBrain source of ``lobes/features.py::Fbank``,
    ``processing/features.py::STFT/spectral_magnitude/Filterbank/InputNormalization`` and the
    ``spkrec-ecapa-voxceleb`` hyperparameters):

    * STFT: ``torch.stft`` with ``n_fft=400``, ``win_length=round(16 * 25)=400``,
      ``hop_length=round(16 * 10)=160``, ``torch.hamming_window(400)`` (periodic),
      ``center=True`` with ``pad_mode="constant"`` (zeros), unnormalised, onesided. Frame ``t``
      is centred at ``t * 10 ms``; ``T = 1 + S // 160``.
    * ``spectral_magnitude(power=1)``: ``re^2 + im^2`` (a power spectrum, no eps).
    * ``Filterbank`` frozen, ``filter_shape="triangular"``, ``f_min=0``, ``f_max=sr/2``,
      ``n_mels=80`` (:func:`speechbrain_filter_bank`), then ``log_mel=True``
      ``_amplitude_to_DB``: ``10 log10(max(x, amin=1e-10)) - 10 log10(max(amin, ref=1))``,
      clipped from below at ``max - top_db`` (``top_db=80``) where the max runs over all
      frames and bands of each item (padding included, as in SpeechBrain).
    * ``InputNormalization(norm_type="sentence", std_norm=False)``: :func:`sentence_mean_norm`
      (valid frames counted as current SpeechBrain counts them when lengths are passed).
    * No deltas, no context window (recipe: ``deltas=False``, ``context=False``).

    Not verified: no SpeechBrain install can run here, so outputs were never compared with
    SpeechBrain's numerically (the filter matrix repeats their float32 torch arithmetic step by
    step; the STFT uses ``return_complex=True`` where they square the real/imag pairs), nor
    whether a release newer than the source read changed one of these defaults. The embedding
    normaliser ``mean_var_norm_emb`` of the hyperparameters is *not* applied, matching
    ``EncoderClassifier.encode_batch(normalize=False)``, its default.

    Input ``(N, S)`` float waveform at 16 kHz; output ``(N, T, n_mels)`` float32.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 80,
        n_fft: int = 400,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        f_min: float = 0.0,
        f_max: float | None = None,
        amin: float = 1e-10,
        ref_value: float = 1.0,
        top_db: float = 80.0,
        mean_norm: bool = True,
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.n_mels = n_mels
        self.n_fft = n_fft
        self.win_length = _ms_to_samples(win_ms, sample_rate, "win_ms")
        self.hop_length = _ms_to_samples(hop_ms, sample_rate, "hop_ms")
        if self.win_length > n_fft:
            raise ConfigError(f"win_ms={win_ms} gives {self.win_length} samples > n_fft={n_fft}")
        self.amin = amin
        self.db_offset = 10.0 * math.log10(max(amin, ref_value))
        self.top_db = top_db
        self.mean_norm = mean_norm
        window = torch.hamming_window(self.win_length)
        fb = speechbrain_filter_bank(n_mels, n_fft, sample_rate, f_min, f_max)
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("filters", fb, persistent=False)

    def n_frames(self, n_samples: int) -> int:
        """Rows produced for a signal of ``n_samples`` samples (``center=True``)."""
        return 1 + n_samples // self.hop_length

    def frame_times(self, n_frames: int) -> np.ndarray:
        """Centre time (s) of each row: ``t * hop / sr``."""
        return np.arange(n_frames, dtype=np.float64) * self.hop_length / self.sample_rate

    def log_fbank(self, wav: torch.Tensor) -> torch.Tensor:
        """``Fbank`` alone (no mean normalisation): ``(N, S)`` -> ``(N, T, n_mels)`` in dB."""
        if wav.ndim != 2:
            raise ValueError(f"wav must be (N, S); got shape {tuple(wav.shape)}")
        if wav.shape[-1] < 1:
            raise ValueError("wav has no samples")
        spec = torch.stft(
            wav.float(),
            self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            normalized=False,
            onesided=True,
            return_complex=True,
        )  # (N, F, T)
        power = (spec.real.square() + spec.imag.square()).transpose(1, 2)
        fbanks = power @ self.filters
        db = 10.0 * torch.log10(torch.clamp(fbanks, min=self.amin)) - self.db_offset
        floor = db.amax(dim=(-2, -1), keepdim=True) - self.top_db
        return torch.maximum(db, floor)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, S)`` waveform (+ relative lengths ``(N,)``) -> ``(N, T, n_mels)`` features."""
        with torch.no_grad():
            feats = self.log_fbank(wav)
            if self.mean_norm:
                feats = sentence_mean_norm(feats, lengths)
        return feats
