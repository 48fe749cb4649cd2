"""One input's frames cut into spans that CPU workers read independently, giving exactly the
frame batches of one sequential read.

A span is a run of whole frame batches (``batch_size`` sampled frames each; only an input's
last span may end with a shorter batch), so the backbone later sees the same batches either
way. A :class:`VideoSpan` seeks to the key frame at or before its first frame, decodes and
drops the frames before it, and checks every frame it decodes against the container's index
(the presentation times of a demux pass): a frame missing, extra, out of place or on another
time base raises :class:`SpanMismatch`, and the runner then reads the whole video from its first
frame instead (the sequential path), so a stream that does not seek exactly is never split into
wrong rows. An :class:`ImageSpan` reads its images as the sequential frame-folder reader does.
Inputs too short to split, with a per-video face step state, or that cannot be planned are one
:class:`WholeSpan`, which runs the sequential reader itself (errors included).
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from extract.media.video import FrameBatch
from extract.runner.decode import FRAME_SOURCES, DecodeSettings

log = logging.getLogger(__name__)


class SpanMismatch(Exception):
    """A span's decoded frames differ from the container's index (the video is then read
    sequentially from its first frame)."""


@dataclass(frozen=True)
class SpanLimits:
    """How long spans are, in sampled frames: at least ``min_frames`` (an input shorter than
    two of them is not split), at most ``max_frames`` (a video span ends early at a batch with a
    key frame in it, so that the next one seeks close to its first frame)."""

    min_frames: int = 128
    max_frames: int = 256

    def batches(self, batch_size: int) -> tuple[int, int]:
        """(fewest, most) frame batches per span."""
        low = max(1, math.ceil(self.min_frames / batch_size))
        return low, max(low, math.ceil(self.max_frames / batch_size))

    def ring_slots(self, batch_size: int) -> int:
        """Shared-memory slots a CPU worker needs to hold its longest span and start the next."""
        return self.batches(batch_size)[1] + 1


@dataclass(frozen=True)
class WholeSpan:
    """Every frame of one input, read by the sequential reader of its kind."""

    kind: str  # "video" | "images"
    path: Path
    index: int = 0
    last: bool = True
    split: bool = False  # decoded after seeking (False: from the first frame)

    def batches(self, s: DecodeSettings) -> Iterator[FrameBatch]:
        return FRAME_SOURCES[self.kind](self.path, s)


@dataclass(frozen=True)
class VideoSpan:
    """Frames ``first_position ..`` of a video: the ones whose presentation times (in stream
    time-base units) are ``expected``, in order."""

    path: Path
    index: int
    seek_pts: int | None  # key frame to seek to (None: decode from the first frame)
    expected: tuple[int, ...]  # pts of every frame this span decodes (sampled or not)
    first_position: int  # frame index of expected[0] in the video
    keep_times: np.ndarray | None  # times of the sampled frames (None: every frame)
    kept: int  # sampled frames it yields
    last: bool  # reaches the end of the video (checks for truncation)
    kind: str = "video"
    split: bool = True

    def batches(self, s: DecodeSettings) -> Iterator[FrameBatch]:
        from extract.media.video import _check_complete, _is_kept, _open, _origin

        with _open(self.path) as c:
            if not c.streams.video:
                raise SpanMismatch(f"{self.path}: no video stream any more")
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            origin = _origin(c)
            fps = float(stream.average_rate) if stream.average_rate else 25.0
            if self.seek_pts is not None:
                c.seek(self.seek_pts, stream=stream, backward=True, any_frame=False)
            n, pos, last_t, yielded = len(self.expected), 0, 0.0, 0
            frames: list[np.ndarray] = []
            times: list[float] = []
            indices: list[int] = []
            for frame in c.decode(stream):
                if frame.pts is None or frame.time_base != stream.time_base:
                    raise SpanMismatch(f"{self.path}: a frame without a time on the stream's "
                                       "time base")
                if pos == 0 and frame.pts < self.expected[0]:
                    continue  # decoded from the key frame before the span: not ours
                if pos == n:
                    raise SpanMismatch(f"{self.path}: frames after the index's last one")
                if frame.pts != self.expected[pos]:
                    raise SpanMismatch(f"{self.path}: frame {self.first_position + pos} has pts "
                                       f"{frame.pts}, the index says {self.expected[pos]}")
                t = float(frame.pts * frame.time_base) - origin  # as the sequential reader
                last_t = t
                if self.keep_times is None or _is_kept(t, self.keep_times, fps):
                    frames.append(frame.to_ndarray(format="rgb24"))
                    times.append(t)
                    indices.append(self.first_position + pos)
                    if len(frames) == s.batch_size:
                        yield FrameBatch(np.stack(frames), np.asarray(times), np.asarray(indices))
                        yielded += len(frames)
                        frames, times, indices = [], [], []
                pos += 1
                if pos == n and not self.last:
                    break
            if pos < n:
                raise SpanMismatch(f"{self.path}: the decoder gave {pos} of the span's {n} "
                                   "frames")
            if self.last:
                _check_complete(self.path, c, stream, last_t, fps)
            if yielded + len(frames) != self.kept:
                raise SpanMismatch(f"{self.path}: {yielded + len(frames)} sampled frames, "
                                   f"planned {self.kept}")
            if frames:
                yield FrameBatch(np.stack(frames), np.asarray(times), np.asarray(indices))


@dataclass(frozen=True)
class ImageSpan:
    """Rows of a frame folder (one per sampled frame; ``None`` paths have no image)."""

    path: Path
    index: int
    times: np.ndarray
    indices: np.ndarray
    paths: tuple[Path | None, ...]
    shape: tuple[int, ...]  # every frame is resized to this (the folder's first image's)
    source: dict[str, Any] | None  # the clock's attributes (the folder's first span)
    last: bool
    kind: str = "images"
    split: bool = True

    def batches(self, s: DecodeSettings) -> Iterator[FrameBatch]:
        import cv2

        from extract.media.images import read_image

        shape = self.shape
        for start in range(0, len(self.paths), s.batch_size):
            stop = start + s.batch_size
            frames = [read_image(p) if p is not None else None for p in self.paths[start:stop]]
            frames = [f if f is not None and f.shape == shape else
                      (cv2.resize(f, shape[1::-1]) if f is not None else None) for f in frames]
            valid = np.asarray([f is not None for f in frames], bool)
            stack = np.stack([f if f is not None else np.zeros(shape, np.uint8) for f in frames])
            yield FrameBatch(stack, self.times[start:stop], self.indices[start:stop],
                             valid=valid, source=self.source if start == 0 else None)


Span = WholeSpan | VideoSpan | ImageSpan


def plan_spans(kind: str, path: Path, s: DecodeSettings, limits: SpanLimits,
               splittable: bool = True) -> list[Span]:
    """The spans of one input (one :class:`WholeSpan` when it is short, when ``splittable`` is
    False, or when anything about it is unusual: the sequential reader then handles it, and
    reports its errors exactly as without a CPU pool)."""
    whole: list[Span] = [WholeSpan(kind, Path(path))]
    if not splittable:
        return whole
    try:
        planned = PLANNERS[kind](Path(path), s, limits)
    except Exception as exc:  # noqa: BLE001 — the sequential reader reports it properly
        log.debug("%s: not split (%s: %s)", path, type(exc).__name__, exc)
        return whole
    return planned or whole


def _span_bounds(count: int, low: int, high: int, good_end: Any = None) -> list[tuple[int, int]]:
    """Batches ``0..count`` grouped into spans of ``low..high`` batches, ending early (from
    ``low`` on) at a batch ``b`` where ``good_end(b)`` holds."""
    bounds, start = [], 0
    for b in range(1, count):
        size = b - start
        if size >= high or (size >= low and good_end is not None and good_end(b)):
            bounds.append((start, b))
            start = b
        elif size >= low and good_end is None:
            bounds.append((start, b))
            start = b
    bounds.append((start, count))
    return bounds


def plan_video(path: Path, s: DecodeSettings, limits: SpanLimits) -> list[Span] | None:
    """Spans of a video from one demux pass (None: too short or not cleanly indexed)."""
    from extract.media.video import _is_kept, _open, _origin, frame_times

    with _open(path) as c:
        if not c.streams.video:
            return None
        stream = c.streams.video[0]
        base = stream.time_base
        if base is None:
            return None
        origin = _origin(c)
        fps = float(stream.average_rate) if stream.average_rate else 25.0
        packets = [(int(p.pts), bool(p.is_keyframe)) for p in c.demux(stream)
                   if p.pts is not None and p.size > 0]
    pts = sorted(p for p, _ in packets)
    if len(pts) < 2 * limits.min_frames or len(set(pts)) != len(pts):
        return None
    position = {p: i for i, p in enumerate(pts)}
    keys = sorted(position[p] for p, key in packets if key)
    if not keys or keys[0] != 0:
        return None
    keep_times = None
    if s.sampling.mode != "all":
        every = frame_times(path)
        keep_times = every[s.sampling.select(every)]
    times = [float(p * base) - origin for p in pts]  # as the decoder's frames give them
    kept = [i for i, t in enumerate(times) if keep_times is None or _is_kept(t, keep_times, fps)]
    if len(kept) < 2 * limits.min_frames:
        return None
    starts = kept[::s.batch_size]  # frame index of each batch's first sampled frame

    def key_before(q: int) -> int:
        return keys[bisect.bisect_right(keys, q) - 1]

    def good_end(b: int) -> bool:  # a key frame inside the batch before: a short seek
        return key_before(starts[b]) > starts[b - 1]

    low, high = limits.batches(s.batch_size)
    bounds = _span_bounds(len(starts), low, high, good_end)
    spans: list[Span] = []
    for i, (b0, b1) in enumerate(bounds):
        first = 0 if b0 == 0 else starts[b0]
        end = starts[b1] if b1 < len(starts) else len(pts)
        key = key_before(first)
        n_kept = min(len(kept), b1 * s.batch_size) - b0 * s.batch_size
        spans.append(VideoSpan(path, i, None if key == 0 else pts[key], tuple(pts[first:end]),
                               first, keep_times, n_kept, last=b1 == len(starts)))
    return spans if len(spans) > 1 else None


class _DropFromThread(logging.Filter):
    """Drops the records one thread logs (a probe whose warnings the reader repeats)."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.thread


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    drop = _DropFromThread()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def plan_images(path: Path, s: DecodeSettings, limits: SpanLimits) -> list[Span] | None:
    """Spans of a frame folder on its clock (None: too short)."""
    from extract.media.clock import ImageClockSettings, folder_clock
    from extract.media.images import _first_shape, _frame_table, read_image

    if sum(1 for _ in path.iterdir()) < 2 * limits.min_frames:
        return None  # cheap test first: the clock of a short folder is not worth finding twice
    clock = folder_clock(path.name, s.image_clock or ImageClockSettings(s.image_fps))
    times, indices, paths = _frame_table(path, clock)
    keep = s.sampling.select(times)
    if len(keep) < 2 * limits.min_frames:
        return None
    shape = None
    with _quiet("extract.media.images"):  # the span that reads these images warns once
        for k in keep[:s.batch_size]:  # the first readable image of the first batch
            image = read_image(paths[k]) if paths[k] is not None else None
            if image is not None:
                shape = image.shape
                break
    shape = shape or _first_shape(paths) or (112, 112, 3)
    info = clock.attrs(str(s.sampling))
    low, _ = limits.batches(s.batch_size)
    bounds = _span_bounds(math.ceil(len(keep) / s.batch_size), low, low)
    spans: list[Span] = []
    for i, (b0, b1) in enumerate(bounds):
        sel = keep[b0 * s.batch_size:b1 * s.batch_size]
        spans.append(ImageSpan(path, i, times[sel], indices[sel], tuple(paths[k] for k in sel),
                               tuple(shape), info if i == 0 else None, last=i == len(bounds) - 1))
    return spans


#: Input kind → span planner.
PLANNERS = {"video": plan_video, "images": plan_images}
