"""The Python API: ``train(config) -> RunResult``, ``evaluate``, ``predict``, ``check``.

Each call validates first and reports every problem at once (:class:`fuse.errors.ConfigError`).
A config is a :class:`~fuse.config.FuseConfig` or a nested dict of the same fields.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fuse.config import FuseConfig, build_config, save_config
from fuse.errors import ConfigError, DataError
from fuse.outputs.rundir import RunDir, write_json
from fuse.validate import RunPlan, Validation, validate

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What :func:`train` returns."""

    out_dir: Path  # the run folder
    best_epoch: int  # epoch (1-based) of best.pt
    best_score: float | None  # its validation score (before post-processing); None in a
    #                            Train-Val-Mix run, which has no validation split
    metrics: dict[str, Any]  # the content of metrics.json
    config: FuseConfig  # the resolved config
    files: list[Path] = field(default_factory=list)  # prediction files written


def check(config: FuseConfig | dict[str, Any], *, training: bool = True) -> Validation:
    """Validate a config (and its labels and stores) without training."""
    from fuse.tasks import TASKS, build_task
    from fuse.training import options
    from fuse.training.snapshots import check as check_snapshots

    cfg, problems = (config, []) if isinstance(config, FuseConfig) else build_config(config)
    cfg = options.resolve_auto(cfg)
    problems += check_snapshots(cfg)  # train-val mix and the snapshot window
    problems += options.check(cfg)  # normalisation, class weights, classic encoders, keep
    result = validate(cfg, training=training)
    plan = result.plan
    if plan is not None:
        plan = _grouped(plan)
        if cfg.labels.train_val_mix:
            plan = _mix_train_val(plan)
        if cfg.task.name in TASKS:
            problems += options.check_plan(cfg, plan, build_task(cfg.task, plan.labels.targets))
    return Validation(problems + result.problems, None if problems else plan)


def _grouped(plan: RunPlan) -> RunPlan:
    """Each request carries its split group (the one grouping rule of fuse.labels.splits)."""
    from fuse.labels.splits import group_of

    lab = plan.cfg.labels
    requests = [dataclasses.replace(r, group=group_of(plan.labels, r.video, lab))
                for r in plan.requests]
    return dataclasses.replace(plan, requests=requests)


def _mix_train_val(plan: RunPlan) -> RunPlan:
    """Train-Val-Mix: the plan's val videos become training videos (and z-score statistics)."""
    from fuse.labels.splits import mix_train_val

    splits = mix_train_val(plan.splits)
    requests = [dataclasses.replace(r, split=splits[r.video]) for r in plan.requests]
    return dataclasses.replace(plan, splits=splits, requests=requests)


