"""Checks of the clip-level options (normalisation, class weights, classic encoders, per-target
snapshot windows, checkpoint pruning): the config alone, then with the labels."""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from fuse.config import FuseConfig
from fuse.errors import FuseError

if TYPE_CHECKING:
    from fuse.tasks.base import Task
    from fuse.validate import RunPlan

log = logging.getLogger(__name__)
KEEP = ("last", "best", "none")  # train.keep


def resolve_auto(cfg: FuseConfig) -> FuseConfig:
    """``data.align=auto``: ``mean`` (every row of a step pooled) for per-video labels,
    ``nearest`` for per-frame labels; the resolved config records which."""
    if cfg.data.align != "auto":
        return cfg
    align = "mean" if label_level(cfg) == "video" else "nearest"
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, align=align))


def label_level(cfg: FuseConfig) -> str | None:
    """frame | video as the label format declares it (csv: read the file); None if unknown."""
    from fuse.labels.base import LABEL_FORMATS, get_adapter

    if cfg.labels.format not in LABEL_FORMATS:
        return None
    adapter = get_adapter(cfg.labels.format)
    if adapter.level != "any":
        return adapter.level
    if adapter.check(cfg.labels):
        return None  # reported by validation
    try:
        return adapter.load(cfg.labels).level
    except (FuseError, OSError, ValueError):
        return None  # reported by validation


def check(cfg: FuseConfig) -> list[str]:
    """Problems of these options found without reading any data."""
    from fuse.data.normalize import NORMALIZATIONS
    from fuse.model.encoders.classic import is_classic
    from fuse.tasks import TASKS
    from fuse.tasks.classification import CLASS_WEIGHTS

    p = []
    d, t, task = cfg.data, cfg.train, cfg.task
    if d.normalize not in NORMALIZATIONS:
        p.append(f"data.normalize: unknown {NORMALIZATIONS.kind} {d.normalize!r}; known: "
                 f"{', '.join(NORMALIZATIONS.names())}")
    if t.class_weights not in CLASS_WEIGHTS:
        p.append(f"train.class_weights: {t.class_weights!r} is not one of "
                 f"{', '.join(CLASS_WEIGHTS)}")
    if t.keep not in KEEP:
        p.append(f"train.keep: {t.keep!r} is not one of {', '.join(KEEP)}")
    kind = TASKS.get(task.name).label_kind if task.name in TASKS else None
    if kind not in (None, "classification") and (task.focal_alpha or task.focal_gamma
                                                 or t.class_weights != "none"):
        p.append(f"task.focal_alpha / focal_gamma / train.class_weights: apply to "
                 f"classification; task {task.name!r} has {kind} labels")
    if task.focal_alpha and t.class_weights != "none":
        p.append("task.focal_alpha and train.class_weights both weigh the classes; give one "
                 "(class_weights=balanced derives alpha_t from the training counts)")
    if is_classic(cfg.model.encoder.name):
        c = cfg.model.classic
        if not c.c > 0 or c.alpha < 0 or c.max_iter < 1:
            p.append(f"model.classic: need c > 0, alpha >= 0, max_iter >= 1; got c={c.c}, "
                     f"alpha={c.alpha}, max_iter={c.max_iter}")
        if task.focal_gamma or task.rdrop_alpha:
            p.append(f"task.focal_gamma / rdrop_alpha: {cfg.model.encoder.name} is fitted by "
                     "scikit-learn, not by a loss; leave them 0")
    return p


def check_plan(cfg: FuseConfig, plan: RunPlan, task: Task) -> list[str]:
    """Problems that need the labels: class counts, label kind, target names."""
    from fuse.model.encoders import classic

    p = task.check_targets(plan.labels.targets)
    if cfg.data.normalize == "group":
        p += _check_groups(cfg, plan)
    name = cfg.model.encoder.name
    if classic.is_classic(name):
        p += classic.check(name, plan.labels.kind, cfg.model.pool, plan.level)
    if targets := cfg.train.snapshot_targets:
        if task.label_kind == "classification":
            p.append("train.snapshot_targets: per-target windows need one output column per "
                     f"target; {task.name!r} predicts one class (use train.snapshot_epochs)")
        elif unknown := sorted(set(targets) - set(plan.labels.targets)):
            p.append(f"train.snapshot_targets: {unknown} are not targets of the labels "
                     f"({', '.join(plan.labels.targets)})")
        elif not cfg.train.snapshot_epochs and (rest := [
                t for t in plan.labels.targets if t not in targets]):
            p.append(f"train.snapshot_targets: no window for {rest}; name them or give "
                     "train.snapshot_epochs for the rest")
    return p


def _check_groups(cfg: FuseConfig, plan: RunPlan) -> list[str]:
    """``data.normalize=group`` needs a real group (speaker, subject) for every video it
    loads: one from ``labels.group_by``'s column, never the video standing in for itself
    (one-row features of a one-video group would become constants)."""
    from fuse.labels.splits import group_column

    column = group_column(cfg.labels)
    if column is None:
        why = ("labels.group_by=video makes every video its own group"
               if cfg.labels.group_by == "video" else "labels.group_by is not set")
        return [f"data.normalize=group: {why}, so each video would be z-scored on its own "
                "(one-row features become all zeros); set labels.group_by to the column of "
                "speaker / subject ids, or use data.normalize=global"]
    lacking = sorted(r.video for r in plan.requests if plan.labels.videos[r.video].group is None)
    if not lacking:
        return []
    head = ", ".join(lacking[:10]) + (f" … and {len(lacking) - 10} more" if len(lacking) > 10
                                      else "")
    return [f"data.normalize=group: {len(lacking)} videos have no {column!r} value (e.g. test "
            f"ids listed only in the partition): {head}; give every video its {column!r} (in "
            f"the labels or a {column!r} column of labels.partition), or use "
            "data.normalize=global"]
