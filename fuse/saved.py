"""A finished run loaded back from its folder, for ``eval`` and ``predict``.

Everything comes from the run folder: ``best.pt`` (config, model spec, weights, normaliser,
label targets and format), ``post.json`` (the post-processing chosen on validation) and
``features.json`` (each input feature's fingerprint, width and extractor config: a store whose
feature differs is refused before anything is predicted).

A Train-Val-Mix run (``labels.train_val_mix``) has no best epoch: its outputs are the combined
outputs of its snapshots (``snapshots/epoch_NNN.pt``), remade here with the functions ``train``
used (:mod:`fuse.training.snapshots`), each target over its own window. Without those weights
(``train.keep_snapshots=false``) the run is refused: ``best.pt`` alone would predict other
values than the run's own.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fuse.config import FuseConfig, config_from_dict
from fuse.data.dataset import FrameTiming, FusedData, VideoRequest, load_fused
from fuse.data.features import FeatureSources, FeatureSpec, feature_specs
from fuse.data.grid import GridSpec
from fuse.data.normalize import Normalizer
from fuse.data.videomap import VideoMap
from fuse.errors import FeatureMismatchError, RunError
from fuse.outputs.rundir import RunDir
from fuse.post.pipeline import PostProcess
from fuse.tasks.base import Task

log = logging.getLogger(__name__)


@dataclass
class SavedRun:
    """A run's best model with what it needs to turn features into submitted values."""

    run: RunDir
    cfg: FuseConfig  # the resolved training config
    spec: dict[str, Any]  # the model spec (features, dims, level, …)
    task: Task
    model: Any  # FusionNet in eval mode
    normalizer: Normalizer
    post: PostProcess
    targets: list[str]  # label targets (classification: class names)
    label_format: str  # the adapter that writes predictions
    label_kind: str
    features: dict[str, dict[str, Any]] | None = None  # features.json (None: an older run)
    video_ids: dict[str, str] | None = None  # ids as the label source writes them
    snapshots: list[int] | None = None  # Train-Val-Mix: the epochs whose outputs are combined
    snapshot_post: PostProcess | None = None  # applied to each snapshot before combining
    label_ids: dict[str, str] | None = None  # splits.json: every id the labels name → split

    @classmethod
    def load(cls, root: Path) -> SavedRun:
        from fuse.model.net import FusionNet, ModelSpec
        from fuse.tasks import build_task
        from fuse.training.seed import pick_device

        run = RunDir(root)
        ckpt = _model_checkpoint(run)
        cfg = config_from_dict(ckpt["config"])
        model = FusionNet(ModelSpec(**ckpt["spec"]), cfg.model)
        model.load_state_dict(ckpt["model"])
        model.to(pick_device("auto")).eval()
        post = (PostProcess.from_dict(json.loads(run.post.read_text())) if run.post.is_file()
                else PostProcess())
        epochs, snapshot_post = None, None
        if _uses_snapshots(cfg):
            epochs, snapshot_post = _check_snapshots(run, cfg), post
            post = PostProcess(decision=post.decision)  # applied to each snapshot already
        elif math.isnan(ckpt.get("score", float("nan"))):
            log.warning("%s was saved without a finite validation score", run.best)
        features = json.loads(run.features.read_text()) if run.features.is_file() else None
        ids = json.loads(run.video_ids.read_text()) if run.video_ids.is_file() else {}
        label_ids = json.loads(run.splits.read_text()) if run.splits.is_file() else None
        return cls(run, cfg, ckpt["spec"], build_task(cfg.task, ckpt["targets"]), model,
                   Normalizer.from_state_dict(ckpt["normalizer"]), post, ckpt["targets"],
                   ckpt["label_format"], ckpt["label_kind"], features, ids, epochs,
                   snapshot_post, label_ids)

    def video_map(self, path: str | None = None) -> VideoMap:
        """The run's video map (``labels.video_map`` and the label format's aliases), or the
        CSV at ``path`` instead of the run's."""
        from fuse.labels.base import get_adapter

        return VideoMap.load(path or self.cfg.labels.video_map or None,
                             get_adapter(self.label_format).aliases)

    def check_features(self, sources: FeatureSources) -> None:
        """Refuse stores whose features differ from the ones this run was trained on."""
        if self.features is None:
            log.warning("%s has no features.json (an older run): the stores' feature configs "
                        "cannot be checked against the training ones", self.run.root)
            return
        for name in sources.features:
            info = sources.home[name].feature_info(name)
            want = self.features.get(name)
            if want is None:
                continue
            if info.fingerprint != want["fingerprint"] or info.dim != want["dim"]:
                raise FeatureMismatchError(
                    f"feature {name!r} in {sources.home[name].path} was made with config "
                    f"{info.fingerprint} ({_describe(info.extractor, info.dim, info.config)}) but "
                    f"run {self.run.root} was trained on {want['fingerprint']} "
                    f"({_describe(want['extractor'], want['dim'], want['config'])}); extract "
                    f"{name!r} with the training config, or train on this store")

    @property
    def specs(self) -> list[FeatureSpec]:
        return feature_specs(self.cfg.data.visual, self.cfg.data.audio, self.cfg.data.align)

    @property
    def grid(self) -> GridSpec:
        return GridSpec.parse(self.cfg.data.grid, self.spec["level"])

    @property
    def timing(self) -> FrameTiming:
        return FrameTiming.from_config(self.cfg.labels, self.specs)

    def load_data(self, sources: FeatureSources, requests: list[VideoRequest]) -> FusedData:
        """Videos on the run's grid, z-scored with the run's (training) statistics."""
        data, _ = load_fused(sources, self.specs, requests, level=self.spec["level"],
                             grid=self.grid, fill=self.cfg.data.fill, timing=self.timing,
                             normalizer=self.normalizer,
                             tolerance=self.cfg.data.align_tolerance)
        return data

    def predict(self, data: FusedData) -> list[np.ndarray]:
        """The run's outputs for every video of ``data``, before ``self.post``: activated
        predictions of ``best.pt``, or (Train-Val-Mix) the combined post-processed outputs of
        the snapshots, exactly as ``train`` made its own."""
        from fuse.data.batches import Batcher, Planner
        from fuse.training import snapshots
        from fuse.training.inference import predict_videos

        device = next(self.model.parameters()).device
        planner = Planner.from_config(self.cfg, data, self.model.encoder.carries_state)
        batcher = Batcher(data, device, False)
        videos = np.arange(len(data.videos))
        if self.snapshots is None:
            return predict_videos(self.model, self.task, batcher, planner, videos,
                                  self.cfg.train.amp)
        per_epoch = snapshots.snapshot_outputs(self.model, self.task, batcher, planner,
                                               {"all": videos}, self.run.root, self.snapshots,
                                               self.snapshot_post, self.cfg.train.amp)
        return snapshots.combined_outputs(per_epoch, self.task, self.cfg.train)[0]["all"]


