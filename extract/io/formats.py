"""Shared pieces of the import/export formats: options, rows, registries, row checks.

A format is a :class:`FormatReader` (discovers one :class:`SourceItem` per video, then loads
its rows on demand) and/or a :class:`FormatWriter`, each registered by name. The modules
``csv_format``, ``h5_format`` and ``npy_format`` fill the registries when imported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np

from extract.errors import ImportFormatError
from extract.ids import video_key
from extract.registry import Registry

log = logging.getLogger(__name__)

FEATURE_META_ATTR = "affect_feature"  # h5 root attribute / CSV sidecar holding feature metadata
FEATURE_META_FILE = "_feature.json"
TIME_UNITS = ("auto", "s", "ms")


@dataclass
class ImportOptions:
    """How rows and times are read; every field is recorded in the feature's provenance."""

    fps: float | Mapping[str, float] | None = None  # rows per second (a mapping: per video id)
    frame_shift: float | None = None  # seconds between rows (alternative to fps)
    time_column: str | None = None  # CSV column holding row times
    time_unit: str = "auto"  # unit of time_column: "auto" (name, then values), "s" or "ms"
    frame_origin: int = 0  # index of a video's first frame (Aff-Wild2 frame files start at 1)
    meta_columns: int | None = None  # CSV: number of leading non-feature columns (None: by name)
    allow_pickle: bool = False  # npy: load pickled dicts (runs code from the file: trusted only)

    def check(self) -> None:
        """Raise on options that cannot be used together."""
        if self.fps is not None and self.frame_shift is not None:
            raise ImportFormatError("give fps or frame_shift, not both")
        rates = self.fps.values() if isinstance(self.fps, Mapping) else [self.fps]
        if any(r is not None and not float(r) > 0 for r in rates):
            raise ImportFormatError(f"fps must be positive, got {self.fps!r}")
        if self.frame_shift is not None and not self.frame_shift > 0:
            raise ImportFormatError(f"frame_shift must be positive, got {self.frame_shift!r}")
        if self.time_unit not in TIME_UNITS:
            raise ImportFormatError(f"time_unit {self.time_unit!r} is not one of {TIME_UNITS}")
        if self.meta_columns is not None and self.meta_columns < 0:
            raise ImportFormatError(f"meta_columns must be >= 0, got {self.meta_columns}")

    @property
    def has_rate(self) -> bool:
        return self.fps is not None or self.frame_shift is not None

    def shift_for(self, video: str, where: str) -> float:
        """Seconds between rows of ``video`` (from frame_shift or fps)."""
        if self.frame_shift is not None:
            return float(self.frame_shift)
        fps = self.fps.get(video) if isinstance(self.fps, Mapping) else self.fps
        if fps is None:
            extra = " (the fps table has no row for it)" if isinstance(self.fps, Mapping) else ""
            raise ImportFormatError(f"{where}: rows carry no times; give fps or frame_shift{extra}")
        return 1.0 / float(fps)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if isinstance(self.fps, Mapping):
            out["fps"] = {"per_video": len(self.fps)}
        return out


@dataclass
class VideoRows:
    """One video's rows as read from a file, before checks and the dtype cast."""

    data: np.ndarray  # (T, D)
    timestamps: np.ndarray  # (T,) seconds
    mask: np.ndarray | None = None  # (T,) bool; None: rows with a non-finite value are invalid
    row_label: Callable[[int], str] = lambda i: f"row {i}"  # names row i in messages
    details: dict[str, Any] = field(default_factory=dict)  # recorded in the array's source attrs


@dataclass(frozen=True)
class SourceItem:
    """One video found in a source: its id, the file holding it, and how to load it."""

    video: str
    path: Path
    load: Callable[[], VideoRows]
    key: str = ""  # the video's key inside the file (h5 group), "" for one file per video

    @property
    def where(self) -> str:
        return f"{self.path}:{self.key}" if self.key else str(self.path)


class FormatReader(ABC):
    """Finds the videos of a source (a file or folder) and loads their rows."""

    name: ClassVar[str]

    def __init__(self, options: ImportOptions) -> None:
        self.options = options

    @abstractmethod
    def items(self, source: Path) -> list[SourceItem]:
        """One item per video, sorted by id; cheap (rows are read by ``item.load()``)."""

    def metadata(self, source: Path) -> dict[str, Any]:
        """Feature metadata saved by :mod:`extract.io.exporter`, or {} (foreign files)."""
        return {}


