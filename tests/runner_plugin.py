"""Test-only registrations for runner tests (imported by workers via ``RunOptions.plugins``).

* extractor ``test_mean_color``: per-crop mean and std of R, G, B (6-d) plus an extra
  ``gray`` (1-d mean brightness) — the visual path without any weights;
* face detector ``test_center``: "finds" a face centred in the frame when the centre pixel is
  skin-coloured (frames drawn without a face give no detection), landmarks on the ArcFace
  layout scaled into the frame.

Set ``EXTRACT_TEST_HANG_DIR`` to make the first ``test_mean_color`` call of any worker process
write ``<dir>/hang.pid`` (its pid) and sleep, so a test can kill the worker mid-video; set
``EXTRACT_TEST_SLOW_S`` to make every call sleep that long (runs that overlap in time).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from extract.extractors.base import EXTRACTORS, AudioExtractor, AudioRows, VisualExtractor
from extract.faces.align import ARCFACE_112
from extract.faces.detectors.base import DETECTORS, FaceDetections, FaceDetector, register_detector

#: A small catalog for runs through the CLI or other backends: one visual feature with an extra
#: (no weights) and one audio feature, and the store outputs they make.
CATALOG = {
    "meancolor": {"modality": "visual", "extractor": "test_mean_color", "dim": 6,
                  "input": {"face_size": 32}, "extras": {"gray": 1}},
    "fbank": {"modality": "audio", "extractor": "fbank", "dim": 80,
              "input": {"sample_rate": 16000, "window": 0.025, "hop": 0.01}, "rate": 100},
}
OUTPUTS = ["meancolor", "meancolor.gray", "fbank"]

HANG_ENV = "EXTRACT_TEST_HANG_DIR"
SLOW_ENV = "EXTRACT_TEST_SLOW_S"  # seconds test_mean_color sleeps per batch (overlapping runs)


def _in_run_checks() -> bool:
    """Whether this call comes from ``extract run``'s checks before any work (preflight)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__") == "extract.runner.preflight":
            return True
        frame = frame.f_back
    return False


def _hang_once() -> None:
    folder = os.environ.get(HANG_ENV)
    if not folder or _in_run_checks():
        return  # only workers hang (the run's own checks call the extractor too)
    marker = Path(folder) / "hang.pid"
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    time.sleep(120)


if "test_mean_color" not in EXTRACTORS:

    @EXTRACTORS.register("test_mean_color")
    class MeanColor(VisualExtractor):
        """Mean and std of each colour channel of the crop."""

        name = "test_mean_color"
        needs_weights = False

        def extract(self, crops: np.ndarray) -> dict[str, np.ndarray]:
            _hang_once()
            time.sleep(float(os.environ.get(SLOW_ENV, "0")))
            x = crops.astype(np.float32) / 255.0
            feats = np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], axis=1)
            return {"": feats, "gray": x.mean(axis=(1, 2, 3))[:, None]}


if "test_center" not in DETECTORS:

    @register_detector("test_center")
    class CenterDetector(FaceDetector):
        """A face in the middle of the frame when the centre pixel looks like skin."""

        def detect_frame(self, frame: np.ndarray) -> FaceDetections:
            h, w = frame.shape[:2]
            r, g, b = (int(v) for v in frame[h // 2, w // 2])
            if not (r > 150 and r > b + 40):
                return FaceDetections.empty()
            side = 0.8 * min(h, w)
            x0, y0 = (w - side) / 2, (h - side) / 2
            points = ARCFACE_112 / 112.0 * side + [x0, y0]
            return FaceDetections([[x0, y0, x0 + side, y0 + side]], [0.99], points[None])


if "test_broken_load" not in EXTRACTORS:

    @EXTRACTORS.register("test_broken_load")
    class BrokenLoad(VisualExtractor):
        """Its model never loads (a worker that cannot start)."""

        name = "test_broken_load"
        needs_weights = False

        def load(self) -> None:
            raise RuntimeError("checkpoint is corrupt (test)")

        def extract(self, crops: np.ndarray) -> dict[str, np.ndarray]:
            raise AssertionError("never called")


if "test_fail_extract" not in EXTRACTORS:

    @EXTRACTORS.register("test_fail_extract")
    class FailExtract(AudioExtractor):
        """Fails on waveforms shorter than a second (an extractor bug on some inputs; the
        run's 2-second check input passes)."""

        name = "test_fail_extract"
        needs_weights = False

        def extract(self, wav: np.ndarray, centers: np.ndarray | None = None) -> AudioRows:
            if len(wav) < 16000:
                raise ValueError("boom (test)")
            times = np.arange(0.0, len(wav) / 16000, 0.5)
            return AudioRows({"": np.zeros((len(times), 2), np.float32)}, times)


if "test_huge" not in EXTRACTORS:

    @EXTRACTORS.register("test_huge")
    class Huge(AudioExtractor):
        """Values beyond float16's range (an extractor whose rows need float32)."""

        name = "test_huge"
        needs_weights = False

        def extract(self, wav: np.ndarray, centers: np.ndarray | None = None) -> AudioRows:
            times = np.arange(10) * 0.1
            return AudioRows({"": np.full((10, 2), 1e6, np.float32)}, times)


if "test_echo_centers" not in EXTRACTORS:

    @EXTRACTORS.register("test_echo_centers")
    class EchoCenters(AudioExtractor):
        """One row per requested centre holding that centre (every 0.1 s when none)."""

        name = "test_echo_centers"
        needs_weights = False

        def extract(self, wav: np.ndarray, centers: np.ndarray | None = None) -> AudioRows:
            times = np.arange(0.0, len(wav) / 16000, 0.1) if centers is None else centers
            return AudioRows({"": np.asarray(times, np.float32)[:, None]}, np.asarray(times))
