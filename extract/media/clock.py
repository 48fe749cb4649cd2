"""The frame clock of a frame folder: which video frame each image is, and at what time.

Aff-Wild2's ``cropped_aligned/<video>/00001.jpg`` is frame 0 of the raw video ``<video>.mp4``
(image index - 1 = frame index); folders of two-person videos are ``X_left`` / ``X_right`` and
belong to the raw video ``X``. Frames without a face have no image. With the raw videos at
hand (``extract run --videos DIR``) a folder is timed by its video's own presentation times and
gets one row per video frame; otherwise frame ``k`` is at ``k / fps`` (``--image-fps`` or a
``--fps-table`` row), and only the images present get rows.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from extract.errors import ConfigError, MediaError

log = logging.getLogger(__name__)

SIDE_SUFFIX = re.compile(r"_(left|right)$")
FIRST_INDEX = 1  # image 00001.jpg is video frame 0 (the Aff-Wild2 layout)


def base_video(name: str) -> str:
    """``X_left`` / ``X_right`` → ``X``; any other name unchanged."""
    return SIDE_SUFFIX.sub("", name)


def candidate_names(name: str) -> list[str]:
    """Names a folder's raw video may have: its own, then its base (``X_left`` → ``X``)."""
    base = base_video(name)
    return [name] if base == name else [name, base]


@dataclass(frozen=True)
class ImageClockSettings:
    """How frame folders are timed (the same for every folder of a run; picklable)."""

    fps: float = 30.0  # --image-fps: frame k at k / fps
    videos: str | None = None  # --videos: folder of the raw videos (times, frame counts)
    fps_table: tuple[tuple[str, float], ...] = ()  # --fps-table rows (video, fps)

    def table(self) -> dict[str, float]:
        return dict(self.fps_table)


@dataclass(frozen=True)
class FrameClock:
    """Frame times of one folder's video."""

    fps: float  # frames per second (the video's average rate, or the given fps)
    times: np.ndarray | None = None  # (N,) seconds of video frames 0..N-1 (raw video), or None
    video: Path | None = None  # the raw video that gave the times
    origin: str = "image-fps"  # video | fps-table | image-fps
    first_index: int = FIRST_INDEX  # image index of video frame 0

    @property
    def frames(self) -> int | None:
        """Frames of the source video (None when only the images are known)."""
        return None if self.times is None else len(self.times)

    def attrs(self, sampling: str = "all") -> dict[str, Any]:
        """Attributes stored with each array of the folder (``write_video(extra_attrs=...)``).

        ``frame_rows``: ``all`` when row k is video frame k (one row per frame); ``images``
        when rows are the images present (frame = image index - first_index, at frame / fps);
        ``sampled`` when a sampling policy kept some frames only.
        """
        rows = "sampled" if sampling != "all" else ("all" if self.times is not None
                                                      else "images")
        return {"source_frames": self.frames, "source_fps": float(self.fps),
                "source_video": str(self.video) if self.video else None,
                "frame_clock": self.origin, "frame_rows": rows,
                "first_image_index": self.first_index}


def read_fps_table(path: str | Path) -> dict[str, float]:
    """``video,fps`` CSV → ``{video: fps}``; a bad row raises one line naming file and row."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--fps-table {path} does not exist")
    out: dict[str, float] = {}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip() for c in reader.fieldnames or []]
        if "video" not in cols or "fps" not in cols:
            raise ConfigError(f"--fps-table {path} line 1: needs columns 'video' and 'fps', "
                              f"has {cols}")
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            try:
                fps = float(row["fps"])
            except ValueError:
                fps = -1.0
            if not row["video"] or not np.isfinite(fps) or fps <= 0:
                raise ConfigError(f"--fps-table {path} line {line}, column fps: {row['fps']!r} "
                                  f"for video {row['video']!r} is not a positive number")
            if row["video"] in out:
                raise ConfigError(f"--fps-table {path} line {line}: video {row['video']!r} "
                                  "is listed twice")
            out[row["video"]] = fps
    return out


@functools.lru_cache(maxsize=8)
def video_index(videos: str) -> dict[str, tuple[Path, ...]]:
    """``{stem: paths}`` of every video file under ``videos`` (any extension, any depth)."""
    from extract.ids import VIDEO_EXTS

    root = Path(videos)
    if not root.is_dir():
        raise ConfigError(f"--videos {root} is not a folder")
    found: dict[str, list[Path]] = {}
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in VIDEO_EXTS and p.is_file():
            found.setdefault(p.stem, []).append(p)
    return {k: tuple(v) for k, v in found.items()}


def find_video(videos: str | Path, name: str) -> Path:
    """The raw video of frame folder ``name`` (``X_left`` / ``X_right`` → ``X``)."""
    index = video_index(str(videos))
    for cand in candidate_names(name):
        paths = index.get(cand, ())
        if len(paths) > 1:
            raise MediaError(f"frame folder {name}: several raw videos named {cand}: "
                             f"{', '.join(str(p) for p in paths)}; keep one")
        if paths:
            return paths[0]
    raise MediaError(f"frame folder {name}: no raw video named "
                     f"{' or '.join(f'{c}.*' for c in candidate_names(name))} under {videos}")


def video_clock(path: Path) -> FrameClock:
    """The clock of a raw video: every frame's presentation time (a demux pass, no decode)."""
    from extract.media.video import frame_times, probe

    times = frame_times(path)
    if len(times) == 0:
        raise MediaError(f"{path}: no video frames")
    fps = probe(path).fps or (1.0 / float(np.median(np.diff(times))) if len(times) > 1
                              else 30.0)
    return FrameClock(fps, times, path, "video")


def folder_clock(name: str, settings: ImageClockSettings) -> FrameClock:
    """The clock of frame folder ``name`` under ``settings``; raises when it cannot be known."""
    if settings.videos:
        return video_clock(find_video(settings.videos, name))
    table = settings.table()
    if table:
        for cand in candidate_names(name):
            if cand in table:
                return FrameClock(table[cand], origin="fps-table")
        raise MediaError(f"frame folder {name}: not in the --fps-table (looked for "
                         f"{' and '.join(candidate_names(name))}); add a row")
    return FrameClock(settings.fps, origin="image-fps")


def decoded_video_attrs(path: Path, sampling: str, times: np.ndarray) -> dict[str, Any]:
    """The frame attributes of a decoded video's visual rows (``FrameClock.attrs`` keys).

    With every frame decoded (``sampling`` all) row k is video frame k; sampled rows are not.
    """
    from extract.media.video import probe

    try:
        fps = probe(path).fps
    except MediaError:
        fps = 0.0
    if not fps and len(times) > 1:
        fps = 1.0 / float(np.median(np.diff(times)))
    every = sampling == "all"
    return {"source_frames": int(len(times)) if every else None, "source_fps": float(fps),
            "source_video": str(path), "frame_clock": "video",
            "frame_rows": "all" if every else "sampled", "first_image_index": None}
