"""The detector interface: per-frame face boxes, scores and 5 landmarks, plus the registry."""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import numpy as np

from extract.errors import ConfigError, UnavailableError
from extract.registry import Registry

#: Names of the 5 landmarks, in order. "left"/"right" are as seen in the image (insightface).
LANDMARK_NAMES = ("left_eye", "right_eye", "nose_tip", "mouth_left", "mouth_right")

SELECT_RULES = ("largest", "score")


@dataclass(frozen=True)
class FaceDetections:
    """The faces found in one frame, in input-frame pixel coordinates.

    ``boxes`` (K, 4) x1, y1, x2, y2; ``scores`` (K,) on the detector's own scale;
    ``landmarks`` (K, 5, 2) x, y in the order of :data:`LANDMARK_NAMES`.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        landmarks = np.asarray(self.landmarks, dtype=np.float32).reshape(-1, 5, 2)
        if not len(boxes) == len(scores) == len(landmarks):
            raise ValueError(
                f"FaceDetections needs as many boxes ({len(boxes)}), scores ({len(scores)}) "
                f"and landmark sets ({len(landmarks)})"
            )
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "landmarks", landmarks)

    @classmethod
    def empty(cls) -> FaceDetections:
        """No face."""
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)))

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, index: np.ndarray | list[int]) -> FaceDetections:
        """The faces at ``index`` (integer indices or a boolean mask)."""
        return FaceDetections(self.boxes[index], self.scores[index], self.landmarks[index])

    def scaled(self, factor: float) -> FaceDetections:
        """Coordinates multiplied by ``factor`` (to undo a resize before detection)."""
        return FaceDetections(self.boxes * factor, self.scores, self.landmarks * factor)

    def best(self, rule: str = "largest") -> int | None:
        """Index of the face to keep: the largest box (ties: higher score) or the top score."""
        if rule not in SELECT_RULES:
            known = ", ".join(SELECT_RULES)
            raise ConfigError(f"unknown face selection rule {rule!r}; known: {known}")
        if not len(self):
            return None
        if rule == "score":
            return int(np.argmax(self.scores))
        wh = np.clip(self.boxes[:, 2:] - self.boxes[:, :2], 0, None)
        area = wh[:, 0] * wh[:, 1]
        return int(np.lexsort((self.scores, area))[-1])


def check_frames(frames: np.ndarray) -> np.ndarray:
    """Return ``frames`` if it is an (N, H, W, 3) uint8 array, else raise naming what is wrong."""
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (N, H, W, 3) RGB, got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    return frames


def modules_present(*modules: str) -> tuple[bool, str]:
    """(True, "") if every module can be imported, else (False, which one is missing)."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            return False, f"Python module {module!r} is not installed"
    return True, ""


class FaceDetector(ABC):
    """Finds faces and their 5 landmarks in RGB frames. Subclasses implement ``detect_frame``."""

    name: ClassVar[str] = ""
    #: Import names the detector needs; :meth:`availability` checks them.
    requires: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """Whether the detector can run here, and if not, why."""
        return modules_present(*cls.requires)

    def detect(self, frames: np.ndarray) -> list[FaceDetections]:
        """Detect faces in each of the (N, H, W, 3) uint8 RGB ``frames``."""
        check_frames(frames)
        return [self.detect_frame(np.ascontiguousarray(frame)) for frame in frames]

    @abstractmethod
    def detect_frame(self, frame: np.ndarray) -> FaceDetections:
        """Detect faces in one contiguous (H, W, 3) uint8 RGB frame."""

    def reset(self) -> None:
        """Forget per-video state (none by default)."""
        return None

    def close(self) -> None:
        """Release native resources (none by default)."""
        return None


DETECTORS: Registry[type[FaceDetector]] = Registry("face detector")

D = TypeVar("D", bound=type[FaceDetector])


def register_detector(name: str) -> Callable[[D], D]:
    """Class decorator registering a :class:`FaceDetector` under ``name`` (duplicates raise)."""

    def add(cls: D) -> D:
        DETECTORS.add(name, cls)
        cls.name = name
        return cls

    return add


def available_detectors() -> dict[str, tuple[bool, str]]:
    """Every registered detector name → (can run here, reason when it cannot)."""
    return {name: DETECTORS.get(name).availability() for name in DETECTORS}


def create_detector(name: str, **options: object) -> FaceDetector:
    """Instantiate the detector ``name``; raises if it is unknown or cannot run here."""
    cls = DETECTORS.get(name)
    ok, reason = cls.availability()
    if not ok:
        raise UnavailableError(f"face detector {name!r} is unavailable: {reason}")
    return cls(**options)