def _uses_snapshots(cfg: FuseConfig) -> bool:
    """A Train-Val-Mix run trained by epochs: its outputs combine its snapshots."""
    from fuse.model.encoders.classic import is_classic

    return cfg.labels.train_val_mix and not is_classic(cfg.model.encoder.name)


def _model_checkpoint(run: RunDir) -> dict[str, Any]:
    """``best.pt``; for a Train-Val-Mix run whose ``best.pt`` was pruned (``train.keep``), its
    first snapshot (the same config, spec, normaliser and targets)."""
    from fuse.training.checkpoint import load_checkpoint
    from fuse.training.snapshots import checkpoint_path, window

    if not run.best.is_file() and run.config.is_file():
        from fuse.config import load_yaml

        cfg = config_from_dict(load_yaml(str(run.config)))
        if _uses_snapshots(cfg) and window(cfg.train):
            _check_snapshots(run, cfg)
            return load_checkpoint(checkpoint_path(run.root, window(cfg.train)[0]))
    return load_checkpoint(run.best)


def _check_snapshots(run: RunDir, cfg: FuseConfig) -> list[int]:
    """The snapshot epochs of a Train-Val-Mix run; refused in one line when any is gone."""
    from fuse.training.checkpoint import PRUNED
    from fuse.training.snapshots import missing_snapshots, window

    epochs = window(cfg.train)
    if missing := missing_snapshots(run.root, cfg.train):
        pruned = run.root / PRUNED
        why = pruned.read_text().strip() if pruned.is_file() else "not found"
        raise RunError(f"{run.root} is a Train-Val-Mix run: its outputs combine the snapshots "
                       f"of epochs {epochs[0]}-{epochs[-1]}, and {len(missing)} of them are "
                       f"gone ({why}); best.pt alone would predict other values than the run's "
                       "own, so predict / eval refuse: retrain with train.keep_snapshots=true")
    return epochs


def feature_records(sources: FeatureSources) -> dict[str, dict[str, Any]]:
    """What ``features.json`` records for each input feature of a run."""
    out = {}
    for name in sources.features:
        info = sources.home[name].feature_info(name)
        out[name] = {"fingerprint": info.fingerprint, "dim": info.dim, "modality": info.modality,
                     "extractor": info.extractor, "config": info.config, "dtype": info.dtype,
                     "store": sources.home[name].path}
    return out


def _describe(extractor: str, dim: int, config: dict[str, Any]) -> str:
    return f"{extractor}, dim {dim}: {json.dumps(config, sort_keys=True, default=str)}"
