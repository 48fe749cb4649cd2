"""Format-1 stores (one Zarr array per feature × video): read them to convert to format 2.

``extract migrate --store OLD --out NEW`` copies every complete video, with its timestamps,
mask, attributes and the feature's config and fingerprint, into a new format-2 store, plus the
old store's run records. The old store is only read.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from extract.errors import StoreError
from extract.ids import video_id_from_key
from extract.store.layout import RUNS_GROUP

log = logging.getLogger(__name__)

_TIME, _MASK = "_time", "_mask"
_PER_VIDEO_SKIP = {"video", "num_frames", "dim", "time", "valid_frames", "fingerprint",
                   "versions", "source", "written", "complete"}


@dataclass
class MigrateReport:
    features: int = 0
    videos: int = 0
    skipped_incomplete: int = 0
    rows: int = 0


class LegacyStore:
    """Read-only access to a format-1 store through zarr-python."""

    def __init__(self, path: str | Path) -> None:
        import zarr

        self.path = str(path)
        try:
            self.root = zarr.open_group(self.path, mode="r")
        except Exception as exc:  # zarr raises several types for a non-store path
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        if self.root.attrs.get("affect_store") != 1:
            raise StoreError(f"{self.path} is not a format-1 feature store")

    def features(self) -> list[str]:
        return sorted(k for k in self.root.group_keys() if not k.startswith("_"))

    def feature_attrs(self, name: str) -> dict[str, Any]:
        return dict(self.root[name].attrs)

    def videos(self, name: str) -> Iterator[tuple[str, bool]]:
        """(video id, complete) of every array of the feature."""
        group = self.root[name]
        for key in sorted(group.array_keys()):
            yield video_id_from_key(key), bool(group[key].attrs.get("complete"))

    def read(self, name: str, video: str) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                   dict[str, Any]]:
        from extract.ids import video_key

        key = video_key(video)
        group = self.root[name]
        arr = group[key]
        return (arr[...], group[_TIME][key][...], group[_MASK][key][...].astype(bool),
                dict(arr.attrs))


def migrate(src: str | Path, dst: str | Path, progress: bool = False) -> MigrateReport:
    """Copy the format-1 store ``src`` into a new format-2 store ``dst``."""
    from tqdm.auto import tqdm

    from extract.store.core import FeatureStore

    old = LegacyStore(src)
    if Path(str(dst)).exists() and any(Path(str(dst)).iterdir()):
        raise StoreError(f"{dst} exists and is not empty; migrate into a new folder")
    report = MigrateReport()
    with FeatureStore(dst, "a") as new:
        for name in old.features():
            a = old.feature_attrs(name)
            if "fingerprint" not in a:
                log.warning("%s: feature group without attributes (interrupted creation), "
                            "skipped", name)
                continue
            info = new.ensure_feature(name, modality=a["modality"], dim=int(a["dim"]),
                                      extractor=a["extractor"], config=a.get("config", {}),
                                      dtype=a.get("dtype", "float16"),
                                      provenance=a.get("provenance", {}))
            if info.fingerprint != a["fingerprint"]:
                raise StoreError(f"{name}: fingerprint {info.fingerprint} after migration "
                                 f"differs from {a['fingerprint']}")
            report.features += 1
            videos = list(old.videos(name))
            for video, complete in tqdm(videos, desc=name, disable=not progress, unit="video"):
                if not complete:
                    report.skipped_incomplete += 1
                    continue
                data, t, m, attrs = old.read(name, video)
                extra = {k: v for k, v in attrs.items() if k not in _PER_VIDEO_SKIP}
                new.write_video(name, video, data, t, m, source=attrs.get("source"),
                                extra_attrs={**extra, "migrated_from": str(src),
                                             "written_v1": attrs.get("written")},
                                commit=False)
                report.videos += 1
                report.rows += len(data)
                if report.videos % 512 == 0:
                    new.commit()
    runs = Path(str(src)) / RUNS_GROUP
    if runs.is_dir() and not str(dst).count("://"):
        shutil.copytree(runs, Path(str(dst)) / RUNS_GROUP, dirs_exist_ok=True)
    log.info("migrated %s", json.dumps(report.__dict__))
    return report