class FormatWriter(ABC):
    """Writes complete videos of one feature to files in this format."""

    name: ClassVar[str]

    def __init__(self, frame_origin: int = 0) -> None:
        self.frame_origin = frame_origin  # frame number of row 0, where a format writes numbers

    @abstractmethod
    def write(self, videos: Iterable[Any], meta: Mapping[str, Any], out: Path) -> list[Path]:
        """Write :class:`~extract.store.FeatureArray` s; return the files written."""


READERS: Registry[type[FormatReader]] = Registry("import format")
WRITERS: Registry[type[FormatWriter]] = Registry("export format")


# ------------------------------------------------------------------------- helpers
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_by_video(source: Path, suffixes: tuple[str, ...]) -> list[tuple[str, Path]]:
    """``(video id, file)`` for one file or every matching file under a folder.

    Ids are relative paths without the suffix (``devel/10.csv`` → ``devel/10``), as
    :func:`extract.ids.discover` names videos; a single file gives its stem.
    """
    if not source.exists():
        raise ImportFormatError(f"{source} does not exist")
    if source.is_file():
        if source.suffix.lower() not in suffixes:
            raise ImportFormatError(f"{source} is not a {'/'.join(suffixes)} file")
        return [(source.stem, source)]
    found: list[tuple[str, Path]] = []
    for folder, dirs, names in os.walk(source):  # os.walk: fast on 100k-file folders
        dirs.sort()
        base = Path(folder)
        rel = base.relative_to(source).as_posix()
        for name in names:
            stem, dot, ext = name.rpartition(".")
            if dot and f".{ext.lower()}" in suffixes and not name.startswith(("_", ".")):
                found.append((stem if rel == "." else f"{rel}/{stem}", base / name))
    if not found:
        raise ImportFormatError(f"no {'/'.join(suffixes)} files under {source}")
    return sorted(found)


#: Bytes of one file-name component written by an export (file systems allow 255).
MAX_NAME_BYTES = 200


def video_relpath(video: str, suffix: str) -> PurePosixPath:
    """A safe relative file path for a video id: its own path when safe and short enough,
    else its escaped key, shortened to a readable prefix plus a hash when that is too long
    for a file name. Exports record the mapping back to the id."""
    parts = video.split("/")
    if all(p and p not in (".", "..") and not p.startswith(("_", "."))
           and len(p.encode()) + len(suffix) <= MAX_NAME_BYTES for p in parts):
        return PurePosixPath(video + suffix)
    key = video_key(video)
    if len(key) + len(suffix) > MAX_NAME_BYTES:
        digest = hashlib.sha256(video.encode()).hexdigest()[:16]
        key = f"{key[:MAX_NAME_BYTES - len(suffix) - 18]}-h{digest}"
    return PurePosixPath(key + suffix)


_DIGITS = re.compile(r"\d+")


def frame_number(key: Any, where: str) -> int:
    """Frame index of a dict key or dataset name: ints, ``"00042"``, ``"00042.jpg"``."""
    if isinstance(key, int | np.integer) and not isinstance(key, bool):
        return int(key)
    digits = _DIGITS.findall(PurePosixPath(str(key)).stem)
    if not digits:
        raise ImportFormatError(f"{where}: key {key!r} holds no frame number")
    return int(digits[-1])


def rows_from_frames(frames: Sequence[tuple[int, str, np.ndarray]], where: str, shift: float,
                     origin: int, zero_invalid: bool = True) -> VideoRows:
    """Rows for frames given as ``(index, name, vector)``: one row per index from the first to
    the last; indices with no vector get a zero row with mask False, and so do rows holding a
    non-finite value (zeroed unless ``zero_invalid`` is False). Time = (index - origin) × shift.
    Duplicate indices and vectors of different lengths raise, naming the keys."""
    if not frames:
        raise ImportFormatError(f"{where}: no frames")
    by_index: dict[int, tuple[str, np.ndarray]] = {}
    dim = None
    ref = ""
    for idx, name, vec in frames:
        vec = np.asarray(vec)
        if vec.ndim == 2 and vec.shape[0] == 1:
            vec = vec[0]
        if vec.ndim != 1:
            raise ImportFormatError(f"{where}: frame {name!r} has shape {vec.shape}, expected "
                                    "(D,) or (1, D)")
        if dim is None:
            dim, ref = vec.shape[0], name
        elif vec.shape[0] != dim:
            raise ImportFormatError(f"{where}: frame {name!r} has {vec.shape[0]} values, frame "
                                    f"{ref!r} has {dim}")
        if idx in by_index:
            raise ImportFormatError(f"{where}: duplicate frame {idx}: keys "
                                    f"{by_index[idx][0]!r} and {name!r}")
        by_index[idx] = (name, vec)
    first, last = min(by_index), max(by_index)
    n = last - first + 1
    dtype = np.result_type(*(v.dtype for _, v in by_index.values()))
    data = np.zeros((n, dim), dtype=dtype if dtype.kind in "fiub" else object)
    present = np.zeros(n, bool)
    names = [""] * n
    for idx, (name, vec) in by_index.items():
        data[idx - first] = vec
        present[idx - first] = True
        names[idx - first] = name
    times = (np.arange(first, last + 1, dtype=np.float64) - origin) * shift
    finite = present.copy()
    if data.dtype.kind == "f":
        finite &= np.isfinite(data).all(axis=1)
        if zero_invalid:
            data[~finite] = 0  # NaN rows: invalid, zero by convention
    return VideoRows(data, times, finite, lambda i: f"frame {names[i] or first + i}",
                     {"first_frame": first, "missing_frames": int(n - present.sum())})


