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
              kind: str, ids: dict[str, str] | None = None) -> bool:
    """Add the true-label columns to the CSV at ``path``; False (unchanged) when the split has
    no labels or the file has no id column to join on. ``ids``: video → id as the file writes
    it (``Predictions.ids``, e.g. Hume's ``[00001]``); ids are compared as text, brackets
    dropped, so ``00001`` is never read as the number 1."""
    import pandas as pd

    from fuse.labels.partition import clean_id

    if not path.is_file() or data.y is None or not any(
            data.targets_of(v)[1].any() for v in videos):
        return False
    columns = list(pd.read_csv(path, nrows=0).columns)
    id_col = columns[0]  # video / File_ID: the writers put the id first
    table = pd.read_csv(path, dtype={id_col: str}, keep_default_na=False,
                        na_values={c: ["", "nan", "NaN"] for c in columns[1:]})
    keys = ["_id"] + (["frame"] if data.level == "frame" and "frame" in table.columns else [])
    truth = pd.DataFrame(_truth_rows(data, videos, targets, kind, keys[1:] == ["frame"]))
    truth["_id"] = [clean_id((ids or {}).get(v, v)) for v in truth["_id"]]
    table["_id"] = table[id_col].map(clean_id)
    try:
        merged = table.merge(truth, on=keys, how="left", validate="many_to_one")
    except (ValueError, KeyError):  # pandas MergeError is a ValueError
        merged = table.iloc[:0]
    if len(merged) != len(table):
        log.warning("%s: the true labels could not be joined row for row; left without them",
                    path)
        return False
    names = [c for c in truth.columns if c not in keys]
    if merged[names].isna().all().all():
        log.warning("%s: no row's id matches a labelled video; left without the true labels",
                    path)
        return False
    merged.drop(columns="_id").to_csv(path, index=False, float_format="%.6f")
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
