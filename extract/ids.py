"""Input discovery and video ids: stable, unique, and safe as store keys.

Discovery walks the input folder (following symlinked folders, each real folder once) and
classifies every entry: video and audio files by extension, *frame folders* (a folder whose
images are numbered frames: at least :data:`MIN_FRAMES` images named by one numbered pattern,
``00001.jpg`` / ``frame_0002.png``, and no video file beside them), and everything else
ignored with its reason (a stray poster or thumbnail, a text file, a symlink loop), so a run
can list what it did not read.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from extract.errors import ConfigError

log = logging.getLogger(__name__)

VIDEO_EXTS = frozenset({".mp4", ".avi", ".mkv", ".mov", ".flv", ".mpg", ".mpeg", ".webm", ".m4v",
                        ".wmv", ".ts", ".3gp"})
AUDIO_EXTS = frozenset({".wav", ".mp3", ".flac", ".ogg", ".m4a", ".opus", ".aac"})
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
KINDS = ("video", "images", "audio")
#: Fewest numbered images that make a frame folder (a lone ``poster1.jpg`` is not a video).
MIN_FRAMES = 2

_SAFE = re.compile(r"[A-Za-z0-9_.\-]")
_ESCAPE = "~"
_NUMBERED = re.compile(r"(.*?)(\d+)(\D*)")  # prefix, the last run of digits, suffix


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


@dataclass(frozen=True)
class Ignored:
    """An entry under the input folder that is not read, and why."""

    path: str  # relative to the input folder (POSIX)
    reason: str


@dataclass
class Discovery:
    """What :func:`scan` found: the inputs (sorted by id) and every entry it left out."""

    root: Path
    kinds: tuple[str, ...]
    items: list[MediaItem] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)

    def looked_for(self) -> str:
        """The inputs this scan accepts, in words."""
        words = {"video": "video files (" + " ".join(sorted(VIDEO_EXTS)) + ")",
                 "audio": "audio files (" + " ".join(sorted(AUDIO_EXTS)) + ")",
                 "images": f"frame folders (at least {MIN_FRAMES} numbered images such as "
                           "00001.jpg, no video file beside them)"}
        return "; ".join(words[k] for k in KINDS if k in self.kinds)

    def ignored_by_reason(self) -> dict[str, list[str]]:
        """Reason → ignored paths, most frequent reason first."""
        groups: dict[str, list[str]] = defaultdict(list)
        for entry in self.ignored:
            groups[entry.reason].append(entry.path)
        return dict(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])))

    def describe_ignored(self, show: int = 3) -> str:
        """``"12 entries ignored: 10 not a media file (a.txt, b.txt, c.txt, …); 2 …"``
        (empty when nothing was ignored)."""
        if not self.ignored:
            return ""
        parts = []
        for reason, paths in self.ignored_by_reason().items():
            names = ", ".join(paths[:show]) + (", …" if len(paths) > show else "")
            parts.append(f"{len(paths)} {reason} ({names})")
        n = len(self.ignored)
        return f"{n} {'entry' if n == 1 else 'entries'} ignored: " + "; ".join(parts)


def frame_pattern(path: Path) -> tuple[str, str] | None:
    """The numbered pattern of an image name (``frame_0012`` → ``("frame_", "")``), or None."""
    m = _NUMBERED.fullmatch(path.stem)
    return (m.group(1), m.group(3)) if m else None


def numbered_frames(images: list[Path]) -> list[tuple[int, Path]]:
    """(index, path) of the images that follow the most common numbered name pattern, sorted.

    ``00001.jpg … 00250.jpg`` plus ``poster1.jpg`` and ``cover.jpg`` → the 250 frames.
    """
    patterns = {p: frame_pattern(p) for p in images if p.suffix.lower() in IMAGE_EXTS}
    counts = Counter(pat for pat in patterns.values() if pat is not None)
    if not counts:
        return []
    best = min(counts, key=lambda pat: (-counts[pat], pat))
    frames = []
    for path, pat in patterns.items():
        if pat == best:
            m = _NUMBERED.fullmatch(path.stem)
            assert m is not None  # it has a pattern
            frames.append((int(m.group(2)), path))
    return sorted(frames)


def frame_index(path: Path) -> int:
    """Frame index from a file name such as ``00042.jpg`` (the Aff-Wild2 cropped_aligned layout)."""
    m = _NUMBERED.fullmatch(path.stem)
    if not m:
        raise ConfigError(f"frame file {path} has no index in its name")
    return int(m.group(2))


def kind_of(path: Path) -> str | None:
    """``"video"`` / ``"audio"`` by extension, else None."""
    ext = path.suffix.lower()
    if ext in VIDEO_EXTS:
        return "video"
    if ext in AUDIO_EXTS:
        return "audio"
    return None


def _is_store_folder(path: Path) -> bool:
    """A Zarr group or array (e.g. the feature store kept inside the input folder)."""
    return (path / "zarr.json").is_file()


class _Walk:
    """One pass over the input folder: files per folder, symlinked folders followed once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seen: dict[tuple[int, int], str] = {}  # real folder → the path it was read as
        self.folders: list[tuple[Path, list[Path]]] = []  # (folder, its files), walk order
        self.ignored: list[Ignored] = []

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix() if path != self.root else "."

    def run(self) -> _Walk:
        st = self.root.stat()
        self.seen[(st.st_dev, st.st_ino)] = "."
        self._folder(self.root)
        return self

    def _folder(self, folder: Path) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            self.ignored.append(Ignored(self.rel(folder), f"unreadable folder ({exc.strerror})"))
            return
        files, subfolders = [], []
        for entry in entries:
            path = Path(entry.path)
            if entry.name.startswith("."):
                what = "folder" if entry.is_dir() else "file"
                self.ignored.append(Ignored(self.rel(path), f"hidden {what}"))
                continue
            try:
                is_dir, is_file = entry.is_dir(), entry.is_file()  # both follow symlinks
            except OSError:
                is_dir = is_file = False
            if is_file:
                files.append(path)
            elif is_dir:
                subfolders.append(path)
            elif entry.is_symlink():
                self.ignored.append(Ignored(self.rel(path), "broken symlink"))
            else:
                self.ignored.append(Ignored(self.rel(path), "not a regular file"))
        self.folders.append((folder, files))
        for sub in subfolders:
            try:
                st = sub.stat()
            except OSError as exc:
                self.ignored.append(Ignored(self.rel(sub), f"unreadable folder ({exc.strerror})"))
                continue
            ident = (st.st_dev, st.st_ino)
            if ident in self.seen:  # a symlink loop, or a second link to one folder
                log.info("%s: the folder was already read as %s; not read again",
                         self.rel(sub), self.seen[ident])
                self.ignored.append(Ignored(self.rel(sub), "link to a folder already read (a "
                                                           "symlink loop or a second link)"))
                continue
            self.seen[ident] = self.rel(sub)
            if _is_store_folder(sub):
                self.ignored.append(Ignored(self.rel(sub), "Zarr folder (a feature store?)"))
                continue
            self._folder(sub)


