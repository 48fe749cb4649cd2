"""A finished run loaded back from its folder, for ``eval`` and ``predict``.

Everything comes from the run folder: ``best.pt`` (config, model spec, weights, normaliser,
label targets and format), ``post.json`` (the post-processing chosen on validation) and
``features.json`` (each input feature's fingerprint, width and extractor config: a store whose
feature differs is refused before anything is predicted).
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
from fuse.errors import FeatureMismatchError
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

    @classmethod
    def load(cls, root: Path) -> SavedRun:
        from fuse.model.net import FusionNet, ModelSpec
        from fuse.tasks import build_task
        from fuse.training.checkpoint import load_checkpoint
        from fuse.training.seed import pick_device

        run = RunDir(root)
        ckpt = load_checkpoint(run.best)
        cfg = config_from_dict(ckpt["config"])
        model = FusionNet(ModelSpec(**ckpt["spec"]), cfg.model)
        model.load_state_dict(ckpt["model"])
        model.to(pick_device("auto")).eval()
        if math.isnan(ckpt.get("score", float("nan"))):
            log.warning("%s was saved without a finite validation score", run.best)
        post = (PostProcess.from_dict(json.loads(run.post.read_text())) if run.post.is_file()
                else PostProcess())
        features = json.loads(run.features.read_text()) if run.features.is_file() else None
        ids = json.loads(run.video_ids.read_text()) if run.video_ids.is_file() else {}
        return cls(run, cfg, ckpt["spec"], build_task(cfg.task, ckpt["targets"]), model,
                   Normalizer.from_state_dict(ckpt["normalizer"]), post, ckpt["targets"],
                   ckpt["label_format"], ckpt["label_kind"], features, ids)

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
        """Activated predictions for every video of ``data`` (before post-processing)."""
        from fuse.data.batches import Batcher, Planner
        from fuse.training.inference import predict_videos

        device = next(self.model.parameters()).device
        planner = Planner.from_config(self.cfg, data, self.model.encoder.carries_state)
        return predict_videos(self.model, self.task, Batcher(data, device, False), planner,
                              np.arange(len(data.videos)), self.cfg.train.amp)


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
