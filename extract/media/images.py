"""Per-video folders of frames named by index (the Aff-Wild2 ``cropped_aligned`` layout).

Each image is one frame of the folder's video; its time comes from a
:class:`~extract.media.clock.FrameClock`. With the raw video's clock the folder yields one row
per video frame, and frames without an image (no face found) are zero frames marked invalid.
An image that cannot be decoded completely (truncated, corrupt, not an image) is an invalid
frame too, with a warning naming the file; it never fails the folder.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from extract.errors import MediaError
from extract.ids import IMAGE_EXTS, numbered_frames
from extract.media.clock import FrameClock
from extract.media.sampling import Sampling
from extract.media.video import FrameBatch

log = logging.getLogger(__name__)


def list_frames(folder: str | Path) -> list[tuple[int, Path]]:
    """(index, path) of the folder's numbered frames (:func:`extract.ids.numbered_frames`: a
    stray poster or thumbnail is not a frame), sorted by index; duplicates raise."""
    folder = Path(folder)
    items = numbered_frames([p for p in folder.iterdir()
                             if p.is_file() and p.suffix.lower() in IMAGE_EXTS])
    seen = {}
    for idx, p in items:
        if idx in seen:
            raise MediaError(f"{folder}: frames {seen[idx].name} and {p.name} share index {idx}")
        seen[idx] = p
    return items


def read_image(path: Path) -> np.ndarray | None:
    """(H, W, 3) uint8 RGB, or None (with a warning naming the file) when ``path`` cannot be
    decoded completely. Pillow refuses truncated files (OpenCV would return a grey-filled
    image and only print libjpeg's warning, without the file name)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Image.open(path) as im:
                im.load()
                rgb = np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        log.warning("%s: unreadable image, frame marked invalid (%s)", path, exc)
        return None
    for w in caught:
        log.warning("%s: %s", path, w.message)
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        log.warning("%s: empty image, frame marked invalid", path)
        return None
    return rgb


def _frame_table(folder: Path, clock: FrameClock) -> tuple[np.ndarray, np.ndarray, list]:
    """Rows of the folder: (times, image index, path or None for a frame without image)."""
    items = list_frames(folder)
    if clock.times is None:  # only the images: frame = index - first_index, at frame / fps
        if not items:
            raise MediaError(f"{folder}: no image frames")
        idx = np.asarray([i for i, _ in items])
        return (idx - clock.first_index) / clock.fps, idx, [p for _, p in items]
    n = len(clock.times)
    paths: list[Path | None] = [None] * n
    outside = []
    for i, p in items:
        k = i - clock.first_index
        if 0 <= k < n:
            paths[k] = p
        else:
            outside.append(p.name)
    if outside:
        log.warning("%s: %d image(s) lie outside the %d frames of %s (first: %s); they are "
                    "not used", folder, len(outside), n, clock.video, outside[0])
    missing = sum(p is None for p in paths)
    if missing:
        log.info("%s: %d of %d video frames have no image (zero rows, mask False)", folder,
                 missing, n)
    return np.asarray(clock.times, np.float64), np.arange(n) + clock.first_index, paths


def iter_image_frames(folder: str | Path, fps: float = 30.0, sampling: Sampling | None = None,
                      batch_size: int = 64, first_index: int = 1,
                      clock: FrameClock | None = None) -> Iterator[FrameBatch]:
    """Yield batches of frames timed by ``clock`` (default: index / ``fps``).

    Without the video's clock only the images present give rows, at ``(index - first_index)
    / fps``. With it, every video frame gives a row; frames without a readable image are zero
    frames with ``valid`` False. The first batch carries the clock's attributes in ``source``.
    """
    import cv2

    folder = Path(folder)
    clock = clock or FrameClock(fps, first_index=first_index)
    times, indices, paths = _frame_table(folder, clock)
    keep = (sampling or Sampling()).select(times)
    shape: tuple[int, ...] | None = None
    info = clock.attrs(str(sampling or Sampling()))
    for start in range(0, len(keep), batch_size):
        sel = keep[start : start + batch_size]
        frames = [read_image(paths[k]) if paths[k] is not None else None for k in sel]
        if shape is None:
            shape = next((f.shape for f in frames if f is not None), None)
            shape = shape or _first_shape(paths) or (112, 112, 3)
        frames = [f if f is not None and f.shape == shape else
                  (cv2.resize(f, shape[1::-1]) if f is not None else None) for f in frames]
        valid = np.asarray([f is not None for f in frames], bool)
        stack = np.stack([f if f is not None else np.zeros(shape, np.uint8) for f in frames])
        yield FrameBatch(stack, times[sel], indices[sel], valid=valid,
                         source=info if start == 0 else None)


def _first_shape(paths: list[Path | None]) -> tuple[int, ...] | None:
    """The shape of the folder's first image whose header reads (the size of placeholder
    frames); only headers are read, so no warning is repeated here."""
    from PIL import Image

    for p in paths:
        if p is None:
            continue
        try:
            with Image.open(p) as im:
                return (im.size[1], im.size[0], 3)
        except Exception:  # noqa: BLE001 — an unreadable file is reported where it is decoded
            continue
    return None
