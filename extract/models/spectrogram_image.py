"""DeepSpectrum-style front end: audio windows -> mel spectrogram -> viridis RGB image.

DeepSpectrum (Amiriparian et al., 2017; ``deepspectrum/backend/plotting.py``, mode ``mel``)
plots each audio chunk with librosa and matplotlib and feeds the picture to an ImageNet CNN.
:func:`spectrogram_images` reproduces that picture without drawing a figure, batched in torch
(CPU or CUDA):

1. STFT as ``librosa.stft(y, n_fft, hop_length=n_fft // 2, center=False)``: periodic Hann
   window of ``n_fft`` samples, only whole frames, ``T = 1 + (S - n_fft) // hop`` columns.
   DeepSpectrum's default ``n_fft`` is the next power of two of ``int(0.025 * sr)``
   (512 at 16 kHz, so hop 256 = 16 ms).
2. Power ``|X|^2`` through ``librosa.feature.melspectrogram`` defaults: 128 mel bands
   (DeepSpectrum ``-nm`` default), Slaney mel scale, Slaney (unit-area) filter norm,
   0 Hz to Nyquist.
3. ``librosa.power_to_db(S, ref=np.max, amin=1e-10, top_db=None)``: dB relative to the
   window's loudest cell.
4. Colour: matplotlib's linear autoscale (``vmin``/``vmax`` = the window's min/max dB) through
   the 256-entry viridis table (index ``clip(floor(256 * v), 0, 255)``, as ``Colormap``).
5. Layout: frequency upward (lowest band in the bottom row), time left to right, the mel grid
   stretched to ``size x size`` pixels by nearest-neighbour sampling (pcolormesh draws each
   cell as a flat quad).

Because of steps 3-4 a window and the same window scaled by any gain give the *same* image
(DeepSpectrum discards absolute level; exact while the power stays above the 1e-10 floor).
Pass ``db_limits=(lo, hi)`` to map the absolute dB ``10 log10(max(S, 1e-10))`` linearly from
``lo`` to ``hi`` instead, which keeps loudness (a full-scale 1 kHz sine peaks at about +27 dB
with the defaults; ``(-60, 40)`` is a workable range).

Not matched: DeepSpectrum draws with librosa ``specshow(y_axis='mel')``, whose axis is a
symlog scale, so its band rows are not all equally tall as here; its default image is 227 px
(AlexNet) rather than 224; its PNG round trip may round colours by one level.

The images are uint8 RGB ``(N, 224, 224, 3)``. An ImageNet DenseNet needs them as float
``(N, 3, 224, 224)`` scaled to [0, 1] and standardised with ImageNet mean
``(0.485, 0.456, 0.406)`` and std ``(0.229, 0.224, 0.225)`` (per RGB channel).

:func:`windows` (generic, also used for ECAPA's 1.5 s windows) cuts the waveform into windows
every hop or centred on given times.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache

import numpy as np
import torch

from extract.errors import ConfigError
from extract.models.fbank import as_batch, mel_filter_bank

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEEPSPECTRUM_N_MELS = 128
IMAGE_SIZE = 224
AMIN = 1e-10


# --------------------------------------------------------------------------- windowing


def _window_starts(
    n_samples: int,
    sample_rate: int,
    win: int,
    hop_s: float | None,
    centers: np.ndarray | None,
) -> np.ndarray:
    """First sample of every window (may be negative or past the end), int64."""
    if centers is not None:
        c = np.asarray(centers, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(c)):
            raise ValueError(f"centers must be finite; got {c[~np.isfinite(c)][:5].tolist()}")
        return np.floor(c * sample_rate - win / 2.0 + 0.5).astype(np.int64)
    if hop_s is None or not hop_s > 0:
        raise ConfigError(f"hop_s must be > 0 when no centers are given; got {hop_s}")
    hop = max(1, int(round(hop_s * sample_rate)))
    if n_samples == 0:
        return np.zeros(0, dtype=np.int64)
    n = 1 + math.ceil(max(n_samples - win, 0) / hop)
    return np.arange(n, dtype=np.int64) * hop


def windows(
    wav: np.ndarray | torch.Tensor,
    sample_rate: int,
    win_s: float,
    hop_s: float | None = None,
    centers: np.ndarray | list[float] | None = None,
) -> tuple[np.ndarray | torch.Tensor, np.ndarray]:
    """Cut a mono signal into fixed-length windows, zero-padded where they leave the signal.

    Each window has ``W = round(win_s * sample_rate)`` samples. Without ``centers``, windows
    start at ``k * round(hop_s * sample_rate)`` for ``k = 0 .. ceil(max(S - W, 0) / hop)``, i.e.
    until the signal is covered (the last one zero-padded; none for an empty signal). With
    ``centers`` (seconds), window ``i`` starts at sample ``round(centers[i] * sr - W / 2)``
    (half up) and ``hop_s`` is ignored.

    Args:
        wav: ``(S,)`` samples, numpy or torch (any device).

    Returns:
        ``(windows, center_times)``: windows ``(N, W)`` of the input's kind, dtype and device;
        centre times ``(N,)`` float64 seconds, ``(start + W / 2) / sample_rate`` (the requested
        centres up to half a sample).
    """
    if wav.ndim != 1:
        raise ValueError(f"wav must be 1-D (S,); got shape {tuple(wav.shape)}")
    if sample_rate <= 0:
        raise ConfigError(f"sample_rate must be > 0; got {sample_rate}")
    win = int(round(win_s * sample_rate))
    if win < 1:
        raise ConfigError(f"win_s={win_s} is shorter than one sample at {sample_rate} Hz")
    n_samples = int(wav.shape[0])
    starts = _window_starts(n_samples, sample_rate, win, hop_s, centers)
    times = (starts + win / 2.0) / sample_rate
    # windows wholly outside the signal are all zeros wherever they lie: clip so pads stay <= W
    clipped = np.clip(starts, -win, n_samples)
    pad_lo = int(max(0, -clipped.min())) if clipped.size else 0
    pad_hi = int(max(0, clipped.max() + win - n_samples)) if clipped.size else 0
    rows = clipped + pad_lo
    if torch.is_tensor(wav):
        padded = torch.nn.functional.pad(wav[None], (pad_lo, pad_hi))[0]
        if padded.shape[0] < win:
            return wav.new_zeros((0, win)), times
        view = padded.unfold(0, win, 1)
        return view[torch.as_tensor(rows, device=wav.device)].contiguous(), times
    padded = np.pad(np.asarray(wav), (pad_lo, pad_hi))
    if padded.shape[0] < win:
        return np.zeros((0, win), dtype=padded.dtype), times
    view = np.lib.stride_tricks.sliding_window_view(padded, win)
    return view[rows].copy(), times


# --------------------------------------------------------------------------- spectrogram


def deepspectrum_n_fft(sample_rate: int) -> int:
    """DeepSpectrum's default FFT size: next power of two of ``int(0.025 * sample_rate)``."""
    n = int(sample_rate * 0.025)
    return 1 << (n - 1).bit_length()


