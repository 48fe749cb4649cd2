"""Input discovery and video ids: stable, unique, and safe as store keys."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from extract.errors import ConfigError

VIDEO_EXTS = frozenset({".mp4", ".avi", ".mkv", ".mov", ".flv", ".mpg", ".mpeg", ".webm", ".m4v",
                        ".wmv", ".ts", ".3gp"})
AUDIO_EXTS = frozenset({".wav", ".mp3", ".flac", ".ogg", ".m4a", ".opus", ".aac"})
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
KINDS = ("video", "images", "audio")

_SAFE = re.compile(r"[A-Za-z0-9_.\-]")
_ESCAPE = "~"


def video_key(video_id: str) -> str:
    """Store key for a video id: safe characters kept, others as ``~XX`` (UTF-8 hex).

    ``/`` becomes ``~2F``; a leading ``.`` or ``_`` is escaped so keys never collide with
    the store's own ``_``-prefixed groups or mean a relative path. The mapping is invertible.
    """
    if not video_id:
        raise ConfigError("a video id must not be empty")
    out = []
    for i, ch in enumerate(video_id):
        if _SAFE.fullmatch(ch) and not (i == 0 and ch in "._"):
            out.append(ch)
        else:
            out.extend(f"{_ESCAPE}{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def video_id_from_key(key: str) -> str:
    """Inverse of :func:`video_key`."""
    raw = bytearray()
    i = 0
    while i < len(key):
        if key[i] == _ESCAPE:
            raw += bytes.fromhex(key[i + 1 : i + 3])
            i += 3
        else:
            raw += key[i].encode()
            i += 1
    return raw.decode("utf-8")


@dataclass(frozen=True)
class MediaItem:
    """One input: a video file, a folder of frames, or an audio file."""

    video_id: str  # relative path without extension, POSIX separators
    path: Path
    kind: str  # one of KINDS
    size: int  # bytes (files) or frame count (image folders); used to shard longest first

    @property
    def key(self) -> str:
        return video_key(self.video_id)


def _frame_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS]


def frame_index(path: Path) -> int:
    """Frame index from a file name such as ``00042.jpg`` (the Aff-Wild2 cropped_aligned layout)."""
    digits = re.findall(r"\d+", path.stem)
    if not digits:
        raise ConfigError(f"frame file {path} has no index in its name")
    return int(digits[-1])


def discover(root: str | Path, kinds: tuple[str, ...] = KINDS) -> list[MediaItem]:
    """All inputs under ``root`` sorted by id: video files, frame folders and audio files.

    A folder whose direct children include image files is one image-folder input. When two
    files share a path without extension (``a.mp4`` and ``a.wav``), their ids keep the
    extension so ids stay unique.
    """
    root = Path(root)
    if not root.exists():
        raise ConfigError(f"input {root} does not exist")
    if root.is_file():
        return _items_for_files(root.parent, [root], kinds)
    files: list[Path] = []
    folders: list[MediaItem] = []
    if "images" in kinds and _frame_files(root):  # the input is itself one frame folder
        return [MediaItem(root.name, root, "images", len(_frame_files(root)))]
    for path in sorted(root.rglob("*")):
        if path.is_dir() and "images" in kinds:
            frames = _frame_files(path)
            if frames:
                rel = path.relative_to(root).as_posix()
                folders.append(MediaItem(rel, path, "images", len(frames)))
        elif path.is_file():
            files.append(path)
    items = _items_for_files(root, files, kinds) + folders
    _check_unique(items)
    return sorted(items, key=lambda it: it.video_id)


def _kind_of(path: Path) -> str | None:
    ext = path.suffix.lower()
    if ext in VIDEO_EXTS:
        return "video"
    if ext in AUDIO_EXTS:
        return "audio"
    return None


def _items_for_files(root: Path, files: list[Path], kinds: tuple[str, ...]) -> list[MediaItem]:
    # Stem clashes are counted over every media file, whatever ``kinds`` asks for, so an id
    # does not change with the kinds a run looks for (``a.mp4`` + ``a.wav`` stay ``a.wav``).
    media = [(p, k) for p in files if (k := _kind_of(p)) is not None]
    stems: dict[str, list[Path]] = defaultdict(list)
    for path, _ in media:
        stems[path.relative_to(root).with_suffix("").as_posix()].append(path)
    items = []
    for path, kind in media:
        if kind not in kinds:
            continue
        stem = path.relative_to(root).with_suffix("").as_posix()
        vid = stem if len(stems[stem]) == 1 else path.relative_to(root).as_posix()
        items.append(MediaItem(vid, path, kind, path.stat().st_size))
    return items


def _check_unique(items: list[MediaItem]) -> None:
    seen: dict[str, Path] = {}
    for it in items:
        if it.video_id in seen:
            raise ConfigError(f"two inputs map to video id {it.video_id!r}: {seen[it.video_id]} "
                              f"and {it.path}; rename one")
        seen[it.video_id] = it.path
