"""Checkpoints: ``best.pt`` holds what ``predict`` needs; ``last.pt`` adds what ``--resume`` needs.

Both carry the resolved config, the model spec, the label targets and format, and the
normaliser, so a run folder is self-contained.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from fuse.errors import RunError

FORMAT = 1


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically (a crash never leaves a half-written checkpoint)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": FORMAT, **payload}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RunError(f"no checkpoint {path}; is {path.parent} a finished `fuse train` run?")
    data = torch.load(path, map_location="cpu", weights_only=True)
    if data.get("format") != FORMAT:
        raise RunError(f"{path}: checkpoint format {data.get('format')}, expected {FORMAT}")
    return data