def train(config: FuseConfig | dict[str, Any], *, resume: bool = False,
          cache: Any = None) -> RunResult:
    """Train one run into ``output.dir``: checkpoints, log, post-processing chosen on val,
    metrics per split, predictions in the labels' submission format and their continuous
    outputs (``predictions/<split>_outputs.npz``), confusion matrices, plots. With
    ``labels.train_val_mix`` the outputs are the combined outputs of the snapshot epochs; a
    classic encoder (svm, logreg, ridge) is fitted once instead of trained by epochs.
    ``cache`` (a :class:`fuse.data.cache.StageCache`) keeps staged videos for the next run."""
    import torch

    from fuse.data.batches import Batcher, Planner
    from fuse.data.dataset import load_fused
    from fuse.labels.base import get_adapter
    from fuse.labels.splits import split_report
    from fuse.model.net import FusionNet, ModelSpec
    from fuse.outputs import results
    from fuse.outputs.confusion import write_confusion
    from fuse.outputs.raw import RawOutputs, outputs_path
    from fuse.outputs.truth import add_truth
    from fuse.post.pipeline import PostProcess, tune_post
    from fuse.tasks import build_task
    from fuse.training import snapshots
    from fuse.training.checkpoint import load_checkpoint, prune_checkpoints
    from fuse.training.classic import fit_classic
    from fuse.training.inference import predict_videos
    from fuse.training.loop import Job, fit
    from fuse.training.seed import pick_device, seed_everything

    if resume:  # the run's saved config.yaml, with only harmless changes (fuse.resume)
        from fuse.resume import record_resume, resume_config

        config, resumed = resume_config(config)
    plan = check(config).raise_if_failed()
    cfg = plan.cfg
    run = RunDir(Path(cfg.output.dir)).make()
    if resume and not run.last.is_file():
        raise ConfigError(f"--resume: {run.last} does not exist")
    if not resume and run.last.is_file():
        log.warning("%s holds an earlier run; it is overwritten (--resume continues it)",
                    run.root)
    save_config(cfg, run.config)
    from fuse.saved import feature_records

    write_json(run.features, feature_records(plan.sources))  # predict / eval check these
    write_json(run.video_ids, plan.labels.source_ids)
    write_json(run.splits, dict(sorted(plan.splits.items())))  # predict starts from these ids
    if resume:
        record_resume(run.root, resumed)
    summary = plan.summary()
    split_info = split_report(plan.labels, plan.splits, cfg.labels)
    log.info("labels %s; videos %s; features %s; splits grouped by %s", summary["labels"],
             summary["videos"], summary["features"], split_info["grouped_by"])

    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    device = pick_device(cfg.train.device)
    data, normalizer = load_fused(plan.sources, plan.specs, plan.requests, level=plan.level,
                                  grid=plan.grid, fill=cfg.data.fill, timing=plan.timing,
                                  tolerance=cfg.data.align_tolerance,
                                  normalize=cfg.data.normalize, cache=cache)
    task = build_task(cfg.task, plan.labels.targets)
    _class_weights(task, data, cfg)
    spec = ModelSpec(data.features, data.dims, cfg.data.mask_channels, task.out_dim, plan.level)
    model = FusionNet(spec, cfg.model).to(device)
    log.info("model: %s parameters", f"{sum(p.numel() for p in model.parameters()):,}")
    planner = Planner.from_config(cfg, data, model.encoder.carries_state)
    batcher = Batcher(data, device, cfg.data.device_cache and device.type == "cuda")
    meta = {"config": cfg.to_dict(), "spec": spec.to_dict(), "targets": plan.labels.targets,
            "label_format": plan.labels.format, "label_kind": plan.labels.kind,
            "normalizer": normalizer.state_dict()}
    job = Job(cfg, model, task, data, batcher, planner, run, meta)
    if model.classic and (cfg.train.snapshot_epochs or cfg.train.snapshot_targets):
        log.info("%s is fitted once: there are no epochs, so train.snapshot_epochs / "
                 "snapshot_targets do not apply", cfg.model.encoder.name)
    state = fit_classic(job) if model.classic else fit(job, resume=resume)

    videos = {s: data.indices(s) for s in ("train", "val", "test")}
    saved = [s for s in dict.fromkeys(["val", "test", *cfg.output.predict_splits])
             if len(videos[s])]  # splits whose outputs are saved

    def raw(split: str, outputs: list[np.ndarray], decision: dict) -> RawOutputs:
        vids = videos[split]
        return RawOutputs.build(
            task=task.name, label_format=plan.labels.format, kind=plan.labels.kind,
            targets=plan.labels.targets, split=split, level=data.level,
            videos=[data.videos[v] for v in vids], outputs=outputs,
            frames=[data.frames[v] for v in vids],
            times=[data.times[v] if data.level == "frame" else None for v in vids],
            labels=[data.targets_of(v) for v in vids], decision=decision,
            ids=plan.labels.source_ids)

    mix = cfg.labels.train_val_mix
    if mix and not model.classic:  # no val: fixed post-processing, the snapshots combined
        preds, post, metrics = _snapshot_outputs(model, task, batcher, planner, videos, cfg,
                                                 run.root, state.epoch, raw, saved)
        applied = PostProcess(decision=post.decision)  # already applied to each snapshot
    else:  # the best weights: post-processing chosen on val (fixed without a val split)
        model.load_state_dict(load_checkpoint(run.best)["model"])
        preds = {s: predict_videos(model, task, batcher, planner, v, cfg.train.amp)
                 for s, v in videos.items()}
        if len(videos["val"]):
            post = tune_post(task, preds["val"], [data.targets_of(v)[0] for v in videos["val"]],
                             [data.targets_of(v)[1] for v in videos["val"]], cfg.post,
                             plan.level)
        else:
            post = snapshots.fixed_post(task, cfg.post)
        applied = post
        metrics = {"best_epoch": state.best_epoch, "best_val_score": state.best_score,
                   "epochs": state.epoch}
        if mix:
            metrics["validation"] = ("none: labels.train_val_mix fits on train + val together; "
                                     "'train' scores are in-sample")
            metrics["best_val_score"] = None
    write_json(run.post, post.to_dict())
    metrics["score_metric"] = task.metric_label
    metrics["splits"] = split_info
    if getattr(task, "class_weights", None) is not None:
        metrics["class_weights"] = dict(zip(plan.labels.targets,
                                            np.asarray(task.class_weights).tolist(), strict=True))
    metrics["dropped_videos"] = sorted(plan.dropped)
    for split, vids in videos.items():
        if scores := results.split_scores(task, data, vids, preds[split], applied):
            if mix and not model.classic:
                scores.pop("raw/score", None)  # the snapshots' outputs are post-processed
            metrics[split] = scores
    for split in saved:
        raw(split, [applied.apply(p) for p in preds[split]], post.decision).save(
            outputs_path(run.root, split))
    adapter = get_adapter(plan.labels.format)
    files = []
    for split in cfg.output.predict_splits:
        if len(videos[split]):
            final = results.final_predictions(task, data, videos[split], preds[split], applied,
                                              plan.labels.targets, plan.labels.kind,
                                              plan.labels.source_ids)
            written = results.write_split(adapter, final, run.predictions, split)
            add_truth(run.predictions / f"{split}.csv", data, videos[split],
                      plan.labels.targets, plan.labels.kind, plan.labels.source_ids)
            files += written
    if task.label_kind == "classification":
        for split in ("val", "test"):
            if split in metrics:
                decided = [task.decide(applied.apply(p), applied.decision) for p in preds[split]]
                write_confusion(run.root, split, decided,
                                [data.targets_of(v) for v in videos[split]], task.targets,
                                plot=cfg.output.plots)
    write_json(run.metrics, metrics)
    if cfg.output.plots:
        results.write_plots(run, task, data, preds["val"], post, metrics.get("val", {}))
    prune_checkpoints(run, cfg.train)
    log.info("run written to %s", run.root)
    best_epoch = state.epoch if mix else state.best_epoch
    best_score = None if mix else state.best_score  # no val split
    return RunResult(run.root, best_epoch, best_score, metrics, cfg, files)


