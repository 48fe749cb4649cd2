"""Where a small clip-level job's time goes, and what the grid's stage cache saves.

A synthetic speech corpus the size of the one in issue 14 (10 speakers, 4 classes, 340 clips;
``egemaps`` LLDs at 100 Hz and ``egemaps_func`` functionals), a leave-one-speaker-out grid
(10 folds) of two cells, an SVM on the functionals and an LSTM on the LLDs, run twice in one
process with one worker: without the stage cache and with it. Per job: its wall seconds, the
seconds spent training (``log.csv``: epochs and their validation), and the rest (checks,
reading and aligning the store, predictions, outputs), side by side.

    python bench/clip_grid.py            # ~2-4 minutes on 2 cores
    python bench/clip_grid.py --quick    # 4 speakers, for a smoke test
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml


def job_times(grid: Path) -> dict[str, list[tuple[float, float]]]:
    """Per cell: (job wall seconds, training seconds) of each of its jobs."""
    out: dict[str, list[tuple[float, float]]] = {}
    for result in sorted(grid.glob("jobs/*/result.json")):
        wall = json.loads(result.read_text())["seconds"]
        with (result.parent / "run" / "log.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        fit = sum(float(r["seconds"] or 0) + float(r["eval_seconds"] or 0) for r in rows)
        cell = result.parent.name.split("__seed")[0]
        out.setdefault(cell, []).append((wall, fit))
    return out


def run(corpus, out: Path, cached: bool, epochs: int) -> tuple[float, dict, int]:
    import fuse.experiments.grid as grid_module
    from fuse.data.cache import StageCache
    from fuse.experiments.grid import load_grid
    from fuse.experiments.runner import run_grid

    spec = yaml.safe_load(corpus.grid.read_text())
    spec["overrides"]["train"]["epochs"] = epochs
    cache = StageCache() if cached else StageCache(max_bytes=0)  # 0: nothing is kept
    grid_module._CACHE = cache
    started = time.perf_counter()
    outcome = run_grid(load_grid(spec), out, workers=1, progress=False)
    seconds = time.perf_counter() - started
    assert outcome.ok, [r.error for r in outcome.failed]
    return seconds, job_times(out), cache.hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 speakers (smoke test)")
    parser.add_argument("--epochs", type=int, default=15, help="LSTM epochs per job")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import torch
    from rich.console import Console
    from rich.table import Table

    from fuse.synthetic_clips import speech_set

    torch.set_num_threads(1)
    speakers, per_class = (4, 6) if args.quick else (10, 9)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpus = speech_set(root / "data", speakers=speakers, clips_per_class=per_class)
        clips = len(corpus.labels.read_text().splitlines()) - 1
        results = {}
        for cached in (False, True):
            results[cached] = run(corpus, root / f"grid_{cached}", cached, args.epochs)
    table = Table(title=f"LOSO grid, {speakers} folds × 2 cells, {clips} clips, 1 worker, "
                        "1 torch thread (medians per job)")
    for col in ("cell", "cache", "job s", "training s", "rest s", "training share"):
        table.add_column(col, justify="left" if col in ("cell", "cache") else "right")
    for cached, (_, times, _) in results.items():
        for cell, jobs in times.items():
            wall = np.median([w for w, _ in jobs])
            fit = np.median([f for _, f in jobs])
            table.add_row(cell, "on" if cached else "off", f"{wall:.2f}", f"{fit:.2f}",
                          f"{wall - fit:.2f}", f"{fit / wall:.0%}")
    console = Console()
    console.print(table)
    off, on = results[False][0], results[True][0]
    console.print(f"grid wall time: {off:.1f} s without the cache, {on:.1f} s with it "
                  f"(ratio {on / off:.2f}); staged videos reused: {results[True][2]}")


if __name__ == "__main__":
    main()