def scan(root: str | Path, kinds: tuple[str, ...] = KINDS) -> Discovery:
    """Every input under ``root`` (a folder or one file) of the given kinds, and what was left
    out. When two files share a path without extension (``a.mp4`` and ``a.wav``), their ids
    keep the extension so ids stay unique; a frame folder's id is its path (the input folder
    itself, when it is one, is named after it)."""
    root = Path(root)
    if not root.exists():
        raise ConfigError(f"input {root} does not exist")
    found = Discovery(root, tuple(kinds))
    if root.is_file():
        if kind_of(root) is None:
            raise ConfigError(f"input {root} is not a video or audio file; looked for "
                              f"{found.looked_for()}, or a folder of them")
        media, ignored = _items_for_files(root.parent, [root], kinds)
        found.items, found.ignored = media, ignored
        return found
    walk = _Walk(root).run()
    items: list[MediaItem] = []
    files: list[Path] = []
    ignored = list(walk.ignored)
    for folder, entries in walk.folders:
        media = [p for p in entries if kind_of(p) is not None]
        images = [p for p in entries if p.suffix.lower() in IMAGE_EXTS]
        files += media
        ignored += [Ignored(walk.rel(p), "not a media file") for p in entries
                    if kind_of(p) is None and p.suffix.lower() not in IMAGE_EXTS]
        item, stray = _frame_folder(folder, images, media, walk.rel(folder), kinds)
        if item is not None:
            items.append(item)
        ignored += stray
    media_items, media_ignored = _items_for_files(root, files, kinds)
    items += media_items
    ignored += media_ignored
    _check_unique(items)
    found.items = sorted(items, key=lambda it: it.video_id)
    found.ignored = sorted(ignored, key=lambda e: e.path)
    return found


