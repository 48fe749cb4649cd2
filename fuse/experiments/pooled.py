"""Pooled cross-validation metrics: every fold's held-out predictions of one cell (and seed)
scored together, the way papers report leave-one-speaker-out results.

The held-out split is ``test`` for nested folds (``fold_holdout: test``, the default: no
selection saw it) and ``val`` with ``fold_holdout: val`` (papers 002 / 004: those folds chose
each run's epoch and post-processing, so the pooled number is optimistic and says so).
Each fold's saved outputs (``predictions/<split>_outputs.npz``) are decided with that fold's
own decision (AU thresholds), concatenated and scored once with the task's metric. Only the
videos with labels are pooled: a video without any (an unlabelled test id, which every fold
predicts) is not held out by any fold. A labelled video held out by two folds is refused.
Written per cell and seed into ``pooled/<cell>__seed-<s>/``: ``metrics.json``,
``predictions.csv`` (video, fold, true and predicted values) and, for classes, the confusion
matrix as ``confusion.csv`` and ``confusion.png``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fuse.errors import RunError

log = logging.getLogger(__name__)
FOLDER = "pooled"


@dataclass
class Pooled:
    """One cell and seed, pooled over its folds."""

    split: str  # test (nested) | val (fold_holdout=val)
    metrics: dict[str, float]  # the task's metrics of the pooled predictions
    folds: int  # folds pooled
    videos: int  # held-out videos pooled
    score_metric: str  # what "score" is (e.g. "UAR over 4 classes")
    classes: list[str] = field(default_factory=list)  # classification: class names
    confusion: np.ndarray | None = None  # (C, C) counts, rows true
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def selected_on(self) -> bool:
        """The pooled predictions are from folds that also selected the runs' epochs."""
        return self.split == "val"


def pool_runs(runs: list[Path], split: str, fold_names: list[str]) -> tuple[Pooled, Any]:
    """Score the concatenated ``split`` outputs of ``runs`` (one per fold); also returns the
    per-row table (a DataFrame) of the pooled predictions."""
    import pandas as pd
    import yaml

    from fuse.config import config_from_dict
    from fuse.outputs.raw import RawOutputs, outputs_path
    from fuse.tasks import build_task

    loaded = [RawOutputs.load(outputs_path(r, split)) for r in runs]
    # a video without any valid label in a fold was predicted there, not held out (unlabelled
    # test ids are predicted by every fold): only labelled videos are pooled
    raws = [raw.labelled_videos() for raw in loaded]
    unlabelled = sorted({v for raw in loaded for v in raw.videos}
                        - {v for raw in raws for v in raw.videos})
    if unlabelled:
        log.info("pooling: %d videos without labels are predicted, not held out, and left out "
                 "of the pooled metrics: %s", len(unlabelled), ", ".join(unlabelled[:10])
                 + (" …" if len(unlabelled) > 10 else ""))
    if not any(raw.videos for raw in raws):
        raise RunError(f"no fold of {runs[0].parent.name} has a labelled {split} video to pool")
    first = raws[0]
    for r, raw in zip(runs, raws, strict=True):
        if (raw.task, raw.kind, raw.targets, raw.level) != (first.task, first.kind,
                                                            first.targets, first.level):
            raise RunError(f"{r}: its {split} outputs are of another task / targets than "
                           f"{runs[0]}; they cannot be pooled")
    seen: dict[str, str] = {}
    for name, raw in zip(fold_names, raws, strict=True):
        for v in raw.videos:
            if v in seen:
                raise RunError(f"video {v!r} is held out in fold {seen[v]} and in fold {name}; "
                               "pooled predictions must hold each video out once")
            seen[v] = name
    cfg = config_from_dict(yaml.safe_load((runs[0] / "config.yaml").read_text()))
    task = build_task(cfg.task, first.targets)
    decided = [task.decide(raw.outputs, raw.decision) for raw in raws]
    if first.kind == "multilabel":  # each fold's own thresholds, then 0.5 on the 0/1 results
        pred, decision = np.concatenate(decided).astype(np.float32), {}
    else:
        pred, decision = np.concatenate([raw.outputs for raw in raws]), None
    y = np.concatenate([raw.y for raw in raws])
    ok = np.concatenate([raw.valid for raw in raws])
    metrics = task.score(pred, y, ok, decision) if ok.any() else {}
    pooled = Pooled(split, metrics, len(runs), len(seen), task.metric_label)
    rows = []
    for name, raw, dec in zip(fold_names, raws, decided, strict=True):
        frame = {"video": np.repeat(raw.videos, raw.lengths), "fold": name}
        if raw.level == "frame":
            frame["frame"] = raw.frames
        if raw.kind == "classification":
            true = np.where(raw.valid[:, 0], raw.y[:, 0], -1).astype(int)
            frame |= {"true_class": true, "pred_class": dec[:, 0].astype(int)}
            frame["true_label"] = [raw.targets[i] if i >= 0 else "" for i in true]
            frame["pred_label"] = [raw.targets[i] for i in dec[:, 0].astype(int)]
        else:
            for k, t in enumerate(raw.targets):
                frame[f"true_{t}"] = np.where(raw.valid[:, k], raw.y[:, k], np.nan)
                frame[f"pred_{t}"] = dec[:, k]
        rows.append(pd.DataFrame(frame))
    table = pd.concat(rows, ignore_index=True)
    if first.kind == "classification" and ok.any():
        from fuse.tasks.metrics import confusion_matrix

        valid = ok[:, 0]
        pooled.classes = list(first.targets)
        pooled.confusion = confusion_matrix(np.concatenate(decided)[valid, 0],
                                            y[valid, 0].astype(int), len(first.targets))
    return pooled, table


def write_pooled(folder: Path, pooled: Pooled, table: Any, plot: bool = True) -> Pooled:
    """``metrics.json``, ``predictions.csv`` and the confusion matrix files into ``folder``."""
    from fuse.outputs.confusion import plot_confusion, to_csv

    folder.mkdir(parents=True, exist_ok=True)
    note = ("pooled over held-out val folds that also selected each run's epoch and "
            "post-processing: optimistic, not a test estimate" if pooled.selected_on else
            "pooled over held-out test folds; no selection saw them")
    (folder / "metrics.json").write_text(json.dumps(
        {"split": pooled.split, "note": note, "folds": pooled.folds, "videos": pooled.videos,
         "score_metric": pooled.score_metric, "metrics": pooled.metrics}, indent=2,
        default=float) + "\n")
    table.to_csv(folder / "predictions.csv", index=False, float_format="%.6f")
    pooled.files = {"metrics": folder / "metrics.json", "predictions": folder / "predictions.csv"}
    if pooled.confusion is not None:
        path = folder / "confusion.csv"
        path.write_text(to_csv(pooled.confusion, pooled.classes))
        pooled.files["confusion"] = path
        if plot:
            pooled.files["confusion_png"] = plot_confusion(
                pooled.confusion, pooled.classes, folder / "confusion.png",
                f"pooled {pooled.split} confusion ({pooled.folds} folds)")
    return pooled
