"""Train / val / test assignment: the splits the labels give, or made grouped and deterministic."""

from __future__ import annotations

import logging

import numpy as np

from fuse.config import LabelConfig
from fuse.labels.base import LabelSet

log = logging.getLogger(__name__)


def assign_splits(labels: LabelSet, cfg: LabelConfig) -> dict[str, str]:
    """``{video: train | val | test}``.

    Splits from the label source are kept unless ``make_splits`` or ``folds`` ask for new
    ones; then the source's train and val videos are re-split and its test videos stay test.
    Videos without a split are split by group (``group_by``: the video itself or a subject
    column), so one subject never lands in two splits. With ``official_val_fold`` the source's
    val videos are the last of ``folds`` folds and its train videos are grouped into the
    others. The same config always gives the same assignment.
    """
    source = {v: lab.split for v, lab in labels.videos.items() if lab.split}
    if cfg.official_val_fold and cfg.folds > 1:
        return _official_val_folds(labels, source, cfg)
    remake = cfg.make_splits or cfg.folds > 1
    given = {v: s for v, s in source.items() if s == "test"} if remake else source
    todo = [v for v in sorted(labels.videos) if v not in given]
    made = make_splits(todo, {v: _group(labels, v, cfg) for v in todo}, cfg) if todo else {}
    if made:
        log.info("made splits for %d videos (%s)", len(made), _counts(made))
    return {**given, **made}


def mix_train_val(splits: dict[str, str]) -> dict[str, str]:
    """Train-Val-Mix (papers 002 / 004): the val videos join the training split; test stays."""
    mixed = {v: "train" if s == "val" else s for v, s in splits.items()}
    moved = sum(s == "val" for s in splits.values())
    log.info("train-val mix: %d val videos join training (%s)", moved, _counts(mixed))
    return mixed


def make_splits(videos: list[str], groups: dict[str, str], cfg: LabelConfig) -> dict[str, str]:
    """Shuffle the groups with ``split_seed``; test first, then val (a fraction or one fold)."""
    order = _shuffled(sorted(set(groups.values())), cfg.split_seed)
    n_test = int(round(cfg.test_fraction * len(order)))
    rest = order[n_test:]
    group_split = dict.fromkeys(order[:n_test], "test")
    if cfg.folds > 0:
        group_split |= {g: "val" if i % cfg.folds == cfg.fold else "train"
                        for i, g in enumerate(rest)}
    else:
        n_val = max(1, int(round(cfg.val_fraction * len(rest)))) if len(rest) > 1 else 0
        group_split |= {g: "val" if i < n_val else "train" for i, g in enumerate(rest)}
    return {v: group_split[groups[v]] for v in videos}


def _official_val_folds(labels: LabelSet, source: dict[str, str],
                        cfg: LabelConfig) -> dict[str, str]:
    """Fold ``folds - 1`` is the source's val split; the other videos (test excepted) are
    grouped into folds 0 … ``folds - 2``; fold ``fold`` is validation, the rest train."""
    pool = [v for v in sorted(labels.videos) if source.get(v) not in ("val", "test")]
    groups = {v: _group(labels, v, cfg) for v in pool}
    order = _shuffled(sorted(set(groups.values())), cfg.split_seed)
    fold_of = {g: i % (cfg.folds - 1) for i, g in enumerate(order)}
    out = {}
    for v in labels.videos:
        if source.get(v) == "test":
            out[v] = "test"
        else:
            fold = cfg.folds - 1 if source.get(v) == "val" else fold_of[groups[v]]
            out[v] = "val" if fold == cfg.fold else "train"
    return out


def _shuffled(names: list[str], seed: int) -> list[str]:
    return [names[i] for i in np.random.default_rng(seed).permutation(len(names))]


def _group(labels: LabelSet, video: str, cfg: LabelConfig) -> str:
    if cfg.group_by == "video":
        return video
    return labels.videos[video].group or video


def _counts(splits: dict[str, str]) -> str:
    values = list(splits.values())
    return ", ".join(f"{s} {values.count(s)}" for s in ("train", "val", "test") if s in values)
