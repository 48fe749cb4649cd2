"""The runner's face step: frames → one aligned crop per frame and size, plus a validity mask.

Video frames go through detection and alignment (:class:`extract.faces.pipeline.FacePipeline`);
frames of image-folder inputs are already aligned crops and are only resized
(:class:`extract.faces.pipeline.AlignedInput`). Which step an input kind uses is a registry
entry, so another step (a tracker, a cached detection file) plugs in by name. Each step also
describes itself: :func:`faces_config` is what a visual feature's fingerprint records, for
every input kind, whichever kinds a run happens to meet (so one name never holds crops made
two ways without its config saying so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from extract.faces.settings import FaceSettings
from extract.registry import Registry


class FaceResult(Protocol):
    """What a face step returns (``extract.faces.pipeline.FaceBatch`` fits)."""

    crops: dict[int, np.ndarray]  # size → (N, S, S, 3) uint8 RGB (zeros where not valid)
    valid: np.ndarray  # (N,) bool


class FaceStep(Protocol):
    def __call__(self, frames: np.ndarray) -> FaceResult: ...

    def reset(self) -> None: ...


class FaceStepKind(Protocol):
    """A registered face step: builds the step and describes it for the fingerprint."""

    def build(self, settings: FaceSettings, sizes: tuple[int, ...]) -> FaceStep: ...

    def describe(self, settings: FaceSettings, size: int) -> dict[str, Any]: ...


FACE_STEPS: Registry[FaceStepKind] = Registry("face step")

#: Input kind → face step name.
STEP_FOR_KIND = {"video": "detect", "images": "aligned"}


@dataclass(frozen=True)
class DetectStep:
    """Detect, keep one face (``select``), align on 5 landmarks, crop at every size."""

    def build(self, settings: FaceSettings, sizes: tuple[int, ...]) -> FaceStep:
        return settings.pipeline(sizes)

    def describe(self, settings: FaceSettings, size: int) -> dict[str, Any]:
        return settings.describe(size)


@dataclass(frozen=True)
class AlignedStep:
    """Already aligned crops: centre square, resized to every size; every frame valid."""

    def build(self, settings: FaceSettings, sizes: tuple[int, ...]) -> FaceStep:
        from extract.faces.pipeline import AlignedInput

        return AlignedInput(sizes=sizes)

    def describe(self, settings: FaceSettings, size: int) -> dict[str, Any]:
        return {"step": "aligned", "detector": None, "crop": "centre square",
                "resize": "area when shrinking, cubic when enlarging", "crop_size": int(size)}


FACE_STEPS.add("detect", DetectStep())
FACE_STEPS.add("aligned", AlignedStep())


def faces_config(settings: FaceSettings, size: int) -> dict[str, Any]:
    """Input kind → how its ``size`` crops are made (recorded in visual features' configs)."""
    return {kind: FACE_STEPS.get(step).describe(settings, size)
            for kind, step in STEP_FOR_KIND.items()}


def detector_problem(detector: str | None) -> str | None:
    """Why the face detector ``NAME[:KEY=VALUE,...]`` cannot run here (None when it can)."""
    from extract.errors import ExtractError
    from extract.faces.detectors import DETECTORS

    try:
        name = FaceSettings.from_spec(detector).detector.name
    except ExtractError as exc:
        return str(exc)
    ok, reason = DETECTORS.get(name).availability()
    return None if ok else f"face detector {name!r} is unavailable: {reason}"


class FaceSteps:
    """One lazily built face step per input kind, shared by every visual feature of a worker.

    ``detector``: ``NAME[:KEY=VALUE,...]`` (None: the default detector), as
    ``extract run --detector`` takes it.
    """

    def __init__(self, sizes: tuple[int, ...], detector: str | None) -> None:
        self.sizes = tuple(sorted(set(sizes)))
        self.settings = FaceSettings.from_spec(detector)
        self._steps: dict[str, FaceStep] = {}

    @property
    def detector_name(self) -> str:
        """The detector with every option (``NAME:KEY=VALUE,...``), as recorded in each
        video's ``source``."""
        return self.settings.detector.spec(every_option=True)

    def for_kind(self, kind: str) -> FaceStep:
        if kind not in self._steps:
            self._steps[kind] = FACE_STEPS.get(STEP_FOR_KIND[kind]).build(self.settings,
                                                                           self.sizes)
        return self._steps[kind]
