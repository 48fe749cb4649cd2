"""Which features a run reads, and which store each one comes from."""

from __future__ import annotations

from dataclasses import dataclass

from extract.store import FeatureArray, FeatureStore, open_store
from fuse.data.videomap import VideoMap
from fuse.errors import DataError


@dataclass(frozen=True)
class FeatureSpec:
    """One input feature: its store name, modality and how it is brought onto the grid."""

    name: str
    modality: str  # visual | audio (as the run asked for it)
    align: str  # a registered alignment: nearest | mean

    @classmethod
    def parse(cls, text: str, modality: str, default_align: str) -> FeatureSpec:
        """``"wav2vec"`` or ``"wav2vec:mean"``."""
        name, _, method = text.strip().partition(":")
        return cls(name.strip(), modality, method.strip() or default_align)


def feature_specs(visual: list[str], audio: list[str], default_align: str) -> list[FeatureSpec]:
    """The run's features in input order: visual first, then audio."""
    return ([FeatureSpec.parse(t, "visual", default_align) for t in visual]
            + [FeatureSpec.parse(t, "audio", default_align) for t in audio])


#: Bytes of rows one :meth:`FeatureSources.prefetch` holds at most.
PREFETCH_BYTES = 256 << 20


class FeatureSources:
    """Reads each (feature, video) from the first of the stores that holds the feature; a
    labelled video reads each feature under the id ``video_map`` resolves (see
    :mod:`fuse.data.videomap`: ``X_left`` may read its audio from ``X``)."""

    def __init__(self, stores: list[str] | list[FeatureStore], features: list[str],
                 video_map: VideoMap | None = None) -> None:
        self.stores = [s if isinstance(s, FeatureStore) else open_store(s) for s in stores]
        self.features = list(features)
        self.video_map = video_map or VideoMap()
        self.home: dict[str, FeatureStore] = {}
        self._complete: dict[str, set[str]] = {}
        self._prefetched: dict[tuple[str, str], FeatureArray] = {}  # (feature, stored id)
        self._modality: dict[str, str] = {}
        missing = []
        for name in self.features:
            store = next((s for s in self.stores if s.has_feature(name)), None)
            if store is None:
                missing.append(name)
            else:
                self.home[name] = store
        if missing:
            have = sorted({f for s in self.stores for f in s.features()})
            raise DataError(f"features {missing} are in none of the stores "
                            f"{[s.path for s in self.stores]}; they hold: "
                            f"{', '.join(have) or '(none)'}")

    def dim(self, name: str) -> int:
        return self.home[name].feature_info(name).dim

    def complete(self, name: str) -> set[str]:
        """Stored videos whose ``name`` array is complete (read once)."""
        if name not in self._complete:
            self._complete[name] = self.home[name].complete_set(name)
        return self._complete[name]

    def coverage(self) -> dict[str, set[str]]:
        return {name: self.complete(name) for name in self.features}

    def modality(self, name: str) -> str:
        if name not in self._modality:
            self._modality[name] = self.home[name].feature_info(name).modality
        return self._modality[name]

    def resolve(self, name: str, video: str) -> str | None:
        """The stored id feature ``name`` of labelled ``video`` is read from (None: none)."""
        have = self.complete(name)
        for cand in self.video_map.candidates(video, name, self.modality(name)):
            if cand in have:
                return cand
        return None

    def lacking(self, video: str) -> list[str]:
        """The features ``video`` cannot be read with."""
        return [n for n in self.features if self.resolve(n, video) is None]

    def read(self, name: str, video: str) -> FeatureArray:
        stored = self.resolve(name, video)
        if stored is None:
            tried = self.video_map.candidates(video, name, self.modality(name))
            raise DataError(f"video {video!r} has no complete {name!r} array (looked for "
                            f"{', '.join(tried)})")
        hit = self._prefetched.pop((name, stored), None)
        return hit if hit is not None else self.home[name].read_video(name, stored)

    def prefetch(self, videos: list[str], max_bytes: int = PREFETCH_BYTES) -> None:
        """Read every feature of ``videos`` with one bulk read per feature (the store reads
        each pack's rows in storage order), up to about ``max_bytes`` of rows in all; the rest
        are read one by one. :meth:`read` then hands each array out once."""
        self._prefetched.clear()
        budget = max_bytes
        for name in self.features:
            store = self.home[name]
            row_bytes = self.dim(name) * 4  # at most float32
            stored = []
            for s in dict.fromkeys(s for v in videos if (s := self.resolve(name, v))):
                budget -= store.entry(name, s).rows * row_bytes
                if budget < 0:
                    break
                stored.append(s)
            for fa in store.read_videos(name, stored):
                self._prefetched[name, fa.video] = fa
