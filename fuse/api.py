"""The Python API: ``train(config) -> RunResult``, ``evaluate``, ``predict``, ``check``.

Each call validates first and reports every problem at once (:class:`fuse.errors.ConfigError`).
A config is a :class:`~fuse.config.FuseConfig` or a nested dict of the same fields.
"""

from __future__ import annotations

import dataclasses
import logging
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
    from fuse.training.snapshots import check as check_snapshots

    cfg, problems = (config, []) if isinstance(config, FuseConfig) else build_config(config)
    problems += check_snapshots(cfg)  # train-val mix and the snapshot window
    result = validate(cfg, training=training)
    plan = result.plan
    if plan is not None and cfg.labels.train_val_mix:
        plan = _mix_train_val(plan)
    return Validation(problems + result.problems, None if problems else plan)


def _mix_train_val(plan: RunPlan) -> RunPlan:
    """Train-Val-Mix: the plan's val videos become training videos (and z-score statistics)."""
    from fuse.labels.splits import mix_train_val

    splits = mix_train_val(plan.splits)
    requests = [dataclasses.replace(r, split=splits[r.video]) for r in plan.requests]
    return dataclasses.replace(plan, splits=splits, requests=requests)


def train(config: FuseConfig | dict[str, Any], *, resume: bool = False) -> RunResult:
    """Train one run into ``output.dir``: checkpoints, log, post-processing chosen on val,
    metrics per split, predictions in the labels' submission format and their continuous
    outputs (``predictions/<split>_outputs.npz``), plots. With ``labels.train_val_mix`` the
    outputs are the combined outputs of the snapshot epochs."""
    import torch

    from fuse.data.batches import Batcher, Planner
    from fuse.data.dataset import load_fused
    from fuse.labels.base import get_adapter
    from fuse.model.net import FusionNet, ModelSpec
    from fuse.outputs import results
    from fuse.outputs.raw import RawOutputs, outputs_path
    from fuse.post.pipeline import PostProcess, tune_post
    from fuse.tasks import build_task
    from fuse.training.checkpoint import load_checkpoint
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
    if resume:
        record_resume(run.root, resumed)
    summary = plan.summary()
    log.info("labels %s; videos %s; features %s", summary["labels"], summary["videos"],
             summary["features"])

    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    device = pick_device(cfg.train.device)
    data, normalizer = load_fused(plan.sources, plan.specs, plan.requests, level=plan.level,
                                  grid=plan.grid, fill=cfg.data.fill, timing=plan.timing)
    task = build_task(cfg.task, plan.labels.targets)
    spec = ModelSpec(data.features, data.dims, cfg.data.mask_channels, task.out_dim, plan.level)
    model = FusionNet(spec, cfg.model).to(device)
    log.info("model: %s parameters", f"{sum(p.numel() for p in model.parameters()):,}")
    planner = Planner.from_config(cfg, data, model.encoder.carries_state)
    batcher = Batcher(data, device, cfg.data.device_cache and device.type == "cuda")
    meta = {"config": cfg.to_dict(), "spec": spec.to_dict(), "targets": plan.labels.targets,
            "label_format": plan.labels.format, "label_kind": plan.labels.kind,
            "normalizer": normalizer.state_dict()}
    state = fit(Job(cfg, model, task, data, batcher, planner, run, meta), resume=resume)

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
            labels=[data.targets_of(v) for v in vids], decision=decision)

    if cfg.labels.train_val_mix:  # no val: fixed post-processing, the snapshots combined
        preds, post, metrics = _snapshot_outputs(model, task, batcher, planner, videos, cfg,
                                                 run.root, state.epoch, raw, saved)
        applied = PostProcess(decision=post.decision)  # already applied to each snapshot
    else:  # the best weights: post-processing chosen on val
        model.load_state_dict(load_checkpoint(run.best)["model"])
        preds = {s: predict_videos(model, task, batcher, planner, v, cfg.train.amp)
                 for s, v in videos.items()}
        post = tune_post(task, preds["val"], [data.targets_of(v)[0] for v in videos["val"]],
                         [data.targets_of(v)[1] for v in videos["val"]], cfg.post, plan.level)
        applied = post
        metrics = {"best_epoch": state.best_epoch, "best_val_score": state.best_score,
                   "epochs": state.epoch}
    write_json(run.post, post.to_dict())
    metrics["dropped_videos"] = sorted(plan.dropped)
    for split, vids in videos.items():
        if scores := results.split_scores(task, data, vids, preds[split], applied):
            if cfg.labels.train_val_mix:
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
                                              plan.labels.targets, plan.labels.kind)
            files += results.write_split(adapter, final, run.predictions, split)
    write_json(run.metrics, metrics)
    if cfg.output.plots:
        results.write_plots(run, task, data, preds["val"], post, metrics.get("val", {}))
    log.info("run written to %s", run.root)
    best_epoch = state.epoch if cfg.labels.train_val_mix else state.best_epoch
    best_score = None if cfg.labels.train_val_mix else state.best_score  # no val split
    return RunResult(run.root, best_epoch, best_score, metrics, cfg, files)


