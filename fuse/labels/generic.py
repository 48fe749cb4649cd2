"""A generic label CSV: ``video``, optional ``frame`` or ``time``, target columns, optional split.

With a frame or time column the labels are per frame (one row per frame, any order); without,
one row per video. Empty cells are invalid. Video ids, splits and groups are read as text
(``00001`` stays ``00001``). Classification: set ``labels.classes``; the single
target column holds class names or indices (-1 invalid). Column names come from ``labels.*``;
``labels.group_by`` names the column of speaker / subject ids that splits group by.

Mistakes get one line naming the file, line and column, and the fix: a header-only or all-empty
file, a cell that is not a number, class names without ``labels.classes``, a speaker column
without ``labels.group_by`` when splits are made.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fuse.errors import LabelError
from fuse.labels.base import LABEL_FORMATS, LabelAdapter, LabelSet, VideoLabels, normalise_split
from fuse.labels.partition import clean_id, read_partition

#: Column names that hold ids of speakers / subjects, never targets.
ID_LIKE = re.compile(r"(speaker|spk|subject|actor|participant|person|session|user|gender)"
                     r"(_?id)?$", re.IGNORECASE)
MAX_LISTED = 8  # class names / columns quoted in a message


@LABEL_FORMATS.register("csv")
class GenericCSV(LabelAdapter):
    name = "csv"
    level = "any"
    kind = "any"

    def load(self, cfg) -> LabelSet:
        import pandas as pd

        path = cfg.path
        text_cols = {c: str for c in (cfg.video_column, cfg.split_column, cfg.group_by) if c}
        try:  # ids, splits and groups are text: "00001" stays "00001" (never the number 1)
            table = pd.read_csv(path, dtype=text_cols)
        except pd.errors.EmptyDataError:
            raise LabelError(f"{path}: the file is empty (no header, no label rows)") from None
        except pd.errors.ParserError as exc:
            raise LabelError(f"{path}: not a readable CSV ({str(exc).strip()})") from None
        if table.empty:
            raise LabelError(f"{path}: no label rows, only the header {list(table.columns)}")
        if cfg.video_column not in table.columns:
            raise LabelError(f"{path}: no video column {cfg.video_column!r} "
                             f"(labels.video_column); it has {list(table.columns)}")
        frame_col = cfg.frame_column if cfg.frame_column in table.columns else None
        time_col = cfg.time_column if cfg.time_column in table.columns else None
        split_col = cfg.split_column if cfg.split_column in table.columns else None
        group_col = cfg.group_by if cfg.group_by not in ("", "video") else None
        if group_col and group_col not in table.columns:
            raise LabelError(f"{path}: no column {group_col!r} to group by (labels.group_by); "
                             f"it has {list(table.columns)}")
        reserved = {cfg.video_column, frame_col, time_col, split_col, group_col} - {None}
        targets = list(cfg.targets) or self._auto_targets(table, reserved, cfg)
        absent = [t for t in targets if t not in table.columns]
        if absent:
            raise LabelError(f"{path}: target columns {absent} are not in "
                             f"{list(table.columns)} (labels.targets)")
        kind = "classification" if cfg.classes else "regression"
        if kind == "classification" and len(targets) != 1:
            raise LabelError(f"{path}: classification needs one target column, got {targets}; "
                             "name it with labels.targets=COLUMN (a column of speaker or "
                             "subject ids goes in labels.group_by)")
        if cfg.classes:
            values = self._class_index(table[targets[0]], cfg.classes, path, targets[0])
            valid = values >= 0
        else:
            values = np.stack([_numeric(table[t], path, t) for t in targets], axis=1)
            valid = np.isfinite(values)
        _check_not_empty(valid, targets, path, kind)
        order_col = frame_col or time_col
        level = "frame" if order_col else "video"
        splits = read_partition(cfg.partition) if cfg.partition else {}
        if empty := table.index[table[cfg.video_column].isna()].tolist():
            raise LabelError(f"{path} line {empty[0] + 2}, column {cfg.video_column!r}: empty "
                             "video id")
        ids = table[cfg.video_column].map(clean_id).to_numpy()
        if group_col:
            _check_groups(table, ids, group_col, path)
        videos = {}
        for vid in dict.fromkeys(ids):
            rows = np.flatnonzero(ids == vid)
            if order_col:
                rows = rows[np.argsort(table[order_col].to_numpy()[rows], kind="stable")]
            elif len(rows) > 1:
                raise LabelError(f"{path}: video {vid!r} has {len(rows)} rows (lines "
                                 f"{rows[0] + 2} and {rows[1] + 2}) but no "
                                 f"{cfg.frame_column!r} or {cfg.time_column!r} column")
            split = splits.get(vid)
            if split is None and split_col:
                split = normalise_split(table[split_col].iloc[rows[0]])
            videos[vid] = VideoLabels(
                vid, values[rows], valid[rows],
                frames=table[frame_col].to_numpy()[rows].astype(int) if frame_col else None,
                times=table[time_col].to_numpy(np.float64)[rows] if time_col else None,
                split=split, group=str(table[group_col].iloc[rows[0]]) if group_col else None)
        if not cfg.group_by and self._makes_splits(cfg, videos):
            _check_forgotten_group(table, ids, reserved | set(targets), path)
        names = list(cfg.classes) if cfg.classes else targets
        return LabelSet(self.name, level, kind, names, videos)

    @staticmethod
    def _auto_targets(table, reserved: set[str], cfg) -> list[str]:
        """Target columns when ``labels.targets`` is empty: the number columns (with
        ``labels.classes``: the one column whose values are those classes)."""
        import pandas as pd

        rest = [c for c in table.columns if c not in reserved]
        if cfg.classes:
            known = {str(c) for c in cfg.classes} | {str(i) for i in range(len(cfg.classes))}
            fits = [c for c in rest
                    if {str(x).strip() for x in table[c].dropna()} <= known | {"-1"}]
            if len(fits) == 1:
                return fits
            if len(rest) == 1:  # the only column: its cells are checked against the classes
                return rest
            raise LabelError(f"{cfg.path}: cannot tell which column holds the classes "
                             f"{_listing(cfg.classes)} (candidates: {fits or rest}); name it "
                             "with labels.targets=COLUMN")
        numeric, text = [], []
        for c in rest:
            column = table[c]
            if ID_LIKE.match(str(c)):
                continue  # an id column, never a target (group splits by it: labels.group_by)
            if pd.api.types.is_numeric_dtype(column):
                numeric.append(c)
            elif _mostly_numbers(column):
                _numeric(column, cfg.path, c)  # raises on the first cell that is not a number
            else:
                text.append(c)
        if numeric:
            return numeric
        hint = ""
        if text:
            first = text[0]
            values = sorted({str(x) for x in table[first].dropna()})
            hint = (f"; {first!r} holds text ({_listing(values)}): for class labels set "
                    f"labels.classes=[{','.join(values[:MAX_LISTED])}] and "
                    "task.name=classification")
        raise LabelError(f"{cfg.path}: no target column with numbers among "
                         f"{rest or list(table.columns)} (labels.targets){hint}")

    @staticmethod
    def _makes_splits(cfg, videos: dict[str, VideoLabels]) -> bool:
        from fuse.labels.splits import uses_folds

        return bool(cfg.make_splits or uses_folds(cfg)
                    or (not cfg.partition and any(v.split is None for v in videos.values())))

    @staticmethod
    def _class_index(column, classes: list[str], path: str | Path, name: str) -> np.ndarray:
        lookup = {str(c): i for i, c in enumerate(classes)}
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
                raise LabelError(f"{path} line {i + 2}, column {name!r}: class {text!r} is not "
                                 f"one of labels.classes {_listing(classes)}") from None
            if index >= len(classes) or index < -1:
                raise LabelError(f"{path} line {i + 2}, column {name!r}: class index {index} "
                                 f"is outside 0..{len(classes) - 1} (-1 = no label)")
            out[i, 0] = index
        return out


def _numeric(column, path: str | Path, name: str) -> np.ndarray:
    """A column as float32 (empty cells NaN); the first cell that is not a number raises."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return column.to_numpy(np.float32)
    parsed = pd.to_numeric(column, errors="coerce")
    bad = np.flatnonzero(parsed.isna().to_numpy() & column.notna().to_numpy()
                         & (column.astype(str).str.strip() != "").to_numpy())
    if len(bad):
        i = int(bad[0])
        cell = str(column.iloc[i]).strip()
        hint = ""
        if not _mostly_numbers(column):
            values = sorted({str(x).strip() for x in column.dropna()})
            hint = (f"; class labels? set labels.classes=[{','.join(values[:MAX_LISTED])}] "
                    "and task.name=classification")
        raise LabelError(f"{path} line {i + 2}, column {name!r}: could not convert {cell!r} to "
                         f"a number ({len(bad)} such cells){hint}")
    return parsed.to_numpy(np.float32)


