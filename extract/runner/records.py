"""A run's records inside the store: ``run.yaml``, ``failures.jsonl``, ``written.jsonl`` (the
(feature, video) arrays this run completed: an audit trail), ``summary.json``.

They live in ``<store>/_runs/<run id>/`` (``store.run_dir``); for a store on object storage,
in ``./extract_runs/<run id>/`` of the folder the command ran in (made absolute).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from extract.store import FeatureStore

log = logging.getLogger(__name__)

#: Where run records go when the store is not a local folder.
LOCAL_RUNS_DIR = "extract_runs"

#: Where a video can fail, in pipeline order.
STAGES = ("open", "decode", "faces", "audio", "extract", "write", "worker")


@dataclass
class Failure:
    """One input that failed for some features at one stage."""

    video: str
    features: list[str]
    stage: str  # one of STAGES
    error: str  # exception type name
    message: str
    path: str = ""
    worker: int | None = None
    time: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown failure stage {self.stage!r}; known: {', '.join(STAGES)}")

    @classmethod
    def of(cls, video: str, features: list[str], stage: str, exc: BaseException,
           path: str = "") -> Failure:
        return cls(video, list(features), stage, type(exc).__name__, str(exc), path)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_run_id() -> str:
    """``YYYYmmdd-HHMMSS-xxxx`` (sortable, unique enough for concurrent runs)."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


class RunRecords:
    """Writes one run's records into ``store.run_dir(run_id)`` (the parent is the only writer)."""

    def __init__(self, store: FeatureStore, run_id: str) -> None:
        self.run_id = run_id
        if store.is_local:
            self.dir: Path = store.run_dir(run_id)
        else:  # an object-store URL: keep the records beside the command instead
            self.dir = Path(LOCAL_RUNS_DIR).absolute() / run_id
            self.dir.mkdir(parents=True, exist_ok=True)
            log.warning("%s is not a local folder: this run's records go to %s, and no claims "
                        "are taken (run one `extract run` at a time on this store)", store.path,
                        self.dir)
        self.failures_path = self.dir / "failures.jsonl"
        self.failures_path.touch()

    def write_config(self, config: dict[str, Any]) -> Path:
        path = self.dir / "run.yaml"
        path.write_text(yaml.safe_dump(_plain(config), sort_keys=False, allow_unicode=True))
        return path

    def add_failure(self, failure: Failure) -> None:
        record = {"run": self.run_id, **failure.to_dict()}
        with self.failures_path.open("a") as fh:
            fh.write(json.dumps(record, default=str) + "\n")

    def add_written(self, video: str, features: list[str], rows: dict[str, int]) -> None:
        record = {"run": self.run_id, "video": video, "features": list(features),
                  "rows": {f: rows.get(f) for f in features},
                  "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        with (self.dir / "written.jsonl").open("a") as fh:
            fh.write(json.dumps(record, default=str) + "\n")

    def write_summary(self, summary: dict[str, Any]) -> Path:
        path = self.dir / "summary.json"
        path.write_text(json.dumps(_plain(summary), indent=2, default=str) + "\n")
        return path


def _plain(obj: Any) -> Any:
    """JSON/YAML-safe copy (paths and other objects as strings)."""
    return json.loads(json.dumps(obj, default=str))
