"""Classification tasks: generic (per frame or per video) and ``expr`` (Aff-Wild2, 8 classes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fuse.config import TaskConfig
from fuse.tasks import losses, metrics
from fuse.tasks.base import TASKS, Task

if TYPE_CHECKING:
    import torch


@TASKS.register("classification")
class ClassificationTask(Task):
    """Cross-entropy (focal with ``focal_gamma``; R-Drop with ``rdrop_alpha``); macro F1.

    Labels are one column of class indices; predictions are class probabilities.
    """

    name = "classification"
    label_kind = "classification"
    smoothing = "shared"

    @classmethod
    def check(cls, cfg: TaskConfig) -> list[str]:
        problems = []
        if cfg.focal_gamma < 0:
            problems.append(f"task.focal_gamma: must be >= 0, got {cfg.focal_gamma}")
        if cfg.rdrop_alpha < 0:
            problems.append(f"task.rdrop_alpha: must be >= 0, got {cfg.rdrop_alpha}")
        return problems

    @property
    def num_passes(self) -> int:
        return 2 if self.cfg.rdrop_alpha > 0 else 1

    def loss(self, outs: list[torch.Tensor], y: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
        target, valid = y[..., 0], ok[..., 0]  # (...,) class index and validity
        ce = [losses.cross_entropy(o, target, valid, self.cfg.focal_gamma) for o in outs]
        total = sum(ce) / len(ce)
        if len(outs) == 2:  # R-Drop (paper 002 eq. 4)
            total = total + self.cfg.rdrop_alpha * losses.symmetric_kl(outs[0], outs[1], valid)
        return total

    def activate(self, out: torch.Tensor) -> torch.Tensor:
        return out.float().softmax(dim=-1)

    def decide(self, pred: np.ndarray, decision: dict | None = None) -> np.ndarray:
        return pred.argmax(axis=1)[:, None]  # (N, 1)

    def score(self, pred: np.ndarray, y: np.ndarray, ok: np.ndarray,
              decision: dict | None = None) -> dict[str, float]:
        valid = ok[:, 0]
        true = y[valid, 0].astype(int)
        guess = pred[valid].argmax(axis=1)
        n = len(self.targets)
        per = metrics.f1_per_class(guess, true, n) if len(true) else np.full(n, np.nan)
        out = {"score": metrics.macro_f1(guess, true, n),
               "accuracy": float(np.mean(guess == true)) if len(true) else float("nan")}
        return out | {f"f1/{c}": float(s) for c, s in zip(self.targets, per, strict=True)}

    def target_scores(self, pred: np.ndarray, y: np.ndarray, ok: np.ndarray) -> np.ndarray:
        return np.full(pred.shape[1], self.score(pred, y, ok)["score"])


@TASKS.register("expr")
class Expression(ClassificationTask):
    """Aff-Wild2 expressions per frame: 8 classes, macro F1."""

    name = "expr"
    level = "frame"
    n_targets = 8
