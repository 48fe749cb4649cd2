"""Load every video of a run once: read, align onto its grid, normalise, fill, pack contiguous.

Each (feature, video) array is read from the store exactly once. The result keeps all videos
in one float16 buffer with a trailing zero row used as padding, so a training segment is a
row-index gather in memory, never a store call.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from fuse.config import LabelConfig
from fuse.data.align import ALIGNMENTS, DEFAULT_TOLERANCE, Aligned, Grid, recorded_step
from fuse.data.cache import StageCache
from fuse.data.cast import one_thread, put_f16
from fuse.data.features import FeatureSources, FeatureSpec
from fuse.data.fill import apply_fill
from fuse.data.grid import (
    GridNotes,
    GridSpec,
    fixed_grid,
    frame_grid,
    place_labels,
    reference_clock,
)
from fuse.data.normalize import GroupNormalizer, Moments, Normalizer, fit_normalizer
from fuse.errors import DataError
from fuse.labels.base import VideoLabels

log = logging.getLogger(__name__)
PREFETCH_VIDEOS = 256  # videos read together (one bulk store read per feature and block)


@dataclass
class VideoRequest:
    """One video to load, with its split and (when training or evaluating) its labels."""

    video: str
    split: str  # train | val | test | predict
    labels: VideoLabels | None = None
    group: str | None = None  # its split group (speaker); data.normalize=group z-scores by it


@dataclass
class FrameTiming:
    """How per-frame label rows get their times (see :func:`fuse.data.grid.frame_times`)."""

    reference: str  # feature whose row i is frame i
    fps: float = 0.0  # > 0: frame i at i / fps instead
    tolerance: int = 5  # label frames allowed past the reference's last row

    @classmethod
    def from_config(cls, labels: LabelConfig, specs: list[FeatureSpec]) -> FrameTiming:
        """``labels.time_reference``, else the first visual feature, else the first one."""
        visual = [s.name for s in specs if s.modality == "visual"]
        reference = labels.time_reference or (visual or [specs[0].name])[0]
        return cls(reference, labels.fps, labels.frame_tolerance)


@dataclass
class FusedData:
    """All videos of a run on their grids. R = total steps; row R is the zero padding row."""

    features: list[str]  # input features in column order
    dims: list[int]  # their widths
    level: str  # frame | video (labels per grid step, or one per video)
    videos: list[str]  # (V,)
    splits: np.ndarray  # (V,) str
    offsets: np.ndarray  # (V,) int64 first row of each video
    lengths: np.ndarray  # (V,) int64 steps of each video
    x: np.ndarray  # (R + 1, D) float16 z-scored, filled inputs
    valid: np.ndarray  # (R + 1, F) bool per-feature validity before filling
    times: list[np.ndarray]  # per video (N,) step times in seconds
    frames: list[np.ndarray | None]  # per video (N,) label frame index (per-frame grids)
    y: np.ndarray | None = None  # frame: (R + 1, K) float32; video: (V, K)
    y_valid: np.ndarray | None = None  # same shape, bool

    @property
    def pad_row(self) -> int:
        return len(self.x) - 1

    def indices(self, *splits: str) -> np.ndarray:
        """Video indices in the given splits."""
        return np.flatnonzero(np.isin(self.splits, splits))

    def targets_of(self, v: int) -> tuple[np.ndarray, np.ndarray]:
        """Video ``v``'s labels: (N, K) per frame or (1, K) per video, and their validity."""
        if self.y is None or self.y_valid is None:
            raise DataError("these data carry no labels")
        if self.level == "video":
            return self.y[v : v + 1], self.y_valid[v : v + 1]
        rows = slice(self.offsets[v], self.offsets[v] + self.lengths[v])
        return self.y[rows], self.y_valid[rows]


@dataclass
class StagedVideo:
    """One video read and aligned onto its grid, before normalisation (what a cache keeps)."""

    times: np.ndarray  # (N,) step times
    frames: np.ndarray | None  # (N,) label frame index (per-frame grids)
    aligned: dict[str, Aligned]  # feature → its values on the grid
    moments: dict[str, Moments]  # feature → sums over the video's valid source rows ({}
    #                              when not needed: a given normaliser, a non-fitting split)

    @property
    def nbytes(self) -> int:
        return int(sum(a.values.nbytes + a.valid.nbytes for a in self.aligned.values())
                   + self.times.nbytes)


def load_fused(*args: Any, **kwargs: Any) -> tuple[FusedData, Normalizer]:
    """Read, align and pack videos (see :func:`_load_fused`), with torch's casts on one
    thread."""
    with one_thread():
        return _load_fused(*args, **kwargs)


