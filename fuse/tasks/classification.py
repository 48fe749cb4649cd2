"""Classification tasks: generic (per frame or per video) and ``expr`` (Aff-Wild2, 8 classes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fuse.config import TaskConfig
from fuse.tasks import losses, metrics
from fuse.tasks.base import TASKS, Task

if TYPE_CHECKING:
    import torch


METRICS = ("f1", "uar", "accuracy")  # task.metric choices (auto = f1)
CLASS_WEIGHTS = ("none", "balanced")


@TASKS.register("classification")
class ClassificationTask(Task):
    """Cross-entropy (focal with ``focal_gamma`` / ``focal_alpha``; class-balanced weights;
    R-Drop with ``rdrop_alpha``). Metrics: macro F1 (mean over the classes present in the
    labels or the predictions, as scikit-learn), UAR (mean recall over the classes present in
    the labels), accuracy, per-class F1 and recall; ``task.metric`` picks the selection
    ``score`` (auto: macro F1).

    Labels are one column of class indices; predictions are class probabilities.
    """

    name = "classification"
    label_kind = "classification"
    smoothing = "shared"

    def __init__(self, cfg: TaskConfig, targets: list[str]) -> None:
        super().__init__(cfg, targets)
        self.class_weights: np.ndarray | None = (  # (C,) alpha_t per class, or None
            np.asarray(cfg.focal_alpha, np.float32) if cfg.focal_alpha else None)
        self._alpha = None  # its torch copy

    @classmethod
    def check(cls, cfg: TaskConfig) -> list[str]:
        problems = []
        if cfg.focal_gamma < 0:
            problems.append(f"task.focal_gamma: must be >= 0, got {cfg.focal_gamma}")
        if any(a < 0 for a in cfg.focal_alpha):
            problems.append(f"task.focal_alpha: weights must be >= 0, got {cfg.focal_alpha}")
        if cfg.rdrop_alpha < 0:
            problems.append(f"task.rdrop_alpha: must be >= 0, got {cfg.rdrop_alpha}")
        if cfg.metric not in ("auto", *METRICS):
            problems.append(f"task.metric: {cfg.metric!r} is not one of auto, "
                            f"{', '.join(METRICS)} for a classification task")
        return problems

    def check_targets(self, targets: list[str]) -> list[str]:
        if self.cfg.focal_alpha and len(self.cfg.focal_alpha) != len(targets):
            return [f"task.focal_alpha: {len(self.cfg.focal_alpha)} weights for "
                    f"{len(targets)} classes ({', '.join(targets)}); give one per class"]
        return []

    @property
    def metric_name(self) -> str:
        return "f1" if self.cfg.metric == "auto" else self.cfg.metric

    @property
    def metric_label(self) -> str:
        names = {"f1": "macro F1", "uar": "UAR", "accuracy": "accuracy"}
        return f"{names[self.metric_name]} over {len(self.targets)} classes"

    @property
    def num_passes(self) -> int:
        return 2 if self.cfg.rdrop_alpha > 0 else 1

    def set_class_weights(self, weights: np.ndarray | None) -> None:
        """Per-class loss weights (alpha_t); None = unweighted."""
        self.class_weights = None if weights is None else np.asarray(weights, np.float32)
        self._alpha = None

    def loss(self, outs: list[torch.Tensor], y: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
        import torch

        target, valid = y[..., 0], ok[..., 0]  # (...,) class index and validity
        if self.class_weights is not None and self._alpha is None:
            self._alpha = torch.from_numpy(self.class_weights)
        ce = [losses.cross_entropy(o, target, valid, self.cfg.focal_gamma, self._alpha)
              for o in outs]
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
        f1 = metrics.f1_per_class(guess, true, n) if len(true) else np.full(n, np.nan)
        recall = metrics.recall_per_class(guess, true, n)
        found = {"f1": metrics.macro_f1(guess, true, n), "uar": metrics.uar(guess, true, n),
                 "accuracy": float(np.mean(guess == true)) if len(true) else float("nan")}
        out = {"score": found[self.metric_name], **found}
        out |= {f"f1/{c}": float(s)  # classes in neither labels nor predictions: no F1
                for c, s in zip(self.targets, f1, strict=True) if np.isfinite(s)}
        return out | {f"recall/{c}": float(s)  # classes absent from the labels: no recall
                      for c, s in zip(self.targets, recall, strict=True) if np.isfinite(s)}

    def target_scores(self, pred: np.ndarray, y: np.ndarray, ok: np.ndarray) -> np.ndarray:
        return np.full(pred.shape[1], self.score(pred, y, ok)["score"])


def balanced_weights(counts: np.ndarray) -> np.ndarray:
    """``N / (C * n_c)`` per class from the training counts (scikit-learn's "balanced"); a
    class without training examples gets weight 1 (it never occurs in the loss)."""
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    weights = np.ones(len(counts))
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)


@TASKS.register("expr")
class Expression(ClassificationTask):
    """Aff-Wild2 expressions per frame: 8 classes, macro F1."""

    name = "expr"
    level = "frame"
    n_targets = 8
