"""Train / val / test assignment: the splits the labels give, or made grouped and deterministic.

Grouping has one rule (:func:`group_of`): the ``labels.group_by`` column when set (``video``
groups by video on purpose); else the label format's own group (``VideoLabels.group``: the
Aff-Wild2 adapters put ``X_left`` / ``X_right`` with ``X``); else the video itself. A group never
spans two splits of a made split.

Cross-validation (``labels.folds``: k or ``loso``) has two modes, ``labels.fold_holdout``:

- ``test`` (default, nested): the held-out fold is the **test** split; validation (epoch
  selection, early stopping, post-processing) is drawn from the other groups
  (``val_fraction`` of them, at least one; stratified by class where the labels are per-video
  classes), so no selection ever sees the held-out fold. With ``train_val_mix`` no validation
  is drawn: every other group trains and a fixed epoch window stands in for selection.
  Every labelled video takes part; splits the labels give are ignored.
- ``val`` (papers 002 / 004): the held-out fold is the validation split used for selection,
  the labels' test videos stay test. Its fold scores are selection scores, not estimates.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fuse.config import LabelConfig
from fuse.errors import LabelError
from fuse.labels.base import LabelSet

log = logging.getLogger(__name__)
LOSO = "loso"
HOLDOUTS = ("test", "val")
STRATIFY_TRIES = 256  # random draws of the validation groups compared for class balance


# ------------------------------------------------------------------------------ grouping
def group_column(cfg: LabelConfig) -> str | None:
    """The label column that names the groups, or None (``group_by`` empty or ``video``)."""
    return cfg.group_by if cfg.group_by not in ("", "video") else None


def group_of(labels: LabelSet, video: str, cfg: LabelConfig) -> str:
    """The group a video is split with (see the module docstring for the rule)."""
    if cfg.group_by == "video":
        return video
    group = labels.videos[video].group
    if group_column(cfg) and group is None and labels.videos[video].valid.any():
        raise LabelError(f"labels.group_by={cfg.group_by!r}: video {video!r} has no value in "
                         f"that column of {cfg.path}")
    return group or video


def grouping(labels: LabelSet, cfg: LabelConfig) -> str:
    """In words, what the splits are grouped by (every run summary says it)."""
    if column := group_column(cfg):
        return f"column {column!r}"
    if cfg.group_by != "video" and any(v.group for v in labels.videos.values()):
        return f"the {labels.format} label format's groups"
    return "video"


def groups_of(labels: LabelSet, videos: list[str], cfg: LabelConfig) -> dict[str, str]:
    return {v: group_of(labels, v, cfg) for v in videos}


# ----------------------------------------------------------------------------------- folds
def is_loso(cfg: LabelConfig) -> bool:
    return isinstance(cfg.folds, str) and cfg.folds.strip().lower() == LOSO


def uses_folds(cfg: LabelConfig) -> bool:
    """Cross-validation asked for (k >= 2 folds, or leave one group out)."""
    return is_loso(cfg) or (isinstance(cfg.folds, int) and cfg.folds > 1)


def nested(cfg: LabelConfig) -> bool:
    """Folds whose held-out part is the test split (validation drawn from the other groups)."""
    return uses_folds(cfg) and cfg.fold_holdout == "test"


def check(cfg: LabelConfig) -> list[str]:
    """Config problems of folds, fold, fold_holdout and official_val_fold (no labels read)."""
    p = []
    folds = cfg.folds
    if isinstance(folds, str) and not is_loso(cfg):
        p.append(f"labels.folds: use a number of folds (>= 2), loso, or 0; got {folds!r}")
    elif isinstance(folds, int) and (folds < 0 or folds == 1):
        p.append(f"labels.folds: use 0 (no folds), a number >= 2 or loso; got {folds}")
    elif isinstance(folds, int) and folds > 1 and not 0 <= cfg.fold < folds:
        p.append(f"labels.fold: must be in [0, folds={folds}), got {cfg.fold}")
    elif is_loso(cfg) and cfg.fold < 0:
        p.append(f"labels.fold: must be >= 0 (the held-out group's index), got {cfg.fold}")
    if cfg.fold_holdout not in HOLDOUTS:
        p.append(f"labels.fold_holdout: {cfg.fold_holdout!r} is not one of "
                 f"{', '.join(HOLDOUTS)}")
    if cfg.official_val_fold:
        if not isinstance(folds, int) or folds < 2:
            p.append(f"labels.official_val_fold: needs labels.folds >= 2, got {folds}")
        elif cfg.fold_holdout != "val":
            p.append("labels.official_val_fold: the labels' val split becomes a validation "
                     "fold (papers 002 / 004); set labels.fold_holdout=val")
    if is_loso(cfg) and cfg.fold_holdout == "val":
        p.append("labels.folds=loso holds one group out as the test split; "
                 "labels.fold_holdout=val is for k folds (papers 002 / 004)")
    return p


def fold_names(labels: LabelSet, cfg: LabelConfig) -> list[str]:
    """One name per fold: the group names (loso) or "0" … "k-1"."""
    if is_loso(cfg):
        return sorted(set(groups_of(labels, _pool(labels), cfg).values()))
    return [str(i) for i in range(int(cfg.folds))] if uses_folds(cfg) else []


def _pool(labels: LabelSet) -> list[str]:
    """Videos that take part in nested folds: every video with at least one valid label."""
    return [v for v in sorted(labels.videos) if labels.videos[v].valid.any()]


# -------------------------------------------------------------------------------- splits
def assign_splits(labels: LabelSet, cfg: LabelConfig, *,
                  train_val_mix: bool | None = None) -> dict[str, str]:
    """``{video: train | val | test}``.

    Without folds, splits from the label source are kept unless ``make_splits`` asks for new
    ones; videos without a split are split by group (``val_fraction`` / ``test_fraction``).
    With folds see the module docstring. The same config always gives the same assignment.
    """
    mix = cfg.train_val_mix if train_val_mix is None else train_val_mix
    source = {v: lab.split for v, lab in labels.videos.items() if lab.split}
    if nested(cfg):
        return _nested_folds(labels, source, cfg, mix)
    if cfg.official_val_fold and uses_folds(cfg):
        return _official_val_folds(labels, source, cfg)
    remake = cfg.make_splits or uses_folds(cfg)
    given = {v: s for v, s in source.items() if s == "test"} if remake else source
    todo = [v for v in sorted(labels.videos) if v not in given]
    made = make_splits(todo, groups_of(labels, todo, cfg), cfg) if todo else {}
    if made:
        log.info("made splits for %d videos grouped by %s (%s)", len(made),
                 grouping(labels, cfg), _counts(made))
    out = {**given, **made}
    refuse_test_leaks(labels, out, set(made), cfg)
    return out


def mix_train_val(splits: dict[str, str]) -> dict[str, str]:
    """Train-Val-Mix (papers 002 / 004): the val videos join the training split; test stays."""
    mixed = {v: "train" if s == "val" else s for v, s in splits.items()}
    moved = sum(s == "val" for s in splits.values())
    log.info("train-val mix: %d val videos join training (%s)", moved, _counts(mixed))
    return mixed


def make_splits(videos: list[str], groups: dict[str, str], cfg: LabelConfig) -> dict[str, str]:
    """Shuffle the groups with ``split_seed``; test first, then val (a fraction or one fold).

    With folds (``fold_holdout=val``) fold ``fold`` of the groups is the validation split."""
    order = _shuffled(sorted(set(groups.values())), cfg.split_seed)
    n_test = int(round(cfg.test_fraction * len(order)))
    rest = order[n_test:]
    group_split = dict.fromkeys(order[:n_test], "test")
    if uses_folds(cfg):
        k = int(cfg.folds)
        group_split |= {g: "val" if i % k == cfg.fold else "train" for i, g in enumerate(rest)}
    else:
        n_val = max(1, int(round(cfg.val_fraction * len(rest)))) if len(rest) > 1 else 0
        group_split |= {g: "val" if i < n_val else "train" for i, g in enumerate(rest)}
    return {v: group_split[groups[v]] for v in videos}


def fold_groups(labels: LabelSet, cfg: LabelConfig) -> tuple[list[str], list[list[str]]]:
    """Nested folds: every group of the pool, and the groups of each fold (test groups)."""
    groups = groups_of(labels, _pool(labels), cfg)
    names = sorted(set(groups.values()))
    if is_loso(cfg):
        return names, [[g] for g in names]
    k = int(cfg.folds)
    if len(names) < k:
        raise LabelError(f"labels.folds={k}: only {len(names)} groups (grouped by "
                         f"{grouping(labels, cfg)}); use fewer folds or loso")
    order = _shuffled(names, cfg.split_seed)  # group ids only: never the labels
    return names, [sorted(order[i::k]) for i in range(k)]


def _nested_folds(labels: LabelSet, source: dict[str, str], cfg: LabelConfig,
                  mix: bool) -> dict[str, str]:
    """Held-out fold → test; validation from the other groups; the rest train."""
    pool = _pool(labels)
    groups = groups_of(labels, pool, cfg)
    _, folds = fold_groups(labels, cfg)
    if cfg.fold >= len(folds):
        raise LabelError(f"labels.fold={cfg.fold}: there are only {len(folds)} folds "
                         f"(grouped by {grouping(labels, cfg)})")
    test = set(folds[cfg.fold])
    rest = sorted(set(groups.values()) - test)
    val = set() if mix else set(_draw_val(labels, pool, groups, rest, cfg))
    split = {g: "test" if g in test else "val" if g in val else "train" for g in groups.values()}
    out = {v: split[groups[v]] for v in pool}
    if ignored := sorted(v for v in source if v in out):
        log.info("labels.folds: the splits the labels give are ignored for %d videos; every "
                 "labelled video takes part in the folds", len(ignored))
    for v in labels.videos:  # unlabelled videos keep their source split (predicted only)
        if v not in out:
            out[v] = source.get(v, "test")
    log.info("fold %d of %s (grouped by %s): test %s, val %s (%s)", cfg.fold,
             cfg.folds, grouping(labels, cfg), _names(sorted(test)), _names(sorted(val)),
             _counts(out))
    return out


def _draw_val(labels: LabelSet, pool: list[str], groups: dict[str, str], rest: list[str],
              cfg: LabelConfig) -> list[str]:
    """``val_fraction`` of the non-test groups (at least one when two or more remain).

    Per-video class labels: of several seeded draws, the one whose class shares are closest
    to those of all non-test videos (labels of the held-out fold are never looked at)."""
    if len(rest) < 2:
        return []
    n_val = min(len(rest) - 1, max(1, int(round(cfg.val_fraction * len(rest)))))
    rng = np.random.default_rng([cfg.split_seed, cfg.fold])
    draws = [sorted(rng.choice(rest, n_val, replace=False).tolist())
             for _ in range(STRATIFY_TRIES if _stratifiable(labels) else 1)]
    if len(draws) == 1:
        return draws[0]
    n_classes = len(labels.targets)
    counts = {g: np.zeros(n_classes) for g in rest}
    for v in pool:
        if groups[v] in counts:
            lab = labels.videos[v]
            counts[groups[v]][int(lab.values[0, 0])] += 1
    overall = sum(counts.values())
    overall = overall / max(overall.sum(), 1)

    def distance(draw: list[str]) -> float:
        part = sum(counts[g] for g in draw)
        return float(np.abs(part / max(part.sum(), 1) - overall).sum())

    return min(draws, key=distance)  # the first of equally balanced draws


def _stratifiable(labels: LabelSet) -> bool:
    return labels.kind == "classification" and labels.level == "video"


def _official_val_folds(labels: LabelSet, source: dict[str, str],
                        cfg: LabelConfig) -> dict[str, str]:
    """Fold ``folds - 1`` is the source's val split; the other videos (test excepted) are
    grouped into folds 0 … ``folds - 2``; fold ``fold`` is validation, the rest train."""
    k = int(cfg.folds)
    pool = [v for v in sorted(labels.videos) if source.get(v) not in ("val", "test")]
    groups = groups_of(labels, pool, cfg)
    order = _shuffled(sorted(set(groups.values())), cfg.split_seed)
    fold_of = {g: i % (k - 1) for i, g in enumerate(order)}
    out = {}
    for v in labels.videos:
        if source.get(v) == "test":
            out[v] = "test"
        else:
            fold = k - 1 if source.get(v) == "val" else fold_of[groups[v]]
            out[v] = "val" if fold == cfg.fold else "train"
    refuse_test_leaks(labels, out, set(pool), cfg)
    return out


def refuse_test_leaks(labels: LabelSet, splits: dict[str, str], made: set[str],
                      cfg: LabelConfig) -> None:
    """A made split never puts a group (speaker) in test and in train / val: refused when any
    of the group's labelled videos was placed by this tool (the labels gave the others).
    Splits the labels give entirely are the dataset's own; :func:`split_report` warns."""
    per: dict[str, dict[str, list[str]]] = {}
    for v, s in splits.items():
        if v in labels.videos and labels.videos[v].valid.any():
            per.setdefault(group_of(labels, v, cfg), {}).setdefault(s, []).append(v)
    leaks = sorted(g for g, by in per.items() if "test" in by and ("train" in by or "val" in by)
                   and any(v in made for vs in by.values() for v in vs))
    if not leaks:
        return
    g = leaks[0]
    by = per[g]
    raise LabelError(
        f"made splits: {len(leaks)} groups (grouped by {grouping(labels, cfg)}) would be in the "
        f"test split and in training, e.g. {g!r}: test {_names(sorted(by['test']), 3)}; "
        f"{'train' if 'train' in by else 'val'} "
        f"{_names(sorted(by.get('train') or by['val']), 3)} ({_names(leaks)}); the labels "
        "give some of its videos the test split and leave others to be split: give every "
        "video of a group the same split in the labels (or partition), or none")


