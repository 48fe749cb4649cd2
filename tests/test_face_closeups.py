"""Issue 15: the default detector's same-frame fallback (face mesh ↔ BlazeFace ranges) finds
every face in close-ups (the face filling 60-90 % of a 256x256 frame), and adds no faces where
there are none."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from extract.faces.closeups import astronaut_closeups, face_box, fills, reframe
from extract.faces.detectors import DEFAULT_DETECTOR, available_detectors
from extract.faces.detectors.mp_detectors import MediaPipeFaceMesh
from extract.faces.settings import DetectorChoice

pytest.importorskip("cv2")


def default_detector(**options: object):
    ok, why = available_detectors()[DEFAULT_DETECTOR]
    if not ok:
        pytest.skip(f"default detector unavailable: {why}")
    return DetectorChoice.resolve(DEFAULT_DETECTOR, dict(options)).create()


def found_share(detector, clips: dict[str, np.ndarray]) -> dict[str, float]:
    return {name: float(np.mean([len(f) > 0 for f in detector.detect(v)]))
            for name, v in clips.items()}


# --- the fallback logic, on stand-ins for MediaPipe's outputs ------------------------------------


def fake_detection(score: float, x: float = 0.3) -> SimpleNamespace:
    """A BlazeFace detection proto stand-in (relative coordinates)."""
    points = [(x + 0.1, 0.4), (x + 0.3, 0.4), (x + 0.2, 0.5), (x + 0.2, 0.6), (0.2, 0.4),
              (0.8, 0.4)]
    return SimpleNamespace(
        score=[score],
        location_data=SimpleNamespace(
            relative_bounding_box=SimpleNamespace(xmin=x, ymin=0.3, width=0.4, height=0.4),
            relative_keypoints=[SimpleNamespace(x=px, y=py) for px, py in points]))


def patched(monkeypatch: pytest.MonkeyPatch, per_model: dict[str, list], mesh_ok: set[float],
            **options: object) -> MediaPipeFaceMesh:
    """A face-mesh detector whose BlazeFace ranges return ``per_model`` and whose mesh accepts
    the detections scoring one of ``mesh_ok``."""
    calls: list[str] = []

    def detections(self, frame, model=None):
        calls.append(model)
        return per_model[model]

    def mesh(self, frame, det):
        if det.score[0] not in mesh_ok:
            return None
        return np.array([[10.0, 10.0], [50.0, 60.0]])  # the mesh's extent: its box

    monkeypatch.setattr(MediaPipeFaceMesh, "_detections", detections)
    monkeypatch.setattr(MediaPipeFaceMesh, "_mesh_points", mesh)
    monkeypatch.setattr("extract.faces.detectors.landmarks.from_mesh",
                        lambda xy, iris=False: np.arange(10, dtype=float).reshape(5, 2))
    detector = MediaPipeFaceMesh(**options)
    detector.calls = calls
    return detector


def test_fallback_tries_the_other_range_then_blazeface_points(
        monkeypatch: pytest.MonkeyPatch) -> None:
    frame = np.zeros((100, 100, 3), np.uint8)
    # The full range misses the close-up; the short range finds it and the mesh accepts it.
    det = patched(monkeypatch, {"full": [], "short": [fake_detection(0.9)]}, {0.9})
    found = det.detect_frame(frame)
    assert len(found) == 1 and det.calls == ["full", "short"]
    assert found.landmarks[0].tolist() == np.arange(10).reshape(5, 2).tolist()  # mesh points
    assert found.boxes[0].tolist() == [10, 10, 50, 60]
    # A face found by the first range: the second is never run.
    det = patched(monkeypatch, {"full": [fake_detection(0.9)], "short": []}, {0.9})
    assert len(det.detect_frame(frame)) == 1 and det.calls == ["full"]
    # The mesh rejects every detection: BlazeFace's own points for confident ones only.
    det = patched(monkeypatch, {"full": [fake_detection(0.6)], "short": [fake_detection(0.8)]},
                  set())
    found = det.detect_frame(frame)
    assert len(found) == 1 and found.scores[0] == pytest.approx(0.8)
    assert np.allclose(found.boxes[0], [30, 30, 70, 70])  # BlazeFace's box, frame pixels
    det = patched(monkeypatch, {"full": [fake_detection(0.6)], "short": [fake_detection(0.7)]},
                  set())
    assert len(det.detect_frame(frame)) == 0  # weak hits the mesh rejects: not faces
    det = patched(monkeypatch, {"full": [], "short": [fake_detection(0.9)]}, {0.9},
                  fallback=False)
    assert len(det.detect_frame(frame)) == 0 and det.calls == ["full"]


# --- real close-ups ------------------------------------------------------------------------------


def test_reframe_puts_the_face_at_the_asked_size() -> None:
    frames = np.zeros((2, 120, 160, 3), np.uint8)
    frames[:, 40:80, 60:100] = 255  # a 40x40 "face"
    close = reframe(frames, np.array([60, 40, 100, 80]), fill=0.8, size=100)
    assert close.shape == (2, 100, 100, 3)
    bright = np.flatnonzero(close[0, 50, :, 0] > 127)  # the middle row
    assert 78 <= len(bright) <= 82 and 8 <= bright[0] <= 12
    assert fills(4).tolist() == pytest.approx([0.6, 0.7, 0.8, 0.9])
    with pytest.raises(ValueError, match="fill"):
        reframe(frames, np.array([0, 0, 10, 10]), fill=0.0)


def test_default_detector_finds_every_face_in_astronaut_closeups() -> None:
    pytest.importorskip("skimage")
    detector = default_detector()
    clips = astronaut_closeups(detector, frames_per_clip=6, clips=4)
    assert set(clips) == {"astronaut_fill60", "astronaut_fill70", "astronaut_fill80",
                          "astronaut_fill90"}
    assert found_share(detector, clips) == dict.fromkeys(clips, 1.0)
    # Without the fallback the full-range BlazeFace misses some of the tightest close-ups.
    plain = default_detector(fallback=False)
    assert min(found_share(plain, clips).values()) < 1.0
    detector.close()
    plain.close()


def test_default_detector_adds_no_face_where_there_is_none() -> None:
    data = pytest.importorskip("skimage.data")
    import cv2

    detector = default_detector()
    images = [np.zeros((256, 256, 3), np.uint8)]
    for name in ("coffee", "chelsea", "cat", "colorwheel", "rocket"):
        image = np.asarray(getattr(data, name)())[..., :3]
        h, w = image.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        square = image[top:top + side, left:left + side]
        images.append(cv2.resize(np.ascontiguousarray(square), (256, 256)))
    # The short-range BlazeFace alone "finds" faces in some of these (cats, a colour wheel);
    # the default rejects them (the mesh sees no face, their scores are below fallback_score).
    assert [len(f) for f in detector.detect(np.stack(images))] == [0] * len(images)
    detector.close()


def test_default_detector_finds_every_face_in_closeups_of_the_shared_clips(
        shared_media: Path) -> None:
    av = pytest.importorskip("av")
    detector = default_detector()
    paths = sorted((shared_media / "grid").glob("*.mpg")) + sorted(
        (shared_media / "cremad").glob("*.flv"))
    clips = {}
    for path, fill in zip(paths, fills(len(paths)), strict=True):
        with av.open(str(path)) as container:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        box = face_box(detector, frames, every=15)
        clips[f"{path.name}@{fill:.2f}"] = reframe(frames[::5], box, fill)  # every 5th: fast
    shares = found_share(detector, clips)
    assert shares == dict.fromkeys(clips, 1.0), {k: v for k, v in shares.items() if v < 1}
    detector.close()
