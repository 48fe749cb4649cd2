"""How much the fusion trainer's data path costs, on a synthetic store.

1. Epoch overhead, for an LSTM (state carry) and a transformer: the wall time of a training
   epoch of ``fuse.train`` (log.csv ``seconds``) divided by the time of the same steps run
   as pure forward + backward + optimiser on batches already in memory as tensors.
   Goal: <= 1.10.
2. Loader throughput: frames per second of ``load_fused`` (read each array once, align on the
   label grid, normalise, fill, pack) divided by a per-video CSV loader as the challenge
   baselines use (``pandas.read_csv`` per video and feature, then nearest alignment).

    python bench/train_speed.py            # ~1-2 minutes on 2 cores
    python bench/train_speed.py --quick    # smaller, for a smoke test
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("bench.train_speed")


def make_store(root: Path, videos: int, seconds: float, vis_dim: int, aud_dim: int):
    """A VA-style synthetic set with wide features (the planted signal does not matter)."""
    from fuse.synthetic import va_set

    return va_set(root, videos=videos, seconds=seconds, vis_dim=vis_dim, aud_dim=aud_dim)


def run_config(s, out: Path, encoder: dict, seg_len: int, epochs: int) -> dict:
    return {"data": {"stores": [str(s.store)], "visual": ["vis"], "audio": ["aud"],
                     "segment_len": seg_len},
            "labels": {"path": str(s.labels), "format": "affwild2-va"},
            "task": {"name": "va"},
            "model": {"fusion_dim": 256, "dropout": 0.3, "head": [256, 128],
                      "encoder": encoder},
            "train": {"epochs": epochs, "batch_size": 16, "lr": 3e-4},
            "post": {"smooth": False},
            "output": {"dir": str(out), "plots": False, "predict_splits": []}}


def epoch_seconds(cfg: dict) -> tuple[list[float], list[float]]:
    """Per epoch of a real ``fuse.train`` run (log.csv): the training part's seconds and the
    seconds of it spent gathering batches."""
    import csv

    from fuse import train

    result = train(cfg)
    with (result.out_dir / "log.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    return [float(r["seconds"]) for r in rows], [float(r["data_seconds"]) for r in rows]


def pure_seconds(cfg: dict, epochs: list[int]) -> dict[int, float]:
    """The same steps as each of ``epochs`` (same shuffle) run as forward + backward + step
    on tensors built beforehand."""
    import torch

    from fuse.config import build_config
    from fuse.data.batches import Batcher, Planner
    from fuse.data.dataset import load_fused
    from fuse.model.net import FusionNet, ModelSpec
    from fuse.tasks import build_task
    from fuse.training.optim import build_optimizer
    from fuse.training.seed import epoch_rng, seed_everything
    from fuse.validate import validate

    fc, _ = build_config(cfg)
    plan = validate(fc).raise_if_failed()
    data, _ = load_fused(plan.sources, plan.specs, plan.requests, level=plan.level,
                         grid=plan.grid, fill=fc.data.fill, timing=plan.timing)
    task = build_task(fc.task, plan.labels.targets)
    model = FusionNet(ModelSpec(data.features, data.dims, True, task.out_dim, "frame"),
                      fc.model)
    planner = Planner.from_config(fc, data, model.encoder.carries_state)
    batcher = Batcher(data, torch.device("cpu"), False)
    opt = build_optimizer(model, fc.train)
    seed_everything(fc.train.seed, fc.train.deterministic)  # the same torch flags as train
    model.train()

    def run(batches) -> float:
        started = time.perf_counter()
        hidden = None
        for b in batches:
            if planner.carry:
                hidden = model.encoder.keep_state(hidden, ~b.reset)
            pred, hidden = model(b.x, b.valid, b.pad, hidden)
            loss = task.loss([pred], b.y, b.y_valid)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            hidden = tuple(h.detach() for h in hidden) if planner.carry else None
        return time.perf_counter() - started

    plans = {e: list(batcher.batches(planner.plan(data.indices("train"),
                                                  epoch_rng(fc.train.seed, e))))
             for e in epochs}  # tensors built before any clock starts
    run(plans[epochs[0]])  # warm-up, as the first epoch of a run
    return {e: run(batches) for e, batches in plans.items()}


def overhead(cfg: dict, epochs: int) -> dict[str, float]:
    """Medians over epochs (after the first, a warm-up): epoch wall time, pure time of the same
    steps (the faster of a run before and one after training: the machines here are shared),
    their ratio, and the share of the epoch spent gathering batches."""
    later = list(range(1, epochs))
    before = pure_seconds(cfg, later)
    wall, data = epoch_seconds(cfg)
    after = pure_seconds(cfg, later)
    pure = {e: min(before[e], after[e]) for e in later}
    return {"wall": float(np.median([wall[e] for e in later])),
            "pure": float(np.median(list(pure.values()))),
            "ratio": float(np.median([wall[e] / pure[e] for e in later])),
            "data": float(np.median([data[e] for e in later])),
            "share": float(np.median([data[e] / wall[e] for e in later]))}


def loader_rates(s, videos: list[str], repeats: int = 5) -> tuple[float, float]:
    """Frames per second: fuse's loader vs a per-video CSV loader, on the same videos,
    alternated ``repeats`` times (medians: the machine is shared)."""
    import pandas as pd

    from extract.store import open_store
    from fuse.config import LabelConfig
    from fuse.data.align import Grid, align_nearest
    from fuse.data.dataset import FrameTiming, VideoRequest, load_fused
    from fuse.data.features import FeatureSources, feature_specs
    from fuse.data.grid import GridSpec
    from fuse.labels import get_adapter

    labels = get_adapter("affwild2-va").load(LabelConfig(path=str(s.labels)))
    requests = [VideoRequest(v, "train", labels.videos[v]) for v in videos]
    frames = sum(labels.videos[v].num_rows for v in videos)

    def via_fuse() -> float:
        started = time.perf_counter()
        load_fused(FeatureSources([str(s.store)], ["vis", "aud"]),
                   feature_specs(["vis"], ["aud"], "nearest"), requests, level="frame",
                   grid=GridSpec("labels"), fill="nearest", timing=FrameTiming("vis"))
        return time.perf_counter() - started

    csv_dir = s.store.parent / "csv"
    csv_dir.mkdir(exist_ok=True)
    store = open_store(s.store)
    for v in videos:  # export (not timed): one CSV per video and feature, time first
        for f in ("vis", "aud"):
            fa = store.read_video(f, v)
            table = pd.DataFrame(fa.data.astype(np.float32))
            table.insert(0, "valid", fa.mask.astype(int))
            table.insert(0, "timestamp", fa.timestamps)
            table.to_csv(csv_dir / f"{f}_{v}.csv", index=False)

    def via_csv() -> float:
        started = time.perf_counter()
        for v in videos:
            grid = None
            for f in ("vis", "aud"):
                table = pd.read_csv(csv_dir / f"{f}_{v}.csv")
                t = table["timestamp"].to_numpy()
                grid = grid or Grid.from_times(t)  # the visual rows are the frames
                align_nearest(table.iloc[:, 2:].to_numpy(np.float16), t,
                              table["valid"].to_numpy(bool), grid)
        return time.perf_counter() - started

    via_fuse(), via_csv()  # warm-up: imports, page cache
    fuse_s, csv_s = [], []
    for r in range(repeats):
        pair = [(fuse_s, via_fuse), (csv_s, via_csv)]
        for acc, fn in pair if r % 2 == 0 else pair[::-1]:
            acc.append(fn())
    return frames / float(np.median(fuse_s)), frames / float(np.median(csv_s))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run (smoke test)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import torch
    from rich.console import Console
    from rich.table import Table

    if args.threads:
        torch.set_num_threads(args.threads)
    videos, seconds, epochs = (12, 10.0, 3) if args.quick else (24, 20.0, 6)
    vis_dim, aud_dim = (128, 64) if args.quick else (512, 256)
    encoders = {
        "lstm": ({"name": "lstm", "hidden": 256, "carry_state": True}, 100),
        "transformer": ({"name": "transformer", "hidden": 256, "layers": 2, "heads": 4,
                         "ff_dim": 512, "dropout": 0.1}, 128)}
    table = Table(title=f"fuse training data path ({torch.get_num_threads()} threads; "
                        f"{videos} videos x {seconds:g} s, features {vis_dim} + {aud_dim})")
    for col in ("measure", "fuse", "reference", "ratio"):
        table.add_column(col, justify="right" if col != "measure" else "left")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        s = make_store(root, videos, seconds, vis_dim, aud_dim)
        for name, (encoder, seg_len) in encoders.items():
            cfg = run_config(s, root / name, encoder, seg_len, epochs)
            m = overhead(cfg, epochs)
            table.add_row(f"{name}: epoch s / pure fwd+bwd+opt s", f"{m['wall']:.3f}",
                          f"{m['pure']:.3f}", f"{m['ratio']:.3f}")
            table.add_row(f"{name}: batch gathering s / epoch s", f"{m['data']:.3f}",
                          f"{m['wall']:.3f}", f"{m['share']:.1%}")
        sample = [f"video{k:03d}" for k in range(videos)]
        fuse_rate, csv_rate = loader_rates(s, sample)
        table.add_row("loader frames/s vs per-video read_csv", f"{fuse_rate:,.0f}",
                      f"{csv_rate:,.0f}", f"{fuse_rate / csv_rate:.1f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
