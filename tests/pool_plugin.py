"""Test-only face detectors for the CPU pool (imported by workers via ``RunOptions.plugins``).

* ``test_center_hang``: ``test_center`` (see ``runner_plugin``), except that its first call in
  a CPU-pool process on frames whose top-left red value is within 3 of
  ``$EXTRACT_TEST_FEEDER_HANG_RED`` (``media_utils.face_frame``'s background: 40 for seed 0)
  writes ``<$EXTRACT_TEST_FEEDER_HANG_DIR>/hang.pid`` (its pid) and sleeps, so a test can kill
  that process in the middle of one video's span;
* ``test_center_tracked``: ``test_center`` with per-video state (it overrides ``reset``), so
  its videos are never split across CPU workers.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import runner_plugin  # noqa: F401  (registers test_center)

from extract.faces.detectors.base import DETECTORS, FaceDetections, register_detector

FEEDER_HANG_ENV = "EXTRACT_TEST_FEEDER_HANG_DIR"
HANG_RED_ENV = "EXTRACT_TEST_FEEDER_HANG_RED"


def _hang_once_in_pool(frames: np.ndarray) -> None:
    folder = os.environ.get(FEEDER_HANG_ENV)
    if not folder or "-cpu" not in multiprocessing.current_process().name:
        return  # only CPU-pool processes hang
    red = os.environ.get(HANG_RED_ENV)
    if red is not None and abs(int(frames[0, 0, 0, 0]) - int(red)) > 3:
        return
    try:
        fd = os.open(Path(folder) / "hang.pid", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    time.sleep(120)


if "test_center_hang" not in DETECTORS:

    @register_detector("test_center_hang")
    class HangingCenterDetector(DETECTORS.get("test_center")):  # type: ignore[misc]
        """``test_center`` that hangs once in a CPU-pool process."""

        def detect(self, frames: np.ndarray) -> list[FaceDetections]:
            _hang_once_in_pool(frames)
            return super().detect(frames)


if "test_center_tracked" not in DETECTORS:

    @register_detector("test_center_tracked")
    class TrackedCenterDetector(DETECTORS.get("test_center")):  # type: ignore[misc]
        """``test_center`` that counts frames per video (state that ``reset`` clears)."""

        def __init__(self) -> None:
            self.seen = 0

        def detect_frame(self, frame: np.ndarray) -> FaceDetections:
            self.seen += 1
            return super().detect_frame(frame)

        def reset(self) -> None:
            self.seen = 0
