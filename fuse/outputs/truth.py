"""The true labels beside a split's predictions: ``true_<target>`` columns (classification:
``true_class`` and ``true_label``) added to ``predictions/<split>.csv`` when the split has
labels, joined on the video id (and frame) so rows the labels lack stay empty."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fuse.data.dataset import FusedData

log = logging.getLogger(__name__)


def add_truth(path: Path, data: FusedData, videos: np.ndarray, targets: list[str],
              kind: str) -> bool:
    """Add the true-label columns to the CSV at ``path``; False (unchanged) when the split has
    no labels or the file has no id column to join on."""
    import pandas as pd

    if not path.is_file() or data.y is None or not any(
            data.targets_of(v)[1].any() for v in videos):
        return False
    table = pd.read_csv(path)
    id_col = table.columns[0]  # video / File_ID: the writers put the id first
    keys = [id_col] + (["frame"] if data.level == "frame" and "frame" in table.columns else [])
    truth = pd.DataFrame(_truth_rows(data, videos, targets, kind, keys[1:] == ["frame"]))
    truth = truth.rename(columns={"_id": id_col})
    table[id_col] = table[id_col].astype(str)
    try:
        merged = table.merge(truth, on=keys, how="left", validate="many_to_one")
    except (ValueError, KeyError):  # pandas MergeError is a ValueError
        merged = table.iloc[:0]
    if len(merged) != len(table):
        log.warning("%s: the true labels could not be joined row for row; left without them",
                    path)
        return False
    merged.to_csv(path, index=False, float_format="%.6f")
    return True


def _truth_rows(data: FusedData, videos: np.ndarray, targets: list[str], kind: str,
                by_frame: bool) -> dict[str, list]:
    cols: dict[str, list] = {"_id": []}
    if by_frame:
        cols["frame"] = []
    names = ["true_class", "true_label"] if kind == "classification" else [
        f"true_{t}" for t in targets]
    for name in names:
        cols[name] = []
    for v in videos:
        y, ok = data.targets_of(v)
        n = len(y)
        cols["_id"] += [data.videos[v]] * n
        if by_frame:
            frames = data.frames[v]
            cols["frame"] += list(frames if frames is not None else range(n))
        if kind == "classification":
            idx = np.where(ok[:, 0], y[:, 0], -1).astype(int)
            cols["true_class"] += [int(i) if i >= 0 else None for i in idx]
            cols["true_label"] += [targets[i] if i >= 0 else None for i in idx]
        else:
            for k, t in enumerate(targets):
                cols[f"true_{t}"] += [float(a) if o else None for a, o in zip(y[:, k], ok[:, k],
                                                                              strict=True)]
    return cols
