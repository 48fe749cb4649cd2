"""Per-video folders of frames named by index (the Aff-Wild2 ``cropped_aligned`` layout)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from extract.errors import MediaError
from extract.ids import IMAGE_EXTS, numbered_frames
from extract.media.sampling import Sampling
from extract.media.video import FrameBatch


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


def iter_image_frames(folder: str | Path, fps: float, sampling: Sampling | None = None,
                      batch_size: int = 64, first_index: int = 1) -> Iterator[FrameBatch]:
    """Yield batches of frames; a frame's time is ``(index - first_index) / fps``.

    Missing indices (frames without a face in the official crops) stay missing: the rows carry
    the real index and time, and the loader fills gaps by its policy.
    """
    import cv2

    items = list_frames(folder)
    if not items:
        raise MediaError(f"{folder}: no image frames")
    times_all = np.asarray([(i - first_index) / fps for i, _ in items])
    keep = (sampling or Sampling()).select(times_all)
    for start in range(0, len(keep), batch_size):
        sel = keep[start : start + batch_size]
        frames = []
        for k in sel:
            img = cv2.imread(str(items[k][1]), cv2.IMREAD_COLOR)
            if img is None:
                raise MediaError(f"{items[k][1]}: cannot read image")
            frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        shapes = {f.shape for f in frames}
        if len(shapes) > 1:
            frames = [cv2.resize(f, frames[0].shape[1::-1]) for f in frames]
        yield FrameBatch(np.stack(frames), times_all[sel], np.asarray([items[k][0] for k in sel]))
