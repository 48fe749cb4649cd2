"""The post-processing a run applies to its predictions, chosen on the validation split."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np

from fuse.config import PostConfig
from fuse.post.smoothing import smooth_columns
from fuse.tasks.base import Task

log = logging.getLogger(__name__)


@dataclass
class PostProcess:
    """Smoothing windows per prediction column, then clipping; the task's decision params."""

    clip: tuple[float, float] | None = None  # (low, high) or none
    windows: list[int] | None = None  # per prediction column; None = no smoothing
    decision: dict = field(default_factory=dict)  # e.g. {"thresholds": [...]} for au

    def apply(self, pred: np.ndarray) -> np.ndarray:
        """One video's predictions (N, P) → smoothed and clipped."""
        out = smooth_columns(pred, self.windows) if self.windows else pred
        if self.clip is not None:
            out = np.clip(out, *self.clip)
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PostProcess:
        clip = tuple(data["clip"]) if data.get("clip") is not None else None
        return cls(clip, data.get("windows"), data.get("decision") or {})


def parse_clip(text: str, task: Task) -> tuple[float, float] | None:
    """``auto`` (the task's range), ``none``, or ``"LO,HI"``."""
    if text == "auto":
        return task.default_clip
    if text == "none":
        return None
    lo, hi = (float(v) for v in text.split(","))
    return lo, hi


def tune_post(task: Task, preds: list[np.ndarray], ys: list[np.ndarray], oks: list[np.ndarray],
              cfg: PostConfig, level: str) -> PostProcess:
    """Choose smoothing windows (per column or shared, per the task) and decision params on
    validation predictions ``preds`` (per video (N, P)) and labels ``ys`` / ``oks``."""
    post = PostProcess(clip=parse_clip(cfg.clip, task))
    y, ok = np.concatenate(ys), np.concatenate(oks)
    if cfg.smooth and level == "frame" and task.smoothing != "none" and len(cfg.windows) > 1:
        n_cols = preds[0].shape[1]
        table = []  # (W, P) score of each column with each window
        for w in cfg.windows:
            trial = PostProcess(post.clip, [w] * n_cols)
            table.append(task.target_scores(np.concatenate([trial.apply(p) for p in preds]),
                                            y, ok))
        table = np.nan_to_num(np.asarray(table), nan=-np.inf)
        if task.smoothing == "shared":
            table[:] = table.mean(axis=1, keepdims=True)
        best = table.argmax(axis=0)  # first (smallest listed) window among ties
        post.windows = [int(cfg.windows[i]) for i in best]
        log.info("smoothing windows chosen on val: %s", post.windows)
    if cfg.tune_thresholds:
        post.decision = task.tune_decision(np.concatenate([post.apply(p) for p in preds]), y, ok)
    return post
