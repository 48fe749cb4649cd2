"""A generic label CSV: ``video``, optional ``frame`` or ``time``, target columns, optional split.

With a frame or time column the labels are per frame (one row per frame, any order); without,
one row per video. Empty cells are invalid. Classification: set ``labels.classes``; the single
target column holds class names or indices (-1 invalid). Column names come from ``labels.*``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fuse.errors import LabelError
from fuse.labels.base import LABEL_FORMATS, LabelAdapter, LabelSet, VideoLabels, normalise_split
from fuse.labels.partition import clean_id, read_partition


@LABEL_FORMATS.register("csv")
class GenericCSV(LabelAdapter):
    name = "csv"
    level = "any"
    kind = "any"

    def load(self, cfg) -> LabelSet:
        import pandas as pd

        table = pd.read_csv(cfg.path)
        if cfg.video_column not in table.columns:
            raise LabelError(f"{cfg.path}: no video column {cfg.video_column!r} "
                             f"(labels.video_column); it has {list(table.columns)}")
        frame_col = cfg.frame_column if cfg.frame_column in table.columns else None
        time_col = cfg.time_column if cfg.time_column in table.columns else None
        split_col = cfg.split_column if cfg.split_column in table.columns else None
        group_col = cfg.group_by if cfg.group_by in table.columns else None
        reserved = {cfg.video_column, frame_col, time_col, split_col, group_col}
        targets = list(cfg.targets) or [c for c in table.columns if c not in reserved and (
            cfg.classes or pd.api.types.is_numeric_dtype(table[c]))]
        absent = [t for t in targets if t not in table.columns]
        if absent or not targets:
            raise LabelError(f"{cfg.path}: target columns {absent or '(none found)'} are not in "
                             f"{list(table.columns)} (labels.targets)")
        kind = "classification" if cfg.classes else "regression"
        if kind == "classification" and len(targets) != 1:
            raise LabelError(f"{cfg.path}: classification needs one target column, got {targets}")
        values = (self._class_index(table[targets[0]], cfg.classes, cfg.path) if cfg.classes
                  else table[targets].to_numpy(np.float32))
        valid = (values >= 0) if cfg.classes else np.isfinite(values)
        order_col = frame_col or time_col
        level = "frame" if order_col else "video"
        splits = read_partition(cfg.partition) if cfg.partition else {}
        videos = {}
        ids = table[cfg.video_column].map(clean_id).to_numpy()
        for vid in dict.fromkeys(ids):
            rows = np.flatnonzero(ids == vid)
            if order_col:
                rows = rows[np.argsort(table[order_col].to_numpy()[rows], kind="stable")]
            elif len(rows) > 1:
                raise LabelError(f"{cfg.path}: video {vid!r} has {len(rows)} rows but no "
                                 f"{cfg.frame_column!r} or {cfg.time_column!r} column")
            split = splits.get(vid)
            if split is None and split_col:
                split = normalise_split(table[split_col].iloc[rows[0]])
            videos[vid] = VideoLabels(
                vid, values[rows], valid[rows],
                frames=table[frame_col].to_numpy()[rows].astype(int) if frame_col else None,
                times=table[time_col].to_numpy(np.float64)[rows] if time_col else None,
                split=split, group=str(table[group_col].iloc[rows[0]]) if group_col else None)
        names = list(cfg.classes) if cfg.classes else targets
        return LabelSet(self.name, level, kind, names, videos)

    @staticmethod
    def _class_index(column, classes: list[str], path: str | Path) -> np.ndarray:
        lookup = {name: i for i, name in enumerate(classes)}
        out = np.full((len(column), 1), -1, np.float32)
        for i, cell in enumerate(column):
            if cell is None or (isinstance(cell, float) and np.isnan(cell)):
                continue
            text = str(cell).strip()
            if text in lookup:
                out[i, 0] = lookup[text]
                continue
            try:
                index = int(float(text))
            except ValueError:
                raise LabelError(f"{path} line {i + 2}: class {text!r} is not one of "
                                 f"{classes}") from None
            if index >= len(classes):
                raise LabelError(f"{path} line {i + 2}: class index {index} >= {len(classes)}")
            out[i, 0] = index
        return out