def _snapshot_outputs(model, task, batcher, planner, videos: dict[str, np.ndarray],
                      cfg: FuseConfig, root: Path, epochs_done: int, raw,
                      saved: list[str]) -> tuple[dict[str, list[np.ndarray]], Any, dict]:
    """Train-Val-Mix: each snapshot's post-processed outputs (saved per split under
    ``snapshots/``), their combination per split, the post-processing, and metrics header."""
    from fuse.experiments.ensemble import get_combiner
    from fuse.training import snapshots

    post = snapshots.fixed_post(task, cfg.post)
    epochs = snapshots.window(cfg.train)
    per_epoch = snapshots.snapshot_outputs(model, task, batcher, planner, videos, root, epochs,
                                           post, cfg.train.amp)
    for epoch, outputs in per_epoch.items():
        for split in saved:
            raw(split, outputs[split], post.decision).save(
                snapshots.outputs_path(root, epoch, split))
    combine = get_combiner(cfg.train.snapshot_combine, task.label_kind).name
    metrics = {"validation": "none: labels.train_val_mix trains on train + val together, so "
                             "there is no validation score; 'train' scores are in-sample",
               "best_epoch": None, "best_val_score": None, "epochs": epochs_done,
               "train_val_mix": {"snapshot_epochs": epochs, "combine": combine,
                                 "train_videos": int(len(videos["train"]))}}
    return snapshots.combine_snapshots(per_epoch, task.label_kind, combine), post, metrics


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
            videos: list[str] | None = None) -> list[Path]:
    """Predict every video of ``stores`` that has the run's features (or only ``videos``).

    ``out`` ending in ``.csv`` gives one table; otherwise a folder in the labels' own
    submission layout (Aff-Wild2: one file per video). The run's resolved config is saved
    beside it as ``<out stem>.config.yaml``.
    """
    from fuse.data.dataset import VideoRequest
    from fuse.data.features import FeatureSources
    from fuse.labels.base import get_adapter
    from fuse.outputs.results import final_predictions
    from fuse.saved import SavedRun

    saved = SavedRun.load(Path(run_dir))
    features = saved.spec["features"]
    sources = FeatureSources(list(stores), features)
    have = set.intersection(*sources.coverage().values())
    if videos is None:
        videos = sorted(have)
    elif missing := sorted(set(videos) - have):
        raise DataError(f"{len(missing)} videos lack some of {features}: "
                        f"{', '.join(missing[:10])}")
    if not videos:
        raise DataError(f"no video in {stores} has every feature of {features}")
    data = saved.load_data(sources, [VideoRequest(v, "predict") for v in videos])
    final = final_predictions(saved.task, data, np.arange(len(videos)), saved.predict(data),
                              saved.post, saved.targets, saved.label_kind)
    out = Path(out)
    files = get_adapter(saved.label_format).write(final, out)
    save_config(saved.cfg, out.parent / f"{out.stem}.config.yaml")
    log.info("wrote predictions for %d videos to %s", len(videos), out)
    return files
