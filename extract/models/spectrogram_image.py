"""DeepSpectrum's front end: audio windows -> mel spectrogram -> the picture DeepSpectrum draws.

DeepSpectrum (Amiriparian et al., 2017; ``deepspectrum/backend/plotting.py``, mode ``mel``,
librosa 0.7) plots each audio chunk with ``librosa.display.specshow`` into a 1 x 1 inch
matplotlib figure saved at ``dpi=227`` (a 227 x 227 PNG), and its Keras extractor resizes that
picture to the network's 224 x 224 with ``PIL.Image.resize`` (bicubic, Pillow's default since
7.0). :func:`spectrogram_images` reproduces the picture without drawing a figure, batched in
torch (CPU or CUDA), and :func:`resize_images` does the PIL step:

1. STFT as ``librosa.stft(y, n_fft, hop_length=n_fft // 2, center=False)``: periodic Hann
   window of ``n_fft`` samples, only whole frames, ``T = 1 + (S - n_fft) // hop`` columns.
   DeepSpectrum's default ``n_fft`` is the next power of two of ``int(0.025 * sr)``, so it
   follows the sample rate (512 at 16 kHz, 2048 at 44.1 or 48 kHz).
2. Power ``|X|^2`` through ``librosa.feature.melspectrogram`` defaults: 128 mel bands
   (DeepSpectrum ``-nm`` default), Slaney mel scale, Slaney (unit-area) filter norm,
   0 Hz to Nyquist.
3. ``librosa.power_to_db(S, ref=np.max, amin=1e-10, top_db=None)``: dB relative to the
   window's loudest cell.
4. Colour: matplotlib's linear autoscale (``vmin``/``vmax`` = the window's min/max dB) through
   the 256-entry colour map (index ``clip(floor(256 * v), 0, 255)``, as ``Colormap``), each
   entry rounded to 8 bits as the Agg renderer does.
5. Layout (``freq_axis="symlog"``, :func:`symlog_rows`): ``specshow(y_axis='mel')`` draws band
   ``k`` between the midpoints of ``librosa.mel_frequencies(n_mels, 0, sr / 2)`` (the first
   from 0 Hz, the last to Nyquist) on matplotlib's ``symlog`` axis with base 2 and
   ``linthresh`` 1000 Hz: ``y = 2 f`` below 1 kHz, ``y = 1000 (2 + log2(f / 1000))`` above,
   so 0-1 kHz fills 40 % of the height at 16 kHz (31 % at 44.1 kHz). Time runs left to right
   in equal columns. Each pixel takes the colour of the cell under its centre (a pixel centre
   exactly on a cell edge goes to the lower / earlier cell), which is how Agg fills the
   un-antialiased quads of ``pcolormesh``; the tests compare it with matplotlib's own
   rendering. ``freq_axis="mel"`` gives every band the same height instead (the project's
   picture before it followed DeepSpectrum).

Because of steps 3-4 a window and the same window scaled by any gain give the *same* image
(DeepSpectrum discards absolute level; exact while the power stays above the 1e-10 floor).
Pass ``db_limits=(lo, hi)`` to map the absolute dB ``10 log10(max(S, 1e-10))`` linearly from
``lo`` to ``hi`` instead, which keeps loudness (a full-scale 1 kHz sine peaks at about +27 dB
with the defaults; ``(-60, 40)`` is a workable range).

An ImageNet DenseNet then needs the pictures as float ``(N, 3, 224, 224)`` scaled to [0, 1] and
standardised with ImageNet mean ``(0.485, 0.456, 0.406)`` and std ``(0.229, 0.224, 0.225)``
(Keras' ``densenet.preprocess_input``, mode ``torch``).

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
PLOT_SIZE = 227  # DeepSpectrum's figure: 1 x 1 inch at dpi 227
IMAGE_SIZE = 224  # the network's input
AMIN = 1e-10
FREQ_AXES = ("symlog", "mel")
SYMLOG_LINTHRESH = 1000.0  # librosa specshow(y_axis='mel'): symlog, base 2, linthresh 1 kHz
SYMLOG_BASE = 2.0
#: PIL filters by name (``Image.Resampling``); DeepSpectrum's resize uses Pillow's default.
RESIZE_FILTERS = ("bicubic", "bilinear", "nearest", "lanczos", "box", "hamming")


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
    """A matplotlib colormap at its 256 entries as Agg paints them: ``(256, 3)`` uint8 RGB.

    Agg converts each float colour to 8 bits by rounding (``Colormap(bytes=True)`` would
    truncate, one level darker on most entries).
    """
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError as exc:
        raise ConfigError(f"unknown matplotlib colormap {name!r}") from exc
    rgba = cmap(np.arange(256))
    lut = np.round(rgba[:, :3] * 255.0).astype(np.uint8)
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


def symlog(hz: np.ndarray, linthresh: float = SYMLOG_LINTHRESH,
           base: float = SYMLOG_BASE) -> np.ndarray:
    """matplotlib's ``symlog`` transform (``linscale`` 1) of non-negative frequencies."""
    hz = np.asarray(hz, dtype=np.float64)
    scale = 1.0 / (1.0 - 1.0 / base)  # matplotlib's linscale_adj for linscale = 1
    safe = np.maximum(hz, linthresh)
    log_part = linthresh * (scale + np.log(safe / linthresh) / np.log(base))
    return np.where(hz <= linthresh, hz * scale, log_part)


