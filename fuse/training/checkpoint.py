"""Checkpoints: ``best.pt`` holds what ``predict`` needs; ``last.pt`` adds what ``--resume`` needs.

Both carry the resolved config, the model spec, the label targets and format, and the
normaliser, so a run folder is self-contained. ``train.keep`` prunes them when a run ends
(``last``: both; ``best``: ``best.pt``; ``none``: outputs only), ``train.keep_snapshots=false``
the Train-Val-Mix snapshot weights (their outputs stay).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from fuse.errors import RunError

FORMAT = 1
PRUNED = "PRUNED.txt"  # says which checkpoints train.keep removed


def prune_checkpoints(run, train_cfg) -> list[Path]:
    """Remove the checkpoints ``train.keep`` / ``keep_snapshots`` do not keep; returns them.
    A note in the run folder says what went, so a later ``eval`` / ``predict`` says why."""
    from fuse.training.snapshots import FOLDER

    gone = {"last": [], "best": [run.last], "none": [run.last, run.best]}[train_cfg.keep]
    if not train_cfg.keep_snapshots:
        gone += sorted((run.root / FOLDER).glob("epoch_*.pt"))
    removed = [p for p in gone if p.is_file()]
    for path in removed:
        path.unlink()
    if removed:
        names = ", ".join(str(p.relative_to(run.root)) for p in removed)
        (run.root / PRUNED).write_text(
            f"removed when the run ended (train.keep={train_cfg.keep}, keep_snapshots="
            f"{str(train_cfg.keep_snapshots).lower()}): {names}\n")
    return removed


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically (a crash never leaves a half-written checkpoint)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": FORMAT, **payload}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        if (path.parent / PRUNED).is_file():
            raise RunError(f"no checkpoint {path}: {(path.parent / PRUNED).read_text().strip()}")
        raise RunError(f"no checkpoint {path}; is {path.parent} a finished `fuse train` run?")
    data = torch.load(path, map_location="cpu", weights_only=True)
    if data.get("format") != FORMAT:
        raise RunError(f"{path}: checkpoint format {data.get('format')}, expected {FORMAT}")
    return data
