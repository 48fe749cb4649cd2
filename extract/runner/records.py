"""A run's records inside the store: ``run.yaml``, ``failures.jsonl``, ``written.jsonl`` (the
(feature, video) arrays this run completed: an audit trail), ``not_applicable.jsonl`` (inputs
that lack the stream a feature needs), ``summary.json``.

They live in ``<store>/_runs/<run id>/`` (``store.run_dir``); for a store on object storage,
in ``./extract_runs/<run id>/`` of the folder the command ran in (made absolute). A record that
cannot be written (disk full) is logged once and the run goes on: the summary printed at the
end still lists everything.
"""

from __future__ import annotations

import errno as errnos
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
STAGES = ("claim", "open", "decode", "faces", "audio", "extract", "write", "worker")

#: OS errors that no later video can escape (the store's disk is full or read-only): the run
#: stops handing out work when a video fails with one of them.
STOP_ERRNOS = frozenset({errnos.ENOSPC, errnos.EDQUOT, errnos.EROFS})


def os_errno(exc: BaseException | None) -> int | None:
    """The errno of ``exc`` or of the exception it was raised from (None when there is none)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno:
            return int(exc.errno)
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


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
    errno: int | None = None  # the OS error number behind it (28: no space left on device)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown failure stage {self.stage!r}; known: {', '.join(STAGES)}")

    @classmethod
    def of(cls, video: str, features: list[str], stage: str, exc: BaseException,
           path: str = "") -> Failure:
        return cls(video, list(features), stage, type(exc).__name__, str(exc), path,
                   errno=os_errno(exc))

    @property
    def stops_run(self) -> bool:
        """A disk-full or read-only store: every later video would fail the same way."""
        return self.errno in STOP_ERRNOS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_run_id() -> str:
    """``YYYYmmdd-HHMMSS-xxxx`` (sortable, unique enough for concurrent runs)."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


class RunRecords:
    """Writes one run's records into ``store.run_dir(run_id)`` (the parent is the only writer).

    Only creating the folder may raise; a later write that fails (disk full) is logged once
    and kept in ``error``.
    """

    def __init__(self, store: FeatureStore, run_id: str) -> None:
        self.run_id = run_id
        self.error = ""  # the first write that failed, in words
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
        self._append(self.failures_path, {"run": self.run_id, **failure.to_dict()})

    def add_written(self, video: str, features: list[str], rows: dict[str, int]) -> None:
        self._append(self.dir / "written.jsonl",
                     {"run": self.run_id, "video": video, "features": list(features),
                      "rows": {f: rows.get(f) for f in features},
                      "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def add_not_applicable(self, video: str, features: list[str], reason: str) -> None:
        self._append(self.dir / "not_applicable.jsonl",
                     {"run": self.run_id, "video": video, "features": list(features),
                      "reason": reason})

    def write_summary(self, summary: dict[str, Any]) -> Path | None:
        path = self.dir / "summary.json"
        return self._write(path, json.dumps(_plain(summary), indent=2, default=str) + "\n")

    def _append(self, path: Path, record: dict[str, Any]) -> None:
        try:
            with path.open("a") as fh:
                fh.write(json.dumps(record, default=str) + "\n")
        except OSError as exc:
            self._failed(path, exc)

    def _write(self, path: Path, text: str) -> Path | None:
        try:
            path.write_text(text)
        except OSError as exc:
            self._failed(path, exc)
            return None
        return path

    def _failed(self, path: Path, exc: OSError) -> None:
        if not self.error:
            self.error = f"cannot write {path}: {exc.strerror or exc}"
            log.error("%s; the run goes on and its summary is printed at the end", self.error)


def _plain(obj: Any) -> Any:
    """JSON/YAML-safe copy (paths and other objects as strings)."""
    return json.loads(json.dumps(obj, default=str))
