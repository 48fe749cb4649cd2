"""Aff-Wild2 (ABAW) annotation files: one text file per video, a header, one line per frame.

Layout: ``<path>/Train_Set/<video>.txt`` and ``<path>/Validation_Set/<video>.txt`` (the split
comes from the folder), or a flat folder of ``<video>.txt`` (splits from ``labels.partition``
or made). Line i after the header is the video's frame i (0-based), the frame whose aligned
crop is ``cropped_aligned/<video>/<i + 1:05d>.jpg``; it is placed at that frame's time.

Two-person videos are annotated as ``X_left`` / ``X_right``: features stored under the raw
video ``X`` (its audio, or visual features of the whole frame) serve both, and the pair shares
a split and a fold (``VideoLabels.group`` is ``X``).

- VA: ``valence,arousal`` then ``v,a`` per frame; -5 marks an invalid frame: either value at
  -5 makes both invalid (the challenge drops the whole frame).
- EXPR: ``Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other`` then one class index
  (0..7) per frame; -1 invalid.
- AU: ``AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26`` then 0/1 per AU; -1 invalid.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from extract.media.clock import base_video
from fuse.errors import LabelError
from fuse.labels.base import LABEL_FORMATS, LabelAdapter, LabelSet, Predictions, VideoLabels
from fuse.labels.base import normalise_split as _split_name
from fuse.labels.partition import read_partition
from fuse.labels.writers import write_csv, write_per_video

VA_TARGETS = ["valence", "arousal"]
EXPR_CLASSES = ["Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other"]
AU_NAMES = ["AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25",
            "AU26"]


class AffWild2Adapter(LabelAdapter):
    """Shared reading / writing; subclasses give the header, invalid marker and value type."""

    level: ClassVar[str] = "frame"
    per_video_files = True
    header: ClassVar[list[str]]  # expected header names
    columns: ClassVar[int]  # values per line
    invalid: ClassVar[float]  # marker of an invalid annotation
    fmt: ClassVar[str]  # number format of the submission files

    def load(self, cfg) -> LabelSet:
        files = self._files(Path(cfg.path))
        if not files:
            raise LabelError(f"no Aff-Wild2 annotation files (*.txt) under {cfg.path}")
        given = read_partition(cfg.partition) if cfg.partition else {}
        videos = {}
        for path, split in files:
            vid = path.stem
            if vid in videos:
                raise LabelError(f"video {vid!r} is annotated twice (second: {path})")
            values = self._read(path)
            videos[vid] = VideoLabels(vid, values, self.validity(values),
                                      frames=np.arange(len(values)), split=given.get(vid, split),
                                      group=base_video(vid))
        return LabelSet(self.name, "frame", self.kind, self.targets(), videos)

    def validity(self, values: np.ndarray) -> np.ndarray:
        """(N, K) validity of the annotation lines: each value not the invalid marker."""
        return values != self.invalid

    def aliases(self, video: str) -> list[str]:
        """``X_left`` / ``X_right`` read features stored under the raw video ``X``."""
        base = base_video(video)
        return [base] if base != video else []

    def targets(self) -> list[str]:
        return list(self.header)

    def _files(self, root: Path) -> list[tuple[Path, str | None]]:
        if root.is_file():
            return [(root, None)]
        out = []
        for path in sorted(root.rglob("*.txt")):
            rel = path.relative_to(root).parts[:-1]
            split = next((s for part in rel if (s := _split_name(part))), None)
            out.append((path, split))
        return out

    def _read(self, path: Path) -> np.ndarray:
        with path.open() as fh:
            header = fh.readline().strip()
        names = [h.strip() for h in header.split(",")]
        if [n.lower() for n in names] != [h.lower() for h in self.header]:
            raise LabelError(f"{path} line 1: header {header!r}, expected "
                             f"{','.join(self.header)!r} ({self.name})")
        try:
            values = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2, dtype=np.float32)
        except ValueError as exc:
            raise LabelError(f"{path}: {exc}") from None
        if values.size == 0:
            values = np.zeros((0, self.columns), np.float32)
        if values.shape[1] != self.columns:
            raise LabelError(f"{path}: {values.shape[1]} values per line, expected {self.columns}")
        return values

    def write(self, preds: Predictions, path: Path) -> list[Path]:
        if path.suffix == ".csv":
            return write_csv(preds, path)
        return write_per_video(preds, path, ",".join(self.header), self.fmt)


@LABEL_FORMATS.register("affwild2-va")
class AffWild2VA(AffWild2Adapter):
    name = "affwild2-va"
    kind = "regression"
    header = VA_TARGETS
    columns = 2
    invalid = -5.0
    fmt = "%.6f"

    def validity(self, values: np.ndarray) -> np.ndarray:
        """A frame is invalid for both values when either is -5 (as the ABAW evaluation drops
        the whole frame), never valence without arousal or the reverse."""
        ok = (values != self.invalid).all(axis=1, keepdims=True)
        return np.repeat(ok, values.shape[1], axis=1)


@LABEL_FORMATS.register("affwild2-expr")
class AffWild2Expr(AffWild2Adapter):
    name = "affwild2-expr"
    kind = "classification"
    header = EXPR_CLASSES
    columns = 1
    invalid = -1.0
    fmt = "%d"

    def write(self, preds: Predictions, path: Path) -> list[Path]:
        if path.suffix == ".csv":
            return write_csv(preds, path)
        ints = [v.astype(int) for v in preds.values]
        fixed = Predictions(preds.targets, preds.level, preds.kind, preds.videos, ints,
                            preds.frames, preds.times, preds.ids)
        return write_per_video(fixed, path, ",".join(self.header), self.fmt)


@LABEL_FORMATS.register("affwild2-au")
class AffWild2AU(AffWild2Adapter):
    name = "affwild2-au"
    kind = "multilabel"
    header = AU_NAMES
    columns = 12
    invalid = -1.0
    fmt = "%d"
