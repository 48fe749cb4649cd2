"""Read-only views of a feature store: an xarray Dataset per feature, pandas tables.

Built on :class:`~extract.store.FeatureStore` only; everything is loaded eagerly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from extract.store import FeatureStore

CONTENTS_COLUMNS = ("feature", "video", "modality", "frames", "valid", "dim", "rate",
                    "extractor", "weights", "complete")


def _store(store: FeatureStore | str | Path) -> FeatureStore:
    return store if isinstance(store, FeatureStore) else FeatureStore(store, "r")


def open_dataset(store_path: FeatureStore | str | Path, feature: str,
                 videos: Iterable[str] | None = None) -> Any:
    """One feature as an ``xarray.Dataset`` with dims ``(video, frame, dim)``.

    Variables: ``<feature>`` (video, frame, dim) in the store dtype, NaN past each video's
    end; ``mask`` (video, frame) bool, False past the end; ``length`` (video,) rows per video.
    Coordinates: ``video`` ids, ``frame`` 0…T_max-1, ``dim`` 0…D-1 and ``time`` (video, frame)
    seconds, NaN past the end. Attributes: the feature's metadata (``config`` and
    ``provenance`` as JSON text, so the dataset can be written to netCDF). ``videos``: a
    subset of the complete videos in the order given (default: all of them, sorted by id).
    """
    import xarray as xr

    fs = _store(store_path)
    info = fs.feature_info(feature)
    ids = sorted(fs.videos(feature)) if videos is None else list(videos)
    arrays = [fs.read_video(feature, v) for v in ids]
    lengths = np.array([a.num_frames for a in arrays], dtype=np.int64)
    t_max = int(lengths.max()) if len(lengths) else 0
    dtype = np.dtype(info.dtype) if np.dtype(info.dtype).kind == "f" else np.dtype(np.float32)
    data = np.full((len(ids), t_max, info.dim), np.nan, dtype=dtype)
    time = np.full((len(ids), t_max), np.nan)
    mask = np.zeros((len(ids), t_max), bool)
    for i, a in enumerate(arrays):
        n = a.num_frames
        data[i, :n], time[i, :n], mask[i, :n] = a.data, a.timestamps, a.mask
    attrs = {"feature": feature, "modality": info.modality, "dim": info.dim,
             "extractor": info.extractor, "dtype": info.dtype, "fingerprint": info.fingerprint,
             "config": json.dumps(info.config, sort_keys=True, default=str),
             "provenance": json.dumps(info.provenance, sort_keys=True, default=str),
             "store": fs.path}
    return xr.Dataset(
        {feature: (("video", "frame", "dim"), data), "mask": (("video", "frame"), mask),
         "length": (("video",), lengths)},
        coords={"video": list(ids), "frame": np.arange(t_max), "dim": np.arange(info.dim),
                "time": (("video", "frame"), time)},
        attrs=attrs)


def contents(store_path: FeatureStore | str | Path) -> Any:
    """One row per (feature, video): frames, valid, dim, rate (rows/s, None when irregular),
    extractor, weights, complete — :meth:`FeatureStore.table` as a ``pandas.DataFrame``."""
    import pandas as pd

    rows = _store(store_path).table()
    return pd.DataFrame(rows, columns=list(CONTENTS_COLUMNS))


def video_frame(store_path: FeatureStore | str | Path, feature: str, video: str) -> Any:
    """One video's rows as a ``pandas.DataFrame``: index ``time`` (s), a ``mask`` column, then
    one column per dimension (the imported column names when the feature kept them)."""
    import pandas as pd

    fs = _store(store_path)
    a = fs.read_video(feature, video)
    names = fs.feature_info(feature).provenance.get("dim_names")
    if not (isinstance(names, list) and len(names) == a.data.shape[1] and "mask" not in names):
        names = list(range(a.data.shape[1]))
    df = pd.DataFrame(a.data, columns=names, index=pd.Index(a.timestamps, name="time"))
    df.insert(0, "mask", a.mask)
    return df
