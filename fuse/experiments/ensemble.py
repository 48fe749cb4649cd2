"""Ensembles of finished runs (papers 002 / 004): combine saved outputs, score, write submissions.

Every run saves ``predictions/<split>_outputs.npz`` (:mod:`fuse.outputs.raw`). An ensemble
aligns its members by video id and row, refuses members that differ (task, metric, targets,
label format, videos, rows, labels), combines their outputs with a registered combiner, scores
the result with the task's own metric beside each member, and writes the ensemble's outputs and
submission files in the labels' format. Combiners (registry :data:`COMBINERS`):

- ``mean``: weighted mean of values (regression: va, eri, generic);
- ``prob_mean``: weighted mean of probabilities (classification; ``au`` per AU, then the
  thresholds chosen on validation);
- ``vote``: weighted majority of the members' classes, a tie going to the tied class with the
  highest summed probability (classification, paper 002).

``auto`` picks ``mean``, ``vote`` or ``prob_mean`` by the label kind. Train-Val-Mix runs reuse
:func:`combine` for their snapshots.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from extract.registry import Registry
from fuse.errors import ConfigError, RunError
from fuse.labels.base import SPLITS
from fuse.outputs.raw import RawOutputs, outputs_path

log = logging.getLogger(__name__)

AUTO = {"regression": "mean", "classification": "vote", "multilabel": "prob_mean"}
TIE_NUDGE = 1e-6  # added to the vote share of the class that wins a tie


# -------------------------------------------------------------------------------- combiners
@dataclass(frozen=True)
class Combiner:
    """``fn(stack (M, R, P), weights (M,) summing to 1) -> (R, P)`` for some label kinds."""

    name: str
    kinds: tuple[str, ...]  # label kinds it applies to
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray]


COMBINERS: Registry[Combiner] = Registry("ensemble combiner")


def _combiner(name: str, kinds: tuple[str, ...]):
    def add(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]):
        COMBINERS.add(name, Combiner(name, kinds, fn))
        return fn

    return add


@_combiner("mean", ("regression",))
def _mean(stack: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean of the members' values."""
    return np.tensordot(weights, stack, axes=1)