def discover(root: str | Path, kinds: tuple[str, ...] = KINDS) -> list[MediaItem]:
    """The inputs of :func:`scan` (sorted by id)."""
    return scan(root, kinds).items


def _frame_folder(folder: Path, images: list[Path], media: list[Path], rel: str,
                  kinds: tuple[str, ...]) -> tuple[MediaItem | None, list[Ignored]]:
    """The folder as a frame-folder input (or None) and its images that are not read."""
    if not images:
        return None, []
    frames = numbered_frames(images)
    beside_video = any(kind_of(p) == "video" for p in media)
    if len(frames) < MIN_FRAMES or beside_video:
        why = ("image beside video files (not read as frames)" if beside_video and frames
               else "image without a frame number" if not frames
               else f"lone numbered image (a frame folder needs at least {MIN_FRAMES})")
        return None, [Ignored(_child(rel, p), why) for p in images]
    framed = {p for _, p in frames}
    stray = [Ignored(_child(rel, p), "image that is not one of the folder's numbered frames")
             for p in images if p not in framed]
    if "images" not in kinds:
        return None, [Ignored(rel, "frame folder (no visual feature asked for)"), *stray]
    video_id = folder.name if rel == "." else rel
    return MediaItem(video_id, folder, "images", len(frames)), stray


def _child(rel: str, path: Path) -> str:
    return path.name if rel == "." else f"{rel}/{path.name}"


def _items_for_files(root: Path, files: list[Path],
                     kinds: tuple[str, ...]) -> tuple[list[MediaItem], list[Ignored]]:
    # Stem clashes are counted over every media file, whatever ``kinds`` asks for, so an id
    # does not change with the kinds a run looks for (``a.mp4`` + ``a.wav`` stay ``a.wav``).
    media = [(p, k) for p in files if (k := kind_of(p)) is not None]
    stems: dict[str, list[Path]] = defaultdict(list)
    for path, _ in media:
        stems[path.relative_to(root).with_suffix("").as_posix()].append(path)
    items, ignored = [], []
    for path, kind in media:
        rel = path.relative_to(root).as_posix()
        if kind not in kinds:
            ignored.append(Ignored(rel, f"{kind} file (no feature asked for applies to it)"))
            continue
        stem = path.relative_to(root).with_suffix("").as_posix()
        vid = stem if len(stems[stem]) == 1 else rel
        items.append(MediaItem(vid, path, kind, path.stat().st_size))
    return items, ignored


def _check_unique(items: list[MediaItem]) -> None:
    seen: dict[str, Path] = {}
    for it in items:
        if it.video_id in seen:
            raise ConfigError(f"two inputs map to video id {it.video_id!r}: {seen[it.video_id]} "
                              f"and {it.path}; rename one")
        seen[it.video_id] = it.path
