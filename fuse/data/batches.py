"""Segments and batches, sliced in memory from a :class:`FusedData` buffer.

Three plans, chosen by :class:`Planner`:

- per-video labels: a batch is B whole videos, padded to the longest; with ``data.bucket``
  the videos are sorted by length (ties in shuffled order) before they are cut into batches,
  and the batches are shuffled, so a batch pads little;
- RNN with state carry (papers 002/004): B parallel streams; each stream runs through its
  videos in consecutive, non-overlapping segments, so step k+1 continues step k and the
  hidden state is carried (and zeroed where a new video starts);
- otherwise (transformer): windows of ``seg_len`` every ``stride`` steps (the last one ends
  at the video's end), shuffled for training; overlapping predictions are averaged.

A segment is a row ``(video, start, length)``; padding positions index the zero padding row.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from fuse.config import FuseConfig
from fuse.data.dataset import FusedData


@dataclass
class Batch:
    """One step's tensors."""

    x: torch.Tensor  # (B, L, D) float32 inputs
    valid: torch.Tensor  # (B, L, F) float32, 1 where the feature was valid before filling
    pad: torch.Tensor  # (B, L) bool, True at padding
    rows: torch.Tensor  # (B, L) int64 buffer row of each step (the padding row at padding)
    video: torch.Tensor  # (B,) int64 video index, -1 for an empty stream slot
    y: torch.Tensor | None  # (B, L, K) per frame, (B, K) per video
    y_valid: torch.Tensor | None  # same shape, bool
    reset: torch.Tensor | None  # (B,) bool: zero the carried RNN state of these rows first


@dataclass
class Step:
    """A planned batch: segments (B, 3) [video, start, length], padded length, resets."""

    segments: np.ndarray
    length: int
    reset: np.ndarray | None = None


def windows(lengths: np.ndarray, videos: np.ndarray, seg_len: int, stride: int) -> np.ndarray:
    """(S, 3) windows of every video; the last window of each ends at the video's end."""
    out = []
    for v in videos:
        n = int(lengths[v])
        starts = list(range(0, max(n - seg_len, 0) + 1, stride))
        if starts[-1] + seg_len < n:
            starts.append(n - seg_len)
        out += [(v, s, min(seg_len, n - s)) for s in starts]
    return np.array(out, dtype=np.int64).reshape(-1, 3)


