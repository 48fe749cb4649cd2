"""CSV: one file per video, as the MuSe baselines ship features.

Columns: leading metadata columns (``timestamp`` in ms, ``segment_id`` / ``subject_id``, …),
then one column per feature dimension. Exported files have ``time_s,mask,<dims…>``, the dims
named by the feature's labels (FER classes, AU names, openSMILE descriptors) or ``f0…``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from extract.errors import ImportFormatError
from extract.io.formats import (
    FEATURE_META_FILE,
    READERS,
    WRITERS,
    FormatReader,
    FormatWriter,
    SourceItem,
    VideoRows,
    files_by_video,
    load_meta,
    video_relpath,
)

log = logging.getLogger(__name__)

# Leading columns with these names (any case) are metadata, not features.
META_NAMES = frozenset({"timestamp", "timestamps", "time", "time_s", "time_ms", "frametime",
                        "frame", "frame_id", "frame_idx", "frame_index", "segment_id",
                        "subject_id", "id", "name", "video", "video_id", "file", "mask", "start",
                        "end"})
# Looked for, in this order, when no time column, fps or frame shift is given.
TIME_NAMES = ("time_s", "timestamp", "time", "frametime", "time_ms", "start")
MASK_COLUMN = "mask"


def _line(i: int) -> str:
    return f"line {i + 2}"  # line 1 is the header


def detect_time_unit(column: str, values: np.ndarray, unit: str = "auto") -> str:
    """``"s"`` or ``"ms"``: ``unit`` when given, else from the name (``*_ms``, ``*_s``), else
    from the values (whole numbers at least 10 apart are milliseconds, as in MuSe)."""
    if unit != "auto":
        return unit
    low = column.lower()
    if low == "ms" or low.endswith(("_ms", "(ms)", "[ms]")):
        return "ms"
    if low.endswith(("_s", "(s)", "[s]", "_sec")) or low == "frametime":
        return "s"
    v = values[np.isfinite(values)]
    if v.size >= 2 and np.all(v == np.round(v)) and np.median(np.diff(v)) >= 10:
        return "ms"
    return "s"


@READERS.register("csv")
class CsvReader(FormatReader):
    """A CSV file, or a folder of them (video id = path without ``.csv``)."""

    name = "csv"

    def items(self, source: Path) -> list[SourceItem]:
        renamed = self.metadata(source).get("videos", {})
        return [SourceItem(renamed.get(vid, vid), path, partial(self.load, path,
                                                                renamed.get(vid, vid)))
                for vid, path in files_by_video(source, (".csv",))]

    def metadata(self, source: Path) -> dict[str, Any]:
        side = source / FEATURE_META_FILE
        return load_meta(side.read_text(), str(side)) if side.is_file() else {}

    def load(self, path: Path, video: str) -> VideoRows:
        import pandas as pd

        # pandas 3 parses floats exactly by default (and deprecates the option)
        exact = {"float_precision": "round_trip"} if pd.__version__.startswith(("1.", "2.")) else {}
        try:
            df = pd.read_csv(path, **exact)
        except (ValueError, UnicodeDecodeError) as exc:  # ParserError/EmptyDataError included
            raise ImportFormatError(f"{path}: not a readable CSV file: {exc}") from exc
        cols = [str(c) for c in df.columns]
        df.columns = cols
        time_col = self._time_column(cols, path)
        mask_col = MASK_COLUMN if MASK_COLUMN in cols else None
        meta = self._meta_columns(cols)
        feats = [c for c in cols if c not in meta and c not in (time_col, mask_col)]
        if not feats:
            raise ImportFormatError(f"{path}: no feature columns after the metadata columns "
                                    f"{meta}")
        data = self._numeric(df, feats, path)
        details: dict[str, Any] = {"dim_names": feats, "meta_columns": meta}
        if time_col is not None:
            raw = self._numeric(df, [time_col], path)[:, 0]
            unit = detect_time_unit(time_col, raw, self.options.time_unit)
            times = raw / 1000.0 if unit == "ms" else raw
            details.update(time_column=time_col, time_unit=unit)
        else:
            times = np.arange(len(df), dtype=np.float64) * self.options.shift_for(video, str(path))
        mask = None
        if mask_col is not None:
            m = self._numeric(df, [mask_col], path)[:, 0]
            bad = np.flatnonzero(~np.isin(m, (0, 1)))
            if bad.size:
                raise ImportFormatError(f"{path}: {_line(int(bad[0]))}: column 'mask' holds "
                                        f"{m[bad[0]]!r}; expected 0 or 1")
            mask = m.astype(bool)
        return VideoRows(data, times, mask, _line, details)

    def _time_column(self, cols: list[str], path: Path) -> str | None:
        opts = self.options
        if opts.time_column is not None:
            if opts.time_column not in cols:
                raise ImportFormatError(f"{path}: no time column {opts.time_column!r}; columns: "
                                        f"{', '.join(cols[:8])}{' …' if len(cols) > 8 else ''}")
            return opts.time_column
        if opts.has_rate:
            return None
        lower = {c.lower(): c for c in cols}
        found = next((lower[n] for n in TIME_NAMES if n in lower), None)
        if found is None:
            raise ImportFormatError(f"{path}: no time column (looked for {', '.join(TIME_NAMES)})"
                                    "; give time_column, fps or frame_shift")
        return found

    def _meta_columns(self, cols: list[str]) -> list[str]:
        if self.options.meta_columns is not None:
            return cols[: self.options.meta_columns]
        meta = []
        for c in cols:
            if c.lower() not in META_NAMES:
                break
            meta.append(c)
        return meta

    @staticmethod
    def _numeric(df: Any, cols: list[str], path: Path) -> np.ndarray:
        """The columns as a float64 (or bool/int) matrix; names every non-numeric column."""
        import pandas as pd

        sub = df[cols]
        bad = [c for c in cols if sub[c].dtype.kind not in "fiub"]
        if bad:
            conv = {c: pd.to_numeric(sub[c], errors="coerce") for c in bad}
            wrong = [c for c in bad if (conv[c].isna() & sub[c].notna()).any()]
            if wrong:
                c = wrong[0]
                i = int(np.flatnonzero((conv[c].isna() & sub[c].notna()).to_numpy())[0])
                raise ImportFormatError(
                    f"{path}: {_line(i)}: column {c!r} holds {sub[c].iloc[i]!r}, not a number "
                    f"({len(wrong)} non-numeric column(s): {', '.join(wrong[:5])}); if these "
                    "are metadata, pass meta_columns=N (the number of leading metadata columns)")
            sub = sub.assign(**conv)
        return sub.to_numpy(dtype=np.float64)


@WRITERS.register("csv")
class CsvWriter(FormatWriter):
    """One ``<video id>.csv`` per video under a folder, plus ``_feature.json``."""

    name = "csv"

    def write(self, videos: Iterable[Any], meta: Mapping[str, Any], out: Path) -> list[Path]:
        import pandas as pd

        out.mkdir(parents=True, exist_ok=True)
        dim = int(meta["dim"])
        names = _dim_names(meta.get("labels"), dim)
        written, renamed = [], {}
        for fa in videos:
            rel = video_relpath(fa.video, ".csv")
            if rel.with_suffix("").as_posix() != fa.video:
                renamed[rel.with_suffix("").as_posix()] = fa.video
            path = out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            df = pd.DataFrame(_exact_floats(fa.data), columns=names)
            df.insert(0, MASK_COLUMN, fa.mask.astype(np.uint8))
            df.insert(0, "time_s", np.asarray(fa.timestamps, dtype=np.float64))
            tmp = path.with_name(f".{path.name}.tmp")
            df.to_csv(tmp, index=False)
            tmp.replace(path)
            written.append(path)
        side = out / FEATURE_META_FILE
        side.write_text(json.dumps({**meta, "videos": renamed}, indent=1, default=str))
        return [side, *written]


def _exact_floats(data: np.ndarray) -> np.ndarray:
    """float16/32 rows as float32 (pandas writes their shortest exact text), others as float64."""
    small = data.dtype.kind == "f" and data.dtype.itemsize <= 4
    return np.asarray(data, dtype=np.float32 if small else np.float64)


def _dim_names(names: Any, dim: int) -> list[str]:
    """The feature's column names (labels) when usable as CSV columns after ``time_s,mask``,
    else ``f0…`` (with a warning when names were there but cannot be used)."""
    if names is None:
        return [f"f{i}" for i in range(dim)]
    if (isinstance(names, list) and len(names) == dim and len(set(names)) == dim
            and all(isinstance(n, str) and n and n.lower() not in META_NAMES for n in names)):
        return names
    log.warning("column names f0…f%d instead of the feature's labels: they repeat, are empty "
                "or clash with a metadata column name (%s); the labels stay in %s",
                dim - 1, ", ".join(sorted(META_NAMES)), FEATURE_META_FILE)
    return [f"f{i}" for i in range(dim)]
