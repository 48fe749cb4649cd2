"""``predictions/<split>_outputs.npz``: a run's continuous outputs, what ensembles combine.

One file per predicted split. Rows are the videos' steps concatenated in ``videos`` order;
video ``i`` owns rows ``offsets[i]:offsets[i + 1]``. ``outputs`` are post-processed (smoothed,
clipped) but not yet decided: values for regression, class probabilities for classification,
per-AU probabilities for ``au``. Labels travel along (``y``, ``valid``; ``valid`` is all False
where the split has none). Only plain arrays and strings: ``np.load`` needs no pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fuse.errors import RunError
from fuse.labels.base import Predictions

FORMAT = 1


@dataclass
class RawOutputs:
    """One split's outputs with what is needed to align, score and write them."""

    task: str  # task name (va, expr, au, eri, regression, classification)
    label_format: str  # the adapter that writes submissions
    level: str  # frame | video
    kind: str  # regression | classification | multilabel
    targets: list[str]  # label targets (classification: class names) = output columns
    split: str  # the split these rows belong to
    videos: list[str]  # (V,)
    offsets: np.ndarray  # (V + 1,) int64 row offsets: video i is rows offsets[i]:offsets[i+1]
    frames: np.ndarray  # (R,) int64 label frame index of each row; -1 where none (per video)
    times: np.ndarray  # (R,) float64 seconds of each row; NaN where none (per video)
    outputs: np.ndarray  # (R, P) float32 post-processed outputs before the decision
    y: np.ndarray  # (R, K) float32 labels (0 where invalid)
    valid: np.ndarray  # (R, K) bool label validity; all False when the split is unlabelled
    decision: dict = field(default_factory=dict)  # decision parameters (au: thresholds)
    ids: dict = field(default_factory=dict)  # video → id as the label source writes it

    @property
    def labelled(self) -> bool:
        return bool(self.valid.any())

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def rows(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def per_video(self, array: np.ndarray) -> list[np.ndarray]:
        """``array`` (R, ...) cut into one block per video."""
        return [array[self.rows(i)] for i in range(len(self.videos))]

    def predictions(self, decided: np.ndarray) -> Predictions:
        """Decided values (R, K) as :class:`Predictions` for a label adapter's ``write``."""
        frame = self.level == "frame"
        return Predictions(list(self.targets), self.level, self.kind, list(self.videos),
                           self.per_video(decided),
                           self.per_video(self.frames) if frame else [None] * len(self.videos),
                           self.per_video(self.times) if frame else [None] * len(self.videos),
                           dict(self.ids))

    def labelled_videos(self) -> RawOutputs:
        """Only the videos with at least one valid label row (the others were predicted, not
        scored: e.g. unlabelled test ids that every fold predicts)."""
        keep = [i for i in range(len(self.videos)) if self.valid[self.rows(i)].any()]
        if len(keep) == len(self.videos):
            return self
        rows = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in keep]
                              ) if keep else np.zeros(0, np.int64)
        lengths = self.lengths[keep]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        videos = [self.videos[i] for i in keep]
        return RawOutputs(self.task, self.label_format, self.level, self.kind,
                          list(self.targets), self.split, videos, offsets, self.frames[rows],
                          self.times[rows], self.outputs[rows], self.y[rows], self.valid[rows],
                          dict(self.decision), {v: i for v, i in self.ids.items() if v in videos})

    def with_outputs(self, outputs: np.ndarray, decision: dict | None = None) -> RawOutputs:
        """The same rows and labels with other outputs (an ensemble's)."""
        return RawOutputs(self.task, self.label_format, self.level, self.kind,
                          list(self.targets), self.split, list(self.videos), self.offsets,
                          self.frames, self.times, outputs.astype(np.float32), self.y,
                          self.valid, dict(decision or {}), dict(self.ids))

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:  # a file handle: np.savez would append .npz to the name
            np.savez_compressed(
                fh, format=np.array(FORMAT), task=np.array(self.task),
                label_format=np.array(self.label_format), level=np.array(self.level),
                kind=np.array(self.kind), targets=np.array(self.targets, dtype=str),
                split=np.array(self.split), videos=np.array(self.videos, dtype=str),
                offsets=self.offsets.astype(np.int64), frames=self.frames.astype(np.int64),
                times=self.times.astype(np.float64), outputs=self.outputs.astype(np.float32),
                y=self.y.astype(np.float32), valid=self.valid.astype(bool),
                decision=np.array(json.dumps(self.decision)),
                ids=np.array(json.dumps(self.ids)))
        return path

    @classmethod
    def load(cls, path: Path) -> RawOutputs:
        if not path.is_file():
            raise RunError(f"no {path}; runs save their outputs for the splits they predict "
                           "(val, test and output.predict_splits)")
        with np.load(path, allow_pickle=False) as z:
            if int(z["format"]) != FORMAT:
                raise RunError(f"{path}: outputs format {int(z['format'])}, expected {FORMAT}")
            return cls(str(z["task"]), str(z["label_format"]), str(z["level"]), str(z["kind"]),
                       z["targets"].tolist(), str(z["split"]), z["videos"].tolist(),
                       z["offsets"], z["frames"], z["times"], z["outputs"], z["y"], z["valid"],
                       json.loads(str(z["decision"])),
                       json.loads(str(z["ids"])) if "ids" in z.files else {})

    @classmethod
    def build(cls, *, task: str, label_format: str, kind: str, targets: list[str], split: str,
              level: str, videos: list[str], outputs: list[np.ndarray],
              frames: list[np.ndarray | None], times: list[np.ndarray | None],
              labels: list[tuple[np.ndarray, np.ndarray]] | None,
              decision: dict | None = None, ids: dict | None = None) -> RawOutputs:
        """From per-video blocks: outputs (N_v, P), frames / times (N_v,) or None, labels
        ``(y, valid)`` (N_v, K) or None for an unlabelled split."""
        lengths = np.array([len(o) for o in outputs], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        total = int(offsets[-1])
        width = outputs[0].shape[1] if outputs else len(targets)
        cat = np.concatenate(outputs) if outputs else np.zeros((0, width), np.float32)

        def rows(blocks: list[np.ndarray | None], fill: float, dtype: type) -> np.ndarray:
            parts = [np.full(n, fill, dtype) if b is None else np.asarray(b, dtype)
                     for b, n in zip(blocks, lengths, strict=True)]
            return np.concatenate(parts) if parts else np.zeros(0, dtype)

        if labels:
            y = np.concatenate([t[0] for t in labels]).astype(np.float32)
            valid = np.concatenate([t[1] for t in labels]).astype(bool)
        else:
            k = 1 if kind == "classification" else len(targets)
            y, valid = np.zeros((total, k), np.float32), np.zeros((total, k), bool)
        return cls(task, label_format, level, kind, list(targets), split, list(videos),
                   offsets, rows(frames, -1, np.int64), rows(times, np.nan, np.float64),
                   cat.astype(np.float32), y, valid, dict(decision or {}),
                   {v: i for v, i in (ids or {}).items() if v in videos})


def outputs_path(run_root: Path, split: str) -> Path:
    """Where a run keeps one split's outputs."""
    return run_root / "predictions" / f"{split}_outputs.npz"