def _mostly_numbers(column) -> bool:
    """At least half of the non-empty cells parse as numbers (a number column with typos)."""
    import pandas as pd

    cells = column.dropna()
    if cells.empty:
        return False
    return bool(pd.to_numeric(cells, errors="coerce").notna().mean() >= 0.5)


def _check_not_empty(valid: np.ndarray, targets: list[str], path: str | Path, kind: str) -> None:
    if not valid.any():
        what = "class cell" if kind == "classification" else "value"
        raise LabelError(f"{path}: every {what} of {targets} is empty or invalid (NaN / -1): "
                         "there are no labels to train on")
    if empty := [t for k, t in enumerate(targets) if not valid[:, k].any()]:
        raise LabelError(f"{path}: target columns {empty} have no value in any row (all empty "
                         "or NaN); fill them, or leave them out with labels.targets")


def _check_groups(table, ids: np.ndarray, column: str, path: str | Path) -> None:
    """The group column is filled and constant within each video."""
    cells = table[column]
    missing = np.flatnonzero(cells.isna().to_numpy())
    if len(missing):
        raise LabelError(f"{path} line {missing[0] + 2}, column {column!r}: empty group id "
                         f"(labels.group_by); {len(missing)} rows have none")
    per_video = cells.astype(str).groupby(ids).nunique()
    if (per_video > 1).any():
        vid = per_video.index[int(np.argmax(per_video.to_numpy() > 1))]
        raise LabelError(f"{path}: video {vid!r} has more than one {column!r} value; a "
                         "video belongs to one group (labels.group_by)")


def _check_forgotten_group(table, ids: np.ndarray, used: set[str], path: str | Path) -> None:
    """Splits are about to be made per video: refuse when a column looks like speaker /
    subject ids (text or id-named, constant within each video, repeated across videos)."""
    import pandas as pd

    n_videos = len(set(ids))
    for c in table.columns:
        if c in used:
            continue
        column = table[c]
        if pd.api.types.is_numeric_dtype(column) and not ID_LIKE.match(str(c)):
            continue
        if column.isna().any():
            continue
        per_video = column.astype(str).groupby(ids).nunique()
        distinct = column.astype(str).nunique()
        if (per_video == 1).all() and 1 < distinct < n_videos:
            raise LabelError(
                f"{path}: labels.group_by is not set, so splits would be made per video, but "
                f"column {c!r} has {distinct} values repeated over {n_videos} videos (a "
                f"speaker / subject id?): set labels.group_by={c} so one {c} never lands in "
                "two splits, or labels.group_by=video to split per video on purpose")


def _listing(items: list) -> str:
    head = ", ".join(map(str, items[:MAX_LISTED]))
    return "[" + head + (f", … {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED
                         else "") + "]"
