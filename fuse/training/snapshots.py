"""Train-Val-Mix snapshots (papers 002 / 004): keep a fixed window of epochs, combine outputs.

With ``labels.train_val_mix`` there is no validation split to pick a model, so the weights of
epochs ``train.snapshot_epochs = [first, last]`` are kept (``snapshots/epoch_NNN.pt``, EMA
weights when enabled) and their post-processed outputs are combined with the ensemble
combiners (``train.snapshot_combine``). Post-processing cannot be tuned: clip, plus smoothing
only when ``post.windows`` names a single window; AU thresholds stay 0.5. ``train`` and the
saved run (``fuse predict`` / ``fuse eval``) make these outputs with the same functions
(:func:`snapshot_outputs`, :func:`combined_outputs`); without the snapshot weights
(``train.keep_snapshots=false``) a run cannot be used to predict again.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fuse.config import FuseConfig, PostConfig, TrainConfig

log = logging.getLogger(__name__)
FOLDER = "snapshots"


def window(cfg: TrainConfig) -> list[int]:
    """Every snapshot epoch (1-based): the union of ``snapshot_epochs`` and the per-target
    windows of ``snapshot_targets``; [] when none are kept."""
    spans = [cfg.snapshot_epochs, *cfg.snapshot_targets.values()]
    return sorted({e for span in spans if len(span) == 2 for e in range(span[0], span[1] + 1)})


def target_windows(cfg: TrainConfig, targets: list[str]) -> dict[str, list[int]]:
    """Each target's snapshot epochs: its own window, else ``snapshot_epochs``."""
    out = {}
    for t in targets:
        span = cfg.snapshot_targets.get(t, cfg.snapshot_epochs)
        out[t] = list(range(span[0], span[1] + 1)) if len(span) == 2 else []
    return out


def checkpoint_path(root: Path, epoch: int) -> Path:
    return root / FOLDER / f"epoch_{epoch:03d}.pt"


def outputs_path(root: Path, epoch: int, split: str) -> Path:
    """One snapshot's outputs on one split (same format as ``predictions/<split>_outputs.npz``)."""
    return root / FOLDER / f"epoch_{epoch:03d}_{split}_outputs.npz"


def check(cfg: FuseConfig) -> list[str]:
    """Problems with Train-Val-Mix and the snapshot window, all at once."""
    from fuse.experiments.ensemble import AUTO, COMBINERS
    from fuse.labels.splits import nested, uses_folds
    from fuse.model.encoders.classic import is_classic
    from fuse.tasks import TASKS

    p: list[str] = []
    lab, t = cfg.labels, cfg.train
    snaps = t.snapshot_epochs
    classic = is_classic(cfg.model.encoder.name)
    if lab.train_val_mix:
        if not snaps and not t.snapshot_targets and not classic:
            p.append("labels.train_val_mix: needs train.snapshot_epochs=[first,last] (or "
                     "train.snapshot_targets), the epochs whose snapshots are combined (no "
                     "validation split picks a model; paper 004: [16,25] for arousal, [11,16] "
                     "for valence)")
        if t.patience:
            p.append(f"train.patience: early stopping needs a validation score and "
                     f"labels.train_val_mix has none; set 0 (got {t.patience})")
        if (uses_folds(lab) and not nested(lab)) or lab.official_val_fold:
            p.append(f"labels.train_val_mix: trains on train + val together; labels.folds="
                     f"{lab.folds} with labels.fold_holdout=val (a validation fold) "
                     "contradicts it; fold_holdout=test holds each fold out as test")
    elif snaps or t.snapshot_targets:
        p.append(f"train.snapshot_epochs: {snaps or t.snapshot_targets} "
                 "are only used with labels.train_val_mix=true (a run with a validation split "
                 "keeps its best epoch)")
    for key, span in [("snapshot_epochs", snaps),
                      *((f"snapshot_targets.{k}", v) for k, v in t.snapshot_targets.items())]:
        if not span and key == "snapshot_epochs":
            continue
        if len(span) != 2:
            p.append(f"train.{key}: give [first, last], got {span}")
            continue
        first, last = span
        if not 1 <= first <= last:
            p.append(f"train.{key}: need 1 <= first <= last, got {span}")
        if last > t.epochs:
            p.append(f"train.{key}: the window {span} ends after train.epochs={t.epochs}")
    name = t.snapshot_combine
    if name != "auto" and name not in COMBINERS:
        p.append(f"train.snapshot_combine: unknown {COMBINERS.kind} {name!r}; known: auto, "
                 f"{', '.join(COMBINERS.names())}")
    elif name != "auto" and cfg.task.name in TASKS:
        kind = TASKS.get(cfg.task.name).label_kind
        if kind not in COMBINERS.get(name).kinds:
            fits = [n for n in COMBINERS.names() if kind in COMBINERS.get(n).kinds]
            p.append(f"train.snapshot_combine: {name!r} does not apply to {kind} outputs "
                     f"(task {cfg.task.name!r}); use auto ({AUTO[kind]}) or one of "
                     f"{', '.join(fits)}")
    return p