def _load_fused(sources: FeatureSources, specs: list[FeatureSpec], requests: list[VideoRequest],
               *, level: str, grid: GridSpec, fill: str, timing: FrameTiming,
               normalizer: Normalizer | None = None,
               fit_splits: tuple[str, ...] = ("train",), normalize: str = "global",
               cache: StageCache | None = None,
               tolerance: float = DEFAULT_TOLERANCE) -> tuple[FusedData, Normalizer]:
    """Read, align and pack ``requests``; fit the normaliser unless given: ``global`` on the
    valid rows of ``fit_splits``, ``group`` per request group on all its videos (features
    only), ``none``. ``cache`` keeps staged videos for later calls with the same inputs.
    ``tolerance``: a grid step is invalid when no row of a feature lies within this many of
    the feature's row steps (``data.align_tolerance``)."""
    started = time.perf_counter()
    names = [s.name for s in specs]
    dims = [sources.dim(n) for n in names]
    by_group = normalize == "group" or isinstance(normalizer, GroupNormalizer)
    notes = GridNotes()
    placed = []
    for first in range(0, len(requests), PREFETCH_VIDEOS):
        block = requests[first:first + PREFETCH_VIDEOS]
        todo = [r.video for r in block if cache is None
                or not cache.has(cache.key(sources, specs, r, level, grid, timing, tolerance))]
        sources.prefetch(todo)  # one bulk read per feature for the block
        placed += list(_pool().map(
            lambda req: _stage(req, sources, specs, level, grid, timing, dims, cache, notes,
                               tolerance, moments=cache is not None or by_group
                               or (normalizer is None and req.split in fit_splits)),
            block))
    notes.report()  # every video that cannot be placed, at once (raises); notes logged once
    staged = [st for st in placed if st is not None]
    groups = [r.group for r in requests]
    if normalizer is None and normalize == "group":
        if unknown := [r.video for r in requests if not r.group]:
            raise DataError(f"data.normalize=group: {len(unknown)} videos have no group "
                            f"({', '.join(unknown[:5])}{' …' if len(unknown) > 5 else ''}); "
                            "a video is never its own group: set labels.group_by to the "
                            "column of speaker / subject ids")
    if normalizer is None:
        fits = [by_group or r.split in fit_splits for r in requests]  # group: every video
        normalizer = fit_normalizer(normalize, names, dims, [st.moments for st in staged],
                                    fits, groups)
        if isinstance(normalizer, GroupNormalizer):
            normalizer.videos = {r.video: g for r, g in zip(requests, groups, strict=True)}
    elif isinstance(normalizer, GroupNormalizer):
        found = [normalizer.group_of(r.video, r.group) for r in requests]
        if unknown := [r.video for r, g in zip(requests, found, strict=True) if g is None]:
            raise DataError(f"data.normalize=group: {len(unknown)} videos have no known group "
                            f"({', '.join(unknown[:5])}{' …' if len(unknown) > 5 else ''}); "
                            "give each video's group (fuse predict --groups CSV with a video "
                            "and a group column)")
        groups = [str(g) for g in found]
        normalizer = normalizer.with_groups_of(names, dims, [st.moments for st in staged],
                                               groups)

    lengths = np.array([len(st.times) for st in staged], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    total = int(lengths.sum())
    x = np.zeros((total + 1, sum(dims)), np.float16)  # (R + 1, D)
    valid = np.zeros((total + 1, len(names)), bool)  # (R + 1, F)
    cols = np.concatenate([[0], np.cumsum(dims)])
    for v, st in enumerate(staged):
        rows = slice(offsets[v], offsets[v] + lengths[v])
        for f, name in enumerate(names):
            a: Aligned = st.aligned[name]
            z = normalizer.apply(name, a.values, groups[v])  # (N, D_f) float32
            apply_fill(z, a.valid, st.times, fill)
            put_f16(x[rows, cols[f] : cols[f + 1]], z)
            valid[rows, f] = a.valid

    data = FusedData(names, dims, level, [r.video for r in requests],
                     np.array([r.split for r in requests], dtype=object), offsets, lengths, x,
                     valid, [st.times for st in staged], [st.frames for st in staged])
    if all(r.labels is not None for r in requests) and requests:
        data.y, data.y_valid = _pack_targets(requests, staged, level, total)
    log.info("loaded %d videos, %d steps, %d features (%d dims) in %.1f s", len(requests), total,
             len(names), x.shape[1], time.perf_counter() - started)
    return data, normalizer


@functools.lru_cache(maxsize=1)
def _pool() -> concurrent.futures.ThreadPoolExecutor:
    """Threads that stage videos side by side (the casts, reads and numpy passes release the
    GIL): one per core, up to four."""
    return concurrent.futures.ThreadPoolExecutor(min(4, os.cpu_count() or 1),
                                                 thread_name_prefix="fuse-stage")


def _stage(req: VideoRequest, sources: FeatureSources, specs: list[FeatureSpec], level: str,
           grid: GridSpec, timing: FrameTiming, dims: list[int], cache: StageCache | None,
           notes: GridNotes, tolerance: float, moments: bool = True) -> StagedVideo | None:
    """Read each feature of one video once and align it onto the video's grid; with
    ``moments`` also sum its valid source rows (for fitting the normaliser). None when the
    video cannot be placed on its frames (``notes`` says why)."""
    key = None
    if cache is not None:
        key = cache.key(sources, specs, req, level, grid, timing, tolerance)
        if (hit := cache.get(key)) is not None:
            return hit
    arrays = {s.name: sources.read(s.name, req.video) for s in specs}
    placed = _video_grid(req, arrays, level, grid, timing, notes)
    if placed is None:
        return None
    g, frames = placed
    aligned, sums = {}, {}
    for s, dim in zip(specs, dims, strict=True):
        fa = arrays.pop(s.name)
        if moments:
            sums[s.name] = Moments(dim)
            sums[s.name].add(fa.data if fa.mask.all() else fa.data[fa.mask])
        aligned[s.name] = ALIGNMENTS.get(s.align)(fa.data, fa.timestamps, fa.mask, g,
                                                  tolerance=tolerance,
                                                  step=recorded_step(fa.attrs))
    staged = StagedVideo(g.times, frames, aligned, sums)
    if cache is not None:
        cache.put(key, staged)
    return staged


def _video_grid(req: VideoRequest, arrays: dict, level: str, spec: GridSpec,
                timing: FrameTiming, notes: GridNotes
                ) -> tuple[Grid, np.ndarray | None] | None:
    """The grid of one video and each step's frame index (per-frame grids); None when the
    video cannot be placed (``notes``)."""
    if level == "frame":
        lab = req.labels
        if lab is not None and lab.times is not None:  # labels that give their own times
            return Grid.from_times(lab.times), lab.frames
        ref = arrays.get(timing.reference)
        if ref is None and timing.fps <= 0:
            raise DataError(f"video {req.video!r}: no reference feature "
                            f"{timing.reference!r} to place its frames")
        try:
            clock = reference_clock(req.video, ref.attrs if ref is not None else {},
                                    ref.timestamps if ref is not None else np.zeros(0),
                                    timing.fps, timing.reference, notes)
        except DataError as exc:
            notes.errors.append(str(exc))
            return None
        frames = None if lab is None else _label_frames(lab)
        placed = frame_grid(req.video, clock, frames, None if lab is None else lab.values,
                            None if lab is None else lab.valid, timing.tolerance, notes)
        if placed is None:
            return None
        return placed.grid, placed.frames
    starts = [a.timestamps[0] for a in arrays.values() if len(a.timestamps)]
    ends = [a.timestamps[-1] for a in arrays.values() if len(a.timestamps)]
    if not starts:
        raise DataError(f"video {req.video!r}: every feature is empty")
    return fixed_grid(min(starts), max(ends), spec), None


def _label_frames(lab: VideoLabels) -> np.ndarray:
    return lab.frames if lab.frames is not None else np.arange(lab.num_rows)


def _pack_targets(requests: list[VideoRequest], staged: list[StagedVideo], level: str,
                  total: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels on the grids: one row per video, or per-frame labels placed on their frames
    (outside the stage cache: jobs that share a grid may differ in label values)."""
    k = requests[0].labels.values.shape[1]
    if level == "video":
        y = np.stack([r.labels.values[0] for r in requests]).astype(np.float32)
        ok = np.stack([r.labels.valid[0] for r in requests])
        return np.where(ok, y, 0).astype(np.float32), ok
    y = np.zeros((total + 1, k), np.float32)
    ok = np.zeros((total + 1, k), bool)
    row = 0
    for req, st in zip(requests, staged, strict=True):
        lab = req.labels
        n = len(st.times)
        if lab.times is not None:  # labels that give their own times: the grid is theirs
            y[row:row + n], ok[row:row + n] = lab.values, lab.valid
        else:
            y[row:row + n], ok[row:row + n] = place_labels(_label_frames(lab), lab.values,
                                                           lab.valid, n)
        row += n
    return np.where(ok, y, 0).astype(np.float32), ok
