"""HDF5 in the ABAW team-code layout: one file per feature, one ``(D,)`` dataset per frame.

Keys are ``<video>/<frame>`` (``video_1/00001``); everything before the last ``/`` is the video
id, the last part its frame index. Exported files add ``<video>/_time`` (T,) float64 seconds
and ``<video>/_mask`` (T,) bool, which the reader uses verbatim so a round trip is exact; a
2-d dataset that is not under a frame index is read as one video's (T, D) rows.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from extract.errors import ImportFormatError
from extract.io.formats import (
    FEATURE_META_ATTR,
    READERS,
    WRITERS,
    FormatReader,
    FormatWriter,
    SourceItem,
    VideoRows,
    frame_number,
    load_meta,
    rows_from_frames,
    video_relpath,
)

log = logging.getLogger(__name__)

TIME_KEY = "_time"
MASK_KEY = "_mask"
H5_SUFFIXES = (".h5", ".hdf5")
_FRAME_NAME = re.compile(r"^\d+(\.[A-Za-z0-9]+)?$")  # 00001 or 00001.jpg


@dataclass
class _Layout:
    frames: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    whole: dict[str, str] = field(default_factory=dict)  # video → (T, D) dataset
    side: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))


def _scan(f: Any) -> _Layout:
    import h5py

    layout = _Layout()

    def visit(name: str, obj: Any) -> None:
        if not isinstance(obj, h5py.Dataset):
            return
        parent, _, last = name.rpartition("/")
        if last in (TIME_KEY, MASK_KEY) and parent:
            layout.side[parent][last] = name
        elif _FRAME_NAME.match(last) and parent:
            layout.frames[parent].append(name)
        else:
            layout.whole[name] = name

    f.visititems(visit)
    return layout


@READERS.register("h5")
class H5Reader(FormatReader):
    """One HDF5 file holding every video of a feature."""

    name = "h5"

    def items(self, source: Path) -> list[SourceItem]:
        import h5py

        if not source.is_file():
            raise ImportFormatError(f"{source} is not an HDF5 file (give the .h5 file itself)")
        try:
            with h5py.File(source, "r") as f:
                layout = _scan(f)
        except OSError as exc:
            raise ImportFormatError(f"{source}: not a readable HDF5 file: {exc}") from exc
        renamed = self.metadata(source).get("videos", {})
        orphans = sorted(set(layout.side) - set(layout.frames))
        if orphans:
            raise ImportFormatError(f"{source}:{orphans[0]}: has {TIME_KEY}/{MASK_KEY} but no "
                                    "frames")
        items = [SourceItem(renamed.get(g, g), source, partial(self._load_frames, source,
                            renamed.get(g, g), names, layout.side.get(g, {})), g)
                 for g, names in layout.frames.items()]
        items += [SourceItem(renamed.get(k, k), source, partial(self._load_whole, source,
                             renamed.get(k, k), k), k) for k in layout.whole]
        if not items:
            raise ImportFormatError(f"{source}: no datasets in the <video>/<frame> layout")
        return sorted(items, key=lambda it: it.video)

    def metadata(self, source: Path) -> dict[str, Any]:
        import h5py

        try:
            with h5py.File(source, "r") as f:
                text = f.attrs.get(FEATURE_META_ATTR)
        except OSError:
            return {}
        return load_meta(text, str(source))

    def _load_frames(self, path: Path, video: str, names: list[str],
                     side: Mapping[str, str]) -> VideoRows:
        import h5py

        where = f"{path}:{names[0].rpartition('/')[0]}"
        with h5py.File(path, "r") as f:
            frames = [(frame_number(n.rpartition("/")[2], where), n, f[n][()]) for n in names]
            t = f[side[TIME_KEY]][()] if TIME_KEY in side else None
            m = f[side[MASK_KEY]][()] if MASK_KEY in side else None
        if t is None:
            shift = self.options.shift_for(video, where)
            return rows_from_frames(frames, where, shift, self.options.frame_origin)
        rows = rows_from_frames(frames, where, 1.0, 0, zero_invalid=m is None)
        if rows.details["missing_frames"] or len(t) != len(rows.data):
            raise ImportFormatError(f"{where}: {TIME_KEY} has {len(t)} rows but the frames are "
                                    f"{len(frames)} of {len(rows.data)} indices")
        rows.timestamps = np.asarray(t, dtype=np.float64)
        if m is not None:  # an exported mask: rows and mask verbatim
            rows.mask = np.asarray(m, dtype=bool)
        return rows

    def _load_whole(self, path: Path, video: str, key: str) -> VideoRows:
        import h5py

        where = f"{path}:{key}"
        with h5py.File(path, "r") as f:
            data = f[key][()]
        if data.ndim != 2:
            raise ImportFormatError(f"{where}: dataset has shape {data.shape}: expected (D,) "
                                    "frames under <video>/<frame> or one (T, D) video")
        shift = self.options.shift_for(video, where)
        return VideoRows(data, np.arange(len(data), dtype=np.float64) * shift)


@WRITERS.register("h5")
class H5Writer(FormatWriter):
    """``<video>/<frame>`` datasets (frame = row + ``frame_origin``), ``_time`` and ``_mask``."""

    name = "h5"

    def write(self, videos: Iterable[Any], meta: Mapping[str, Any], out: Path) -> list[Path]:

        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        renamed = {}
        try:
            self._write(tmp, videos, meta, renamed)
        except BaseException:
            tmp.unlink(missing_ok=True)  # no half-written export left behind
            raise
        tmp.replace(out)
        return [out]

    def _write(self, tmp: Path, videos: Iterable[Any], meta: Mapping[str, Any],
               renamed: dict[str, str]) -> None:
        import h5py

        with h5py.File(tmp, "w") as f:
            for fa in videos:
                group_name = video_relpath(fa.video, "").as_posix()
                if group_name != fa.video:
                    renamed[group_name] = fa.video
                g = f.create_group(group_name)
                last = len(fa.data) - 1 + self.frame_origin
                width = max(5, len(str(last)))
                for i, row in enumerate(fa.data):
                    g.create_dataset(f"{i + self.frame_origin:0{width}d}", data=row)
                g.create_dataset(TIME_KEY, data=np.asarray(fa.timestamps, dtype=np.float64))
                g.create_dataset(MASK_KEY, data=np.asarray(fa.mask, dtype=bool))
            f.attrs[FEATURE_META_ATTR] = json.dumps({**meta, "videos": renamed}, default=str)
