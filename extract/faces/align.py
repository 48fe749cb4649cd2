"""5-point similarity alignment to the ArcFace template, at any crop size.

The template is insightface's 112x112 ArcFace layout. For an ``S``-pixel crop it is scaled by
``S / 112`` (so a 224 crop shows exactly what the 112 crop shows, at twice the resolution). An
optional ``margin`` adds context: the 112 layout is first padded by ``112 * margin`` pixels on
every side, then the padded square is scaled to ``S``::

    point_S = (point_112 + 112 * margin) * S / (112 * (1 + 2 * margin))

``margin=0.25`` shows 1.5x the template's field of view. (insightface's own 128-pixel variant
shifts x by 8 pixels instead; use ``size=112`` or multiples of it to match ArcFace exactly.)
"""

from __future__ import annotations

import numpy as np

#: ArcFace 112x112 positions of left eye, right eye, nose tip, left and right mouth corner.
ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
_BASE = 112.0


def template(size: int = 112, margin: float = 0.0) -> np.ndarray:
    """The (5, 2) template points for a ``size`` x ``size`` crop with ``margin`` context."""
    size, margin = _check_size(size), _check_margin(margin)
    return (ARCFACE_112 + _BASE * margin) * size / (_BASE * (1.0 + 2.0 * margin))


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) taking ``src`` to ``dst``.

    Umeyama (1991): rotation from the SVD of the cross-covariance, with a sign fix so it is
    never a reflection. Returns the 2x3 matrix ``M`` with ``dst ≈ src @ M[:, :2].T + M[:, 2]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two (K>=2, 2) point sets, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("point sets must be finite")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var <= 1e-12:
        raise ValueError("source points coincide; no similarity is defined")
    cov = dst_c.T @ src_c / len(src)
    u, sing, vt = np.linalg.svd(cov)
    signs = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        signs[-1] = -1.0
    rotation = u @ np.diag(signs) @ vt
    scale = (sing * signs).sum() / src_var if with_scale else 1.0
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine ``matrix`` to (..., 2) points."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def alignment_matrix(landmarks: np.ndarray, size: int = 112, margin: float = 0.0) -> np.ndarray:
    """2x3 similarity taking the (5, 2) image ``landmarks`` onto the ``size`` template."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (5, 2):
        raise ValueError(f"landmarks must have shape (5, 2), got {landmarks.shape}")
    return umeyama(landmarks, template(size, margin))


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """``image`` warped by the 2x3 ``matrix`` into a ``size`` x ``size`` crop (black outside)."""
    import cv2

    size = _check_size(size)
    return cv2.warpAffine(
        image,
        np.asarray(matrix, dtype=np.float64),
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def align_face(
    image: np.ndarray, landmarks: np.ndarray, size: int = 112, margin: float = 0.0
) -> np.ndarray:
    """The ``size`` x ``size`` aligned crop of the face with 5 ``landmarks`` in ``image``."""
    return warp(image, alignment_matrix(landmarks, size, margin), size)


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"crop size must be a positive integer, got {size!r}")
    return int(size)


def _check_margin(margin: float) -> float:
    if not -0.5 < float(margin) < 10.0:
        raise ValueError(f"margin must be in (-0.5, 10), got {margin!r}")
    return float(margin)
