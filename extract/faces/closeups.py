"""Close-up clips made from real footage, for measuring detectors on faces that fill the frame.

Frontal close-ups (MEAD-style: the face filling 60-90 % of a square frame) are where a
full-range face detector misses faces. :func:`reframe` turns any clip with a known face box
into such a clip: a fixed virtual camera (one crop for the whole clip, as a real close-up is
filmed), so the head still moves a little inside the frame and may touch its edges.

>>> box = face_box(detector, frames)               # median face box of the clip
>>> close = reframe(frames, box, fill=0.8)         # (N, 256, 256, 3), face ≈ 0.8 of the side
"""

from __future__ import annotations

import numpy as np

from extract.faces.detectors import FaceDetector, check_frames

#: The range of face sizes, as a share of the frame side, that the close-up clips cover.
FILL_RANGE = (0.6, 0.9)


def face_box(detector: FaceDetector, frames: np.ndarray, every: int = 5) -> np.ndarray:
    """Median (x1, y1, x2, y2) of the largest face on every ``every``-th frame; raises
    ValueError when no face is found on any of them."""
    found = [d.boxes[d.best("largest")] for d in detector.detect(check_frames(frames)[::every])
             if len(d)]
    if not found:
        raise ValueError("no face found to frame the close-up on")
    return np.median(np.array(found), axis=0)


def reframe(frames: np.ndarray, box: np.ndarray, fill: float, size: int = 256,
            drift: float = 0.0) -> np.ndarray:
    """``frames`` seen by a square camera whose side is ``box``'s longer side / ``fill``,
    centred on ``box``, scaled to ``size`` pixels; outside the source frame the edge pixels
    are repeated. ``drift`` (share of the crop side) moves the camera on a small circle from
    frame to frame, for still images."""
    import cv2

    check_frames(frames)
    if not 0.1 <= fill <= 2.0:
        raise ValueError(f"fill must be in [0.1, 2], got {fill!r}")
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) / fill
    scale = size / side
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for i, frame in enumerate(frames):
        cx = (x1 + x2) / 2 + drift * side * np.sin(i)
        cy = (y1 + y2) / 2 + drift * side * np.cos(i)
        matrix = np.float32([[scale, 0, size / 2 - cx * scale], [0, scale, size / 2 - cy * scale]])
        out[i] = cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
    return out


def fills(count: int) -> np.ndarray:
    """``count`` face sizes spread evenly over :data:`FILL_RANGE`."""
    return np.linspace(*FILL_RANGE, count) if count > 1 else np.array([FILL_RANGE[1]])


def astronaut_closeups(detector: FaceDetector, frames_per_clip: int = 8,
                       clips: int = 4, size: int = 256) -> dict[str, np.ndarray]:
    """Close-up clips of scikit-image's ``astronaut`` photograph (a real face), one per fill
    in :func:`fills`, the camera drifting a little; keyed ``astronaut_fill<percent>``."""
    from skimage import data

    image = np.ascontiguousarray(data.astronaut()[..., :3])
    box = face_box(detector, image[None], every=1)
    still = np.repeat(image[None], frames_per_clip, axis=0)
    return {f"astronaut_fill{round(100 * f)}": reframe(still, box, float(f), size, drift=0.03)
            for f in fills(clips)}