@_combiner("prob_mean", ("classification", "multilabel"))
def _prob_mean(stack: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean of the members' (class or per-AU) probabilities."""
    return np.tensordot(weights, stack, axes=1)


@_combiner("vote", ("classification",))
def _vote(stack: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Vote shares (R, C) of the members' argmax classes; in a tie the tied class with the
    highest weighted summed probability gets ``TIE_NUDGE`` more, so argmax decides as the vote."""
    _, rows, classes = stack.shape
    shares = np.zeros((rows, classes))
    index = np.arange(rows)
    for w, member in zip(weights, stack, strict=True):
        np.add.at(shares, (index, member.argmax(axis=1)), w)
    prob = np.tensordot(weights, stack, axes=1)
    tied = np.isclose(shares, shares.max(axis=1, keepdims=True), rtol=0.0, atol=1e-9)
    ties = np.flatnonzero(tied.sum(axis=1) > 1)
    winner = np.where(tied[ties], prob[ties], -np.inf).argmax(axis=1)
    shares[ties, winner] += TIE_NUDGE
    return shares


def get_combiner(name: str, kind: str) -> Combiner:
    """The combiner ``name`` (``auto``: by label kind); refuses one that does not fit ``kind``."""
    resolved = AUTO.get(kind, "mean") if name == "auto" else name
    if resolved not in COMBINERS:
        raise ConfigError(f"combine: unknown {COMBINERS.kind} {name!r}; known: auto, "
                          f"{', '.join(COMBINERS.names())}")
    combiner = COMBINERS.get(resolved)
    if kind not in combiner.kinds:
        fits = [n for n in COMBINERS.names() if kind in COMBINERS.get(n).kinds]
        raise ConfigError(f"combine: {resolved!r} does not apply to {kind} outputs; use auto "
                          f"or one of {', '.join(fits)}")
    return combiner


def combine(outputs: Sequence[np.ndarray], kind: str, method: str = "auto",
            weights: Sequence[float] | None = None) -> np.ndarray:
    """Combine aligned members' outputs (each (R, P)) into one (R, P) float32 array."""
    if not outputs:
        raise ValueError("combine: no outputs given")
    w = np.ones(len(outputs)) if weights is None else np.asarray(weights, np.float64)
    if len(w) != len(outputs) or not np.all(w >= 0) or not w.sum() > 0:
        raise ValueError(f"combine: need {len(outputs)} weights >= 0 with a positive sum, got "
                         f"{list(w)}")
    stack = np.stack([np.asarray(o, np.float64) for o in outputs])
    return get_combiner(method, kind).fn(stack, w / w.sum()).astype(np.float32)


# ---------------------------------------------------------------------------------- members
@dataclass
class Member:
    """One run (or an earlier ensemble's folder) taking part."""

    root: Path
    name: str  # the folder as given (its key in scores and tables)
    task_cfg: dict[str, Any]  # the run's task section
    val_score: float | None  # its validation score (metrics.json), None without one
    outputs: dict[str, RawOutputs] = field(default_factory=dict)  # split → outputs


def load_member(root: Path, splits: Sequence[str]) -> Member:
    """A run folder's task config, validation score and the splits' saved outputs."""
    import yaml

    if not root.is_dir():
        raise RunError(f"{root} is not a run folder")
    config, metrics, ens = root / "config.yaml", root / "metrics.json", root / "ensemble.json"
    if config.is_file():
        task_cfg = (yaml.safe_load(config.read_text()) or {}).get("task", {})
        val = json.loads(metrics.read_text()).get("val", {}) if metrics.is_file() else {}
        score = val.get("score")
    elif ens.is_file():  # an earlier ensemble: its own task config and val score
        info = json.loads(ens.read_text())
        task_cfg = info.get("task_config", {})
        score = info.get("scores", {}).get("val", {}).get("ensemble", {}).get("score")
    else:
        raise RunError(f"{root} has neither config.yaml (a `fuse train` run) nor ensemble.json")
    score = float(score) if score is not None and math.isfinite(float(score)) else None
    outputs = {s: RawOutputs.load(outputs_path(root, s)) for s in splits}
    name = str(root) if str(root) != "ensemble" else f"./{root}"  # "ensemble" is the result
    return Member(root, name, task_cfg, score, outputs)


def check_members(members: list[Member], splits: Sequence[str]) -> list[str]:
    """Every way the members differ that stops them being combined row by row."""
    problems = []
    ref = members[0]
    for m in members[1:]:
        for key, get in (("name", lambda c: c.get("name")), ("metric", _metric)):
            a, b = get(ref.task_cfg), get(m.task_cfg)
            if a != b:
                problems.append(f"task.{key} differs: {ref.name} has {a!r}, {m.name} {b!r}")
        for split in splits:
            problems += _differences(ref, m, split)
    return problems


def _metric(task_cfg: dict[str, Any]) -> str:
    """The metric a task config scores with (``auto`` resolved where the task has a choice)."""
    from fuse.tasks import TASKS

    metric = task_cfg.get("metric", "auto")
    name = task_cfg.get("name")
    if metric == "auto" and name in TASKS:
        return getattr(TASKS.get(name), "default_metric", "auto")
    return metric


def _differences(ref: Member, m: Member, split: str) -> list[str]:
    a, b = ref.outputs[split], m.outputs[split]
    where = f"{split}: {m.name} vs {ref.name}"
    for attr in ("task", "label_format", "level", "kind", "targets"):
        if getattr(a, attr) != getattr(b, attr):
            return [f"{where}: {attr} {getattr(b, attr)!r} vs {getattr(a, attr)!r}"]
    if set(a.videos) != set(b.videos):
        only_a = sorted(set(a.videos) - set(b.videos))
        only_b = sorted(set(b.videos) - set(a.videos))
        return [f"{where}: the video sets differ ({len(only_a)} only in {ref.name}: "
                f"{_few(only_a)}; {len(only_b)} only in {m.name}: {_few(only_b)}); ensemble "
                "runs over the same videos (same labels, splits and feature coverage)"]
    order = _row_order(a, b)
    if order is None:
        bad = [v for v, n in zip(a.videos, a.lengths, strict=True)
               if n != b.lengths[b.videos.index(v)]]
        return [f"{where}: videos have different numbers of rows: {_few(bad)}"]
    problems = []
    if not np.array_equal(a.frames, b.frames[order]):
        problems.append(f"{where}: the rows' frame indices differ (different label grids)")
    if a.labelled != b.labelled or not (np.array_equal(a.valid, b.valid[order])
                                        and np.array_equal(a.y, b.y[order])):
        problems.append(f"{where}: the labels differ (trained on different label files?)")
    return problems


def _row_order(ref: RawOutputs, other: RawOutputs) -> np.ndarray | None:
    """Row indices of ``other`` in ``ref``'s video and row order; None if lengths differ."""
    position = {v: i for i, v in enumerate(other.videos)}
    parts = []
    for i, v in enumerate(ref.videos):
        j = position[v]
        if other.lengths[j] != ref.lengths[i]:
            return None
        parts.append(np.arange(other.offsets[j], other.offsets[j + 1]))
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _few(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" … and {len(items) - n} more" if len(items) > n else "")


def member_weights(members: list[Member], weighted: bool) -> np.ndarray:
    """Equal weights, or each member's validation score (negative ones count 0), summing to 1."""
    if not weighted:
        return np.full(len(members), 1.0 / len(members))
    missing = [m.name for m in members if m.val_score is None]
    if missing:
        raise ConfigError([f"--weighted: {name} has no validation score in metrics.json (a "
                           "labels.train_val_mix run has none); drop --weighted or the run"
                           for name in missing])
    scores = np.array([m.val_score for m in members], np.float64)
    if (scores < 0).any():
        log.warning("members with a negative validation score get weight 0: %s",
                    [m.name for m, s in zip(members, scores, strict=True) if s < 0])
    scores = scores.clip(min=0.0)
    if not scores.sum() > 0:
        raise ConfigError(f"--weighted: no member has a positive validation score "
                          f"({', '.join(f'{m.name}: {m.val_score:.4f}' for m in members)})")
    return scores / scores.sum()


# ---------------------------------------------------------------------------------- ensemble
@dataclass
class EnsembleResult:
    """What :func:`ensemble` returns (and writes as ``ensemble.json``)."""

    out: Path  # the ensemble folder
    runs: list[Path]  # the members, in the given order
    names: list[str]  # their keys in ``scores`` (the folders as given)
    splits: list[str]  # the splits combined
    combine: str  # the combiner used (auto resolved)
    weighted: bool  # members weighted by their validation score
    weights: list[float]  # per member, summing to 1
    scores: dict[str, dict[str, dict[str, float]]]  # split → "ensemble" | run → metrics
    decision: dict = field(default_factory=dict)  # the ensemble's decision params (au)
    files: list[Path] = field(default_factory=list)  # submission and output files written

    def score(self, split: str = "val") -> float | None:
        """The ensemble's score on ``split``; None when the split has no labels."""
        return self.scores.get(split, {}).get("ensemble", {}).get("score")

    def best_member(self, split: str = "val") -> tuple[str, float] | None:
        members = [(n, s["score"]) for n, s in self.scores.get(split, {}).items()
                   if n != "ensemble" and s.get("score") is not None and not
                   math.isnan(s["score"])]
        return max(members, key=lambda item: item[1]) if members else None


def ensemble(run_dirs: Sequence[str | Path], out: str | Path, split: str | Sequence[str] = "val",
             combine: str = "auto", weighted: bool = False) -> EnsembleResult:
    """Combine the runs' saved outputs on ``split`` (a name, ``"val,test"`` or a list).

    Members are aligned by video id and row; they must share task, metric, targets, label
    format, videos, rows and labels (every difference is reported at once). Writes
    ``predictions/<split>.csv`` (+ per-video files for Aff-Wild2), ``<split>_outputs.npz``,
    ``ensemble.json`` and ``ensemble.csv`` into ``out``.
    """
    from fuse.config import build_config
    from fuse.tasks import build_task

    out = Path(out)
    splits, members, combiner, weights = _prepare(run_dirs, out, split, combine, weighted)
    cfg, _ = build_config({"task": members[0].task_cfg})
    task = build_task(cfg.task, members[0].outputs[splits[0]].targets)
    decision, decision_from = _decision(task, members, combiner, weights, splits)
    log.info("ensemble of %d runs (%s%s) on %s", len(members), combiner.name,
             ", weighted" if weighted else "", ", ".join(splits))

    scores: dict[str, dict[str, dict[str, float]]] = {}
    files: list[Path] = []
    for s in splits:
        base, outputs = _aligned(members, s)
        combined = base.with_outputs(combiner.fn(np.stack(outputs).astype(np.float64), weights),
                                     decision)
        files.append(combined.save(outputs_path(out, s)))
        files += _write_submission(task, combined, out)
        if base.labelled:
            scores[s] = {m.name: _score(task, base.with_outputs(o, m.outputs[s].decision))
                         for m, o in zip(members, outputs, strict=True)}
            scores[s]["ensemble"] = _score(task, combined)
    result = EnsembleResult(out, [m.root for m in members], [m.name for m in members], splits,
                            combiner.name, weighted, [float(w) for w in weights], scores,
                            decision, files)
    _write_report(result, members, decision_from)
    return result


def _prepare(run_dirs: Sequence[str | Path], out: Path, split: str | Sequence[str],
             combine: str, weighted: bool
             ) -> tuple[list[str], list[Member], Combiner, np.ndarray]:
    """Load and check the members, the combiner and the weights; every problem at once."""
    problems: list[str] = []
    roots = [Path(r) for r in run_dirs]
    if len(roots) < 2:
        problems.append(f"an ensemble needs at least 2 runs, got {len(roots)}")
    if dup := sorted({str(r) for r in roots if roots.count(r) > 1}):
        problems.append(f"runs given more than once: {', '.join(dup)}")
    if out.resolve() in {r.resolve() for r in roots}:
        problems.append(f"--out {out} is one of the runs; give the ensemble its own folder")
    splits: list[str] = []
    try:
        splits = _parse_splits(split)
    except ConfigError as exc:
        problems += exc.problems
    members = []
    for root in roots:
        try:
            members.append(load_member(root, splits))
        except RunError as exc:
            problems.append(str(exc))
    combiner, weights = None, np.ones(len(members))
    if members and splits and len(members) == len(roots):
        problems += check_members(members, splits)
        try:
            combiner = get_combiner(combine, members[0].outputs[splits[0]].kind)
        except ConfigError as exc:
            problems += exc.problems
        try:
            weights = member_weights(members, weighted)
        except ConfigError as exc:
            problems += exc.problems
    if problems or combiner is None:
        raise ConfigError(problems or ["the ensemble could not be prepared"])
    return splits, members, combiner, weights


def _parse_splits(split: str | Sequence[str]) -> list[str]:
    names = ([p.strip() for p in split.split(",") if p.strip()] if isinstance(split, str)
             else list(split))
    bad = [s for s in names if s not in SPLITS]
    if not names or bad:
        raise ConfigError(f"split: {', '.join(bad) or repr(split)} is not among "
                          f"{', '.join(SPLITS)} (e.g. --split val,test)")
    return list(dict.fromkeys(names))


def _aligned(members: list[Member], split: str) -> tuple[RawOutputs, list[np.ndarray]]:
    """The first member's rows, and every member's outputs in that row order."""
    base = members[0].outputs[split]
    return base, [m.outputs[split].outputs[_row_order(base, m.outputs[split])]
                  for m in members]


def _score(task, raw: RawOutputs) -> dict[str, float]:
    """The task's metrics, as runs compute them (``task.score`` over all labelled rows)."""
    return task.score(raw.outputs, raw.y, raw.valid, dict(raw.decision or {}))


def _decision(task, members: list[Member], combiner: Combiner, weights: np.ndarray,
              splits: list[str]) -> tuple[dict, str]:
    """The ensemble's decision params: AU thresholds tuned on the combined validation outputs
    (when every member tuned its own and saved val outputs), else the members' mean."""
    if task.label_kind != "multilabel":
        return {}, ""
    tuned = [m.outputs[splits[0]].decision.get("thresholds") for m in members]
    if any(t is None for t in tuned):
        return {}, "0.5 (not every member tuned its thresholds)"
    try:
        vals = [m.outputs["val"] if "val" in m.outputs else
                RawOutputs.load(outputs_path(m.root, "val")) for m in members]
    except RunError:
        vals = []
    if vals and all(v.labelled for v in vals) and not check_members(
            [Member(m.root, m.name, m.task_cfg, None, {"val": v})
             for m, v in zip(members, vals, strict=True)], ["val"]):
        stack = [v.outputs[_row_order(vals[0], v)] for v in vals]
        prob = combiner.fn(np.stack(stack).astype(np.float64), weights)
        return task.tune_decision(prob, vals[0].y, vals[0].valid), "tuned on the combined val"
    mean = np.average(np.array(tuned, np.float64), axis=0, weights=weights)
    return {"thresholds": [float(t) for t in mean]}, "weighted mean of the members' thresholds"


def _write_submission(task, raw: RawOutputs, out: Path) -> list[Path]:
    """``predictions/<split>.csv`` (+ ``<split>/`` per-video files) via the label adapter."""
    from fuse.labels.base import get_adapter
    from fuse.outputs.results import write_split

    preds = raw.predictions(task.decide(raw.outputs, raw.decision or None))
    return write_split(get_adapter(raw.label_format), preds, out / "predictions", raw.split)


def _write_report(result: EnsembleResult, members: list[Member], decision_from: str) -> None:
    """``ensemble.json`` (everything) and ``ensemble.csv`` (one row per split and member)."""
    import pandas as pd

    names = [*result.names, "ensemble"]
    weights = dict(zip(names, [*result.weights, None], strict=True))
    info = {"runs": names[:-1], "splits": result.splits, "combine": result.combine,
            "weighted": result.weighted,
            "weights": dict(zip(names[:-1], result.weights, strict=True)),
            "task_config": members[0].task_cfg, "decision": result.decision,
            "decision_from": decision_from, "scores": result.scores,
            "gain_over_best_member": {s: result.score(s) - best[1] for s in result.scores
                                      if (best := result.best_member(s))},
            "files": [str(f) for f in result.files]}
    result.out.mkdir(parents=True, exist_ok=True)
    (result.out / "ensemble.json").write_text(json.dumps(info, indent=2, default=float) + "\n")
    rows = [{"split": s, "run": n, "weight": weights[n], **result.scores.get(s, {}).get(n, {})}
            for s in result.splits for n in names]
    pd.DataFrame(rows).to_csv(result.out / "ensemble.csv", index=False, float_format="%.6f")
    result.files += [result.out / "ensemble.json", result.out / "ensemble.csv"]


def ensemble_table(result: EnsembleResult):
    """A rich table: each member's score beside the ensemble's, per labelled split."""
    from rich.markup import escape
    from rich.table import Table

    labelled = [s for s in result.splits if s in result.scores]
    how = result.combine + (", weighted" if result.weighted else "")
    table = Table(title=f"ensemble of {len(result.runs)} runs ({how}) → {result.out}")
    table.add_column("run")
    table.add_column("weight", justify="right")
    for s in labelled:
        table.add_column(f"{s} score", justify="right")
    for name, w in zip(result.names, result.weights, strict=True):
        table.add_row(escape(name), f"{w:.3f}",
                      *(_fmt(result.scores[s][name].get("score")) for s in labelled))
    table.add_row("[bold]ensemble[/bold]", "",
                  *(f"[bold]{_fmt(result.score(s))}[/bold]" for s in labelled))
    if unlabelled := [s for s in result.splits if s not in result.scores]:
        table.caption = f"no labels on {', '.join(unlabelled)}: predictions written, not scored"
    return table


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
