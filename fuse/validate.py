"""Check a whole run before any heavy work and report every problem at once.

Two passes: the config alone (names against the registries, ranges, combinations), then the
data it points at (stores, features, labels, splits, feature coverage, frame counts). Only
metadata is read. The data pass produces the :class:`RunPlan` that training then follows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fuse.config import FuseConfig
from fuse.data.align import ALIGNMENTS
from fuse.data.dataset import FrameTiming, VideoRequest
from fuse.data.features import FeatureSources, FeatureSpec, feature_specs
from fuse.data.fill import FILL_POLICIES
from fuse.data.grid import GridSpec
from fuse.data.videomap import VideoMap
from fuse.errors import ConfigError, FuseError
from fuse.labels.base import LABEL_FORMATS, SPLITS, LabelSet, get_adapter
from fuse.labels.splits import assign_splits, grouping
from fuse.labels.splits import check as check_folds

log = logging.getLogger(__name__)
MAX_LISTED = 10  # videos named per problem before "… and N more"


@dataclass
class RunPlan:
    """What a checked config resolves to: the labels, splits and videos to load."""

    cfg: FuseConfig
    labels: LabelSet
    splits: dict[str, str]  # video → train | val | test
    specs: list[FeatureSpec]
    sources: FeatureSources
    requests: list[VideoRequest]  # labelled videos that have every feature, sorted by id
    dropped: dict[str, list[str]] = field(default_factory=dict)  # video → features it lacks
    grid: GridSpec | None = None
    timing: FrameTiming | None = None

    @property
    def level(self) -> str:
        return self.labels.level

    def summary(self) -> dict[str, object]:
        counts = {s: sum(1 for r in self.requests if r.split == s) for s in SPLITS}
        return {"videos": counts, "dropped": len(self.dropped),
                "features": {s.name: self.sources.dim(s.name) for s in self.specs},
                "labels": f"{self.labels.format} ({self.labels.level}, {self.labels.kind}, "
                          f"{_describe_targets(self.labels)})",
                "grouped_by": grouping(self.labels, self.cfg.labels)}


@dataclass
class Validation:
    problems: list[str]
    plan: RunPlan | None

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_if_failed(self) -> RunPlan:
        if self.problems or self.plan is None:
            raise ConfigError(self.problems or ["the run could not be planned"])
        return self.plan


def validate(cfg: FuseConfig, *, training: bool = True) -> Validation:
    """Every problem with ``cfg`` and its data; the plan when there are none."""
    from fuse.training.options import resolve_auto

    cfg = resolve_auto(cfg)  # data.align=auto → mean (per-video labels) or nearest
    problems = check_config(cfg, training=training)
    plan = None
    try:
        plan = plan_run(cfg, problems)
    except FuseError as exc:  # a problem that stops planning; still report all found so far
        problems += getattr(exc, "problems", None) or [str(exc)]
    return Validation(problems, plan if not problems else None)


# ------------------------------------------------------------------------- the config alone
def check_config(cfg: FuseConfig, *, training: bool = True) -> list[str]:
    from fuse.model.encoders import ENCODERS
    from fuse.model.heads import POOLS
    from fuse.tasks import TASKS
    from fuse.training.optim import OPTIMIZERS, SCHEDULES

    p: list[str] = []
    d, lab, m, t, post = cfg.data, cfg.labels, cfg.model, cfg.train, cfg.post
    _known(p, "task.name", cfg.task.name, TASKS)
    if cfg.task.name in TASKS:
        p += TASKS.get(cfg.task.name).check(cfg.task)
    _known(p, "model.encoder.name", m.encoder.name, ENCODERS)
    if m.encoder.name in ENCODERS:
        p += ENCODERS.get(m.encoder.name).check(m.encoder)
    _known(p, "model.pool", m.pool, POOLS)
    _known(p, "labels.format", lab.format, LABEL_FORMATS, hint="--label-format")
    _known(p, "data.fill", d.fill, FILL_POLICIES)
    _known(p, "data.align", d.align, ALIGNMENTS)
    _known(p, "train.optimizer", t.optimizer, OPTIMIZERS)
    _known(p, "train.scheduler", t.scheduler, SCHEDULES)

    if not d.stores:
        p.append("data.stores: no feature store given (--store PATH[,PATH])")
    if not d.visual and not d.audio:
        p.append("data.visual / data.audio: no features given (--visual A,B --audio C)")
    specs = feature_specs(d.visual, d.audio, d.align)
    names = [s.name for s in specs]
    if dup := sorted({n for n in names if names.count(n) > 1}):
        p.append(f"data: features listed twice: {', '.join(dup)}")
    for s in specs:
        if s.align not in ALIGNMENTS:
            p.append(f"data.{s.modality}: {s.name!r} asks for alignment {s.align!r}; known: "
                     f"{', '.join(ALIGNMENTS.names())}")
    if lab.time_reference and lab.time_reference not in names:
        p.append(f"labels.time_reference: {lab.time_reference!r} is not among the run's "
                 f"features ({', '.join(names) or 'none'})")
    try:
        GridSpec.parse(d.grid, "frame")
    except ValueError as exc:
        p.append(f"data.grid: {exc}")
    _at_least(p, "data.segment_len", d.segment_len, 1)
    if m.encoder.pos_encoding == "learned" and d.segment_len > m.encoder.max_len:
        p.append(f"model.encoder.max_len: {m.encoder.max_len} learned positions cannot cover "
                 f"segments of data.segment_len={d.segment_len}")
    if not 0 <= d.segment_stride <= d.segment_len:
        p.append(f"data.segment_stride: must be in [0, segment_len={d.segment_len}], got "
                 f"{d.segment_stride}")

    _fraction(p, "labels.val_fraction", lab.val_fraction)
    _fraction(p, "labels.test_fraction", lab.test_fraction)
    p += check_folds(lab)
    if lab.fps < 0:
        p.append(f"labels.fps: must be >= 0, got {lab.fps}")
    if not d.align_tolerance > 0:
        p.append(f"data.align_tolerance: must be > 0 (in the feature's row steps), got "
                 f"{d.align_tolerance}")

    _at_least(p, "model.fusion_dim", m.fusion_dim, 1)
    _at_least(p, "model.proj_dim", m.proj_dim, 0)
    _fraction(p, "model.dropout", m.dropout)
    _fraction(p, "model.encoder.dropout", m.encoder.dropout)
    if any(w < 1 for w in m.head):
        p.append(f"model.head: widths must be >= 1, got {m.head}")

    _at_least(p, "train.epochs", t.epochs, 1)
    _at_least(p, "train.batch_size", t.batch_size, 1)
    if not t.lr > 0:
        p.append(f"train.lr: must be > 0, got {t.lr}")
    if t.weight_decay < 0 or t.warmup_epochs < 0 or t.grad_clip < 0 or t.patience < 0:
        p.append("train: weight_decay, warmup_epochs, grad_clip and patience must be >= 0")
    _fraction(p, "train.ema_decay", t.ema_decay)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", t.device):
        p.append(f"train.device: {t.device!r} is not auto, cpu, cuda or cuda:N")
    elif t.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            p.append(f"train.device: {t.device!r} asked for but CUDA is not available")

    if post.clip not in ("auto", "none") and not re.fullmatch(
            r"\s*-?[\d.]+(e-?\d+)?\s*,\s*-?[\d.]+(e-?\d+)?\s*", post.clip):
        p.append(f"post.clip: {post.clip!r} is not auto, none or 'LO,HI'")
    if not post.windows or any(w < 1 for w in post.windows):
        p.append(f"post.windows: need windows >= 1 (1 = no smoothing), got {post.windows}")
    if bad := [s for s in cfg.output.predict_splits if s not in SPLITS]:
        p.append(f"output.predict_splits: {bad} are not among {', '.join(SPLITS)}")
    if training and not cfg.output.dir:
        p.append("output.dir: no run folder given (--out DIR)")
    return p


# -------------------------------------------------------------------------------- the data
def plan_run(cfg: FuseConfig, problems: list[str]) -> RunPlan | None:
    """Open the stores, read the labels, split, and check coverage; append problems."""
    from extract.errors import StoreError
    from extract.store import open_store

    d, lab = cfg.data, cfg.labels
    specs = feature_specs(d.visual, d.audio, d.align)
    sources = labels = None
    stores = []
    for path in d.stores:
        try:
            stores.append(open_store(path))
        except StoreError as exc:
            problems.append(f"data.stores: {exc}")
    try:
        video_map = load_video_map(lab)
    except FuseError as exc:
        problems.append(str(exc))
        video_map = None
    if stores and specs:
        try:  # with the stores that opened, so missing features are reported too
            sources = FeatureSources(stores, [s.name for s in specs], video_map)
        except FuseError as exc:
            problems.append(f"data: {exc}")
        if len(stores) < len(d.stores) or video_map is None:
            sources = None
    if sources is not None:
        for s in specs:
            actual = sources.home[s.name].feature_info(s.name).modality
            if actual != s.modality:
                problems.append(f"data.{s.modality}: {s.name!r} is a {actual} feature in "
                                f"{sources.home[s.name].path}")
    if lab.format in LABEL_FORMATS:
        adapter = get_adapter(lab.format)
        found = adapter.check(lab)
        problems += found
        if not found:
            try:
                labels = adapter.load(lab)
            except (FuseError, OSError, ValueError) as exc:
                problems.append(f"labels: {exc}")
    if labels is not None:
        problems += _check_task_fits(cfg, labels)
    if labels is None or sources is None:
        return None

    if lab.official_val_fold and not any(v.split == "val" for v in labels.videos.values()):
        problems.append("labels.official_val_fold: the labels give no val split to use as a "
                        "fold")
    splits = assign_splits(labels, lab)
    requests, dropped = [], {}
    for vid in sorted(labels.videos):
        lacking = sources.lacking(vid)
        if lacking:
            dropped[vid] = lacking
        else:
            requests.append(VideoRequest(vid, splits[vid], labels.videos[vid]))
    if dropped and not d.drop_missing:
        problems.append(_missing_message(dropped))
    elif dropped:
        report_drops(dropped, "labelled videos dropped (--drop-missing)")
    needed = ("train",) if lab.train_val_mix else ("train", "val")  # mix: no val split
    labelled = {s: sum(1 for r in requests if r.split == s and r.labels.valid.any())
                for s in needed}
    for split, n in labelled.items():
        if n == 0:
            problems.append(f"splits: no labelled {split} video has every feature "
                            f"({_split_counts(splits)})")
    grid = timing = None
    try:
        grid = GridSpec.parse(d.grid, labels.level)
    except ValueError:
        pass  # reported by check_config
    if labels.level == "video" and grid is not None and grid.kind == "labels":
        problems.append("data.grid: per-video labels have no frame times; use rate:HZ or "
                        "steps:N")
    if labels.level == "frame" and grid is not None and grid.kind != "labels":
        problems.append(f"data.grid: per-frame labels are predicted on their own frames; "
                        f"{d.grid!r} is for per-video labels (use auto or labels)")
    if labels.level == "frame":
        timing = FrameTiming.from_config(lab, specs)
        by_index = any(r.labels.times is None for r in requests)  # label rows are frame indices
        if (by_index and lab.fps == 0 and not lab.time_reference
                and not any(s.modality == "visual" for s in specs)):
            problems.append("labels: per-frame labels by frame index need the video's frame "
                            "times, and this run has no visual feature; set labels.fps (frame i "
                            "at i / fps), or add a visual feature (its rows are the frames)")
        elif lab.fps == 0:
            problems += _check_frame_counts(requests, sources, timing)
    return RunPlan(cfg, labels, splits, specs, sources, requests, dropped, grid, timing)


def _describe_targets(labels: LabelSet) -> str:
    """``2 targets`` / ``1 class column, 4 classes``."""
    if labels.kind == "classification":
        return f"1 class column, {len(labels.targets)} classes"
    return f"{len(labels.targets)} targets"


def _check_task_fits(cfg: FuseConfig, labels: LabelSet) -> list[str]:
    from fuse.tasks import TASKS

    if cfg.task.name not in TASKS:
        return []
    task = TASKS.get(cfg.task.name)
    p = []
    if task.label_kind != labels.kind:
        p.append(f"task.name: {task.name!r} needs {task.label_kind} labels; "
                 f"{labels.format} gives {labels.kind}")
    if task.level != "any" and task.level != labels.level:
        p.append(f"task.name: {task.name!r} is per {task.level}; {labels.format} labels are "
                 f"per {labels.level}")
    if task.n_targets is not None and len(labels.targets) != task.n_targets:
        p.append(f"task.name: {task.name!r} needs {task.n_targets} targets; the labels have "
                 f"{len(labels.targets)} ({', '.join(labels.targets)})")
    return p


def _check_frame_counts(requests: list[VideoRequest], sources: FeatureSources,
                        timing: FrameTiming) -> list[str]:
    """Label frames must not run past the video's frames (metadata only: evenly spaced rows
    of the reference are one per frame; rows with gaps are checked exactly when loaded)."""
    if timing.reference not in sources.home:
        return []
    store = sources.home[timing.reference]
    rows = {r["video"]: (r["frames"], r["rate"]) for r in store.table()
            if r["feature"] == timing.reference}
    off = []
    for req in requests:
        frames = req.labels.frames
        if req.labels.times is not None or frames is None or len(frames) == 0:
            continue
        stored = sources.resolve(timing.reference, req.video)
        have, rate = rows.get(stored, (0, None))
        if rate is not None and int(frames.max()) + 1 - (have or 0) > timing.tolerance:
            off.append(f"{req.video} ({int(frames.max()) + 1} label frames, {have} rows)")
    if not off:
        return []
    return [f"labels: {len(off)} videos have more label frames than the video has frames "
            f"(rows of the reference feature {timing.reference!r}; tolerance "
            f"labels.frame_tolerance={timing.tolerance}): {_listing(off)}; are these the "
            "video's annotations? (else set labels.fps, or labels.time_reference to a feature "
            "with one row per frame)"]


def load_video_map(lab) -> VideoMap:
    """The run's :class:`VideoMap`: ``labels.video_map`` rows plus the label format's aliases."""
    aliases = get_adapter(lab.format).aliases if lab.format in LABEL_FORMATS else None
    return VideoMap.load(lab.video_map or None, aliases)


DROPS_REPORTED_ENV = "FUSE_DROPS_REPORTED"  # set by a command that listed its drops already


def report_drops(dropped: dict[str, list[str]], what: str, force: bool = False) -> None:
    """Log every dropped video by name, once: at warning level, or at debug level inside a
    command that listed them already (the jobs of a grid), unless ``force``."""
    if not dropped:
        return
    items = [f"{v} (lacks {', '.join(f)})" for v, f in sorted(dropped.items())]
    quiet = os.environ.get(DROPS_REPORTED_ENV) and not force
    log.log(logging.DEBUG if quiet else logging.WARNING, "%d %s: %s", len(items), what,
            ", ".join(items))


@contextlib.contextmanager
def drops_reported() -> Iterator[None]:
    """Within the block (a grid's jobs, which inherit the environment), dropped videos are
    logged at debug level: the command named them already."""
    old = os.environ.get(DROPS_REPORTED_ENV)
    os.environ[DROPS_REPORTED_ENV] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(DROPS_REPORTED_ENV, None)
        else:
            os.environ[DROPS_REPORTED_ENV] = old


def report_grid_drops(spec) -> None:
    """Name the videos each feature set of a grid drops (``--drop-missing``) once, before
    its jobs run; run the jobs inside :func:`drops_reported` so they log theirs at debug
    level."""
    from fuse.api import check
    from fuse.experiments.grid import expand, resolve_folds

    seen = set()
    with drops_reported():  # the checks below stay quiet; each set is named once, forced
        for job in expand(spec, Path("."), resolve_folds(spec)):
            cfg = job.payload["config"]
            data = cfg.get("data", {})
            key = (tuple(data.get("visual") or []), tuple(data.get("audio") or []))
            if key in seen or str(data.get("drop_missing", "")).lower() not in ("true", "1",
                                                                                 "yes"):
                continue
            seen.add(key)
            result = check(cfg, training=False)
            if result.plan is not None:
                report_drops(result.plan.dropped, "labelled videos dropped by the cells with "
                             f"{'+'.join(key[0] + key[1])} (--drop-missing)", force=True)


def _missing_message(dropped: dict[str, list[str]]) -> str:
    items = [f"{v} (lacks {', '.join(f)})" for v, f in sorted(dropped.items())]
    return (f"data: {len(dropped)} labelled videos lack features: {_listing(items)}; extract "
            "them or pass --drop-missing")


def _listing(items: list[str]) -> str:
    head = ", ".join(items[:MAX_LISTED])
    return head + (f" … and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def _split_counts(splits: dict[str, str]) -> str:
    values = list(splits.values())
    return "labelled videos per split: " + ", ".join(f"{s} {values.count(s)}" for s in SPLITS)


def _known(p: list[str], key: str, value: str, registry, hint: str = "") -> None:
    if value not in registry:
        extra = f" ({hint})" if hint and not value else ""
        p.append(f"{key}: unknown {registry.kind} {value!r}{extra}; known: "
                 f"{', '.join(registry.names())}")


def _at_least(p: list[str], key: str, value: float, low: float) -> None:
    if value < low:
        p.append(f"{key}: must be >= {low}, got {value}")


def _fraction(p: list[str], key: str, value: float) -> None:
    if not 0 <= value < 1:
        p.append(f"{key}: must be in [0, 1), got {value}")
