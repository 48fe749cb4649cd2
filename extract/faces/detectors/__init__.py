"""Face detectors behind one interface, found by name in a registry.

Importing this package registers the built-in detectors (MediaPipe, dlib, OpenCV Haar) and the
ONNX ones (SCRFD, RetinaFace); their heavy libraries load only when one is instantiated.
"""

from extract.faces import onnx_detectors  # noqa: F401  (registers)
from extract.faces.detectors import dlib_detectors, mp_detectors  # noqa: F401  (registers)
from extract.faces.detectors.base import (
    DETECTORS,
    LANDMARK_NAMES,
    FaceDetections,
    FaceDetector,
    available_detectors,
    check_frames,
    create_detector,
    register_detector,
)

#: The detector :class:`~extract.faces.pipeline.FacePipeline` uses unless told otherwise.
DEFAULT_DETECTOR = "mediapipe_facemesh"

__all__ = [
    "DEFAULT_DETECTOR",
    "DETECTORS",
    "LANDMARK_NAMES",
    "FaceDetections",
    "FaceDetector",
    "available_detectors",
    "check_frames",
    "create_detector",
    "register_detector",
]
