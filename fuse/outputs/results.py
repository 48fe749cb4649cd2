"""From predictions to results: scores per split, submission files, plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fuse.data.dataset import FusedData
from fuse.labels.base import LabelAdapter, Predictions
from fuse.outputs.rundir import RunDir
from fuse.post.pipeline import PostProcess
from fuse.tasks.base import Task
from fuse.training.inference import score_videos


def split_scores(task: Task, data: FusedData, videos: np.ndarray, preds: list[np.ndarray],
                 post: PostProcess) -> dict[str, float]:
    """Metrics after post-processing, and the raw score as ``raw/score``; {} if unlabelled."""
    targets = [data.targets_of(v) for v in videos]
    if not any(ok.any() for _, ok in targets):
        return {}
    # decisions (AU thresholds) come from validation, or 0.5 ({}): never tuned on this split
    raw = score_videos(task, preds, targets, dict(post.decision or {}))
    done = score_videos(task, [post.apply(p) for p in preds], targets, dict(post.decision or {}))
    return done | {"raw/score": raw["score"]}


def final_predictions(task: Task, data: FusedData, videos: np.ndarray,
                      preds: list[np.ndarray], post: PostProcess, targets: list[str],
                      kind: str, ids: dict[str, str] | None = None) -> Predictions:
    """Post-processed, decided values (class index, 0/1 AU, clipped values) per video; per
    frame, one row per step of the video's frame grid (every frame of the source video)."""
    values = [task.decide(post.apply(p), post.decision) for p in preds]
    per_frame = data.level == "frame"
    return Predictions(list(targets), data.level, kind, [data.videos[v] for v in videos], values,
                       [data.frames[v] for v in videos],
                       [data.times[v] if per_frame else None for v in videos], dict(ids or {}))


def write_split(adapter: LabelAdapter, preds: Predictions, folder: Path,
                split: str) -> list[Path]:
    """``<split>.csv`` and, for per-video layouts (Aff-Wild2), ``<split>/<video>.txt``."""
    files = adapter.write(preds, folder / f"{split}.csv")
    if adapter.per_video_files:
        files += adapter.write(preds, folder / split)
    return files


def write_plots(run: RunDir, task: Task, data: FusedData, val_preds: list[np.ndarray],
                post: PostProcess, val_scores: dict[str, float]) -> None:
    """Learning curves, per-target bars and (classification) the confusion matrix."""
    from fuse.outputs.plots import confusion_plot, learning_curves, per_target_bars

    run.plots.mkdir(exist_ok=True)
    learning_curves(run.log, run.plots / "learning_curves.png")
    if val_scores:
        per_target_bars(val_scores, run.plots / "val_per_target.png")
    if task.label_kind == "classification" and val_preds:
        val = data.indices("val")
        y = np.concatenate([data.targets_of(v)[0] for v in val])[:, 0].astype(int)
        ok = np.concatenate([data.targets_of(v)[1] for v in val])[:, 0]
        guess = np.concatenate([task.decide(post.apply(p), post.decision) for p in val_preds])
        confusion_plot(guess[ok, 0], y[ok], task.targets, run.plots / "val_confusion.png")
