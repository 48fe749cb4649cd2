"""Which features a run reads, and which store each one comes from."""

from __future__ import annotations

from dataclasses import dataclass

from extract.store import FeatureArray, FeatureStore, open_store
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


class FeatureSources:
    """Reads each (feature, video) from the first of the stores that holds the feature."""

    def __init__(self, stores: list[str] | list[FeatureStore], features: list[str]) -> None:
        self.stores = [s if isinstance(s, FeatureStore) else open_store(s) for s in stores]
        self.features = list(features)
        self.home: dict[str, FeatureStore] = {}
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
        """Videos whose ``name`` array is complete."""
        return self.home[name].complete_set(name)

    def coverage(self) -> dict[str, set[str]]:
        return {name: self.complete(name) for name in self.features}

    def read(self, name: str, video: str) -> FeatureArray:
        return self.home[name].read_video(name, video)
