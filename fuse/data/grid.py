"""The time grid of one video: its frames (per-frame labels) or a fixed rate / count (per video).

Per-frame labels by frame index live on the video's **frame clock**: frame ``i`` is at the
time the reference feature (``labels.time_reference``, default the first visual feature)
records for video frame ``i``, never at "row ``i``" of some feature. The clock comes from the
reference array's attributes (written by ``extract run``):

- ``frame_rows: all`` (frame folders with ``--videos``, videos decoded frame by frame): row
  ``k`` is video frame ``k``; the video has exactly that many frames;
- ``frame_rows: images`` (frame folders with ``--image-fps`` / ``--fps-table``): frame ``k`` at
  ``k / source_fps``; the frame count is unknown past the last image;
- an array without these attributes (imported, synthetic, older stores) whose rows are evenly
  spaced: row ``k`` is frame ``k`` when its first row is at time 0 (within half a step); a
  first row a whole number ``m`` of steps later is frame ``m`` (the clock is extended back to
  frame 0, at the rows' step, and says so); any other start, gaps or sampled rows are refused,
  never shifted;
- ``labels.fps > 0``: frame ``k`` at ``k / fps`` (one rate for every video).

The grid has one step per video frame: labels are placed on it by frame index, so frames
without a label (or without a face) keep their place, and predictions come out one per frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from fuse.data.align import Grid
from fuse.errors import DataError

log = logging.getLogger(__name__)

DEFAULT_VIDEO_GRID = "steps:32"  # papers 000 / 003: 32 evenly spaced frames per video


@dataclass(frozen=True)
class GridSpec:
    """``labels`` (the label rows' times), ``rate`` (steps per second) or ``steps`` (N)."""

    kind: str
    value: float = 0.0

    @classmethod
    def parse(cls, text: str, level: str) -> GridSpec:
        """Parse ``auto | labels | rate:HZ | steps:N`` for labels of ``level`` (frame | video)."""
        if text == "auto":
            text = "labels" if level == "frame" else DEFAULT_VIDEO_GRID
        if text == "labels":
            return cls("labels")
        kind, _, value = text.partition(":")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if kind not in ("rate", "steps") or number <= 0 or (kind == "steps" and number % 1):
            raise ValueError(f"grid {text!r}: use auto, labels, rate:HZ (HZ > 0) or steps:N")
        return cls(kind, number)


@dataclass
class FrameClock:
    """Times of one video's frames 0 … N-1."""

    times: np.ndarray  # (N,) seconds
    known: bool  # N is the source video's frame count (else: up to the last row / image)
    how: str  # where the times come from (for messages)
    open_end: bool = False  # count unknown but frames continue at a known rate (images, fps)
    rate: float = 0.0  # frames per second when known (fps clocks), else from the times

    @property
    def step(self) -> float:
        if self.rate > 0:
            return 1.0 / self.rate
        return float(np.median(np.diff(self.times))) if len(self.times) > 1 else 0.0

    def extended(self, n: int) -> np.ndarray:
        """Times of frames 0 … n-1, continuing past the last known frame at the median step."""
        have = len(self.times)
        if n <= have:
            return self.times[:n]
        if have == 0 and self.rate > 0:
            return np.arange(n) / self.rate
        if have == 0 or self.step <= 0:
            raise DataError(f"no frame times to extend ({self.how})")
        return np.concatenate([self.times, self.times[-1] + self.step * np.arange(1, n - have + 1)])


@dataclass
class GridNotes:
    """What placing labels on frame grids found, reported once per load (never per video)."""

    errors: list[str] = field(default_factory=list)  # the load stops with all of them
    past_end: list[str] = field(default_factory=list)  # label lines past the video's frames
    unknown_end: list[str] = field(default_factory=list)  # frame count not known
    late_start: list[str] = field(default_factory=list)  # clocks extended back to frame 0
    extended: list[str] = field(default_factory=list)  # labels past the last image

    def report(self) -> None:
        """Raise on errors; log each kind of note once, naming every video."""
        if self.errors:
            raise DataError(f"{len(self.errors)} video(s) cannot be placed on their frames: "
                            + "; ".join(self.errors))
        if self.past_end:
            log.warning("annotation lines past the video's last frame are ignored (the video "
                        "has no such frame): %s", ", ".join(self.past_end))
        if self.extended:
            log.warning("labels reach past the last image, and the video's frame count is "
                        "unknown (extracted without --videos); those frames are placed at "
                        "i / fps: %s", ", ".join(self.extended))
        if self.late_start:
            log.warning("the reference's first row is not frame 0 (it carries no frame "
                        "attributes): its clock is extended back to frame 0 at its row step, "
                        "the frames before it have no row: %s", ", ".join(self.late_start))
        if self.unknown_end:
            log.warning("frame count unknown (the reference feature was extracted without "
                        "--videos): predictions stop at the last image/row of %s",
                        ", ".join(self.unknown_end))


def reference_clock(video: str, attrs: dict, timestamps: np.ndarray, fps: float = 0.0,
                    name: str = "reference", notes: GridNotes | None = None) -> FrameClock:
    """The frame clock of ``video`` from its reference array (``attrs``, row ``timestamps``),
    or ``k / fps`` when ``fps`` > 0 (``labels.fps``). Raises :class:`DataError` when the rows
    cannot say when each frame is; ``notes`` collects clocks extended back to frame 0."""
    rows = attrs.get("frame_rows")
    count = attrs.get("source_frames")
    legacy_fps = (attrs.get("source") or {}).get("image_fps")  # frame folders, older stores
    if rows is None and legacy_fps:
        rows, attrs = "images", {**attrs, "source_fps": legacy_fps}
    t = np.asarray(timestamps, np.float64)
    if fps > 0:
        n = int(count) if count else (int(round(t[-1] * fps)) + 1 if len(t) else 0)
        return FrameClock(np.arange(n) / fps, bool(count), f"labels.fps={fps:g}",
                          open_end=not count, rate=fps)
    if rows == "all":
        if count is not None and len(t) != int(count):
            raise DataError(f"video {video!r}: {name} has {len(t)} rows but records "
                            f"{count} video frames; re-extract it")
        return FrameClock(t, True, f"{name} rows (one per video frame)")
    if rows == "images":
        src = float(attrs.get("source_fps") or 0)
        if src <= 0 or not len(t):
            raise DataError(f"video {video!r}: {name} has no frame rate to time its images")
        n = int(round(t[-1] * src)) + 1
        return FrameClock(np.arange(n) / src, False, f"{name} images at {src:g} fps",
                          open_end=True, rate=src)
    if rows == "sampled":
        raise DataError(f"video {video!r}: {name} was extracted from sampled frames, so its "
                        "rows cannot time every frame; use a feature with one row per frame "
                        "(labels.time_reference), or set labels.fps")
    if len(t) > 2:
        steps = np.diff(t)
        med = float(np.median(steps))
        if med <= 0 or np.max(np.abs(steps - med)) > 0.25 * med:
            raise DataError(f"video {video!r}: the rows of {name} are not one per video "
                            "frame (uneven steps: gaps or sampling) and carry no frame "
                            "attributes; re-extract it with `extract run --videos`, or set "
                            "labels.fps")
    return _from_frame_zero(video, t, name, notes)


def _from_frame_zero(video: str, t: np.ndarray, name: str,
                     notes: GridNotes | None) -> FrameClock:
    """Evenly spaced rows without frame attributes as a clock that starts at frame 0: row 0 is
    frame 0 when it lies within half a step of time 0; a whole number ``m`` of steps later, the
    clock is extended back by ``m`` frames; anything else is refused (never shifted)."""
    clock = FrameClock(t, False, f"{name} rows")
    step = clock.step
    if len(t) < 2 or step <= 0:
        return clock
    lead = float(t[0]) / step  # frames before the first row
    if abs(lead) <= 0.5 + 1e-6:  # rows at frame times, or centred in their steps
        return clock
    first = int(round(lead))
    if lead < 0 or abs(lead - first) > 0.25:
        raise DataError(f"video {video!r}: the first row of {name} is at {t[0]:.4f} s, "
                        f"{lead:.2f} of its {step:.4f} s steps from time 0, so its rows cannot "
                        "be numbered as video frames (labels would shift); re-extract it with "
                        "`extract run --videos`, or set labels.fps")
    if notes is not None:
        notes.late_start.append(f"{video} (first row at {t[0]:.3f} s = frame {first})")
    return FrameClock(np.concatenate([t[0] - step * np.arange(first, 0, -1), t]), False,
                      f"{name} rows from frame {first} (extended back to frame 0)")


@dataclass
class FrameGrid:
    """One video's frame grid and its labels placed by frame index."""

    grid: Grid
    frames: np.ndarray  # (N,) frame index of each step (0 … N-1)
    y: np.ndarray | None = None  # (N, K) labels (0 where invalid)
    ok: np.ndarray | None = None  # (N, K) validity


def frame_grid(video: str, clock: FrameClock, frames: np.ndarray | None,
               values: np.ndarray | None, valid: np.ndarray | None, tolerance: int,
               notes: GridNotes) -> FrameGrid | None:
    """One step per video frame; label rows (``frames``, ``values``, ``valid``) placed on
    their frames. Returns None (with ``notes.errors`` filled) when they cannot be placed."""
    n = len(clock.times)
    if frames is None:  # prediction: every frame of the video
        if not clock.known:
            notes.unknown_end.append(video)
        if n == 0:
            notes.errors.append(f"{video} (no frames)")
            return None
        return FrameGrid(Grid.from_times(clock.times), np.arange(n))
    frames = np.asarray(frames, np.int64)
    if len(frames) and frames.min() < 0:
        notes.errors.append(f"{video} (negative label frame {int(frames.min())})")
        return None
    last = int(frames.max()) + 1 if len(frames) else 0
    keep = np.ones(len(frames), bool)
    if last > n:
        beyond = last - n
        if clock.known and beyond <= tolerance:
            notes.past_end.append(f"{video} ({beyond} of {last} lines)")
            keep = frames < n
        elif clock.known or (beyond > tolerance and not clock.open_end):
            notes.errors.append(f"{video} ({last} label frames, {n} frames in {clock.how}; "
                                f"more than labels.frame_tolerance={tolerance} apart)")
            return None
        else:  # frame count unknown: labels continue past the last image or row
            if beyond > tolerance:
                notes.extended.append(f"{video} (+{beyond})")
            n = last
    times = clock.extended(n) if n > len(clock.times) else clock.times[:n]
    y, ok = place_labels(frames[keep], values[keep], valid[keep], n)
    return FrameGrid(Grid.from_times(times), np.arange(n), y, ok)


def place_labels(frames: np.ndarray, values: np.ndarray, valid: np.ndarray,
                 n: int) -> tuple[np.ndarray, np.ndarray]:
    """Label rows on a grid of ``n`` frames (step i = frame i): (n, K) values (0 where not
    valid) and validity; rows of frames at or past ``n`` are left out."""
    frames = np.asarray(frames, np.int64)
    keep = frames < n
    y = np.zeros((n, values.shape[1]), np.float32)
    ok = np.zeros((n, values.shape[1]), bool)
    y[frames[keep]] = values[keep]
    ok[frames[keep]] = valid[keep]
    return np.where(ok, y, 0).astype(np.float32), ok


def fixed_grid(start: float, end: float, spec: GridSpec) -> Grid:
    """Steps over [start, end]: ``rate`` steps per second or ``steps`` equal bins."""
    if spec.kind == "rate":
        n = int(np.floor((end - start) * spec.value + 1e-9)) + 1
        edges = start + np.arange(n + 1) / spec.value
    else:
        n = int(spec.value)
        edges = np.linspace(start, max(end, start + 1e-6), n + 1)
        edges[-1] = np.nextafter(edges[-1], np.inf)  # the last row belongs to the last bin
    return Grid((edges[:-1] + edges[1:]) / 2, edges)