def _class_weights(task, data, cfg: FuseConfig) -> None:
    """``train.class_weights=balanced``: alpha_t from the training split's class counts."""
    from fuse.tasks.classification import balanced_weights

    if cfg.train.class_weights != "balanced":
        return
    counts = np.zeros(len(task.targets))
    for v in data.indices("train"):
        y, ok = data.targets_of(v)
        np.add.at(counts, y[ok[:, 0], 0].astype(int), 1)
    task.set_class_weights(balanced_weights(counts))
    log.info("class weights from the training counts %s: %s", counts.astype(int).tolist(),
             np.round(task.class_weights, 3).tolist())


def _snapshot_outputs(model, task, batcher, planner, videos: dict[str, np.ndarray],
                      cfg: FuseConfig, root: Path, epochs_done: int, raw,
                      saved: list[str]) -> tuple[dict[str, list[np.ndarray]], Any, dict]:
    """Train-Val-Mix: each snapshot's post-processed outputs (saved per split under
    ``snapshots/``), their combination per split (each target over its own window), the
    post-processing, and metrics header. ``fuse predict`` / ``fuse eval`` remake the outputs
    with the same two functions (:class:`fuse.saved.SavedRun`)."""
    from fuse.training import snapshots

    post = snapshots.fixed_post(task, cfg.post)
    epochs = snapshots.window(cfg.train)
    per_epoch = snapshots.snapshot_outputs(model, task, batcher, planner, videos, root, epochs,
                                           post, cfg.train.amp)
    for epoch, outputs in per_epoch.items():
        for split in saved:
            raw(split, outputs[split], post.decision).save(
                snapshots.outputs_path(root, epoch, split))
    combined, combine, per_target = snapshots.combined_outputs(per_epoch, task, cfg.train)
    metrics = {"validation": "none: labels.train_val_mix trains on train + val together, so "
                             "there is no validation score; 'train' scores are in-sample",
               "best_epoch": None, "best_val_score": None, "epochs": epochs_done,
               "train_val_mix": {"snapshot_epochs": epochs, "combine": combine,
                                 "train_videos": int(len(videos["train"]))}}
    if per_target is not None:
        metrics["train_val_mix"]["target_epochs"] = {t: [w[0], w[-1]]
                                                     for t, w in per_target.items()}
    return combined, post, metrics