@lru_cache(maxsize=8)
def colormap_lut(name: str = "viridis") -> np.ndarray:
    """A matplotlib colormap sampled once at its 256 entries: ``(256, 3)`` uint8 RGB."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError as exc:
        raise ConfigError(f"unknown matplotlib colormap {name!r}") from exc
    lut = cmap(np.arange(256), bytes=True)[:, :3]
    lut.setflags(write=False)
    return lut


def mel_power_spectrogram(
    wins: np.ndarray | torch.Tensor,
    sample_rate: int = 16000,
    n_fft: int | None = None,
    hop_length: int | None = None,
    n_mels: int = DEEPSPECTRUM_N_MELS,
) -> torch.Tensor:
    """Mel power spectrogram as DeepSpectrum/librosa computes it: ``(N, n_mels, T)`` float32.

    ``wins`` is ``(N, S)`` or ``(S,)`` with ``S >= n_fft``; see the module docstring.
    """
    x, _, _ = as_batch(wins, "wins")
    n_fft = deepspectrum_n_fft(sample_rate) if n_fft is None else int(n_fft)
    hop = n_fft // 2 if hop_length is None else int(hop_length)
    if hop < 1:
        raise ConfigError(f"hop_length must be >= 1; got {hop}")
    if x.shape[-1] < n_fft:
        raise ValueError(f"windows of {x.shape[-1]} samples are shorter than n_fft={n_fft}")
    fb = mel_filter_bank(n_fft, n_mels, sample_rate, 0.0, None, "slaney", "slaney")
    fb_t = torch.from_numpy(fb.T).to(device=x.device, dtype=torch.float32)  # (n_mels, F)
    window = torch.hann_window(n_fft, periodic=True, device=x.device, dtype=torch.float32)
    spec = torch.fft.rfft(x.unfold(-1, n_fft, hop) * window, dim=-1)  # (N, T, F)
    power = spec.real.square() + spec.imag.square()
    return fb_t @ power.transpose(1, 2)


def _unit_levels(db: torch.Tensor, db_limits: tuple[float, float] | None) -> torch.Tensor:
    """dB ``(N, M, T)`` -> colour levels in [0, 1] (per-window autoscale or fixed limits)."""
    if db_limits is None:
        lo = db.amin(dim=(1, 2), keepdim=True)
        span = db.amax(dim=(1, 2), keepdim=True) - lo
        return torch.where(span > 0, (db - lo) / span.clamp(min=1e-12), torch.zeros_like(db))
    lo, hi = float(db_limits[0]), float(db_limits[1])
    if not hi > lo:
        raise ConfigError(f"db_limits must be (low, high) with high > low; got {db_limits}")
    return ((db - lo) / (hi - lo)).clamp(0.0, 1.0)


def _grid_indices(n_rows: int, n_cols: int, size: int, device: torch.device):
    """Nearest cell for each pixel: (band index per image row, frame index per column)."""
    px = (torch.arange(size, device=device, dtype=torch.float64) + 0.5) / size
    rows = n_rows - 1 - torch.floor(px * n_rows).long().clamp(max=n_rows - 1)
    cols = torch.floor(px * n_cols).long().clamp(max=n_cols - 1)
    return rows, cols


def spectrogram_images(
    wins: np.ndarray | torch.Tensor,
    sample_rate: int = 16000,
    n_fft: int | None = None,
    hop_length: int | None = None,
    n_mels: int = DEEPSPECTRUM_N_MELS,
    size: int = IMAGE_SIZE,
    cmap: str = "viridis",
    db_limits: tuple[float, float] | None = None,
) -> np.ndarray | torch.Tensor:
    """Audio windows -> DeepSpectrum mel spectrogram pictures, uint8 RGB ``(N, size, size, 3)``.

    Args:
        wins: ``(N, S)`` (or ``(S,)``) float windows, e.g. from :func:`windows`, ``S >= n_fft``.
        db_limits: ``None`` for DeepSpectrum's per-window autoscale (level-invariant), or fixed
            absolute ``(low, high)`` dB to keep loudness.

    Returns:
        numpy uint8 for numpy input, else a uint8 tensor on the input's device; a 1-D input
        gives one ``(size, size, 3)`` image.
    """
    _, was_numpy, was_1d = as_batch(wins, "wins")
    power = mel_power_spectrogram(wins, sample_rate, n_fft, hop_length, n_mels)
    power = power.clamp(min=AMIN)
    if db_limits is None:  # power_to_db(ref=np.max), as a ratio so that gains cancel exactly
        power = power / power.amax(dim=(1, 2), keepdim=True)
    db = 10.0 * torch.log10(power)
    levels = _unit_levels(db, db_limits)
    rows, cols = _grid_indices(levels.shape[1], levels.shape[2], size, levels.device)
    pixels = levels[:, rows][:, :, cols]  # (N, size, size)
    idx = torch.floor(pixels * 256.0).long().clamp(0, 255)
    lut = torch.from_numpy(colormap_lut(cmap).copy()).to(levels.device)
    images = lut[idx]
    if was_1d:
        images = images[0]
    return images.cpu().numpy() if was_numpy else images
