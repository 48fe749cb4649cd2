"""Frames in, one aligned face crop per frame and size out (with a validity mask)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from extract.errors import ConfigError
from extract.faces import align
from extract.faces.detectors import DEFAULT_DETECTOR, FaceDetections, check_frames, create_detector
from extract.faces.detectors.base import SELECT_RULES, FaceDetector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaceBatch:
    """One face per frame. Rows of frames without a face have ``valid`` False, all-zero crops
    and NaN geometry/scores; they are placeholders, never a guessed face.

    ``crops``: size → (N, S, S, 3) uint8 RGB; ``valid`` (N,) bool; ``boxes`` (N, 4) x1, y1, x2, y2
    and ``landmarks`` (N, 5, 2) in frame pixels; ``scores`` (N,) on the detector's scale.
    """

    crops: dict[int, np.ndarray]
    valid: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.valid)

    @classmethod
    def empty(cls, count: int, sizes: Iterable[int]) -> FaceBatch:
        """``count`` invalid rows: zero crops, NaN geometry."""
        return cls(
            crops={s: np.zeros((count, s, s, 3), np.uint8) for s in sizes},
            valid=np.zeros(count, bool),
            boxes=np.full((count, 4), np.nan, np.float32),
            landmarks=np.full((count, 5, 2), np.nan, np.float32),
            scores=np.full(count, np.nan, np.float32),
        )


def _check_sizes(sizes: Iterable[int]) -> tuple[int, ...]:
    sizes = tuple(sizes)
    if not sizes:
        raise ConfigError("sizes must name at least one crop size")
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ConfigError(f"crop sizes must be positive integers, got {size!r}")
    return tuple(dict.fromkeys(int(s) for s in sizes))


class FacePipeline:
    """Detect (once per frame), keep one face, align it on 5 points, crop at every size.

    ``detector``: a registered detector name (see ``available_detectors()``) or an instance;
    ``sizes``: crop sides in pixels; ``min_score``: drop faces scoring below it, on the
    detector's own scale (None: only the detector's own threshold); ``select``: "largest" box or
    top "score" when a frame has several faces; ``margin``: extra context around the template
    (see :mod:`extract.faces.align`); ``detect_max_side``: downscale frames whose longer side
    exceeds this before detection (faster; coordinates are mapped back to full resolution, crops
    are cut from the full frame); remaining keyword options go to the detector.
    """

    def __init__(
        self,
        detector: str | FaceDetector = DEFAULT_DETECTOR,
        sizes: Iterable[int] = (112, 224),
        min_score: float | None = None,
        select: str = "largest",
        margin: float = 0.0,
        detect_max_side: int | None = None,
        **detector_opts: object,
    ) -> None:
        self.sizes = _check_sizes(sizes)
        if select not in SELECT_RULES:
            raise ConfigError(f"unknown select rule {select!r}; known: {', '.join(SELECT_RULES)}")
        if detect_max_side is not None and int(detect_max_side) < 32:
            raise ConfigError(f"detect_max_side must be >= 32 or None, got {detect_max_side!r}")
        align.template(112, margin)  # validates the margin
        if isinstance(detector, FaceDetector):
            if detector_opts:
                raise ConfigError(f"detector options {sorted(detector_opts)} need a detector name")
            self.detector = detector
        else:
            self.detector = create_detector(detector, **detector_opts)
        self.min_score = None if min_score is None else float(min_score)
        self.select = select
        self.margin = float(margin)
        self.detect_max_side = None if detect_max_side is None else int(detect_max_side)

    def __call__(self, frames: np.ndarray) -> FaceBatch:
        """Faces of the (N, H, W, 3) uint8 RGB ``frames``."""
        check_frames(frames)
        batch = FaceBatch.empty(len(frames), self.sizes)
        for i, (frame, found) in enumerate(zip(frames, self._detect(frames), strict=True)):
            if self.min_score is not None:
                found = found.take(found.scores >= self.min_score)
            best = found.best(self.select)
            if best is None:
                continue
            try:
                base = align.alignment_matrix(found.landmarks[best], 112, self.margin)
            except ValueError as err:  # non-finite or coincident points: not a usable face
                log.warning("frame %d: face dropped, landmarks unusable (%s)", i, err)
                continue
            batch.valid[i] = True
            batch.boxes[i] = found.boxes[best]
            batch.landmarks[i] = found.landmarks[best]
            batch.scores[i] = found.scores[best]
            for size in self.sizes:
                # The template for another size is the 112 one scaled by size / 112.
                matrix = base * (size / 112.0)
                batch.crops[size][i] = align.warp(frame, matrix, size)
        return batch

    def _detect(self, frames: np.ndarray) -> list[FaceDetections]:
        height, width = frames.shape[1:3]
        if self.detect_max_side is None or max(height, width) <= self.detect_max_side:
            return self.detector.detect(frames)
        import cv2

        scale = self.detect_max_side / max(height, width)
        small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = np.stack([cv2.resize(f, small_size, interpolation=cv2.INTER_AREA) for f in frames])
        # Map back with the exact per-axis factor (rounding makes them differ slightly).
        back = np.float32([width / small_size[0], height / small_size[1]])
        return [
            FaceDetections(d.boxes * np.tile(back, 2), d.scores, d.landmarks * back)
            for d in self.detector.detect(small)
        ]

    def reset(self) -> None:
        """Call between videos: clears the detector's per-video state, if any."""
        self.detector.reset()

    def close(self) -> None:
        """Release the detector's native resources."""
        self.detector.close()


class AlignedInput:
    """For frames that are already aligned face crops (image-folder datasets): no detection.

    Each frame is centre-cropped to a square (if it is not one) and resized to every size; all
    rows are valid, boxes span the square used, landmarks and scores are NaN (not measured).
    """

    def __init__(self, sizes: Iterable[int] = (112, 224)) -> None:
        self.sizes = _check_sizes(sizes)

    def __call__(self, frames: np.ndarray) -> FaceBatch:
        import cv2

        check_frames(frames)
        count, height, width = frames.shape[:3]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = frames[:, top : top + side, left : left + side]
        batch = FaceBatch.empty(count, self.sizes)
        batch.valid[:] = True
        batch.boxes[:] = [left, top, left + side, top + side]
        for size in self.sizes:
            method = cv2.INTER_AREA if size < side else cv2.INTER_CUBIC
            for i in range(count):
                batch.crops[size][i] = cv2.resize(square[i], (size, size), interpolation=method)
        return batch

    def reset(self) -> None:
        """No per-video state."""
        return None

    def close(self) -> None:
        """Nothing to release."""
        return None
