"""Face detectors that run a user-supplied ONNX model with onnxruntime: SCRFD and RetinaFace.

No weights ship with this package; pass ``model_path`` (e.g. insightface's ``det_10g.onnx`` for
``scrfd``, a ``retinaface_r50`` / mobilenet export for ``retinaface``). Frames are letterboxed
(resized keeping the aspect ratio, padded at the right/bottom) to the model's input size; the raw
outputs are decoded to boxes and 5 landmarks, thresholded and NMS-filtered, and mapped back to
frame pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from extract.errors import ConfigError
from extract.faces.detectors.base import (
    FaceDetections,
    FaceDetector,
    check_frames,
    modules_present,
    register_detector,
)

log = logging.getLogger(__name__)


def default_providers() -> list[str]:
    """The CPU, even where this onnxruntime build has CUDA: detections on CUDA differ from the
    CPU's by float rounding, which moves the crops' pixels, so the device is chosen on purpose
    (``extract run --face-device cuda``, recorded in the features' configs) or with
    ``providers=``, never silently by what happens to be installed."""
    return ["CPUExecutionProvider"]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores, kind="stable")
    areas = np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=1)
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        top_left = np.maximum(boxes[i, :2], boxes[rest, :2])
        bottom_right = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
        overlap = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


def letterbox(frame: np.ndarray, width: int, height: int) -> tuple[np.ndarray, float]:
    """``frame`` resized to fit (width, height) keeping its aspect, zero-padded right/bottom."""
    import cv2

    scale = min(width / frame.shape[1], height / frame.shape[0])
    new_w = max(1, min(width, round(frame.shape[1] * scale)))
    new_h = max(1, min(height, round(frame.shape[0] * scale)))
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return canvas, scale


def _sigmoid_if_logits(scores: np.ndarray) -> np.ndarray:
    if scores.size and (scores.min() < 0 or scores.max() > 1):
        return 1.0 / (1.0 + np.exp(-scores))
    return scores


def _by_width(outputs: Sequence[np.ndarray], width: int) -> list[np.ndarray]:
    """The outputs whose last axis has ``width`` entries, as 2-D arrays, most rows first."""
    found = [o.reshape(-1, width) for o in outputs if o.shape[-1] == width]
    return sorted(found, key=len, reverse=True)


class OnnxFaceDetector(FaceDetector):
    """Shared ONNX plumbing: session, letterbox, normalisation, batching, NMS.

    ``input_size`` (width, height) or one int is used when the model's input size is dynamic;
    ``threshold``: minimum face score (0..1); ``nms_iou``: overlap above which the lower-scored
    box is dropped; ``providers``: onnxruntime providers, names or ``(name, options)`` pairs
    (default: the CPU; see :func:`default_providers`).
    """

    requires: ClassVar[tuple[str, ...]] = ("onnxruntime", "cv2")
    #: Per-channel mean and std subtracted/divided after the optional RGB→BGR swap.
    mean: ClassVar[tuple[float, float, float]] = (0.0, 0.0, 0.0)
    std: ClassVar[tuple[float, float, float]] = (1.0, 1.0, 1.0)
    bgr: ClassVar[bool] = False

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        ok, reason = modules_present(*cls.requires)
        return ok, reason or "needs model_path= (a user-supplied .onnx file)"

    def __init__(
        self,
        model_path: str | Path,
        input_size: int | tuple[int, int] = 640,
        threshold: float = 0.5,
        nms_iou: float = 0.4,
        providers: Sequence[str] | None = None,
    ) -> None:
        import onnxruntime as ort

        path = Path(model_path)
        if not path.is_file():
            raise ConfigError(f"{self.name} model_path {str(path)!r} is not a file")
        if not 0.0 <= float(threshold) <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {threshold!r}")
        if not 0.0 < float(nms_iou) <= 1.0:
            raise ConfigError(f"nms_iou must be in (0, 1], got {nms_iou!r}")
        self.threshold, self.nms_iou = float(threshold), float(nms_iou)
        providers = list(providers or default_providers())
        self.session = ort.InferenceSession(str(path), providers=providers)
        model_input = self.session.get_inputs()[0]
        self._input_name = model_input.name
        self.input_size = self._resolve_size(model_input.shape, input_size)
        ranks = {len(o.shape) for o in self.session.get_outputs()}
        batch = model_input.shape[0]
        self._batched = ranks == {3} and not (isinstance(batch, int) and batch == 1)
        log.info(
            "%s: %s, input %s, providers %s",
            self.name,
            path.name,
            self.input_size,
            self.session.get_providers(),
        )

    @staticmethod
    def _resolve_size(shape: Sequence[Any], wanted: int | tuple[int, int]) -> tuple[int, int]:
        """(width, height): the model's own when fixed, else ``wanted``."""
        if len(shape) != 4:
            raise ConfigError(f"expected an NCHW image input, the model's input has shape {shape}")
        if isinstance(shape[2], int) and isinstance(shape[3], int) and shape[2] > 0 < shape[3]:
            return int(shape[3]), int(shape[2])
        size = (wanted, wanted) if isinstance(wanted, int) else tuple(wanted)
        if len(size) != 2 or min(size) < 32 or any(s % 32 for s in size):
            raise ConfigError(f"input_size must be multiples of 32 (w, h), got {wanted!r}")
        return int(size[0]), int(size[1])

    def _blob(self, frames: np.ndarray) -> tuple[np.ndarray, list[float]]:
        width, height = self.input_size
        images, scales = [], []
        for frame in frames:
            image, scale = letterbox(frame, width, height)
            images.append(image[..., ::-1] if self.bgr else image)
            scales.append(scale)
        x = (np.stack(images).astype(np.float32) - np.float32(self.mean)) / np.float32(self.std)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), scales

    def detect(self, frames: np.ndarray) -> list[FaceDetections]:
        check_frames(frames)
        chunk = len(frames) if self._batched else 1
        results = []
        for start in range(0, len(frames), max(chunk, 1)):
            blob, scales = self._blob(frames[start : start + chunk])
            outputs = self.session.run(None, {self._input_name: blob})
            for i, scale in enumerate(scales):
                per_image = [o[i] if self._batched else o for o in outputs]
                results.append(self._finish(*self.decode(per_image), scale))
        return results

    def detect_frame(self, frame: np.ndarray) -> FaceDetections:
        return self.detect(frame[None])[0]

    def decode(self, outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (P, 4), scores (P,), landmarks (P, 5, 2) in input pixels, for every anchor."""
        raise NotImplementedError

    def _finish(
        self, boxes: np.ndarray, scores: np.ndarray, points: np.ndarray, scale: float
    ) -> FaceDetections:
        keep = np.flatnonzero(scores >= self.threshold)
        keep = keep[nms(boxes[keep], scores[keep], self.nms_iou)]
        return FaceDetections(boxes[keep] / scale, scores[keep], points[keep] / scale)


@register_detector("scrfd")
class ScrfdOnnx(OnnxFaceDetector):
    """SCRFD (insightface ``det_*g.onnx`` with keypoints): per stride, scores, box and keypoint
    distances from anchor centres in stride units; the number of anchors per location is read
    off the output sizes. Input: RGB, (x - 127.5) / 128.
    """

    mean = (127.5, 127.5, 127.5)
    std = (128.0, 128.0, 128.0)

    def decode(self, outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scores_l, boxes_l, kps_l = (_by_width(outputs, w) for w in (1, 4, 10))
        if not kps_l:
            raise ConfigError(f"{self.name}: the model has no 10-wide keypoint outputs")
        if not len(scores_l) == len(boxes_l) == len(kps_l):
            raise ConfigError(f"{self.name}: unexpected outputs {[o.shape for o in outputs]}")
        width, height = self.input_size
        boxes, points = [], []
        for level, (dist, kps) in enumerate(zip(boxes_l, kps_l, strict=True)):
            stride = 8 * 2**level
            centres = self._centres(len(dist), width // stride, height // stride, stride)
            dist = dist * stride
            boxes.append(np.hstack([centres - dist[:, :2], centres + dist[:, 2:]]))
            points.append(centres[:, None, :] + kps.reshape(-1, 5, 2) * stride)
        scores = _sigmoid_if_logits(np.concatenate([s[:, 0] for s in scores_l]))
        return np.concatenate(boxes), scores, np.concatenate(points)

    def _centres(self, rows: int, cols: int, lines: int, stride: int) -> np.ndarray:
        """Anchor centres (x, y), row-major over the feature map, each repeated per anchor."""
        cells = cols * lines
        if cells == 0 or rows % cells:
            raise ConfigError(
                f"{self.name}: {rows} rows do not fit a {cols}x{lines} stride-{stride} map"
            )
        ys, xs = np.mgrid[:lines, :cols]
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32) * stride
        return np.repeat(centres, rows // cells, axis=0)


@register_detector("retinaface")
class RetinaFaceOnnx(OnnxFaceDetector):
    """RetinaFace (the Pytorch_Retinaface ``loc, conf, landms`` export): offsets from prior
    boxes with variances (0.1, 0.2); priors per stride ``steps`` of sizes ``min_sizes``.
    Input: BGR minus (104, 117, 123). Two-class ``conf`` is softmaxed unless it already is.
    """

    mean = (104.0, 117.0, 123.0)
    bgr = True

    def __init__(
        self,
        model_path: str | Path,
        input_size: int | tuple[int, int] = 640,
        threshold: float = 0.5,
        nms_iou: float = 0.4,
        providers: Sequence[str] | None = None,
        steps: Sequence[int] = (8, 16, 32),
        min_sizes: Sequence[Sequence[int]] = ((16, 32), (64, 128), (256, 512)),
        variances: tuple[float, float] = (0.1, 0.2),
    ) -> None:
        if len(steps) != len(min_sizes):
            raise ConfigError(f"steps {steps!r} and min_sizes {min_sizes!r} differ in length")
        self.steps, self.min_sizes = tuple(steps), tuple(tuple(m) for m in min_sizes)
        self.variances = (float(variances[0]), float(variances[1]))
        super().__init__(model_path, input_size, threshold, nms_iou, providers)
        self.priors = self._priors()

    def _priors(self) -> np.ndarray:
        """(P, 4) prior boxes cx, cy, w, h in input pixels, ordered level, row, column, size."""
        width, height = self.input_size
        levels = []
        for step, sizes in zip(self.steps, self.min_sizes, strict=True):
            ys, xs = np.mgrid[: -(-height // step), : -(-width // step)]
            centres = (np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5) * step
            for_sizes = [np.hstack([centres, np.full_like(centres, s)]) for s in sizes]
            levels.append(np.stack(for_sizes, axis=1).reshape(-1, 4))
        return np.concatenate(levels).astype(np.float32)

    def decode(self, outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        parts = [_by_width(outputs, w) for w in (4, 2, 10)]
        if any(len(p) != 1 for p in parts):
            raise ConfigError(
                f"{self.name}: expected one loc (4), conf (2) and landms (10) output, "
                f"got shapes {[o.shape for o in outputs]}"
            )
        (loc,), (conf,), (landms,) = parts
        if len(loc) != len(self.priors):
            raise ConfigError(
                f"{self.name}: the model has {len(loc)} priors, steps {self.steps} / min_sizes "
                f"{self.min_sizes} at {self.input_size} give {len(self.priors)}"
            )
        centre, size = self.priors[:, :2], self.priors[:, 2:]
        v0, v1 = self.variances
        box_centre = centre + loc[:, :2] * v0 * size
        box_size = size * np.exp(loc[:, 2:] * v1)
        boxes = np.hstack([box_centre - box_size / 2, box_centre + box_size / 2])
        points = centre[:, None, :] + landms.reshape(-1, 5, 2) * v0 * size[:, None, :]
        if not np.allclose(conf.sum(axis=1), 1.0, atol=1e-3):
            conf = np.exp(conf - conf.max(axis=1, keepdims=True))
            conf = conf / conf.sum(axis=1, keepdims=True)
        return boxes, conf[:, 1], points
