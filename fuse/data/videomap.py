"""Which stored video a labelled video reads each feature from.

Labels and features do not always share ids: Aff-Wild2 labels and crops of a two-person video
are ``X_left`` / ``X_right`` while its audio (or a visual feature of the whole frame) is stored
under the raw video ``X``. A feature is read from the first of these ids it holds:

1. an explicit row of ``labels.video_map`` (a CSV: ``video,feature_video[,applies_to]``;
   ``applies_to`` is a feature name, ``visual``, ``audio``, or empty for every feature; the
   most specific row wins, and then only that id is used);
2. the video's own id;
3. the label format's other ids for it (Aff-Wild2: ``X_left`` / ``X_right`` → ``X``).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fuse.errors import LabelError

LABEL_COLUMNS = ("video", "label_id")
FEATURE_COLUMNS = ("feature_video", "feature_id")


@dataclass
class VideoMap:
    """Label video id → the stored video id per feature (see the module docstring)."""

    rows: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # id → (applies, fid)
    aliases: Callable[[str], list[str]] | None = None  # format's other ids for a video

    @classmethod
    def load(cls, path: str | Path | None,
             aliases: Callable[[str], list[str]] | None = None) -> VideoMap:
        """Read a ``labels.video_map`` CSV (``None`` / "" = no explicit rows)."""
        rows: dict[str, list[tuple[str, str]]] = {}
        if path:
            path = Path(path)
            if not path.is_file():
                raise LabelError(f"labels.video_map: {path} is not a file")
            with path.open(newline="") as fh:
                reader = csv.DictReader(fh)
                cols = [c.strip() for c in reader.fieldnames or []]
                vcol = next((c for c in LABEL_COLUMNS if c in cols), None)
                fcol = next((c for c in FEATURE_COLUMNS if c in cols), None)
                if vcol is None or fcol is None:
                    raise LabelError(f"{path} line 1: labels.video_map needs columns "
                                     f"{' or '.join(LABEL_COLUMNS)} and "
                                     f"{' or '.join(FEATURE_COLUMNS)}; it has {cols}")
                for line, row in enumerate(reader, start=2):
                    row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
                    if not row.get(vcol) or not row.get(fcol):
                        raise LabelError(f"{path} line {line}: empty {vcol} or {fcol}")
                    applies = row.get("applies_to", "")
                    known = [a for a, _ in rows.get(row[vcol], [])]
                    if applies in known:
                        raise LabelError(f"{path} line {line}: {row[vcol]!r} is mapped twice "
                                         f"for {applies or 'every feature'!r}")
                    rows.setdefault(row[vcol], []).append((applies, row[fcol]))
        return cls(rows, aliases)

    def candidates(self, video: str, feature: str, modality: str) -> list[str]:
        """Stored ids to try for ``feature`` of labelled ``video``, in order."""
        explicit = self.rows.get(video, [])
        for key in (feature, modality, ""):
            for applies, fid in explicit:
                if applies == key:
                    return [fid]
        ids = [video]
        if self.aliases is not None:
            ids += [a for a in self.aliases(video) if a not in ids]
        return ids

    def describe(self) -> str:
        n = sum(len(v) for v in self.rows.values())
        return f"{n} explicit row(s)" + (" + the label format's aliases" if self.aliases else "")