def evaluate(run_dir: str | Path, split: str = "val") -> dict[str, float]:
    """Score a run's best model, with its post-processing, on one split of its labels;
    writes ``eval_<split>.json`` into the run folder."""
    from fuse.outputs.results import split_scores
    from fuse.saved import SavedRun

    saved = SavedRun.load(Path(run_dir))
    if saved.cfg.labels.train_val_mix and split == "val":
        raise DataError(f"{run_dir} was trained with labels.train_val_mix: its val videos are "
                        "training videos, so there is no validation score")
    plan = check(saved.cfg, training=False).raise_if_failed()
    saved.check_features(plan.sources)
    requests = [r for r in plan.requests if r.split == split]
    if not requests:
        raise DataError(f"split {split!r} has no video with every feature "
                        f"(videos per split: {plan.summary()['videos']})")
    data = saved.load_data(plan.sources, requests)
    scores = split_scores(saved.task, data, np.arange(len(requests)), saved.predict(data),
                          saved.post)
    write_json(saved.run.root / f"eval_{split}.json", scores)
    return scores


def predict(run_dir: str | Path, stores: list[str], out: str | Path,
            videos: list[str] | None = None, video_map: str | None = None,
            split: str | None = None, groups: str | Path | None = None) -> list[Path]:
    """Predict every video of ``stores`` that has the run's features (or only ``videos``).

    Every id the stores hold or the run's labels name is a candidate (:func:`predictable`);
    each reads the run's features through the run's video map (Aff-Wild2: ``X_left`` /
    ``X_right`` read ``X``'s audio, and ``X`` itself is not predicted), or ``video_map`` (a
    CSV) instead. Every video left out is named in one warning, with what it lacks.
    Per-frame tasks get one output per frame of the source video. The stores' features must be
    the ones the run was trained on (same config and width), else
    :class:`~fuse.errors.FeatureMismatchError`.

    ``split`` keeps the videos the run's labels (or partition) put in that split.
    ``out`` ending in ``.csv`` gives one table; otherwise a folder in the labels' own
    submission layout (Aff-Wild2: one file per video). The run's resolved config is saved
    beside it as ``<out stem>.config.yaml``. ``groups``: a CSV giving each video's group
    (a video column and the run's ``labels.group_by`` column, or ``group``), needed by runs
    with ``data.normalize=group`` for videos they were not trained with.
    """
    from fuse.data.dataset import VideoRequest
    from fuse.data.features import FeatureSources
    from fuse.labels.base import get_adapter
    from fuse.labels.splits import read_groups
    from fuse.outputs.results import final_predictions
    from fuse.saved import SavedRun
    from fuse.validate import report_drops

    saved = SavedRun.load(Path(run_dir))
    features = saved.spec["features"]
    sources = FeatureSources(list(stores), features, saved.video_map(video_map))
    saved.check_features(sources)
    if videos is None:
        videos, dropped = predictable(sources, saved.label_ids or ())
        if split is not None:
            wanted = split_videos(saved.cfg, split)
            dropped = {v: f for v, f in dropped.items() if v in wanted}
            dropped |= {v: ["every feature"] for v in wanted
                        if v not in videos and v not in dropped
                        and not any(sources.complete(f) & {v} for f in features)}
            videos = [v for v in videos if v in wanted]
        report_drops(dropped, "videos not predicted")
    elif missing := {v: lack for v in videos if (lack := sources.lacking(v))}:
        items = [f"{v} (lacks {', '.join(f)})" for v, f in sorted(missing.items())]
        raise DataError(f"{len(missing)} of the asked videos lack features: {', '.join(items)}")
    if not videos:
        raise DataError(f"no video in {stores} has every feature of {features}")
    given = read_groups(groups, saved.cfg.labels.group_by) if groups else {}
    data = saved.load_data(sources, [VideoRequest(v, "predict", group=given.get(v))
                                     for v in videos])
    final = final_predictions(saved.task, data, np.arange(len(videos)), saved.predict(data),
                              saved.post, saved.targets, saved.label_kind, saved.video_ids)
    out = Path(out)
    files = get_adapter(saved.label_format).write(final, out)
    save_config(saved.cfg, out.parent / f"{out.stem}.config.yaml")
    log.info("wrote predictions for %d videos to %s", len(videos), out)
    return files


