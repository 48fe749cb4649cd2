"""Regression tasks: generic (per frame or per video), ``va`` (Aff-Wild2) and ``eri`` (Hume)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from fuse.config import TaskConfig
from fuse.tasks import losses, metrics
from fuse.tasks.base import TASKS, Task

if TYPE_CHECKING:
    import torch

LOSSES = {"mse": losses.mse, "ccc": losses.ccc_loss}
METRICS = {"pearson": metrics.pearson, "ccc": metrics.ccc}


@TASKS.register("regression")
class RegressionTask(Task):
    """MSE or CCC loss; mean Pearson or CCC over targets."""

    name = "regression"
    label_kind = "regression"
    default_loss: ClassVar[str] = "mse"
    default_metric: ClassVar[str] = "pearson"

    @classmethod
    def check(cls, cfg: TaskConfig) -> list[str]:
        problems = []
        if cfg.loss not in ("auto", *LOSSES):
            problems.append(f"task.loss: {cfg.loss!r} is not one of auto, {', '.join(LOSSES)}")
        if cfg.metric not in ("auto", *METRICS):
            problems.append(f"task.metric: {cfg.metric!r} is not one of auto, "
                            f"{', '.join(METRICS)}")
        return problems

    @property
    def loss_name(self) -> str:
        return self.default_loss if self.cfg.loss == "auto" else self.cfg.loss

    @property
    def metric_name(self) -> str:
        return self.default_metric if self.cfg.metric == "auto" else self.cfg.metric

    def loss(self, outs: list[torch.Tensor], y: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
        return LOSSES[self.loss_name](outs[0], y, ok)

    def target_scores(self, pred: np.ndarray, y: np.ndarray, ok: np.ndarray) -> np.ndarray:
        fn = METRICS[self.metric_name]
        return np.array([fn(pred[ok[:, k], k], y[ok[:, k], k]) for k in range(y.shape[1])])

    def score(self, pred: np.ndarray, y: np.ndarray, ok: np.ndarray,
              decision: dict | None = None) -> dict[str, float]:
        per = self.target_scores(pred, y, ok)
        out = {"score": float(np.nanmean(per)) if np.isfinite(per).any() else float("nan")}
        out |= {f"{self.metric_name}/{t}": float(s) for t, s in zip(self.targets, per,
                                                                      strict=True)}
        return out


@TASKS.register("va")
class ValenceArousal(RegressionTask):
    """Aff-Wild2 valence / arousal per frame: CCC loss (1 - mean CCC), CCC metric, clip ±1."""

    name = "va"
    level = "frame"
    n_targets = 2
    default_loss = "ccc"
    default_metric = "ccc"
    default_clip = (-1.0, 1.0)


@TASKS.register("eri")
class EmotionalReactionIntensity(RegressionTask):
    """Hume-Reaction per video: MSE on 7 intensities (+ ``aux_weight`` × CE on the argmax
    emotion from extra logits, paper 001); mean Pearson over the emotions; outputs clipped to
    the intensities' range [0, 1] by default (``post.clip``), as the submission needs."""

    name = "eri"
    level = "video"
    n_targets = 7
    smoothing = "none"
    default_clip = (0.0, 1.0)

    @property
    def out_dim(self) -> int:
        return len(self.targets) * (2 if self.cfg.aux_weight > 0 else 1)

    def loss(self, outs: list[torch.Tensor], y: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
        k = len(self.targets)
        out = outs[0]
        total = LOSSES[self.loss_name](out[..., :k], y, ok)
        if self.cfg.aux_weight > 0:
            rows = ok.all(dim=-1)  # (B,) videos with every intensity labelled
            target = y.argmax(dim=-1)  # (B,)
            total = total + self.cfg.aux_weight * losses.cross_entropy(out[..., k:], target,
                                                                       rows)
        return total

    def activate(self, out: torch.Tensor) -> torch.Tensor:
        return out[..., : len(self.targets)]
