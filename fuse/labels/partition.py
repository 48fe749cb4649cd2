"""Split files: a CSV with a video id column (``video`` or ``File_ID``) and a ``Split`` column."""

from __future__ import annotations

from pathlib import Path

from fuse.errors import LabelError
from fuse.labels.base import normalise_split

ID_COLUMNS = ("video", "File_ID", "file_id", "id")
SPLIT_COLUMNS = ("split", "Split", "partition", "Partition")


def clean_id(raw: object) -> str:
    """Video id from a label file cell: whitespace and surrounding brackets removed
    (Hume-Reaction writes ``[00001]`` where the media file is ``00001.mp4``)."""
    text = str(raw).strip()
    if len(text) > 1 and text[0] == "[" and text[-1] == "]":
        text = text[1:-1].strip()
    return text


def read_partition(path: str | Path) -> dict[str, str]:
    """``{video: train | val | test}`` from a partition CSV."""
    import pandas as pd

    table = pd.read_csv(path, dtype=str)
    id_col = next((c for c in ID_COLUMNS if c in table.columns), None)
    split_col = next((c for c in SPLIT_COLUMNS if c in table.columns), None)
    if id_col is None or split_col is None:
        raise LabelError(f"partition {path}: needs a video id column (one of {ID_COLUMNS}) and "
                         f"a split column (one of {SPLIT_COLUMNS}); it has {list(table.columns)}")
    out = {}
    for line, (vid, split) in enumerate(zip(table[id_col], table[split_col], strict=True),
                                        start=2):
        name = normalise_split(split)
        if name is None:
            raise LabelError(f"partition {path} line {line}: unknown split {split!r} "
                             "(use train / val (devel, validation) / test)")
        out[clean_id(vid)] = name
    return out


def partition_ids(path: str | Path) -> dict[str, str]:
    """``{clean id: id as written}`` for the ids of a partition CSV that differ when cleaned."""
    import pandas as pd

    table = pd.read_csv(path, dtype=str)
    id_col = next((c for c in ID_COLUMNS if c in table.columns), None)
    if id_col is None:
        return {}
    return {clean_id(v): str(v).strip() for v in table[id_col] if clean_id(v) != str(v).strip()}


def partition_groups(path: str | Path, column: str | None) -> dict[str, str]:
    """``{clean id: group}`` from the ``column`` of a partition CSV ({} when it has no such
    column or ``column`` is None); rows with an empty cell have no group."""
    import pandas as pd

    if not column:
        return {}
    table = pd.read_csv(path, dtype=str)
    id_col = next((c for c in ID_COLUMNS if c in table.columns), None)
    if id_col is None or column not in table.columns:
        return {}
    return {clean_id(v): str(g).strip() for v, g in zip(table[id_col], table[column],
                                                         strict=True)
            if isinstance(g, str) and g.strip()}
