"""dlib detectors (``dlib-bin``) with dlib shape predictors (``face-recognition-models``).

``dlib_hog``: HOG + linear SVM frontal-face detector; ``dlib_mmod``: the CNN (MMOD) detector;
``haar_dlib``: OpenCV's Haar cascade for boxes. All take their 5 points from a dlib shape
predictor run inside the box: the 68-point model (exact eye centres, nose tip, mouth corners;
its iBUG 300-W training data is licensed for non-commercial research only) or the 5-point model
(eye corners + subnasale; nose tip and mouth corners estimated).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from extract.errors import ConfigError, UnavailableError
from extract.faces.detectors import landmarks as lm
from extract.faces.detectors.base import (
    FaceDetections,
    FaceDetector,
    modules_present,
    register_detector,
)

_INSTALL = "pip install dlib-bin==20.0.1.post1 face-recognition-models==0.3.0"
_PREDICTORS = {
    "68": ("shape_predictor_68_face_landmarks.dat", lm.from_68),
    "5": ("shape_predictor_5_face_landmarks.dat", lm.from_dlib5),
}
_MMOD = "mmod_human_face_detector.dat"


def model_file(name: str) -> Path:
    """Path of a ``.dat`` file from the ``face_recognition_models`` package.

    Found through the import system without importing the package (its ``__init__`` needs
    ``pkg_resources``, which setuptools >= 80 no longer ships).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise UnavailableError(f"face_recognition_models is not installed ({_INSTALL})")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).rglob(name))
        if found:
            return found[0]
    raise UnavailableError(f"{name} is not in face_recognition_models ({_INSTALL})")


class _DlibLandmarkDetector(FaceDetector):
    """A box detector followed by a dlib shape predictor; subclasses supply ``_boxes``."""

    requires: ClassVar[tuple[str, ...]] = ("dlib", "face_recognition_models")
    extra_files: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        ok, reason = modules_present(*cls.requires)
        if not ok:
            return False, f"{reason} ({_INSTALL})"
        try:
            for name in (*cls.extra_files, *(f for f, _ in _PREDICTORS.values())):
                model_file(name)
        except UnavailableError as err:
            return False, str(err)
        return True, ""

    def __init__(self, landmarks: str | int = "68") -> None:
        import dlib

        landmarks = str(landmarks)
        if landmarks not in _PREDICTORS:
            known = ", ".join(_PREDICTORS)
            raise ConfigError(f"unknown dlib landmark model {landmarks!r}; known: {known}")
        filename, self._to_five = _PREDICTORS[landmarks]
        self.landmarks = landmarks
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(model_file(filename)))

    def _boxes(self, frame: np.ndarray) -> tuple[list[Any], list[float]]:
        """dlib rectangles and scores of the faces in ``frame``."""
        raise NotImplementedError

    def detect_frame(self, frame: np.ndarray) -> FaceDetections:
        rects, scores = self._boxes(frame)
        if not rects:
            return FaceDetections.empty()
        boxes, points = [], []
        for rect in rects:
            shape = self._predictor(frame, rect)
            xy = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
            boxes.append([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1])
            points.append(self._to_five(xy))
        return FaceDetections(np.array(boxes), np.array(scores), np.array(points))


@register_detector("dlib_hog")
class DlibHog(_DlibLandmarkDetector):
    """dlib's HOG frontal-face detector. Scores are SVM margins (0 = the default threshold).

    ``upsample``: times the image is doubled before detection (finds faces under ~80 px, slower);
    ``threshold``: margin a face needs (lower finds more, with more false positives).
    """

    def __init__(
        self, landmarks: str | int = "68", upsample: int = 0, threshold: float = 0.0
    ) -> None:
        super().__init__(landmarks)
        if int(upsample) < 0:
            raise ConfigError(f"upsample must be >= 0, got {upsample!r}")
        self.upsample = int(upsample)
        self.threshold = float(threshold)
        self._detector = self._dlib.get_frontal_face_detector()

    def _boxes(self, frame: np.ndarray) -> tuple[list[Any], list[float]]:
        rects, scores, _ = self._detector.run(frame, self.upsample, self.threshold)
        return list(rects), list(scores)


@register_detector("dlib_mmod")
class DlibMmod(_DlibLandmarkDetector):
    """dlib's CNN (max-margin object detection) face detector; slow on CPU."""

    extra_files = (_MMOD,)

    def __init__(self, landmarks: str | int = "68", upsample: int = 0) -> None:
        super().__init__(landmarks)
        if int(upsample) < 0:
            raise ConfigError(f"upsample must be >= 0, got {upsample!r}")
        self.upsample = int(upsample)
        self._detector = self._dlib.cnn_face_detection_model_v1(str(model_file(_MMOD)))

    def _boxes(self, frame: np.ndarray) -> tuple[list[Any], list[float]]:
        found = self._detector(frame, self.upsample)
        return [d.rect for d in found], [float(d.confidence) for d in found]


@register_detector("haar_dlib")
class HaarDlib(_DlibLandmarkDetector):
    """OpenCV's frontal-face Haar cascade for boxes, dlib's shape predictor for landmarks.

    Scores are the cascade's level weights. ``min_neighbors``: overlapping hits a face needs;
    ``min_size``: smallest face side in pixels.
    """

    requires = ("cv2", "dlib", "face_recognition_models")
    cascade = "haarcascade_frontalface_default.xml"

    def __init__(
        self, landmarks: str | int = "68", min_neighbors: int = 5, min_size: int = 40
    ) -> None:
        super().__init__(landmarks)
        import cv2

        self._cv2 = cv2
        self._cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / self.cascade))
        if self._cascade.empty():
            raise UnavailableError(f"OpenCV could not load its {self.cascade}")
        self.min_neighbors = int(min_neighbors)
        self.min_size = int(min_size)

    def _boxes(self, frame: np.ndarray) -> tuple[list[Any], list[float]]:
        gray = self._cv2.cvtColor(frame, self._cv2.COLOR_RGB2GRAY)
        found, _, weights = self._cascade.detectMultiScale3(
            gray,
            scaleFactor=1.1,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
            outputRejectLevels=True,
        )
        rect = self._dlib.rectangle
        rects = [rect(int(x), int(y), int(x + w - 1), int(y + h - 1)) for x, y, w, h in found]
        return rects, [float(w) for w in np.ravel(weights)]
