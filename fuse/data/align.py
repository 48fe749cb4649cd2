"""Bring one feature's rows onto a time grid, by timestamps only (never by row position).

A grid is a set of step times with step edges (the midpoints between neighbours). Methods:

- ``nearest``: the row whose timestamp is closest to the step time (ties: the earlier row).
- ``mean``: the mean of the valid rows whose timestamps fall inside the step; a step holding no
  rows at all takes the nearest row (a slow feature on a fast grid), one holding only invalid
  rows is invalid.

A step is invalid when its row is (mask False), or when no row of the feature lies within
``tolerance`` of the step time: ``tolerance`` is in the feature's own row steps, default one
half (``data.align_tolerance``). The row step is the one the feature's clock records (``1 /
source_fps`` for rows that are video frames or frame-folder images: :func:`recorded_step`), else
its median row spacing; so a frame folder missing every other image does not pass for one
at half the rate. A gap in the rows (frames without an image, a decode gap), and the steps
before the first or after the last row, are invalid: the fill policy and the validity channel
apply there, never a row from far away.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from extract.registry import Registry


@dataclass
class Grid:
    """Step times of one video's label grid and the edges of each step."""

    times: np.ndarray  # (N,) seconds, increasing
    edges: np.ndarray  # (N + 1,) step k covers [edges[k], edges[k + 1])

    @classmethod
    def from_times(cls, times: np.ndarray) -> Grid:
        """Edges halfway between neighbouring steps; the end steps extend by half a step."""
        t = np.asarray(times, dtype=np.float64)
        if len(t) == 0:
            return cls(t, np.zeros(1))
        if len(t) == 1:
            return cls(t, np.array([-np.inf, np.inf]))
        mid = (t[1:] + t[:-1]) / 2
        return cls(t, np.concatenate([[t[0] - (mid[0] - t[0])], mid, [t[-1] + (t[-1] - mid[-1])]]))

    def __len__(self) -> int:
        return len(self.times)


@dataclass
class Aligned:
    """One feature on one video's grid."""

    values: np.ndarray  # (N, D) float16
    valid: np.ndarray  # (N,) bool


Aligner = Callable[..., Aligned]  # (data, times, mask, grid, tolerance=0.5, step=None)
ALIGNMENTS: Registry[Aligner] = Registry("alignment")
DEFAULT_TOLERANCE = 0.5  # in the feature's row steps: half a step


@ALIGNMENTS.register("nearest")
def align_nearest(data: np.ndarray, times: np.ndarray, mask: np.ndarray, grid: Grid,
                  tolerance: float = DEFAULT_TOLERANCE, step: float | None = None) -> Aligned:
    """``data`` (T, D) with row ``times`` (T,) and ``mask`` (T,) → (N, D) on ``grid``;
    ``step``: the feature's recorded row step (None: its median row spacing)."""
    if len(times) == 0:
        return _empty(len(grid), data.shape[1], data.dtype)
    idx = nearest_rows(times, grid.times)
    near = within(times, idx, grid, tolerance, step=step)
    return Aligned(data[idx], mask[idx] & near)


@ALIGNMENTS.register("mean")
def align_mean(data: np.ndarray, times: np.ndarray, mask: np.ndarray, grid: Grid,
               tolerance: float = DEFAULT_TOLERANCE, step: float | None = None) -> Aligned:
    """Mean of the valid rows inside each step (float32 sums, float16 result); a step
    without rows takes the nearest row within ``tolerance`` row steps, else is invalid."""
    n = len(grid)
    if len(times) == 0 or n == 0:
        return _empty(n, data.shape[1], data.dtype)
    lo = np.searchsorted(times, grid.edges[:-1], side="left")  # (N,) first row in the step
    hi = np.searchsorted(times, grid.edges[1:], side="left")  # (N,) one past the last
    seen = np.concatenate([[0], np.cumsum(mask)])  # valid rows before each row
    vlo, vhi = seen[lo], seen[hi]  # the step's range among the valid rows
    count = vhi - vlo  # (N,)
    rows = data if mask.all() else data[mask]  # (V, D) valid rows, in time order
    out = np.zeros((n, data.shape[1]), np.float32)
    has = count > 0
    if has.any():
        # step sums from running sums over the valid rows: rows[vlo:vhi].sum() per step
        csum = np.zeros((len(rows) + 1, data.shape[1]), np.float64)
        np.cumsum(rows, axis=0, dtype=np.float64, out=csum[1:])
        out[has] = ((csum[vhi[has]] - csum[vlo[has]]) / count[has, None]).astype(np.float32)
    valid = has.copy()
    empty = hi == lo  # no rows at all: the nearest row stands in, if it is near enough
    if empty.any():
        idx = nearest_rows(times, grid.times[empty])
        out[empty] = data[idx]
        valid[empty] = mask[idx] & within(times, idx, grid, tolerance, empty, step)
    return Aligned(out.astype(data.dtype, copy=False), valid)


def nearest_rows(times: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the row nearest each target time (ties go to the earlier row)."""
    if len(times) == 1:
        return np.zeros(len(targets), dtype=np.int64)
    pos = np.clip(np.searchsorted(times, targets, side="left"), 1, len(times) - 1)
    take_left = (targets - times[pos - 1]) <= (times[pos] - targets)
    return np.where(take_left, pos - 1, pos)


def row_step(times: np.ndarray) -> float:
    """The median spacing of a feature's rows (0 for one row)."""
    return float(np.median(np.diff(times))) if len(times) > 1 else 0.0


def recorded_step(attrs: dict) -> float | None:
    """The row step a stored array's attributes record: ``1 / source_fps`` when its rows are
    video frames (``frame_rows: all``) or frame-folder images (``images``, rows only where an
    image exists); None otherwise (sampled rows, audio, imported arrays)."""
    rows, fps = attrs.get("frame_rows"), attrs.get("source_fps")
    legacy = (attrs.get("source") or {}).get("image_fps")  # frame folders, older stores
    if rows is None and legacy:
        rows, fps = "images", legacy
    if rows in ("all", "images") and fps and float(fps) > 0:
        return 1.0 / float(fps)
    return None


def within(times: np.ndarray, idx: np.ndarray, grid: Grid, tolerance: float,
           steps: np.ndarray | None = None, step: float | None = None) -> np.ndarray:
    """Whether row ``idx[j]`` lies within ``tolerance`` row steps of grid step ``j`` (of the
    steps selected by the boolean ``steps``, default all). The row step is ``step`` when the
    feature records one, else its median row spacing. A feature with a single row and no
    recorded step covers the grid step it falls in."""
    targets = grid.times if steps is None else grid.times[steps]
    step = step if step is not None and step > 0 else row_step(times)
    if step <= 0:
        lo = grid.edges[:-1] if steps is None else grid.edges[:-1][steps]
        hi = grid.edges[1:] if steps is None else grid.edges[1:][steps]
        return (times[idx] >= lo) & (times[idx] < hi)
    limit = tolerance * step
    return np.abs(times[idx] - targets) <= limit + 1e-9 * max(1.0, limit)


def _empty(n: int, dim: int, dtype) -> Aligned:
    return Aligned(np.zeros((n, dim), dtype), np.zeros(n, bool))
