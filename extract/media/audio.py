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


def has_audio(path: str | Path) -> bool:
    import av

    try:
        with av.open(str(path)) as c:
            return bool(c.streams.audio)
    except Exception:  # an unreadable file has no usable audio either
        return False


def read_audio(path: str | Path, sample_rate: int = TARGET_RATE) -> Audio:
    """Decode the first audio stream, resampled to ``sample_rate`` mono float32.

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
