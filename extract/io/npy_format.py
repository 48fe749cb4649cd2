"""NumPy files, one per video (id = path without ``.npy`` / ``.npz``). Variants read:

- a plain ``(T, D)`` array: times from fps / frame_shift;
- a dict (pickled in a ``.npy``, or the arrays of a ``.npz``) with the rows under one of
  :data:`DATA_KEYS`, and optionally times in seconds (:data:`TIME_KEYS`), frame indices
  (:data:`FRAME_KEYS`, then time = (index - frame_origin) / fps, gaps → masked rows) and a
  validity mask (:data:`MASK_KEYS`);
- a dict ``{frame: vector}`` keyed by frame index (``17``, ``"00017"``, ``"00017.jpg"``);
  ``None`` values are missing frames.

Pickled ``.npy`` files load only with ``allow_pickle=True``: unpickling runs code from the
file, so use it for files you trust.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from extract.errors import ImportFormatError
from extract.io.formats import (
    READERS,
    FormatReader,
    SourceItem,
    VideoRows,
    files_by_video,
    frame_number,
    rows_from_frames,
)

DATA_KEYS = ("feature", "features", "data", "x", "feat", "feats", "embedding", "embeddings")
TIME_KEYS = ("timestamps", "timestamp", "times", "time")
FRAME_KEYS = ("frames", "frame_ids", "frame_index", "frame_indices", "index")
MASK_KEYS = ("mask", "valid")


def _first(content: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    return next((k for k in keys if k in content), None)


@READERS.register("npy")
class NpyReader(FormatReader):
    """A ``.npy`` / ``.npz`` file, or a folder of them."""

    name = "npy"

    def items(self, source: Path) -> list[SourceItem]:
        return [SourceItem(vid, path, partial(self.load, path, vid))
                for vid, path in files_by_video(source, (".npy", ".npz"))]

    def load(self, path: Path, video: str) -> VideoRows:
        where = str(path)
        try:
            obj = np.load(path, allow_pickle=self.options.allow_pickle)
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise ImportFormatError(
                    f"{path} holds a pickled object; pass allow_pickle=True (--allow-pickle) "
                    "only for files you trust: unpickling can run code") from exc
            raise ImportFormatError(f"{path}: not a readable .npy/.npz file: {exc}") from exc
        except (OSError, EOFError, pickle.UnpicklingError) as exc:
            raise ImportFormatError(f"{path}: not a readable .npy/.npz file: {exc}") from exc
        if isinstance(obj, np.lib.npyio.NpzFile):
            with obj:
                obj = {k: obj[k] for k in obj.files}
        elif isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
            obj = obj.item()
        if isinstance(obj, np.ndarray):
            return self._array(obj, video, where)
        if isinstance(obj, Mapping):
            return self._dict(obj, video, where)
        raise ImportFormatError(f"{where}: holds a {type(obj).__name__}; expected a (T, D) array "
                                "or a dict")

    def _array(self, arr: np.ndarray, video: str, where: str) -> VideoRows:
        if arr.ndim != 2:
            raise ImportFormatError(f"{where}: array has shape {arr.shape}, expected (T, D)")
        shift = self.options.shift_for(video, where)
        return VideoRows(arr, np.arange(len(arr), dtype=np.float64) * shift)

    def _dict(self, content: Mapping[Any, Any], video: str, where: str) -> VideoRows:
        dkey = _first(content, DATA_KEYS)
        if dkey is None:  # {frame: vector}
            frames = [(frame_number(k, where), str(k), v) for k, v in content.items()
                      if v is not None]
            shift = self.options.shift_for(video, where)
            return rows_from_frames(frames, where, shift, self.options.frame_origin)
        data = np.asarray(content[dkey])
        if data.ndim != 2:
            raise ImportFormatError(f"{where}: {dkey!r} has shape {data.shape}, expected (T, D)")
        tkey, fkey, mkey = (_first(content, k) for k in (TIME_KEYS, FRAME_KEYS, MASK_KEYS))
        mask = None if mkey is None else np.asarray(content[mkey], dtype=bool)
        if mask is not None and mask.shape != (len(data),):
            raise ImportFormatError(f"{where}: {mkey!r} has shape {mask.shape}, expected "
                                    f"({len(data)},)")
        if tkey is not None:
            return VideoRows(data, np.asarray(content[tkey], dtype=np.float64), mask,
                             details={"time_key": tkey})
        if fkey is not None:
            idx = np.asarray(content[fkey])
            if idx.shape != (len(data),):
                raise ImportFormatError(f"{where}: {fkey!r} has shape {idx.shape}, expected "
                                        f"({len(data)},)")
            keep = np.ones(len(data), bool) if mask is None else mask
            frames = [(int(i), f"{fkey}[{n}]", row)
                      for n, (i, row, k) in enumerate(zip(idx, data, keep, strict=True)) if k]
            shift = self.options.shift_for(video, where)
            return rows_from_frames(frames, where, shift, self.options.frame_origin)
        shift = self.options.shift_for(video, where)
        return VideoRows(data, np.arange(len(data), dtype=np.float64) * shift, mask)