def split_report(labels: LabelSet, splits: dict[str, str], cfg: LabelConfig) -> dict:
    """What a run's splits were: grouped by what, folds, the groups per split (of the
    labelled videos: unlabelled ones are only predicted), and groups that appear in the test
    split and in train / val (a leak when the labels gave the splits; refused when made)."""
    per: dict[str, set[str]] = {"train": set(), "val": set(), "test": set()}
    for v, s in splits.items():
        if v in labels.videos and s in per and labels.videos[v].valid.any():
            per[s].add(group_of(labels, v, cfg))
    shared = sorted(per["test"] & (per["train"] | per["val"]))
    report = {"grouped_by": grouping(labels, cfg),
              "groups": {s: len(g) for s, g in per.items()},
              "test_groups": _names(sorted(per["test"])),
              "val_groups": _names(sorted(per["val"]))}
    if uses_folds(cfg):
        report |= {"folds": cfg.folds, "fold": cfg.fold, "fold_holdout": cfg.fold_holdout}
    if shared:
        report["groups_in_test_and_training"] = _names(shared)
        log.warning("%d groups (grouped by %s) have videos in the test split and in train / "
                    "val: %s", len(shared), grouping(labels, cfg), _names(shared))
    return report


def read_groups(path: str | Path, column: str = "") -> dict[str, str]:
    """``{video: group}`` from a CSV with a video id column and ``column`` (or ``group``)."""
    import pandas as pd

    from fuse.labels.partition import ID_COLUMNS, clean_id

    table = pd.read_csv(path, dtype=str)
    id_col = next((c for c in ID_COLUMNS if c in table.columns), None)
    names = [c for c in (column if column not in ("", "video") else "", "group") if c]
    group_col = next((c for c in names if c in table.columns), None)
    if id_col is None or group_col is None:
        raise LabelError(f"groups {path}: needs a video id column (one of {ID_COLUMNS}) and a "
                         f"group column ({' or '.join(names)}); it has {list(table.columns)}")
    if missing := table.index[table[group_col].isna()].tolist():
        raise LabelError(f"groups {path} line {missing[0] + 2}, column {group_col!r}: empty "
                         "group")
    return {clean_id(v): str(g) for v, g in zip(table[id_col], table[group_col], strict=True)}


def _shuffled(names: list[str], seed: int) -> list[str]:
    return [names[i] for i in np.random.default_rng(seed).permutation(len(names))]


def _names(items: list[str], limit: int = 10) -> str:
    head = ", ".join(items[:limit])
    return head + (f" … and {len(items) - limit} more" if len(items) > limit else "")


def _counts(splits: dict[str, str]) -> str:
    values = list(splits.values())
    return ", ".join(f"{s} {values.count(s)}" for s in ("train", "val", "test") if s in values)
