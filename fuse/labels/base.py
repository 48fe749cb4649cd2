"""What a label adapter returns, and the adapter registry.

An adapter reads one dataset's annotation layout into a :class:`LabelSet` and writes
predictions back in that dataset's submission format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from extract.registry import Registry

if TYPE_CHECKING:
    from fuse.config import LabelConfig

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "train_set": "train",
                  "val": "val", "valid": "val", "validation": "val", "validation_set": "val",
                  "dev": "val", "devel": "val", "development": "val",
                  "test": "test", "test_set": "test"}


def normalise_split(name: str) -> str | None:
    """``Train`` / ``Devel`` / ``Validation_Set`` … → train | val | test (None if unknown)."""
    return _SPLIT_ALIASES.get(str(name).strip().lower())


@dataclass
class VideoLabels:
    """One video's annotations (per-frame rows, or a single row for per-video labels)."""

    video: str
    values: np.ndarray  # (N, K) float32; classification: (N, 1) class index
    valid: np.ndarray  # (N, K) bool; False where the annotation is invalid (-5, -1, NaN)
    frames: np.ndarray | None = None  # (N,) frame index of each row (per-frame labels)
    times: np.ndarray | None = None  # (N,) seconds of each row, when the labels give times
    split: str | None = None  # train | val | test, when the label source says
    group: str | None = None  # videos that must share a split and fold (subject, or the
    #                           base video of an Aff-Wild2 left/right pair)

    @property
    def num_rows(self) -> int:
        return int(self.values.shape[0])


@dataclass
class LabelSet:
    """All videos' labels from one source."""

    format: str  # adapter name
    level: str  # frame | video
    kind: str  # regression | classification | multilabel
    targets: list[str]  # output names; classification: class names
    videos: dict[str, VideoLabels]
    source_ids: dict[str, str] = field(default_factory=dict)  # video → id as the source
    #                                 writes it, where it differs (Hume: "[00001]" for 00001)


@dataclass
class Predictions:
    """Final (post-processed, decided) outputs to write in a submission format."""

    targets: list[str]  # column names (classification: class names, values hold indices)
    level: str  # frame | video
    kind: str  # regression | classification | multilabel
    videos: list[str]
    values: list[np.ndarray]  # per video: (N, K) or (1, K) values (class index for classification)
    frames: list[np.ndarray | None]  # per video (N,) frame indices (per-frame outputs)
    times: list[np.ndarray | None]  # per video (N,) seconds
    ids: dict[str, str] = field(default_factory=dict)  # video → id written (default: itself)


class LabelAdapter:
    """Reads one label layout and writes predictions in the matching submission format."""

    name: ClassVar[str]
    level: ClassVar[str]  # frame | video | any (decided by the file)
    kind: ClassVar[str]  # regression | classification | multilabel | any
    per_video_files: ClassVar[bool] = False  # the native submission is one file per video

    def check(self, cfg: LabelConfig) -> list[str]:
        """Cheap problems with the config (paths exist, columns named)."""
        problems = []
        if not cfg.path:
            problems.append("labels.path: not set (--labels PATH)")
        elif not Path(cfg.path).exists():
            problems.append(f"labels.path: {cfg.path} does not exist")
        if cfg.partition and not Path(cfg.partition).is_file():
            problems.append(f"labels.partition: {cfg.partition} is not a file")
        return problems

    def load(self, cfg: LabelConfig) -> LabelSet:
        raise NotImplementedError

    def aliases(self, video: str) -> list[str]:
        """Other stored ids a labelled video's features may be under (see
        :mod:`fuse.data.videomap`); none by default."""
        return []

    def write(self, preds: Predictions, path: Path) -> list[Path]:
        """Write ``preds``; ``path`` ending in .csv gives one CSV, else a folder in the native
        layout. Returns the files written."""
        from fuse.labels.writers import write_csv

        return write_csv(preds, path if path.suffix == ".csv" else path / "predictions.csv")


LABEL_FORMATS: Registry[type[LabelAdapter]] = Registry("label format")


def get_adapter(name: str) -> LabelAdapter:
    import fuse.labels  # noqa: F401  (fills the registry)

    return LABEL_FORMATS.get(name)()
