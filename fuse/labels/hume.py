"""Hume-Reaction (ABAW5 ERI / MuSe-Reaction): one intensity per emotion per video.

``labels.path``: a CSV with ``File_ID`` and the seven emotion columns (values 0..1).
``labels.partition``: a CSV with ``File_ID`` and ``Split`` (Train / Devel or Val / Test); test
videos listed there without labels are kept for prediction. A ``Split`` column inside the
labels CSV works too. ``File_ID`` may be bracketed (``[00001]``); brackets are dropped; ids are
read as text (``00001`` stays ``00001``). ``labels.group_by`` names a column of the labels CSV
or of the partition (the partition also gives the unlabelled test ids their group).
Predictions: ``File_ID,Adoration,…,Surprise``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fuse.errors import LabelError
from fuse.labels.base import (
    LABEL_FORMATS,
    LabelAdapter,
    LabelSet,
    Predictions,
    VideoLabels,
    normalise_split,
)
from fuse.labels.partition import (
    SPLIT_COLUMNS,
    clean_id,
    partition_groups,
    partition_ids,
    read_partition,
)
from fuse.labels.writers import write_csv

EMOTIONS = ["Adoration", "Amusement", "Anxiety", "Disgust", "Empathic-Pain", "Fear", "Surprise"]


@LABEL_FORMATS.register("hume")
class HumeReaction(LabelAdapter):
    name = "hume"
    level = "video"
    kind = "regression"

    def load(self, cfg) -> LabelSet:
        import pandas as pd

        group_col = cfg.group_by if cfg.group_by not in ("", "video") else None
        # ids and groups are text: "00001" stays "00001" (never the number 1)
        table = pd.read_csv(cfg.path, dtype={"File_ID": str, **({group_col: str} if group_col
                                                                 else {})})
        missing = [c for c in ["File_ID", *EMOTIONS] if c not in table.columns]
        if missing:
            raise LabelError(f"{cfg.path}: missing columns {missing}; it has {list(table.columns)}")
        if empty := table.index[table["File_ID"].isna()].tolist():
            raise LabelError(f"{cfg.path} line {empty[0] + 2}, column 'File_ID': empty video id")
        splits = read_partition(cfg.partition) if cfg.partition else {}
        split_col = next((c for c in SPLIT_COLUMNS if c in table.columns), None)
        given_groups = partition_groups(cfg.partition, group_col) if cfg.partition else {}
        if group_col and group_col not in table.columns and not given_groups:
            raise LabelError(f"{cfg.path}: no column {group_col!r} to group by (labels.group_by) "
                             f"in it or in the partition; it has {list(table.columns)}")
        group_col = group_col if group_col in table.columns else None
        videos: dict[str, VideoLabels] = {}
        source_ids: dict[str, str] = {}
        values = table[EMOTIONS].to_numpy(np.float32)
        for i, raw in enumerate(table["File_ID"]):
            vid = clean_id(raw)
            if str(raw).strip() != vid:
                source_ids[vid] = str(raw).strip()
            if vid in videos:
                raise LabelError(f"{cfg.path} line {i + 2}: File_ID {raw!r} appears twice")
            split = splits.get(vid)
            if split is None and split_col is not None:
                split = normalise_split(table[split_col].iloc[i])
            row = values[i : i + 1]
            group = table[group_col].iloc[i] if group_col else None
            group = given_groups.get(vid) if group is None or pd.isna(group) else str(group)
            videos[vid] = VideoLabels(vid, row, np.isfinite(row), split=split, group=group)
        for vid, split in splits.items():  # unlabelled test videos: kept for prediction
            if vid not in videos:
                empty = np.full((1, len(EMOTIONS)), np.nan, np.float32)
                videos[vid] = VideoLabels(vid, empty, np.zeros_like(empty, bool), split=split,
                                          group=given_groups.get(vid))
        if cfg.partition:
            source_ids |= partition_ids(cfg.partition)
        return LabelSet(self.name, "video", "regression", list(EMOTIONS), videos, source_ids)

    def write(self, preds: Predictions, path: Path) -> list[Path]:
        """The ERI submission: ``File_ID,Adoration,…,Surprise``, one row per video, ids
        written as the label source writes them (``[00001]`` stays bracketed)."""
        target = path if path.suffix == ".csv" else path / "predictions.csv"
        return write_csv(preds, target, id_column="File_ID")
