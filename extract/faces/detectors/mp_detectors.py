"""MediaPipe detectors (models ship inside the ``mediapipe==0.10.21`` wheel).

``mediapipe_blazeface``: BlazeFace alone (6 keypoints; the mouth corners are estimated).
``mediapipe_facemesh``: BlazeFace, then the 468-point face mesh (478 with ``iris``) in a
rotated square around each face, as MediaPipe's own face-mesh graph does in static mode; the 5
points come from the mesh. Every frame is processed independently (no tracking state).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from extract.errors import ConfigError
from extract.faces.detectors import landmarks as lm
from extract.faces.detectors.base import FaceDetections, FaceDetector, register_detector

INSTALL = "pip install --no-deps mediapipe==0.10.21 && pip install attrs matplotlib protobuf"

_BLAZEFACE_GRAPHS = {
    "short": "mediapipe/modules/face_detection/face_detection_short_range_cpu.binarypb",
    "full": "mediapipe/modules/face_detection/face_detection_full_range_cpu.binarypb",
}
_MESH_MODELS = (
    "mediapipe/modules/face_landmark/face_landmark.tflite",
    "mediapipe/modules/face_landmark/face_landmark_with_attention.tflite",
)
# The mesh subgraph on an image and a region of interest (a NormalizedRect).
_MESH_GRAPH = """
input_stream: "image"
input_stream: "roi"
output_stream: "face_landmarks"
node {
  calculator: "FaceLandmarkCpu"
  input_stream: "IMAGE:image"
  input_stream: "ROI:roi"
  input_side_packet: "WITH_ATTENTION:with_attention"
  output_stream: "LANDMARKS:face_landmarks"
}
"""
#: The mesh region is the detection box's longer side times this, centred on the box.
_ROI_SCALE = 1.5


def _site_root() -> Path:
    spec = importlib.util.find_spec("mediapipe")
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]).parent if locations else Path()


class _MediaPipeDetector(FaceDetector):
    requires: ClassVar[tuple[str, ...]] = ("mediapipe",)
    #: Bundled files (relative to site-packages) the detector needs.
    files: ClassVar[tuple[str, ...]] = tuple(_BLAZEFACE_GRAPHS.values())
    _warm = False  # graphs started (their start-up warnings are silenced once)

    def detect(self, frames: np.ndarray) -> list[FaceDetections]:
        if self._warm:
            return super().detect(frames)
        with silenced_stderr():
            found = super().detect(frames)
        self._warm = True
        return found

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        ok, reason = super().availability()
        if not ok:
            return ok, f"{reason} ({INSTALL})"
        root = _site_root()
        for name in cls.files:
            if not (root / name).is_file():
                # Releases after 0.10.21 dropped the bundled "solutions" models.
                return False, f"mediapipe lacks {name}; install mediapipe==0.10.21"
        return True, ""


@contextlib.contextmanager
def silenced_stderr() -> Iterator[None]:
    """File descriptor 2 to /dev/null: MediaPipe's C++ side prints import noise (a protobuf-7
    ``MessageFactory`` message) and graph-start warnings there that Python logging cannot
    filter. Python exceptions still propagate with their messages."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def quiet_mediapipe_import() -> None:
    """Import MediaPipe's bindings once, quietly."""
    if "mediapipe.python._framework_bindings" not in sys.modules:
        with silenced_stderr():
            import mediapipe.python._framework_bindings  # noqa: F401


