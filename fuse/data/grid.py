"""The time grid of one video: label rows' times (per-frame labels) or a fixed rate / count."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fuse.data.align import Grid
from fuse.errors import DataError

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


def frame_times(video: str, frames: np.ndarray, ref_times: np.ndarray | None, fps: float,
                tolerance: int) -> np.ndarray:
    """Seconds of label frames: ``frames / fps``, or the reference feature's row times.

    With the reference, label frame i is its row i; up to ``tolerance`` frames past its last
    row (annotation files are often a frame or two longer) continue at its median step.
    """
    if fps > 0:
        return frames / fps
    if ref_times is None or len(ref_times) == 0:
        raise DataError(f"video {video!r}: no reference rows to time its label frames; "
                        "set labels.fps")
    last = len(ref_times) - 1
    beyond = int(frames.max(initial=0)) - last
    if beyond > tolerance:
        raise DataError(f"video {video!r}: labels reach frame {int(frames.max())} but the "
                        f"reference feature has {last + 1} rows (more than "
                        f"labels.frame_tolerance={tolerance} apart); set labels.fps, or "
                        "labels.time_reference to a feature with one row per frame")
    step = float(np.median(np.diff(ref_times))) if last > 0 else 0.0
    inside = np.minimum(frames, last)
    return ref_times[inside] + np.maximum(frames - last, 0) * step


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
