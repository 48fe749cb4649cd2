"""Predictions for whole videos: streams with carried state, or overlapping windows averaged."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from fuse.data.batches import Batcher, Planner
from fuse.model.net import FusionNet
from fuse.tasks.base import Task


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when enabled; nothing on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict_videos(model: FusionNet, task: Task, batcher: Batcher, planner: Planner,
                   videos: np.ndarray, amp: bool = True) -> list[np.ndarray]:
    """Activated predictions per video, in the order of ``videos``: (N_v, P) per frame or
    (1, P) per video."""
    model.eval()
    data, device = batcher.data, batcher.device
    if len(videos) == 0:
        return []
    steps = planner.plan(videos, rng=None)
    if data.level == "video":
        found: dict[int, np.ndarray] = {}
        for batch in batcher.batches(steps):
            with autocast(device, amp):
                out, _ = model(batch.x, batch.valid, batch.pad)  # (B, C)
            pred = task.activate(out).float().cpu().numpy()  # (B, P)
            found |= {int(v): pred[b : b + 1] for b, v in enumerate(batch.video.tolist())}
        return [found[int(v)] for v in videos]

    sums = counts = None
    state = None
    for batch in batcher.batches(steps):
        if planner.carry:
            state = model.encoder.keep_state(state, ~batch.reset)  # new videos start at zero
        with autocast(device, amp):
            out, new_state = model(batch.x, batch.valid, batch.pad, state)  # (B, L, C)
        state = new_state if planner.carry else None
        pred = task.activate(out).float()  # (B, L, P)
        if sums is None:
            sums = torch.zeros(len(data.x), pred.shape[-1], device=device)  # (R + 1, P)
            counts = torch.zeros(len(data.x), device=device)  # (R + 1,)
        keep = ~batch.pad.reshape(-1)
        rows = batch.rows.reshape(-1)[keep]
        sums.index_add_(0, rows, pred.reshape(-1, pred.shape[-1])[keep])
        counts.index_add_(0, rows, torch.ones_like(rows, dtype=counts.dtype))
    mean = (sums / counts.clamp(min=1)[:, None]).cpu().numpy()
    return [mean[data.offsets[v] : data.offsets[v] + data.lengths[v]] for v in videos]


def score_videos(task: Task, preds: list[np.ndarray], targets: list[tuple[np.ndarray, np.ndarray]],
                 decision: dict | None = None) -> dict[str, float]:
    """The task's metrics over the concatenation of the videos' predictions and labels."""
    y = np.concatenate([t[0] for t in targets])
    ok = np.concatenate([t[1] for t in targets])
    if not ok.any():
        return {}
    return task.score(np.concatenate(preds), y, ok, decision)