@register_detector("mediapipe_blazeface")
class MediaPipeBlazeFace(_MediaPipeDetector):
    """BlazeFace: ``model`` "short" (faces filling much of the frame, within ~2 m) or "full"
    (also small faces, up to ~5 m); ``threshold``: minimum score (0..1); ``fallback``: when
    ``model`` finds no face in a frame, run the other range on the same frame.

    BlazeFace gives eyes, nose tip and mouth centre; the mouth corners are estimated from the
    eye line (see :func:`landmarks.from_eyes_nose_mouth_centre`), so alignment is coarser.
    """

    def __init__(self, model: str = "short", threshold: float = 0.5,
                 fallback: bool = False) -> None:
        if model not in _BLAZEFACE_GRAPHS:
            known = ", ".join(_BLAZEFACE_GRAPHS)
            raise ConfigError(f"unknown BlazeFace model {model!r}; known: {known}")
        if not 0.0 <= float(threshold) <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {threshold!r}")
        if not isinstance(fallback, bool):
            raise ConfigError(f"fallback must be true or false, got {fallback!r}")
        self.model = model
        self.threshold = float(threshold)
        self.fallback = fallback
        self._detectors: dict[str, Any] = {}

    @property
    def models(self) -> tuple[str, ...]:
        """The BlazeFace ranges tried on a frame, in order (the second only as a fallback)."""
        other = next(m for m in _BLAZEFACE_GRAPHS if m != self.model)
        return (self.model, other) if self.fallback else (self.model,)

    def _detections(self, frame: np.ndarray, model: str | None = None) -> list[Any]:
        """BlazeFace ``Detection`` protos of range ``model`` for ``frame``, best score first."""
        model = model or self.model
        if model not in self._detectors:
            quiet_mediapipe_import()
            from mediapipe.modules.face_detection import face_detection_pb2
            from mediapipe.python.solution_base import SolutionBase

            options = face_detection_pb2.FaceDetectionOptions(min_score_thresh=self.threshold)
            with silenced_stderr():  # a graph's start-up chatter (a fallback starts one late)
                self._detectors[model] = graph = SolutionBase(
                    binary_graph_path=_BLAZEFACE_GRAPHS[model],
                    graph_options=options,
                    outputs=["detections"],
                )
                found = list(graph.process({"image": frame}).detections or [])
        else:
            found = list(self._detectors[model].process({"image": frame}).detections or [])
        return sorted(found, key=lambda d: -d.score[0] if len(d.score) else 0.0)

    def _blazeface_faces(self, frame: np.ndarray, detections: list[Any]) -> FaceDetections:
        """Boxes, scores and 5 points (mouth corners estimated) of BlazeFace ``detections``."""
        height, width = frame.shape[:2]
        boxes, scores, points = [], [], []
        for det in detections:
            kp = _keypoints(det, width, height)
            # Keypoints: subject's right eye (image left), left eye, nose tip, mouth centre, ears.
            boxes.append(_box(det, width, height))
            scores.append(_score(det))
            points.append(lm.from_eyes_nose_mouth_centre(kp[0], kp[1], kp[2], kp[3]))
        if not boxes:
            return FaceDetections.empty()
        return FaceDetections(np.array(boxes), np.array(scores), np.array(points))

    def detect_frame(self, frame: np.ndarray) -> FaceDetections:
        for model in self.models:
            found = self._blazeface_faces(frame, self._detections(frame, model))
            if len(found):
                break
        return found

    def close(self) -> None:
        for graph in self._detectors.values():
            graph.close()
        self._detectors = {}