def fixed_post(task, cfg: PostConfig):
    """Post-processing without validation: clip, one fixed smoothing window if given."""
    from fuse.post.pipeline import PostProcess, parse_clip

    windows = None
    if cfg.smooth and task.smoothing != "none" and len(cfg.windows) == 1 and cfg.windows[0] > 1:
        windows = [cfg.windows[0]] * len(task.targets)
    elif cfg.smooth and len(cfg.windows) > 1:
        log.info("train-val mix: no validation split to choose among post.windows %s; no "
                 "smoothing (give one window to smooth)", cfg.windows)
    return PostProcess(clip=parse_clip(cfg.clip, task), windows=windows)


def snapshot_outputs(model, task, batcher, planner, videos: dict[str, np.ndarray], root: Path,
                     epochs: list[int], post, amp: bool) -> dict[int, dict[str, list]]:
    """Post-processed outputs of every snapshot: epoch → split → per video (N_v, P)."""
    from fuse.training.checkpoint import load_checkpoint
    from fuse.training.inference import predict_videos

    out = {}
    for epoch in epochs:
        model.load_state_dict(load_checkpoint(checkpoint_path(root, epoch))["model"])
        out[epoch] = {s: [post.apply(p) for p in predict_videos(model, task, batcher, planner,
                                                                 v, amp)]
                      for s, v in videos.items()}
    return out


def combined_outputs(per_epoch: dict[int, dict[str, list]], task, cfg: TrainConfig
                     ) -> tuple[dict[str, list[np.ndarray]], str, dict[str, list[int]] | None]:
    """The run's outputs from its snapshots' outputs, as ``train`` makes them and ``predict`` /
    ``eval`` remake them (one code path): the combiner of ``train.snapshot_combine``, each
    target over its own window with ``snapshot_targets``. Returns the combined outputs per
    split and video, the combiner's name and the per-target epochs (None: one window)."""
    from fuse.experiments.ensemble import get_combiner

    method = get_combiner(cfg.snapshot_combine, task.label_kind).name
    per_target = target_windows(cfg, task.targets) if cfg.snapshot_targets else None
    columns = [per_target[t] for t in task.targets] if per_target else None
    return (combine_snapshots(per_epoch, task.label_kind, method, columns), method,
            per_target)


def missing_snapshots(root: Path, cfg: TrainConfig) -> list[int]:
    """Epochs of the window whose snapshot weights are not in the run folder."""
    return [e for e in window(cfg) if not checkpoint_path(root, e).is_file()]


def combine_snapshots(per_epoch: dict[int, dict[str, list]], kind: str, method: str,
                      columns: list[list[int]] | None = None) -> dict[str, list[np.ndarray]]:
    """The snapshots' outputs combined (the ensemble combiners), per split and video.

    ``columns`` (one epoch list per output column) combines each column over its own epochs
    (per-target windows); None combines every column over all of ``per_epoch``."""
    from fuse.experiments.ensemble import combine

    first = next(iter(per_epoch.values()))
    out: dict[str, list[np.ndarray]] = {}
    for split, blocks in first.items():
        if not blocks:
            out[split] = []
            continue
        cuts = np.cumsum([len(b) for b in blocks])[:-1]
        if columns is None:
            merged = combine([np.concatenate(e[split]) for e in per_epoch.values()], kind,
                             method)
        else:
            merged = np.concatenate(first[split]).astype(np.float32, copy=True)
            for epochs in {tuple(e) for e in columns}:
                part = combine([np.concatenate(per_epoch[e][split]) for e in epochs], kind,
                               method)
                cols = [k for k, e in enumerate(columns) if tuple(e) == epochs]
                merged[:, cols] = part[:, cols]
        out[split] = np.split(merged, cuts)
    return out
