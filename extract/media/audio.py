"""Audio from any container to 16 kHz mono float32, on the same clock as the video frames."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from extract.errors import MediaError, NoAudioStreamError

TARGET_RATE = 16000


@dataclass
class Audio:
    """A decoded waveform and where it starts on the container clock."""

    wav: np.ndarray  # (S,) float32 in [-1, 1]
    sample_rate: int
    start: float  # seconds; time of wav[0] relative to the container start

    @property
    def duration(self) -> float:
        return len(self.wav) / self.sample_rate


@dataclass
class AudioTracks:
    """One input's audio decoded at each rate its features read: ``{rate: Audio}``, where rate
    ``None`` is the file's own. ``wav`` / ``start`` / ``duration`` / ``sample_rate`` are those of
    the first track (they share the container clock)."""

    tracks: dict[int | None, Audio]

    def at(self, rate: int | None) -> Audio:
        """The track decoded at ``rate`` (None: native)."""
        if rate not in self.tracks:
            raise KeyError(f"no audio decoded at {rate or 'the native'} rate "
                           f"(decoded: {sorted(map(str, self.tracks))})")
        return self.tracks[rate]

    @property
    def first(self) -> Audio:
        return next(iter(self.tracks.values()))

    @property
    def wav(self) -> np.ndarray:
        return self.first.wav

    @property
    def sample_rate(self) -> int:
        return self.first.sample_rate

    @property
    def start(self) -> float:
        return self.first.start

    @property
    def duration(self) -> float:
        return self.first.duration


def has_audio(path: str | Path) -> bool:
    import av

    try:
        with av.open(str(path)) as c:
            return bool(c.streams.audio)
    except Exception:  # an unreadable file has no usable audio either
        return False


def read_audio(path: str | Path, sample_rate: int | None = TARGET_RATE) -> Audio:
    """Decode the first audio stream, resampled to ``sample_rate`` mono float32 (``None``: the
    stream's own rate, mixed down to mono only).

    Raises :class:`NoAudioStreamError` when there is none (a recorded condition), and
    :class:`MediaError` when it cannot be decoded.
    """
    import av

    path = Path(path)
    try:
        container = av.open(str(path))
    except Exception as exc:
        raise MediaError(f"{path}: cannot open ({type(exc).__name__}: {exc})") from exc
    with container as c:
        if not c.streams.audio:
            raise NoAudioStreamError(f"{path}: no audio stream")
        stream = c.streams.audio[0]
        origin = float(c.start_time) / av.time_base if c.start_time is not None else 0.0
        if sample_rate is None:
            sample_rate = int(stream.rate or stream.codec_context.sample_rate or 0)
            if sample_rate <= 0:
                raise MediaError(f"{path}: the audio stream declares no sample rate")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        start = None
        try:
            for frame in c.decode(stream):
                if start is None and frame.pts is not None:
                    start = float(frame.pts * frame.time_base) - origin
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except Exception as exc:
            raise MediaError(f"{path}: audio decoding failed "
                             f"({type(exc).__name__}: {exc})") from exc
    if not chunks:
        raise MediaError(f"{path}: the audio stream holds no samples")
    wav = np.concatenate(chunks).astype(np.float32, copy=False)
    return Audio(wav, sample_rate, max(0.0, start or 0.0))
