"""The task interface and registry.

A task owns its loss (torch), how raw outputs become predictions (``activate``), how
predictions become submitted values (``decide``), and its metrics (numpy). Metric dicts carry
the selection metric under ``"score"`` and per-target values under ``"<metric>/<target>"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from extract.registry import Registry
from fuse.config import TaskConfig

if TYPE_CHECKING:
    import torch


class Task:
    """Base class; subclasses set the class attributes and implement loss and score."""

    name: ClassVar[str]
    level: ClassVar[str] = "any"  # frame | video | any (follow the labels)
    label_kind: ClassVar[str]  # regression | classification | multilabel
    n_targets: ClassVar[int | None] = None  # label targets (classes) the task needs, if fixed
    smoothing: ClassVar[str] = "per_target"  # per_target | shared | none (post-processing)
    default_clip: ClassVar[tuple[float, float] | None] = None

    def __init__(self, cfg: TaskConfig, targets: list[str]) -> None:
        self.cfg = cfg
        self.targets = list(targets)

    @classmethod
    def check(cls, cfg: TaskConfig) -> list[str]:
        """Problems with the task options (no torch work)."""
        return []

    def check_targets(self, targets: list[str]) -> list[str]:
        """Problems of the task options with the labels' targets (classes)."""
        return []

    @property
    def metric_label(self) -> str:
        """What ``score`` is, in words (tables and summaries)."""
        return f"mean {getattr(self, 'metric_name', 'score')} of {len(self.targets)} targets"

    @property
    def out_dim(self) -> int:
        """Model outputs per step (or per video)."""
        return len(self.targets)

    @property
    def num_passes(self) -> int:
        """Forward passes per training step (2 for R-Drop)."""
        return 1

    def loss(self, outs: list[torch.Tensor], y: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
        """Training loss from ``num_passes`` outputs (..., C), labels and validity (..., K)."""
        raise NotImplementedError

    def activate(self, out: torch.Tensor) -> torch.Tensor:
        """Raw outputs → predictions (values, probabilities) (..., P)."""
        return out

    def score(self, pred: np.ndarray, y: np.ndarray, ok: np.ndarray,
              decision: dict | None = None) -> dict[str, float]:
        """Metrics of predictions (N, P) against labels (N, K) with validity (N, K)."""
        raise NotImplementedError

    def target_scores(self, pred: np.ndarray, y: np.ndarray, ok: np.ndarray) -> np.ndarray:
        """(P,) one score per prediction column, for per-target smoothing windows."""
        raise NotImplementedError

    def tune_decision(self, pred: np.ndarray, y: np.ndarray, ok: np.ndarray) -> dict:
        """Decision parameters chosen on validation (AU thresholds); none by default."""
        return {}

    def decide(self, pred: np.ndarray, decision: dict | None = None) -> np.ndarray:
        """Predictions (N, P) → submitted values (N, K)."""
        return pred


TASKS: Registry[type[Task]] = Registry("task")


def build_task(cfg: TaskConfig, targets: list[str]) -> Task:
    import fuse.tasks  # noqa: F401  (fills the registry)

    return TASKS.get(cfg.name)(cfg, targets)

