"""``au``: Aff-Wild2 action units per frame; BCE, mean F1 with per-AU thresholds tuned on val."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fuse.tasks import losses, metrics
from fuse.tasks.base import TASKS, Task

if TYPE_CHECKING:
    import torch


@TASKS.register("au")
class ActionUnits(Task):
    name = "au"
    level = "frame"
    label_kind = "multilabel"
    metric_name = "f1"

    def loss(self, outs: list[torch.Tensor], y: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
        return losses.binary_cross_entropy(outs[0], y, ok)

    def activate(self, out: torch.Tensor) -> torch.Tensor:
        return out.float().sigmoid()

    def tune_decision(self, pred: np.ndarray, y: np.ndarray, ok: np.ndarray) -> dict:
        return {"thresholds": [metrics.best_threshold(pred[ok[:, k], k], y[ok[:, k], k])[0]
                               for k in range(pred.shape[1])]}

    def decide(self, pred: np.ndarray, decision: dict | None = None) -> np.ndarray:
        thr = np.asarray((decision or {}).get("thresholds", [0.5] * pred.shape[1]))
        return (pred >= thr[None, :]).astype(np.int64)

    def score(self, pred: np.ndarray, y: np.ndarray, ok: np.ndarray,
              decision: dict | None = None) -> dict[str, float]:
        if decision is None:  # tune here only when asked to (model selection on val)
            decision = self.tune_decision(pred, y, ok)
        hard = self.decide(pred, decision)
        per = np.array([metrics.binary_f1(hard[ok[:, k], k], y[ok[:, k], k])
                        for k in range(y.shape[1])])
        out = {"score": float(np.nanmean(per)) if np.isfinite(per).any() else float("nan")}
        return out | {f"f1/{t}": float(s) for t, s in zip(self.targets, per, strict=True)}

    def target_scores(self, pred: np.ndarray, y: np.ndarray, ok: np.ndarray) -> np.ndarray:
        return np.array([metrics.best_threshold(pred[ok[:, k], k], y[ok[:, k], k])[1]
                         for k in range(y.shape[1])])