@dataclass
class CheckedRows:
    """Rows that passed every check, cast to the store dtype."""

    data: np.ndarray
    timestamps: np.ndarray
    mask: np.ndarray
    details: dict[str, Any]

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + self.timestamps.nbytes + self.mask.nbytes


def check_rows(rows: VideoRows, where: str, dtype: str) -> CheckedRows:
    """Validate one video's rows and cast them to ``dtype``.

    Raises :class:`ImportFormatError` naming ``where`` and the row for: not (T, D), no rows,
    non-numeric values, non-finite or non-increasing times (a repeated time is a duplicate
    frame), valid values outside the dtype's range. Without an explicit mask, rows holding a
    non-finite value become invalid (mask False, values zero).
    """
    data, t = np.asarray(rows.data), np.asarray(rows.timestamps, dtype=np.float64)
    if data.ndim != 2:
        raise ImportFormatError(f"{where}: rows have shape {data.shape}, expected (T, D)")
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise ImportFormatError(f"{where}: no rows or no columns (shape {data.shape})")
    if data.dtype.kind not in "fiub":
        raise ImportFormatError(f"{where}: values are not numeric (dtype {data.dtype})")
    if t.shape != (len(data),):
        raise ImportFormatError(f"{where}: {len(data)} rows but {t.size} timestamps")
    bad_t = np.flatnonzero(~np.isfinite(t))
    if bad_t.size:
        raise ImportFormatError(f"{where}: {rows.row_label(int(bad_t[0]))}: time {t[bad_t[0]]} "
                                "is not finite")
    steps = np.diff(t)
    if np.any(steps <= 0):
        i = int(np.flatnonzero(steps <= 0)[0]) + 1
        what = "duplicate time (a repeated frame)" if steps[i - 1] == 0 else "time goes back"
        raise ImportFormatError(f"{where}: {rows.row_label(i)}: {what}: {t[i]!r} after "
                                f"{t[i - 1]!r} at {rows.row_label(i - 1)}")
    if rows.mask is None:
        mask = np.isfinite(data).all(axis=1) if data.dtype.kind == "f" else np.ones(len(data), bool)
        data = np.where(mask[:, None], data, 0) if not mask.all() else data
    else:
        mask = np.asarray(rows.mask, dtype=bool)
        if mask.shape != (len(data),):
            raise ImportFormatError(f"{where}: mask has shape {mask.shape}, expected "
                                    f"({len(data)},)")
    target = np.dtype(dtype)
    if target.kind == "f" and data.dtype.kind == "f" and target.itemsize < data.dtype.itemsize:
        big = mask & (np.abs(np.where(np.isfinite(data), data, 0)) > np.finfo(target).max).any(1)
        if big.any():
            i = int(np.flatnonzero(big)[0])
            raise ImportFormatError(f"{where}: {rows.row_label(i)}: values exceed the {target} "
                                    "range; import with dtype float32")
    out = data.astype(target, copy=False)
    if out.dtype.kind == "f":  # valid rows must be finite once stored (NaN / overflow to inf)
        bad = mask & ~np.isfinite(out).all(axis=1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ImportFormatError(f"{where}: {rows.row_label(i)}: non-finite values in a row "
                                    f"marked valid (after conversion to {target}; use dtype "
                                    "float32 for large values)")
    return CheckedRows(out, t, mask, dict(rows.details))


def load_meta(text: str | bytes | None, where: str) -> dict[str, Any]:
    """Parse exported feature metadata (JSON)."""
    if text is None:
        return {}
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFormatError(f"{where}: feature metadata is not JSON: {exc}") from exc
    return meta if isinstance(meta, dict) else {}
