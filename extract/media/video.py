"""Video frames with their real presentation timestamps (correct for variable frame rate).

Times are seconds on the container's clock, shifted so the container starts at 0; audio uses the
same origin, so video and audio rows share one time axis.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from extract.errors import MediaError, NoVideoStreamError
from extract.media.sampling import Sampling

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video (before decoding)."""

    path: Path
    width: int
    height: int
    fps: float  # average rate from metadata (0 when unknown)
    duration: float  # seconds (0 when unknown)
    num_frames: int  # from metadata (0 when unknown)
    has_audio: bool


@dataclass
class FrameBatch:
    """Consecutive sampled frames of one video."""

    frames: np.ndarray  # (n, H, W, 3) uint8 RGB
    times: np.ndarray  # (n,) seconds
    indices: np.ndarray  # (n,) decoded-frame index in the video (frame folders: image index)
    valid: np.ndarray | None = None  # (n,) bool: False for a frame without a readable image
    source: dict | None = None  # attrs of the frame clock (first batch of a frame folder)


def _open(path: Path):
    import av

    try:
        container = av.open(str(path))
    except Exception as exc:  # PyAV raises a family of FFmpeg errors
        raise MediaError(f"{path}: cannot open ({type(exc).__name__}: {exc})") from exc
    return container


def _origin(container) -> float:
    import av

    start = container.start_time
    return float(start) / av.time_base if start is not None else 0.0


def probe(path: str | Path) -> VideoInfo:
    """Container metadata of a video file."""
    path = Path(path)
    with _open(path) as c:
        if not c.streams.video:
            raise NoVideoStreamError(f"{path}: no video stream")
        s = c.streams.video[0]
        fps = float(s.average_rate) if s.average_rate else 0.0
        if s.duration is not None and s.time_base is not None:
            duration = float(s.duration * s.time_base)
        else:
            duration = float(c.duration) / 1e6 if c.duration else 0.0
        return VideoInfo(path, s.codec_context.width, s.codec_context.height, fps, duration,
                         int(s.frames or 0), bool(c.streams.audio))


def frame_times(path: str | Path) -> np.ndarray:
    """Presentation times of every frame from a demux pass (no decoding), sorted."""
    path = Path(path)
    with _open(path) as c:
        if not c.streams.video:
            raise NoVideoStreamError(f"{path}: no video stream")
        s = c.streams.video[0]
        origin = _origin(c)
        try:
            pts = [p.pts for p in c.demux(s) if p.pts is not None and p.size > 0]
        except Exception as exc:
            raise MediaError(f"{path}: demux failed ({type(exc).__name__}: {exc})") from exc
        return np.sort(np.asarray(pts, dtype=np.float64) * float(s.time_base) - origin)


def iter_frames(path: str | Path, sampling: Sampling | None = None, batch_size: int = 64,
                check_truncation: bool = True) -> Iterator[FrameBatch]:
    """Decode ``path`` and yield batches of the sampled frames with their timestamps.

    Raises :class:`MediaError` when the file cannot be decoded or stops well short of the
    duration its container declares (a truncated file).
    """
    path = Path(path)
    sampling = sampling or Sampling()
    keep_times = None
    if sampling.mode != "all":
        every = frame_times(path)
        keep_times = every[sampling.select(every)]
    with _open(path) as c:
        if not c.streams.video:
            raise NoVideoStreamError(f"{path}: no video stream")
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        origin = _origin(c)
        fps = float(stream.average_rate) if stream.average_rate else 25.0
        frames, times, indices = [], [], []
        last_t, count = None, 0
        try:
            for i, frame in enumerate(c.decode(stream)):
                t = (float(frame.pts * frame.time_base) - origin if frame.pts is not None
                     else i / fps)
                last_t, count = t, count + 1
                if keep_times is not None and not _is_kept(t, keep_times, fps):
                    continue
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(t)
                indices.append(i)
                if len(frames) == batch_size:
                    yield FrameBatch(np.stack(frames), np.asarray(times), np.asarray(indices))
                    frames, times, indices = [], [], []
        except MediaError:
            raise
        except Exception as exc:
            raise MediaError(f"{path}: decoding failed after {count} frames "
                             f"({type(exc).__name__}: {exc})") from exc
        if count == 0:
            raise MediaError(f"{path}: no frame could be decoded")
        if check_truncation:
            _check_complete(path, c, stream, last_t or 0.0, fps)
        if frames:
            yield FrameBatch(np.stack(frames), np.asarray(times), np.asarray(indices))


def _is_kept(t: float, keep: np.ndarray, fps: float) -> bool:
    j = int(np.searchsorted(keep, t))
    near = [abs(keep[k] - t) for k in (j - 1, j) if 0 <= k < len(keep)]
    return bool(near) and min(near) < 0.25 / fps


def _check_complete(path: Path, container, stream, last_t: float, fps: float) -> None:
    if stream.duration is not None and stream.time_base is not None:
        declared = float(stream.duration * stream.time_base)
    else:
        declared = float(container.duration) / 1e6 if container.duration else 0.0
    decoded = last_t + 1.0 / fps
    if declared > 0 and decoded < 0.8 * declared and declared - decoded > 1.0:
        raise MediaError(f"{path}: truncated: frames stop at {decoded:.2f} s but the container "
                         f"declares {declared:.2f} s")


def read_frames(path: str | Path, sampling: Sampling | None = None) -> FrameBatch:
    """All sampled frames of a video at once (small videos and tests)."""
    parts = list(iter_frames(path, sampling, batch_size=1 << 30))
    if not parts:
        return FrameBatch(np.zeros((0, 0, 0, 3), np.uint8), np.zeros(0), np.zeros(0, int))
    return parts[0]
