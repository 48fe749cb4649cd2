"""The run folder: where each output lives, and the per-epoch CSV log."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run's ``--out`` folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"  # the resolved config

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def log(self) -> Path:
        return self.root / "log.csv"  # one row per epoch

    @property
    def best(self) -> Path:
        return self.root / "best.pt"  # weights used by eval / predict (EMA when enabled)

    @property
    def last(self) -> Path:
        return self.root / "last.pt"  # everything --resume needs

    @property
    def post(self) -> Path:
        return self.root / "post.json"  # smoothing windows, clip, thresholds chosen on val

    @property
    def features(self) -> Path:
        return self.root / "features.json"  # each input feature's fingerprint, dim, config

    @property
    def video_ids(self) -> Path:
        return self.root / "video_ids.json"  # ids as the label source writes them (Hume)

    @property
    def splits(self) -> Path:
        return self.root / "splits.json"  # every id the labels name → its split

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def make(self) -> RunDir:
        self.root.mkdir(parents=True, exist_ok=True)
        return self


class EpochLog:
    """One row per epoch in ``log.csv``; a resumed run keeps the rows up to its checkpoint."""

    FIELDS = ("epoch", "train_loss", "val_score", "lr", "seconds", "data_seconds",
              "eval_seconds", "best")

    def __init__(self, path: Path, epochs_done: int = 0) -> None:
        self.path = path
        rows = self.read(path) if epochs_done and path.is_file() else []
        self._write([r for r in rows if int(r["epoch"]) <= epochs_done])

    def add(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as fh:
            csv.DictWriter(fh, self.FIELDS).writerow({k: row.get(k, "") for k in self.FIELDS})

    @staticmethod
    def read(path: Path) -> list[dict[str, str]]:
        with path.open(newline="") as fh:
            return list(csv.DictReader(fh))

    def _write(self, rows: list[dict[str, str]]) -> None:
        with self.path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, self.FIELDS)
            writer.writeheader()
            writer.writerows(rows)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