def split_videos(cfg: FuseConfig, split: str) -> set[str]:
    """The videos the run's labels (and partition) assign to ``split``."""
    from fuse.labels.base import get_adapter
    from fuse.labels.splits import assign_splits

    labels = get_adapter(cfg.labels.format).load(cfg.labels)
    chosen = {v for v, s in assign_splits(labels, cfg.labels).items() if s == split}
    if not chosen:
        raise DataError(f"the run's labels ({cfg.labels.path}) put no video in split {split!r}")
    return chosen


def predictable(sources, label_ids: Iterable[str] = ()
                ) -> tuple[list[str], dict[str, list[str]]]:
    """The videos to predict, and the videos left out with what they lack.

    The candidates are every id the stores hold (under any feature: the crops ``X_left`` /
    ``X_right`` of a run that reads only ``X``'s audio), the ids the run's labels name
    (``label_ids``) and the label ids of the video map's rows. A candidate is predicted when
    each of the run's features resolves through the video map
    (:meth:`~fuse.data.features.FeatureSources.lacking`), unless it is only the id that other
    predicted videos read from (``X`` for ``X_left`` / ``X_right``) and not a label id itself.
    Left out, with what it lacks: a candidate that is not predicted, not read by a predicted
    video, and has data in the stores (ids named only by the labels, absent from these
    stores, are not listed: ``--split`` lists the ones it wants)."""
    stored: set[str] = set()
    for store in sources.stores:
        for feature in store.features():
            stored |= store.complete_set(feature)
    labelled = set(label_ids)
    ready, lacks = [], {}
    for vid in sorted(stored | labelled | set(sources.video_map.rows)):
        if lacking := sources.lacking(vid):
            lacks[vid] = lacking
        else:
            ready.append(vid)
    served = {r for v in ready for f in sources.features
              if (r := sources.resolve(f, v)) is not None and r != v}
    videos = [v for v in ready if v not in served or v in labelled]
    dropped = {v: f for v, f in lacks.items()
               if v not in served and (v in stored or len(f) < len(sources.features))}
    return videos, dropped
