"""Fit a classic baseline (svm, logreg, ridge): one closed-form / solver fit on the training
split, in place of the epoch loop. Writes the same run files as :func:`fuse.training.loop.fit`
(``log.csv`` with one row, ``best.pt``, ``last.pt``), so everything after training is shared."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

import numpy as np
import torch

from fuse.model.encoders.classic import fit_readout
from fuse.outputs.rundir import EpochLog
from fuse.training.checkpoint import save_checkpoint
from fuse.training.inference import predict_videos, score_videos
from fuse.training.loop import Job, TrainState

log = logging.getLogger(__name__)


@torch.no_grad()
def pooled_rows(job: Job, videos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the read-out sees for ``videos``: (N, H) rows with labels (N, K) and validity;
    one row per video (per-video labels) or per step (per-frame labels)."""
    model, data = job.model, job.data
    model.eval()
    xs, ys, oks = [], [], []
    for batch in job.batcher.batches(job.planner.plan(videos, rng=None)):
        h, _ = model.embed(batch.x, batch.valid, batch.pad)  # (B, H) or (B, L, H)
        keep = (batch.video >= 0 if data.level == "video" else ~batch.pad).cpu().numpy()
        xs.append(h.float().cpu().numpy()[keep])
        ys.append(batch.y.cpu().numpy()[keep])
        oks.append(batch.y_valid.cpu().numpy()[keep])
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(oks)


def fit_classic(job: Job) -> TrainState:
    """Fit the read-out on the training split; score val; save the checkpoints."""
    cfg, model, task = job.cfg, job.model, job.task
    started = time.perf_counter()
    x, y, ok = pooled_rows(job, job.data.indices("train"))
    weights = getattr(task, "class_weights", None)
    weight, bias = fit_readout(cfg.model.encoder.name, task.label_kind, x.astype(np.float64),
                               y, ok, task.out_dim, cfg.model.classic, weights, cfg.train.seed)
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(weight).to(model.head.weight))
        model.head.bias.copy_(torch.from_numpy(bias).to(model.head.bias))
    seconds = time.perf_counter() - started
    log.info("%s fitted on %d rows × %d features in %.2f s", cfg.model.encoder.name, len(x),
             x.shape[1], seconds)

    val = job.data.indices("val")
    score = float("nan")
    if len(val):
        preds = predict_videos(model, task, job.batcher, job.planner, val, cfg.train.amp)
        decision = None if cfg.post.tune_thresholds else {}
        score = score_videos(task, preds, [job.data.targets_of(v) for v in val],
                             decision).get("score", float("nan"))
    state = TrainState(epoch=1, best_score=score, best_epoch=1)
    payload = {**job.meta, "model": model.state_dict(), "epoch": 1, "score": score}
    save_checkpoint(job.run.best, payload)
    save_checkpoint(job.run.last, {**payload, "raw_model": model.state_dict(), "ema": None,
                                   "optimizer": None, "state": asdict(state),
                                   "torch_rng": torch.get_rng_state()})
    EpochLog(job.run.log).add({"epoch": 1, "train_loss": "nan", "val_score": f"{score:.6f}",
                               "lr": "", "seconds": f"{seconds:.3f}", "data_seconds": "",
                               "eval_seconds": "", "best": 1})
    return state