def specshow_mel_edges(n_mels: int, fmax: float) -> np.ndarray:
    """The ``n_mels + 1`` band edges (Hz) of ``librosa.display.specshow(y_axis='mel')``: the
    midpoints of ``mel_frequencies(n_mels, 0, fmax)``, from 0 Hz to ``fmax``."""
    from extract.models.fbank import hz_to_mel, mel_to_hz

    centres = mel_to_hz(np.linspace(0.0, float(hz_to_mel(fmax, "slaney")), n_mels), "slaney")
    edges = np.asarray(centres, dtype=np.float64).copy()
    edges[1:] -= 0.5 * np.diff(edges)
    return np.append(np.maximum(0.0, edges), [fmax])


def _cells(edges: np.ndarray, size: int) -> np.ndarray:
    """For each pixel (from the low end) the cell under its centre; ties go to the lower cell.

    ``edges``: ``n + 1`` increasing cell edges in any linear display unit.
    """
    pos = (edges - edges[0]) / (edges[-1] - edges[0]) * size
    centres = np.arange(size, dtype=np.float64) + 0.5
    return np.clip(np.searchsorted(pos, centres, side="left") - 1, 0, len(edges) - 2)


@lru_cache(maxsize=64)
def symlog_rows(n_mels: int, sample_rate: int, size: int) -> np.ndarray:
    """Band index of each image row (top row first) on librosa's symlog mel axis."""
    edges = symlog(specshow_mel_edges(n_mels, sample_rate / 2.0))
    rows = _cells(edges, size)[::-1].copy()
    rows.setflags(write=False)
    return rows


@lru_cache(maxsize=64)
def mel_rows(n_mels: int, size: int) -> np.ndarray:
    """Band index of each image row (top row first), every band equally tall."""
    rows = _cells(np.arange(n_mels + 1, dtype=np.float64), size)[::-1].copy()
    rows.setflags(write=False)
    return rows


@lru_cache(maxsize=256)
def time_cols(n_frames: int, size: int) -> np.ndarray:
    """Frame index of each image column: ``n_frames`` equal columns, left to right."""
    cols = _cells(np.arange(n_frames + 1, dtype=np.float64), size)
    cols.setflags(write=False)
    return cols


def band_rows(freq_axis: str, n_mels: int, sample_rate: int, size: int) -> np.ndarray:
    """Band index of each image row for ``freq_axis`` (``symlog`` or ``mel``)."""
    if freq_axis == "symlog":
        return symlog_rows(n_mels, int(sample_rate), size)
    if freq_axis == "mel":
        return mel_rows(n_mels, size)
    raise ConfigError(f"freq_axis must be one of {', '.join(FREQ_AXES)}; got {freq_axis!r}")


def spectrogram_images(
    wins: np.ndarray | torch.Tensor,
    sample_rate: int = 16000,
    n_fft: int | None = None,
    hop_length: int | None = None,
    n_mels: int = DEEPSPECTRUM_N_MELS,
    size: int = PLOT_SIZE,
    cmap: str = "viridis",
    db_limits: tuple[float, float] | None = None,
    freq_axis: str = "symlog",
) -> np.ndarray | torch.Tensor:
    """Audio windows -> DeepSpectrum mel spectrogram pictures, uint8 RGB ``(N, size, size, 3)``.

    Args:
        wins: ``(N, S)`` (or ``(S,)``) float windows, e.g. from :func:`windows`, ``S >= n_fft``.
        size: the drawn picture's side (DeepSpectrum: 227; :func:`resize_images` then makes
            the network's 224).
        db_limits: ``None`` for DeepSpectrum's per-window autoscale (level-invariant), or fixed
            absolute ``(low, high)`` dB to keep loudness.
        freq_axis: ``symlog`` (librosa's mel axis, as DeepSpectrum draws) or ``mel`` (equal
            band heights).

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
    device = levels.device
    rows = torch.from_numpy(band_rows(freq_axis, n_mels, sample_rate, size).copy()).to(device)
    cols = torch.from_numpy(time_cols(levels.shape[2], size).copy()).to(device)
    pixels = levels[:, rows][:, :, cols]  # (N, size, size)
    idx = torch.floor(pixels * 256.0).long().clamp(0, 255)
    lut = torch.from_numpy(colormap_lut(cmap).copy()).to(device)
    images = lut[idx]
    if was_1d:
        images = images[0]
    return images.cpu().numpy() if was_numpy else images


def resize_images(images: np.ndarray | torch.Tensor, size: int,
                  resample: str = "bicubic") -> np.ndarray | torch.Tensor:
    """``(N, H, W, 3)`` uint8 pictures -> ``(N, size, size, 3)`` with ``PIL.Image.resize``.

    DeepSpectrum's Keras extractor resizes its 227 px pictures this way (Pillow's default filter,
    bicubic since Pillow 7); PIL rounds to 8 bits after each pass, so this runs PIL itself, on
    the CPU. Returns the input's kind (a tensor comes back on its device).
    """
    from PIL import Image

    if resample not in RESIZE_FILTERS:
        raise ConfigError(f"resize filter must be one of {', '.join(RESIZE_FILTERS)}; got "
                          f"{resample!r}")
    is_tensor = torch.is_tensor(images)
    arr = images.cpu().numpy() if is_tensor else np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 pictures shaped (N, H, W, 3); got {arr.dtype} "
                         f"{arr.shape}")
    if arr.shape[1:3] == (size, size):
        return images
    method = getattr(Image.Resampling, resample.upper())
    out = np.stack([np.asarray(Image.fromarray(a).resize((size, size), method))
                    for a in arr]) if len(arr) else np.zeros((0, size, size, 3), np.uint8)
    return torch.from_numpy(out).to(images.device) if is_tensor else out
