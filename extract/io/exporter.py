"""Write a feature's complete videos out of the store (HDF5 ``video/frame`` or per-video CSV),
with times, masks and the feature's metadata, so that importing the files gives back the same
arrays exactly."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from extract.errors import StoreError
from extract.io.formats import WRITERS
from extract.io.importer import open_store
from extract.store import FeatureArray, FeatureInfo, FeatureStore

log = logging.getLogger(__name__)


def export_feature(store: FeatureStore | str | Path, feature: str, format: str = "h5",
                   out: str | Path = "", videos: Iterable[str] | None = None,
                   frame_origin: int = 0) -> list[Path]:
    """Export ``feature`` (all complete videos, or ``videos``) to ``out``; return the files.

    ``h5``: ``out`` is one file; ``csv``: ``out`` is a folder (``<video id>.csv`` each, plus
    ``_feature.json``; the columns after ``time_s,mask`` carry the feature's labels when its
    columns have names, see :func:`feature_labels`, else ``f0…``). ``frame_origin``: the
    frame number given to row 0 (h5 keys).
    """
    if not str(out):
        raise StoreError("give an output path for the export")
    fs = open_store(store, "r")
    info = fs.feature_info(feature)
    writer = WRITERS.get(format)(frame_origin=frame_origin)
    done = fs.videos(feature)
    ids = done if videos is None else list(dict.fromkeys(videos))  # each video once
    missing = sorted(set(ids) - set(done))
    if missing:
        raise StoreError(f"feature {feature!r} of {fs.path} has no complete video "
                         f"{', '.join(map(repr, missing[:10]))}{' …' if len(missing) > 10 else ''}")
    meta: dict[str, Any] = {"feature": feature, "modality": info.modality, "dim": info.dim,
                            "labels": feature_labels(info),
                            "extractor": info.extractor, "config": info.config,
                            "fingerprint": info.fingerprint, "dtype": info.dtype,
                            "provenance": info.provenance, "store": fs.path,
                            "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    written = writer.write(_arrays(fs, feature, ids), meta, Path(out).expanduser())
    log.info("exported %d videos of %s to %s (%s)", len(ids), feature, out, format)
    return written


def feature_labels(info: FeatureInfo) -> list[str] | None:
    """The names of a feature's columns, in order: the ``labels`` its extractor recorded
    (class names, AU names, openSMILE descriptors), else the column names it was imported
    with; None when its columns have no names (or a list of the wrong length)."""
    names = info.config.get("labels") or info.provenance.get("dim_names")
    if isinstance(names, list) and len(names) == info.dim and all(isinstance(n, str)
                                                                   for n in names):
        return list(names)
    return None


def _arrays(fs: FeatureStore, feature: str, ids: list[str]) -> Iterator[FeatureArray]:
    for video in ids:
        yield fs.read_video(feature, video)
