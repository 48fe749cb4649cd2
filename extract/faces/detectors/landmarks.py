"""Map the landmark sets that detectors emit to the 5-point (insightface) convention.

Every function returns (5, 2) float32 points: left eye, right eye, nose tip, left mouth corner,
right mouth corner, with left/right as seen in the image of an upright face (the subject's right
eye is the "left eye"). Points are mapped by their meaning, not re-sorted by x.
"""

from __future__ import annotations

import numpy as np

#: Half the mouth width over the eye distance in the ArcFace template ((70.73-41.55)/2/35.24).
MOUTH_HALF_WIDTH_PER_EYE_DISTANCE = 0.414
#: ArcFace-template (112 px) positions of the eye centres and of the subnasale (the bottom of the
#: nose, dlib's 5-point landmark 4); the subnasale was measured with dlib's 68-point model on the
#: GRID / CREMA-D clips after 5-point alignment (landmark 33, mean over 86 faces, sd < 0.7 px).
_EYES_SUBNASALE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0, 79.2]])
_NOSE_MOUTH_112 = np.array([[56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]])

# dlib 68-point indices (iBUG 300-W markup).
_EYE_LEFT_68 = slice(36, 42)
_EYE_RIGHT_68 = slice(42, 48)
_NOSE_TIP_68, _MOUTH_LEFT_68, _MOUTH_RIGHT_68 = 30, 48, 54

# MediaPipe face mesh indices: eye corners, nose tip, mouth corners, iris centres (refined mesh).
_MESH_EYE_LEFT = (33, 133)
_MESH_EYE_RIGHT = (362, 263)
_MESH_NOSE_TIP = 1
_MESH_MOUTH = (61, 291)
_MESH_IRIS = (468, 473)


def _five(points: list[np.ndarray]) -> np.ndarray:
    return np.asarray(np.array(points), dtype=np.float32).reshape(5, 2)


def from_68(points: np.ndarray) -> np.ndarray:
    """5 points from the 68-point markup: eye-contour means, nose tip (30), mouth corners."""
    p = np.asarray(points, dtype=np.float64)
    five = [
        p[_EYE_LEFT_68].mean(0),
        p[_EYE_RIGHT_68].mean(0),
        p[_NOSE_TIP_68],
        p[_MOUTH_LEFT_68],
        p[_MOUTH_RIGHT_68],
    ]
    return _five(five)


def from_mesh(points: np.ndarray, iris: bool = False) -> np.ndarray:
    """5 points from the MediaPipe face mesh (468 or 478 points, pixel x, y).

    Eye centres are the midpoints of the eye corners (gaze-independent), or the iris centres
    when ``iris`` is set (needs the refined 478-point mesh).
    """
    p = np.asarray(points, dtype=np.float64)[:, :2]
    if iris:
        eyes = [p[_MESH_IRIS[0]], p[_MESH_IRIS[1]]]
    else:
        eyes = [p[list(_MESH_EYE_LEFT)].mean(0), p[list(_MESH_EYE_RIGHT)].mean(0)]
    five = [*eyes, p[_MESH_NOSE_TIP], p[_MESH_MOUTH[0]], p[_MESH_MOUTH[1]]]
    return _five(five)


def from_eyes_nose_mouth_centre(
    left_eye: np.ndarray, right_eye: np.ndarray, nose: np.ndarray, mouth: np.ndarray
) -> np.ndarray:
    """5 points when only the mouth centre is known (BlazeFace): the corners are estimated.

    The corners lie on the line through the mouth centre parallel to the eye line, at the
    template's mouth-width / eye-distance ratio.
    """
    left, right = np.asarray(left_eye, float), np.asarray(right_eye, float)
    half = MOUTH_HALF_WIDTH_PER_EYE_DISTANCE * (right - left)
    mouth = np.asarray(mouth, float)
    return _five([left, right, np.asarray(nose, float), mouth - half, mouth + half])


def from_dlib5(points: np.ndarray) -> np.ndarray:
    """5 points from dlib's 5-point model (two corners per eye, subnasale).

    Eye centres are the corner midpoints; the nose tip and mouth corners are estimated with the
    affine map that takes the eye centres and subnasale onto their template positions (so the
    estimate follows in-plane rotation, scale and some head pitch, not the mouth's shape).
    """
    p = np.asarray(points, dtype=np.float64)
    left, right = p[2:4].mean(0), p[0:2].mean(0)  # dlib lists the image-right eye first
    known = np.array([left, right, p[4]])
    # Affine from template to image, exact for the 3 pairs (the template points are not collinear).
    affine = np.linalg.solve(np.hstack([_EYES_SUBNASALE_112, np.ones((3, 1))]), known)
    rest = np.hstack([_NOSE_MOUTH_112, np.ones((3, 1))]) @ affine
    return _five([left, right, *rest])
