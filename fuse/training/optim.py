"""Optimisers and learning-rate schedules (registries), as plain functions of progress."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from extract.registry import Registry
from fuse.config import TrainConfig

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")
OPTIMIZERS.add("adam", torch.optim.Adam)
OPTIMIZERS.add("adamw", torch.optim.AdamW)

Schedule = Callable[[float, TrainConfig], float]
SCHEDULES: Registry[Schedule] = Registry("lr schedule")


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    return OPTIMIZERS.get(cfg.optimizer)(model.parameters(), lr=cfg.lr,
                                         weight_decay=cfg.weight_decay)


def lr_at(epoch: float, cfg: TrainConfig) -> float:
    """Learning rate at fractional ``epoch``: linear warmup, then the schedule."""
    if cfg.warmup_epochs > 0 and epoch < cfg.warmup_epochs:
        return cfg.lr * (epoch + 1e-3) / cfg.warmup_epochs
    return cfg.lr * SCHEDULES.get(cfg.scheduler)(epoch - cfg.warmup_epochs, cfg)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


@SCHEDULES.register("constant")
def constant(epoch: float, cfg: TrainConfig) -> float:
    return 1.0


@SCHEDULES.register("cosine")
def cosine(epoch: float, cfg: TrainConfig) -> float:
    span = max(cfg.epochs - cfg.warmup_epochs, 1e-9)
    progress = min(max(epoch / span, 0.0), 1.0)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@SCHEDULES.register("step")
def step(epoch: float, cfg: TrainConfig) -> float:
    return cfg.step_gamma ** int(epoch // max(cfg.step_epochs, 1))
