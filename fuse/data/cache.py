"""A bounded in-process cache of staged videos (read + aligned, before normalisation).

Grid jobs that share features and labels (seeds, folds, encoders, hyper-parameters of one
feature combination) stage each video once per worker process: the store is read and the rows
aligned once, and each job only fits its own normaliser (on its own training split) and packs.
Keys hold everything staging depends on: the store paths and the features' fingerprints, the
alignment, the label grid (the label rows' frames / times) and the grid spec.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fuse.data.dataset import FrameTiming, StagedVideo, VideoRequest
    from fuse.data.features import FeatureSources, FeatureSpec
    from fuse.data.grid import GridSpec

log = logging.getLogger(__name__)
DEFAULT_BYTES = int(os.environ.get("FUSE_STAGE_CACHE_MB", "2048")) << 20


class StageCache:
    """Least-recently-used staged videos, at most ``max_bytes`` of aligned arrays."""

    def __init__(self, max_bytes: int = DEFAULT_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[tuple, StagedVideo] = OrderedDict()
        self._fingerprints: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()  # videos are staged by several threads

    def key(self, sources: FeatureSources, specs: list[FeatureSpec], req: VideoRequest,
            level: str, grid: GridSpec, timing: FrameTiming | None,
            tolerance: float | None = None) -> tuple:
        features = tuple((s.name, s.align, *self._feature_id(sources, s.name),
                          sources.resolve(s.name, req.video)) for s in specs)
        clock = None if timing is None else (timing.reference, timing.fps, timing.tolerance)
        return (features, req.video, level, grid, clock, tolerance, _labels_key(req))

    def _feature_id(self, sources: FeatureSources, name: str) -> tuple[str, str]:
        """(store path, fingerprint) of a feature, read once per cache."""
        path = str(sources.home[name].path)
        if (path, name) not in self._fingerprints:
            self._fingerprints[path, name] = sources.home[name].feature_info(name).fingerprint
        return path, self._fingerprints[path, name]

    def has(self, key: tuple) -> bool:
        """Whether ``key`` is cached (without counting a hit or a miss)."""
        return key in self._items

    def get(self, key: tuple) -> StagedVideo | None:
        with self._lock:
            return self._get(key)

    def _get(self, key: tuple) -> StagedVideo | None:
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return item

    def put(self, key: tuple, item: StagedVideo) -> None:
        with self._lock:
            self._put(key, item)

    def _put(self, key: tuple, item: StagedVideo) -> None:
        size = item.nbytes
        if size > self.max_bytes:
            return
        if key in self._items:
            self.bytes -= self._items.pop(key).nbytes
        self._items[key] = item
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.bytes -= old.nbytes

    def __len__(self) -> int:
        return len(self._items)


def _labels_key(req: VideoRequest) -> Any:
    """What of the labels shapes the grid: per-frame rows' frames and times."""
    lab = req.labels
    if lab is None:
        return None
    digest = hashlib.sha1(usedforsecurity=False)
    for part in (lab.frames, lab.times):
        digest.update(b"-" if part is None else np.ascontiguousarray(part).tobytes())
    return (lab.num_rows, digest.hexdigest())