def streams(lengths: np.ndarray, videos: np.ndarray, n_streams: int,
            seg_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive segments in ``n_streams`` parallel streams.

    Videos (in the given order) go to the stream with the fewest segments so far. Returns
    steps (T, n_streams, 3) and reset (T, n_streams): True where a stream starts a video or has
    run out (an empty slot: video -1, length 0).
    """
    lanes: list[list[tuple[int, int, int, bool]]] = [[] for _ in range(n_streams)]
    for v in videos:
        n = int(lengths[v])
        lane = min(lanes, key=len)
        lane += [(int(v), s, min(seg_len, n - s), s == 0) for s in range(0, max(n, 1), seg_len)]
    depth = max((len(lane) for lane in lanes), default=0)
    steps = np.zeros((depth, n_streams, 3), dtype=np.int64)
    steps[:, :, 0] = -1
    reset = np.ones((depth, n_streams), dtype=bool)
    for b, lane in enumerate(lanes):
        for t, (v, start, length, first) in enumerate(lane):
            steps[t, b] = (v, start, length)
            reset[t, b] = first
    return steps, reset


class Planner:
    """Plans training and inference batches for one run's data."""

    def __init__(self, data: FusedData, *, seg_len: int, stride: int, batch_size: int,
                 carry: bool, bucket: bool = False) -> None:
        self.data = data
        self.seg_len = seg_len
        self.stride = stride or seg_len
        self.batch_size = batch_size
        self.carry = carry and data.level == "frame"
        self.bucket = bucket

    @classmethod
    def from_config(cls, cfg: FuseConfig, data: FusedData, carries_state: bool) -> Planner:
        """The run's plan; state carry when the encoder has state and the config asks for it."""
        return cls(data, seg_len=cfg.data.segment_len, stride=cfg.data.segment_stride,
                   batch_size=cfg.train.batch_size,
                   carry=carries_state and cfg.model.encoder.carry_state,
                   bucket=cfg.data.bucket)

    def plan(self, videos: np.ndarray, rng: np.random.Generator | None) -> list[Step]:
        """Batches over ``videos``; shuffled when ``rng`` is given (training)."""
        lengths, bs = self.data.lengths, self.batch_size
        if rng is not None:
            videos = rng.permutation(videos)
        if self.data.level == "video":
            if self.bucket:  # similar lengths together; stable sort keeps the shuffle in ties
                videos = videos[np.argsort(lengths[videos], kind="stable")]
            segs = np.stack([videos, np.zeros_like(videos), lengths[videos]], axis=1)
            steps = [Step(segs[i : i + bs], int(segs[i : i + bs, 2].max()))
                     for i in range(0, len(segs), bs)]
            if self.bucket and rng is not None:
                steps = [steps[i] for i in rng.permutation(len(steps))]
            return steps
        if self.carry:
            steps, reset = streams(lengths, videos, min(bs, max(len(videos), 1)), self.seg_len)
            return [Step(s, int(s[:, 2].max(initial=1)), r)
                    for s, r in zip(steps, reset, strict=True)]
        segs = windows(lengths, videos, self.seg_len, self.stride)
        if rng is not None:
            segs = segs[rng.permutation(len(segs))]
        return [Step(segs[i : i + bs], int(segs[i : i + bs, 2].max()))
                for i in range(0, len(segs), bs)]


class Batcher:
    """Turns planned steps into tensors by gathering rows of the in-memory buffer.

    On CPU the gather is numpy fancy indexing of the float16 buffer (far faster than torch's
    indexing of half tensors on CPU), then one float32 conversion in torch; with
    ``cache_on_device`` (CUDA) the buffer lives in GPU memory and the gather happens there.
    """

    def __init__(self, data: FusedData, device: torch.device, cache_on_device: bool) -> None:
        self.data = data
        self.device = device
        self.seconds = 0.0  # time spent gathering so far (the data path's share of an epoch)
        self.cached = None
        if cache_on_device:
            self.cached = {k: None if v is None else torch.from_numpy(v).to(device)
                           for k, v in (("x", data.x), ("valid", data.valid), ("y", data.y),
                                        ("y_valid", data.y_valid))}

    def batches(self, steps: list[Step]) -> Iterator[Batch]:
        # No background prefetch: on a 2-core machine a third thread stalls torch's two
        # compute threads more than the ~1 ms gather costs (bench/train_speed.py).
        yield from map(self.gather, steps)

    def gather(self, step: Step) -> Batch:
        started = time.perf_counter()
        video, start, length = step.segments.T  # (B,) each
        offs = np.where(video >= 0, self.data.offsets[np.maximum(video, 0)], 0)
        pos = np.arange(step.length)  # (L,)
        rows = offs[:, None] + start[:, None] + pos[None, :]  # (B, L)
        rows = np.where(pos[None, :] < length[:, None], rows, self.data.pad_row)
        pad = pos[None, :] >= length[:, None]  # (B, L)
        per_video = self.data.level == "video"
        sel = np.maximum(video, 0)  # (B,) rows of per-video targets
        x = self._take("x", rows).float()  # (B, L, D)
        valid = self._take("valid", rows).float()  # (B, L, F)
        y = y_ok = None
        if self.data.y is not None:
            y = self._take("y", sel if per_video else rows)  # (B, K) or (B, L, K)
            y_ok = self._take("y_valid", sel if per_video else rows)
            if per_video:
                y_ok = y_ok & self._tensor(video >= 0)[:, None]
        reset = None if step.reset is None else self._tensor(step.reset)
        batch = Batch(x, valid, self._tensor(pad), self._tensor(rows), self._tensor(video), y,
                      y_ok, reset)
        self.seconds += time.perf_counter() - started
        return batch

    def _take(self, name: str, index: np.ndarray) -> torch.Tensor:
        if self.cached is not None:
            return self.cached[name][self._tensor(index)]
        return self._tensor(getattr(self.data, name)[index])

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device, non_blocking=True)
