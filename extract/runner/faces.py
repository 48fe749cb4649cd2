"""The runner's face step: frames → one aligned crop per frame and size, plus a validity mask.

Video frames go through detection and alignment (:class:`extract.faces.pipeline.FacePipeline`);
frames of image-folder inputs are already aligned crops and are only resized
(:class:`extract.faces.pipeline.AlignedInput`). Which step an input kind uses is a registry
entry, so another step (a tracker, a cached detection file) plugs in by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from extract.registry import Registry


class FaceResult(Protocol):
    """What a face step returns (``extract.faces.pipeline.FaceBatch`` fits)."""

    crops: dict[int, np.ndarray]  # size → (N, S, S, 3) uint8 RGB (zeros where not valid)
    valid: np.ndarray  # (N,) bool


class FaceStep(Protocol):
    def __call__(self, frames: np.ndarray) -> FaceResult: ...

    def reset(self) -> None: ...


FaceStepFactory = Callable[[tuple[int, ...], str | None], FaceStep]
FACE_STEPS: Registry[FaceStepFactory] = Registry("face step")

#: Input kind → face step name.
STEP_FOR_KIND = {"video": "detect", "images": "aligned"}


@FACE_STEPS.register("detect")
def detect_step(sizes: tuple[int, ...], detector: str | None) -> FaceStep:
    """Detect, keep the largest face, align on 5 landmarks, crop at every size."""
    from extract.faces.detectors import DEFAULT_DETECTOR
    from extract.faces.pipeline import FacePipeline

    return FacePipeline(detector=detector or DEFAULT_DETECTOR, sizes=sizes)


@FACE_STEPS.register("aligned")
def aligned_step(sizes: tuple[int, ...], detector: str | None) -> FaceStep:
    """Already aligned crops: centre square, resized to every size; every frame valid."""
    from extract.faces.pipeline import AlignedInput

    return AlignedInput(sizes=sizes)


def detector_problem(detector: str | None) -> str | None:
    """Why the face detector cannot run here (None when it can)."""
    from extract.errors import RegistryError
    from extract.faces.detectors import DEFAULT_DETECTOR, DETECTORS

    name = detector or DEFAULT_DETECTOR
    try:
        ok, reason = DETECTORS.get(name).availability()
    except RegistryError as exc:
        return str(exc)
    return None if ok else f"face detector {name!r} is unavailable: {reason}"


class FaceSteps:
    """One lazily built face step per input kind, shared by every visual feature of a worker."""

    def __init__(self, sizes: tuple[int, ...], detector: str | None) -> None:
        self.sizes = tuple(sorted(set(sizes)))
        self.detector = detector
        self._steps: dict[str, FaceStep] = {}

    @property
    def detector_name(self) -> str:
        from extract.faces.detectors import DEFAULT_DETECTOR

        return self.detector or DEFAULT_DETECTOR

    def for_kind(self, kind: str) -> FaceStep:
        if kind not in self._steps:
            self._steps[kind] = FACE_STEPS.get(STEP_FOR_KIND[kind])(self.sizes, self.detector)
        return self._steps[kind]
