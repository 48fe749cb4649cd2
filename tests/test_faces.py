"""Face pipeline: alignment maths, ONNX decoders on tiny synthetic models, pipeline contract,
and the default detector on real GRID clips (skipped when ../shared/media is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from extract.errors import ConfigError, RegistryError, UnavailableError
from extract.faces import (
    ARCFACE_112,
    DEFAULT_DETECTOR,
    AlignedInput,
    FaceDetections,
    FaceDetector,
    FacePipeline,
    align_face,
    alignment_matrix,
    available_detectors,
    create_detector,
    register_detector,
    template,
    umeyama,
)
from extract.faces.align import transform_points
from extract.faces.detectors import DETECTORS
from extract.faces.onnx_detectors import nms

cv2 = pytest.importorskip("cv2")


def similarity(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([rot, np.array(shift)[:, None]])


# --- alignment -------------------------------------------------------------------------------


def test_umeyama_recovers_a_known_similarity() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    truth = similarity(23.0, 1.7, (12.0, -5.0))
    assert np.allclose(umeyama(src, transform_points(src, truth)), truth, atol=1e-9)


def test_umeyama_never_reflects_and_rejects_degenerate_points() -> None:
    src = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    mirrored = src * [-1.0, 1.0]
    assert np.linalg.det(umeyama(src, mirrored)[:, :2]) > 0
    with pytest.raises(ValueError, match="coincide"):
        umeyama(np.ones((5, 2)), ARCFACE_112)


def test_template_scales_with_size_and_margin() -> None:
    assert np.allclose(template(112), ARCFACE_112)
    assert np.allclose(template(224), 2 * ARCFACE_112)
    # margin 0.5 doubles the field of view: the 112 layout sits in the centre half.
    assert np.allclose(template(224, margin=0.5), ARCFACE_112 + 56)
    with pytest.raises(ValueError, match="crop size"):
        template(0)


@pytest.mark.parametrize(("size", "margin"), [(112, 0.0), (224, 0.0), (160, 0.2)])
def test_alignment_round_trip_puts_landmarks_on_the_template(size: int, margin: float) -> None:
    """Dots drawn at the 5 points of a rotated, scaled, shifted face land on the template."""
    to_image = similarity(-17.0, 2.3, (95.0, 40.0))
    points = transform_points(ARCFACE_112, to_image)
    image = np.zeros((360, 420, 3), np.uint8)
    for x, y in points:
        cv2.circle(image, (round(x * 16), round(y * 16)), 5 * 16, (255, 255, 255), -1, shift=4)
    crop = align_face(image, points, size=size, margin=margin)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    expected = template(size, margin)
    mapped = transform_points(points, alignment_matrix(points, size, margin))
    assert np.abs(mapped - expected).max() < 1e-6
    mask = (crop[..., 0] > 127).astype(np.uint8)
    count, _, _, centroids = cv2.connectedComponentsWithStats(mask)
    found = centroids[1:]
    assert count - 1 == 5
    nearest = np.linalg.norm(found[None] - expected[:, None], axis=-1).min(axis=1)
    assert nearest.max() < 1.0, nearest


def test_landmark_mappings_reproduce_the_template_geometry() -> None:
    from extract.faces.detectors import landmarks as lm

    t = ARCFACE_112
    # dlib 5-point order: image-right eye corners, image-left eye corners, subnasale.
    dlib5 = np.array([t[1] + [8, 0], t[1] - [8, 0], t[0] - [8, 0], t[0] + [8, 0], [56.0, 79.2]])
    assert np.allclose(lm.from_dlib5(dlib5), t, atol=0.05)
    mouth_centre = (t[3] + t[4]) / 2
    estimate = lm.from_eyes_nose_mouth_centre(t[0], t[1], t[2], mouth_centre)
    assert np.abs(estimate - t).max() < 0.5


# --- ONNX decoders on tiny synthetic models --------------------------------------------------


def constant_model(path: Path, outputs: dict[str, np.ndarray], size: int, batched: bool) -> Path:
    """An ONNX model whose outputs are fixed tensors (+0 x the input, so the input is used)."""
    from onnx import TensorProto, helper, save

    batch = "N" if batched else 1
    # "nothing" is 0 x mean(input), shaped (N, 1, 1) when batched, a scalar otherwise.
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["mean", "shape"], ["mean_r"]),
        helper.make_node("Mul", ["mean_r", "zero"], ["nothing"]),
    ]
    target = [-1, 1, 1] if batched else []
    inits = [
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("shape", TensorProto.INT64, [len(target)], target),
    ]
    graph_outputs = []
    for name, value in outputs.items():
        value = value.astype(np.float32)
        shape = [batch, *value.shape] if batched else list(value.shape)
        inits.append(helper.make_tensor(f"{name}_c", TensorProto.FLOAT, value.shape, value.ravel()))
        nodes.append(helper.make_node("Add", [f"{name}_c", "nothing"], [name]))
        graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, size, size])
    graph = helper.make_graph(nodes, "faces", [image], graph_outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))
    return path


# A 128x96 frame letterboxed into a 64x64 input: scale 0.5, no offset (padding right/bottom).
FRAME_W, FRAME_H, INPUT, SCALE = 128, 96, 64, 0.5
FACE_BOX = np.array([40.0, 20.0, 88.0, 84.0])
FACE_POINTS = np.array([[52.0, 44.0], [76.0, 44.0], [64.0, 58.0], [54.0, 70.0], [74.0, 70.0]])
OTHER_BOX = np.array([0.0, 0.0, 30.0, 30.0])
OTHER_POINTS = np.array([[8.0, 10.0], [22.0, 10.0], [15.0, 16.0], [10.0, 22.0], [20.0, 22.0]])


def scrfd_outputs() -> dict[str, np.ndarray]:
    """SCRFD layout (insightface order): scores, box distances, keypoint offsets per stride;
    2 anchors per cell, rows in (row, column, anchor) order, distances in stride units."""
    scores, dists, kps = {}, {}, {}
    for stride in (8, 16, 32):
        cells = (INPUT // stride) ** 2
        scores[stride] = np.full((cells * 2, 1), 0.01)
        dists[stride] = np.ones((cells * 2, 4))
        kps[stride] = np.zeros((cells * 2, 10))

    def put(stride: int, col: int, row: int, anchor: int, box, points, score: float) -> None:
        index = (row * (INPUT // stride) + col) * 2 + anchor
        centre = np.array([col, row]) * stride
        box, points = np.asarray(box) * SCALE, np.asarray(points) * SCALE
        scores[stride][index] = score
        dists[stride][index] = np.r_[centre - box[:2], box[2:] - centre] / stride
        kps[stride][index] = ((points - centre) / stride).ravel()

    put(8, 4, 3, 1, FACE_BOX, FACE_POINTS, 0.9)
    put(8, 4, 3, 0, FACE_BOX + [2, 2, 2, 2], FACE_POINTS + 2, 0.8)  # overlaps: NMS drops it
    put(16, 0, 0, 0, OTHER_BOX, OTHER_POINTS, 0.7)
    put(32, 1, 1, 1, [70, 70, 90, 90], OTHER_POINTS + 70, 0.3)  # below the threshold
    outputs = {f"score_{s}": scores[s] for s in scores}
    outputs |= {f"bbox_{s}": dists[s] for s in dists}
    outputs |= {f"kps_{s}": kps[s] for s in kps}
    return outputs


def retinaface_outputs() -> dict[str, np.ndarray]:
    """Pytorch_Retinaface layout: loc, conf (raw logits here), landms over priors ordered
    (level, row, column, min size); offsets scaled by variances 0.1 (centre) and 0.2 (log size)."""
    steps, min_sizes = (8, 16, 32), ((16, 32), (64, 128), (256, 512))
    counts = [(INPUT // s) ** 2 * 2 for s in steps]
    total = sum(counts)
    loc, landms = np.zeros((total, 4)), np.zeros((total, 10))
    conf = np.tile([3.0, -3.0], (total, 1))

    def put(level: int, col: int, row: int, k: int, box, points, logit: float) -> None:
        step = steps[level]
        index = sum(counts[:level]) + (row * (INPUT // step) + col) * 2 + k
        centre, size = (np.array([col, row]) + 0.5) * step, min_sizes[level][k]
        box, points = np.asarray(box) * SCALE, np.asarray(points) * SCALE
        loc[index, :2] = ((box[:2] + box[2:]) / 2 - centre) / (0.1 * size)
        loc[index, 2:] = np.log((box[2:] - box[:2]) / size) / 0.2
        landms[index] = ((points - centre) / (0.1 * size)).ravel()
        conf[index] = [0.0, logit]

    put(0, 4, 3, 1, FACE_BOX, FACE_POINTS, 3.0)
    put(0, 5, 3, 1, FACE_BOX + [1, 1, 1, 1], FACE_POINTS + 1, 2.0)  # overlaps: NMS drops it
    put(1, 0, 0, 0, OTHER_BOX, OTHER_POINTS, 1.0)
    return {"loc": loc, "conf": conf, "landms": landms}


def check_two_faces(found: FaceDetections) -> None:
    assert len(found) == 2
    first = int(np.argmax(found.scores))
    other = 1 - first
    assert np.allclose(found.boxes[first], FACE_BOX, atol=1e-3)
    assert np.allclose(found.landmarks[first], FACE_POINTS, atol=1e-3)
    assert np.allclose(found.boxes[other], OTHER_BOX, atol=1e-3)
    assert np.allclose(found.landmarks[other], OTHER_POINTS, atol=1e-3)


def test_scrfd_decoder_recovers_encoded_faces(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    model = constant_model(tmp_path / "scrfd.onnx", scrfd_outputs(), INPUT, batched=False)
    detector = create_detector("scrfd", model_path=model, threshold=0.5)
    frames = np.zeros((2, FRAME_H, FRAME_W, 3), np.uint8)
    results = detector.detect(frames)
    assert len(results) == 2
    for found in results:
        check_two_faces(found)
    assert np.isclose(results[0].scores.max(), 0.9)


def test_retinaface_decoder_recovers_encoded_faces_batched(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    model = constant_model(tmp_path / "retina.onnx", retinaface_outputs(), INPUT, batched=True)
    detector = create_detector("retinaface", model_path=model, threshold=0.5)
    assert detector._batched
    results = detector.detect(np.zeros((3, FRAME_H, FRAME_W, 3), np.uint8))
    assert len(results) == 3
    for found in results:
        check_two_faces(found)
    assert np.isclose(results[0].scores.max(), 1 / (1 + np.exp(-3.0)), atol=1e-5)


def test_onnx_detector_rejects_a_missing_model(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    with pytest.raises(ConfigError, match="nope.onnx"):
        create_detector("scrfd", model_path=tmp_path / "nope.onnx")


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    assert nms(boxes, np.array([0.5, 0.9, 0.4]), 0.4).tolist() == [1, 2]


# --- registry and pipeline contract ----------------------------------------------------------


class CentreFace(FaceDetector):
    """Reports one face in the middle of frames whose mean is above 0; counts its calls."""

    def __init__(self) -> None:
        self.frames_seen = 0

    def detect_frame(self, frame: np.ndarray) -> FaceDetections:
        self.frames_seen += 1
        if frame.mean() == 0:
            return FaceDetections.empty()
        h, w = frame.shape[:2]
        scale = min(h, w) / 200
        to_frame = similarity(0.0, scale, (w / 2 - 56 * scale, h / 2 - 56 * scale))
        points = transform_points(ARCFACE_112, to_frame)
        box = np.r_[points.min(axis=0) - [10, 20], points.max(axis=0) + 10]
        return FaceDetections(np.array([box]), np.array([0.8]), points[None])


def test_registry_rejects_duplicates_and_lists_known_names() -> None:
    with pytest.raises(RegistryError, match="twice"):
        register_detector("dlib_hog")(CentreFace)
    with pytest.raises(RegistryError, match="known: .*mediapipe_facemesh"):
        create_detector("no_such_detector")
    status = available_detectors()
    assert {"mediapipe_facemesh", "dlib_hog", "scrfd", "retinaface"} <= set(status)
    assert all(isinstance(ok, bool) and isinstance(why, str) for ok, why in status.values())


def test_pipeline_detects_once_per_frame_and_masks_frames_without_face() -> None:
    frames = np.full((3, 120, 160, 3), 90, np.uint8)
    frames[1] = 0  # no face here
    pipe = FacePipeline(CentreFace(), sizes=(112, 224, 64))
    batch = pipe(frames)
    assert pipe.detector.frames_seen == 3
    assert batch.valid.tolist() == [True, False, True]
    assert {s: c.shape for s, c in batch.crops.items()} == {
        112: (3, 112, 112, 3),
        224: (3, 224, 224, 3),
        64: (3, 64, 64, 3),
    }
    assert all(c.dtype == np.uint8 and not c[1].any() for c in batch.crops.values())
    assert np.isnan(batch.boxes[1]).all() and np.isnan(batch.landmarks[1]).all()
    assert np.isfinite(batch.landmarks[[0, 2]]).all() and batch.scores[0] == pytest.approx(0.8)
    assert (batch.crops[112][0] == 90).all()  # the face region is inside the frame


def test_pipeline_min_score_and_downscaled_detection_map_back() -> None:
    frames = np.full((2, 240, 320, 3), 90, np.uint8)
    full = FacePipeline(CentreFace(), sizes=(112,))(frames)
    small = FacePipeline(CentreFace(), sizes=(112,), detect_max_side=160)(frames)
    assert np.allclose(small.landmarks, full.landmarks, atol=1e-3)
    none = FacePipeline(CentreFace(), sizes=(112,), min_score=0.9)(frames)
    assert not none.valid.any()


def test_pipeline_drops_a_face_with_unusable_landmarks(monkeypatch: pytest.MonkeyPatch) -> None:
    collapsed = FaceDetections(np.array([[0, 0, 50, 50]]), np.array([0.9]), np.ones((1, 5, 2)))
    monkeypatch.setattr(CentreFace, "detect_frame", lambda self, frame: collapsed)
    batch = FacePipeline(CentreFace(), sizes=(112,))(np.full((1, 64, 64, 3), 9, np.uint8))
    assert not batch.valid.any() and not batch.crops[112].any()


def test_pipeline_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="-5"):
        FacePipeline(CentreFace(), sizes=(112, -5))
    with pytest.raises(ConfigError, match="'biggest'"):
        FacePipeline(CentreFace(), select="biggest")
    with pytest.raises(ConfigError, match="upsample"):
        FacePipeline(CentreFace(), upsample=1)
    pipe = FacePipeline(CentreFace())
    with pytest.raises(ValueError, match="float32"):
        pipe(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(8, 8, 3\)"):
        pipe(np.zeros((8, 8, 3), np.uint8))


def test_aligned_input_resizes_without_detection() -> None:
    frames = np.random.default_rng(0).integers(0, 255, (4, 100, 120, 3), dtype=np.uint8)
    batch = AlignedInput(sizes=(112, 224))(frames)
    assert batch.valid.all()
    assert batch.crops[224].shape == (4, 224, 224, 3) and batch.crops[112].shape == (4, 112, 112, 3)
    assert batch.boxes[0].tolist() == [10, 0, 110, 100]


def default_pipeline(**options: object) -> FacePipeline:
    ok, why = available_detectors()[DEFAULT_DETECTOR]
    if not ok:
        pytest.skip(f"default detector unavailable: {why}")
    return FacePipeline(**options)


def test_default_detector_finds_no_face_in_a_blank_frame() -> None:
    frames = np.zeros((2, 288, 360, 3), np.uint8)
    frames[1] = np.random.default_rng(1).integers(0, 255, (288, 360, 3), dtype=np.uint8)
    batch = default_pipeline(sizes=(112,))(frames)
    assert not batch.valid.any()
    assert not batch.crops[112].any()


def test_unavailable_detector_error_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    cls = DETECTORS.get("dlib_hog")
    monkeypatch.setattr(cls, "availability", classmethod(lambda cls: (False, "no weights")))
    with pytest.raises(UnavailableError, match="no weights"):
        create_detector("dlib_hog")


# --- real clips --------------------------------------------------------------------------------


def decode(path: Path) -> np.ndarray:
    av = pytest.importorskip("av")
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_default_detector_on_grid_clips(shared_media: Path) -> None:
    pipe = default_pipeline(sizes=(112, 224))
    clips = sorted((shared_media / "grid").glob("*.mpg"))[:2]
    assert len(clips) == 2
    for clip in clips:
        pipe.reset()
        frames = decode(clip)
        batch = pipe(frames)
        assert batch.valid.mean() >= 0.99, (clip.name, batch.valid.mean())
        lm = batch.landmarks[batch.valid]
        left_eye, right_eye, nose, mouth_left, mouth_right = (lm[:, k] for k in range(5))
        assert (left_eye[:, 0] < right_eye[:, 0]).all()
        assert (mouth_left[:, 0] < mouth_right[:, 0]).all()
        eyes_y = np.maximum(left_eye[:, 1], right_eye[:, 1])
        mouth_y = np.minimum(mouth_left[:, 1], mouth_right[:, 1])
        assert (eyes_y < nose[:, 1]).all() and (nose[:, 1] < mouth_y).all()
        boxes = batch.boxes[batch.valid, None]
        assert ((lm >= boxes[..., :2]) & (lm <= boxes[..., 2:])).all()
        assert batch.crops[224][batch.valid].mean() > 30  # real image content, not padding
    pipe.close()
