"""The Python API: ``train(config) -> RunResult``, ``evaluate``, ``predict``, ``check``.

Each call validates first and reports every problem at once (:class:`fuse.errors.ConfigError`).
A config is a :class:`~fuse.config.FuseConfig` or a nested dict of the same fields.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fuse.config import FuseConfig, build_config, save_config
from fuse.errors import ConfigError, DataError
from fuse.outputs.rundir import RunDir, write_json
from fuse.validate import Validation, validate

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What :func:`train` returns."""

    out_dir: Path  # the run folder
    best_epoch: int  # epoch (1-based) of best.pt
    best_score: float  # its validation score (before post-processing)
    metrics: dict[str, Any]  # the content of metrics.json
    config: FuseConfig  # the resolved config
    files: list[Path] = field(default_factory=list)  # prediction files written


def check(config: FuseConfig | dict[str, Any], *, training: bool = True) -> Validation:
    """Validate a config (and its labels and stores) without training."""
    cfg, problems = (config, []) if isinstance(config, FuseConfig) else build_config(config)
    result = validate(cfg, training=training)
    return Validation(problems + result.problems, None if problems else result.plan)


def train(config: FuseConfig | dict[str, Any], *, resume: bool = False) -> RunResult:
    """Train one run into ``output.dir``: checkpoints, log, post-processing chosen on val,
    metrics per split, predictions in the labels' submission format, plots."""
    import torch

    from fuse.data.batches import Batcher, Planner
    from fuse.data.dataset import load_fused
    from fuse.labels.base import get_adapter
    from fuse.model.net import FusionNet, ModelSpec
    from fuse.outputs import results
    from fuse.post.pipeline import tune_post
    from fuse.tasks import build_task
    from fuse.training.checkpoint import load_checkpoint
    from fuse.training.inference import predict_videos
    from fuse.training.loop import Job, fit
    from fuse.training.seed import pick_device, seed_everything

    plan = check(config).raise_if_failed()
    cfg = plan.cfg
    run = RunDir(Path(cfg.output.dir)).make()
    if resume and not run.last.is_file():
        raise ConfigError(f"--resume: {run.last} does not exist")
    if not resume and run.last.is_file():
        log.warning("%s holds an earlier run; it is overwritten (--resume continues it)",
                    run.root)
    save_config(cfg, run.config)
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

    # the best weights: post-processing chosen on val, then every split scored and written
    model.load_state_dict(load_checkpoint(run.best)["model"])
    videos = {s: data.indices(s) for s in ("train", "val", "test")}
    preds = {s: predict_videos(model, task, batcher, planner, v, cfg.train.amp)
             for s, v in videos.items()}
    post = tune_post(task, preds["val"], [data.targets_of(v)[0] for v in videos["val"]],
                     [data.targets_of(v)[1] for v in videos["val"]], cfg.post, plan.level)
    write_json(run.post, post.to_dict())
    metrics: dict[str, Any] = {"best_epoch": state.best_epoch,
                               "best_val_score": state.best_score, "epochs": state.epoch,
                               "dropped_videos": sorted(plan.dropped)}
    for split, vids in videos.items():
        if scores := results.split_scores(task, data, vids, preds[split], post):
            metrics[split] = scores
    adapter = get_adapter(plan.labels.format)
    files = []
    for split in cfg.output.predict_splits:
        if len(videos[split]):
            final = results.final_predictions(task, data, videos[split], preds[split], post,
                                              plan.labels.targets, plan.labels.kind)
            files += results.write_split(adapter, final, run.predictions, split)
    write_json(run.metrics, metrics)
    if cfg.output.plots:
        results.write_plots(run, task, data, preds["val"], post, metrics.get("val", {}))
    log.info("run written to %s", run.root)
    return RunResult(run.root, state.best_epoch, state.best_score, metrics, cfg, files)


def evaluate(run_dir: str | Path, split: str = "val") -> dict[str, float]:
    """Score a run's best model, with its post-processing, on one split of its labels;
    writes ``eval_<split>.json`` into the run folder."""
    from fuse.outputs.results import split_scores
    from fuse.saved import SavedRun

    saved = SavedRun.load(Path(run_dir))
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
