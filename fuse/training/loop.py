"""The training loop, top to bottom: epochs of segments, validation, checkpoints, early stop."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from fuse.config import FuseConfig
from fuse.data.batches import Batcher, Planner
from fuse.data.dataset import FusedData
from fuse.model.encoders.base import detach_state
from fuse.model.net import FusionNet
from fuse.outputs.rundir import EpochLog, RunDir
from fuse.tasks.base import Task
from fuse.training.checkpoint import load_checkpoint, save_checkpoint
from fuse.training.ema import EMA
from fuse.training.inference import autocast, predict_videos, score_videos
from fuse.training.optim import build_optimizer, lr_at, set_lr
from fuse.training.seed import epoch_rng
from fuse.training.snapshots import checkpoint_path, window

log = logging.getLogger(__name__)


@dataclass
class Job:
    """Everything one training run works with."""

    cfg: FuseConfig
    model: FusionNet
    task: Task
    data: FusedData
    batcher: Batcher
    planner: Planner
    run: RunDir
    meta: dict[str, Any]  # saved in every checkpoint: config, spec, targets, normaliser, …


@dataclass
class TrainState:
    """Progress that ``--resume`` restores."""

    epoch: int = 0  # epochs finished
    best_score: float = -math.inf  # best validation score so far
    best_epoch: int = 0  # the epoch (1-based) that scored it
    bad_epochs: int = 0  # epochs since the last improvement


def fit(job: Job, resume: bool = False) -> TrainState:
    """Train on the train split, select on val; writes log.csv, best.pt and last.pt, and
    ``snapshots/epoch_NNN.pt`` for the epochs of ``train.snapshot_epochs`` (Train-Val-Mix:
    no val split, training stops after the window)."""
    cfg, model, task = job.cfg.train, job.model, job.task
    device = job.batcher.device
    opt = build_optimizer(model, cfg)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    state = _restore(job, opt, ema) if resume else TrainState()
    epoch_log = EpochLog(job.run.log, state.epoch)
    train_videos, val_videos = job.data.indices("train"), job.data.indices("val")
    val_targets = [job.data.targets_of(v) for v in val_videos]
    # AU: select under the thresholds the output will use (tuned on val, or 0.5 when
    # post.tune_thresholds is off); {} means "no tuning" to Task.score
    decision = None if job.cfg.post.tune_thresholds else {}
    snapshots = window(cfg)
    end = min(cfg.epochs, snapshots[-1]) if snapshots else cfg.epochs
    if end < cfg.epochs:
        log.info("training stops after epoch %d, the last snapshot", end)
    if cfg.patience and state.bad_epochs >= cfg.patience:  # resumed after an early stop
        end = state.epoch

    for epoch in range(state.epoch, end):
        started, gathered = time.perf_counter(), job.batcher.seconds
        model.train()
        steps = job.planner.plan(train_videos, epoch_rng(cfg.seed, epoch))
        loss_sum = torch.zeros((), device=device)
        hidden = None  # RNN state carried from the previous segment of each stream
        for i, batch in enumerate(job.batcher.batches(steps)):
            lr = lr_at(epoch + i / len(steps), cfg)
            set_lr(opt, lr)
            if job.planner.carry:
                hidden = model.encoder.keep_state(hidden, ~batch.reset)  # new video: zeros
            with autocast(device, cfg.amp):
                outs = []
                for _ in range(task.num_passes):  # 2 for R-Drop: dropout differs per pass
                    out, new_hidden = model(batch.x, batch.valid, batch.pad, hidden)
                    outs.append(out)  # (B, L, C) per frame, (B, C) per video
                loss = task.loss(outs, batch.y, batch.y_valid)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            if ema is not None:
                ema.update(model)
            hidden = detach_state(new_hidden) if job.planner.carry else None
            loss_sum += loss.detach()
        train_loss = (loss_sum / max(len(steps), 1)).item()
        train_seconds = time.perf_counter() - started
        data_seconds = job.batcher.seconds - gathered  # of which gathering batches

        eval_model = ema.shadow if ema is not None else model
        score = float("nan")
        if len(val_videos):
            preds = predict_videos(eval_model, task, job.batcher, job.planner, val_videos,
                                   cfg.amp)
            score = score_videos(task, preds, val_targets, decision).get("score",
                                                                         float("nan"))
        eval_seconds = time.perf_counter() - started - train_seconds
        state.epoch = epoch + 1
        improved = not math.isnan(score) and score > state.best_score
        if improved:
            state.best_score, state.best_epoch, state.bad_epochs = score, state.epoch, 0
            save_checkpoint(job.run.best, {**job.meta, "model": eval_model.state_dict(),
                                           "epoch": state.epoch, "score": score})
        else:
            state.bad_epochs += 1
        if state.epoch in snapshots:
            snapshot = checkpoint_path(job.run.root, state.epoch)
            snapshot.parent.mkdir(exist_ok=True)
            save_checkpoint(snapshot,
                            {**job.meta, "model": eval_model.state_dict(), "epoch": state.epoch,
                             "score": score})
        save_checkpoint(job.run.last, {
            **job.meta, "model": eval_model.state_dict(), "raw_model": model.state_dict(),
            "ema": ema.shadow.state_dict() if ema else None, "optimizer": opt.state_dict(),
            "state": asdict(state), "torch_rng": torch.get_rng_state()})
        epoch_log.add({"epoch": state.epoch, "train_loss": f"{train_loss:.6f}",
                       "val_score": f"{score:.6f}", "lr": f"{lr:.3g}",
                       "seconds": f"{train_seconds:.3f}", "data_seconds": f"{data_seconds:.3f}",
                       "eval_seconds": f"{eval_seconds:.3f}",
                       "best": int(improved)})
        log.info("epoch %d/%d  loss %.4f  val %.4f%s  %.1f s", state.epoch, cfg.epochs,
                 train_loss, score, "  *" if improved else "", train_seconds)
        if cfg.patience and state.bad_epochs >= cfg.patience:
            log.info("early stop: no better val score for %d epochs", cfg.patience)
            break
    if state.best_epoch == 0:  # never a finite score (no labelled val frames, train-val mix):
        final = ema.shadow if ema is not None else model  # keep the last (evaluated) weights
        save_checkpoint(job.run.best, {**job.meta, "model": final.state_dict(),
                                       "epoch": state.epoch, "score": float("nan")})
    return state


def _restore(job: Job, opt: torch.optim.Optimizer, ema: EMA | None) -> TrainState:
    """Load ``last.pt`` into the model, optimiser, EMA and RNG; return its progress."""
    ckpt = load_checkpoint(job.run.last)
    job.model.load_state_dict(ckpt["raw_model"])
    opt.load_state_dict(ckpt["optimizer"])
    if ema is not None and ckpt.get("ema") is not None:
        ema.shadow.load_state_dict(ckpt["ema"])
    torch.set_rng_state(ckpt["torch_rng"])
    state = TrainState(**ckpt["state"])
    log.info("resumed from %s after epoch %d (best %.4f at epoch %d)", job.run.last,
             state.epoch, state.best_score, state.best_epoch)
    return state