@register_detector("mediapipe_facemesh")
class MediaPipeFaceMesh(MediaPipeBlazeFace):
    """BlazeFace (``model``, ``threshold`` as for ``mediapipe_blazeface``), then the face mesh.

    ``max_faces``: the most confident detections that get a mesh (the others are dropped);
    ``iris``: run the refined 478-point mesh and use the iris centres as eye centres (default:
    eye-corner midpoints of the 468-point mesh, which do not move with gaze). Boxes span the
    mesh; scores are BlazeFace's. A detection whose mesh reports no face is dropped.

    ``fallback`` (on by default) tries more within the same frame when no face comes out:
    first BlazeFace's other range with the mesh (the full-range model misses faces that fill
    most of the frame, the short-range one misses small faces), then, if the mesh rejected
    every detection of both ranges, BlazeFace's own 5 points (mouth corners estimated) for
    detections scoring at least ``fallback_score`` (weak BlazeFace hits that the mesh rejects
    are mostly not faces: a cat, a colour wheel).
    """

    files = (*_MediaPipeDetector.files, *_MESH_MODELS)

    def __init__(
        self, model: str = "full", threshold: float = 0.5, max_faces: int = 1,
        iris: bool = False, fallback: bool = True, fallback_score: float = 0.75,
    ) -> None:
        super().__init__(model, threshold, fallback)
        if isinstance(max_faces, bool) or int(max_faces) < 1:
            raise ConfigError(f"max_faces must be an integer >= 1, got {max_faces!r}")
        if not 0.0 <= float(fallback_score) <= 1.0:
            raise ConfigError(f"fallback_score must be in [0, 1], got {fallback_score!r}")
        self.max_faces = int(max_faces)
        self.iris = bool(iris)
        self.fallback_score = float(fallback_score)
        self._mesh: Any = None

    def _mesh_graph(self) -> Any:
        if self._mesh is None:
            quiet_mediapipe_import()
            from google.protobuf import text_format
            from mediapipe.framework import calculator_pb2
            from mediapipe.python.solution_base import SolutionBase

            config = text_format.Parse(_MESH_GRAPH, calculator_pb2.CalculatorGraphConfig())
            self._mesh = SolutionBase(
                graph_config=config,
                side_inputs={"with_attention": self.iris},
                outputs=["face_landmarks"],
            )
        return self._mesh

    def _mesh_points(self, frame: np.ndarray, det: Any) -> np.ndarray | None:
        """(K, 2) mesh points in frame pixels for one detection; None when the mesh model
        reports no face in the detection's region."""
        height, width = frame.shape[:2]
        roi = _mesh_region(det, width, height)
        quiet = silenced_stderr() if self._mesh is None else contextlib.nullcontext()
        with quiet:  # the graph's start-up chatter
            mesh = self._mesh_graph().process({"image": frame, "roi": roi}).face_landmarks
        if mesh is None or not len(mesh.landmark):
            return None
        return np.array([(p.x * width, p.y * height) for p in mesh.landmark], np.float64)

    def _meshed_faces(self, frame: np.ndarray, detections: list[Any]) -> FaceDetections:
        boxes, scores, points = [], [], []
        for det in detections:
            xy = self._mesh_points(frame, det)
            if xy is None:
                continue
            boxes.append(np.concatenate([xy.min(axis=0), xy.max(axis=0)]))
            scores.append(_score(det))
            points.append(lm.from_mesh(xy, iris=self.iris))
        if not boxes:
            return FaceDetections.empty()
        return FaceDetections(np.array(boxes), np.array(scores), np.array(points))

    def detect_frame(self, frame: np.ndarray) -> FaceDetections:
        rejected: list[list[Any]] = []  # per range: detections whose mesh found no face
        for model in self.models:
            detections = self._detections(frame, model)[: self.max_faces]
            found = self._meshed_faces(frame, detections)
            if len(found):
                return found
            rejected.append(detections)
        if self.fallback:
            for detections in rejected:  # the first range with a confident detection
                confident = [d for d in detections if _score(d) >= self.fallback_score]
                if confident:
                    return self._blazeface_faces(frame, confident)
        return FaceDetections.empty()

    def close(self) -> None:
        super().close()
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None


def _box(det: Any, width: int, height: int) -> np.ndarray:
    box = det.location_data.relative_bounding_box
    x1, y1 = box.xmin * width, box.ymin * height
    return np.array([x1, y1, x1 + box.width * width, y1 + box.height * height])


def _score(det: Any) -> float:
    return float(det.score[0]) if len(det.score) else float("nan")


def _keypoints(det: Any, width: int, height: int) -> np.ndarray:
    return np.array([(k.x * width, k.y * height) for k in det.location_data.relative_keypoints])


def _mesh_region(det: Any, width: int, height: int) -> Any:
    """The mesh model's input region: a square of 1.5x the box's longer side around the box
    centre, turned so the eyes are level (as MediaPipe's detection-to-ROI subgraph does)."""
    from mediapipe.framework.formats import rect_pb2

    box = det.location_data.relative_bounding_box
    kp = _keypoints(det, width, height)
    (x0, y0), (x1, y1) = kp[0], kp[1]
    rotation = -math.atan2(-(y1 - y0), x1 - x0)
    side = max(box.width * width, box.height * height) * _ROI_SCALE
    return rect_pb2.NormalizedRect(
        x_center=box.xmin + box.width / 2,
        y_center=box.ymin + box.height / 2,
        width=side / width,
        height=side / height,
        rotation=rotation,
    )
