"""Prediction writers shared by the adapters: one CSV, or one text file per video."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fuse.labels.base import Predictions


def write_csv(preds: Predictions, path: Path, id_column: str = "video") -> list[Path]:
    """One CSV: ``video[,frame,time],<targets>``; classification: ``class`` and ``label``."""
    import pandas as pd

    frames = []
    for vid, values, fr, t in zip(preds.videos, preds.values, preds.frames, preds.times,
                                  strict=True):
        cols: dict[str, object] = {id_column: [preds.ids.get(vid, vid)] * len(values)}
        if preds.level == "frame":
            if fr is not None:
                cols["frame"] = fr
            if t is not None:
                cols["time"] = np.round(t, 6)
        cols.update(_value_columns(preds, values))
        frames.append(pd.DataFrame(cols))
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    table.to_csv(path, index=False, float_format="%.6f")
    return [path]


def write_per_video(preds: Predictions, folder: Path, header: str, fmt: str) -> list[Path]:
    """Aff-Wild2 style: ``<folder>/<video>.txt``, a header line then one line per frame."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for vid, values in zip(preds.videos, preds.values, strict=True):
        path = folder / f"{vid.replace('/', '__')}.txt"
        np.savetxt(path, values, fmt=fmt, delimiter=",", header=header, comments="")
        written.append(path)
    return written


def _value_columns(preds: Predictions, values: np.ndarray) -> dict[str, object]:
    if preds.kind == "classification":
        idx = values[:, 0].astype(int)
        names = np.asarray(preds.targets, dtype=object)
        return {"class": idx, "label": names[np.clip(idx, 0, len(names) - 1)]}
    return {name: values[:, k] for k, name in enumerate(preds.targets)}
