"""Face pipeline: detect faces, keep one per frame, align it on 5 landmarks, crop per size.

>>> pipe = FacePipeline(sizes=(112, 224))      # default detector: DEFAULT_DETECTOR
>>> batch = pipe(frames)                       # frames: (N, H, W, 3) uint8 RGB
>>> batch.crops[224].shape, batch.valid.sum()
"""

from extract.faces.align import ARCFACE_112, align_face, alignment_matrix, template, umeyama
from extract.faces.detectors import (
    DEFAULT_DETECTOR,
    LANDMARK_NAMES,
    FaceDetections,
    FaceDetector,
    available_detectors,
    create_detector,
    register_detector,
)
from extract.faces.pipeline import AlignedInput, FaceBatch, FacePipeline
from extract.faces.settings import DetectorChoice, FaceSettings

__all__ = [
    "ARCFACE_112",
    "DEFAULT_DETECTOR",
    "LANDMARK_NAMES",
    "AlignedInput",
    "DetectorChoice",
    "FaceBatch",
    "FaceDetections",
    "FaceDetector",
    "FacePipeline",
    "FaceSettings",
    "align_face",
    "alignment_matrix",
    "available_detectors",
    "create_detector",
    "register_detector",
    "template",
    "umeyama",
]
