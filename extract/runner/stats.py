"""Counting what a run did (the pool's sink): progress bar, failure records, the summary."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from extract.runner.compute import VideoResult
from extract.runner.plan import Plan, Task
from extract.runner.records import Failure, RunRecords


@dataclass
class FeatureStats:
    """Per-feature counts of one run."""

    done: int = 0  # videos written by this run
    skipped: int = 0  # videos already complete before the run
    failed: int = 0
    rows: int = 0  # rows written
    seconds: float = 0.0  # compute time in the workers (summed over workers)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


@dataclass
class RunSummary:
    """The outcome of one ``extract run``."""

    run_id: str
    store: str
    run_dir: str
    inputs: int  # inputs that a requested feature applies to
    done: int = 0  # videos with every requested feature now complete
    skipped: int = 0  # videos already complete before the run
    failed: int = 0  # videos with at least one failed feature
    deferred: int = 0  # left for a later run by --limit
    busy: int = 0  # held by another live run sharing the store (claims)
    frames: int = 0  # sampled video frames processed
    audio_seconds: float = 0.0  # seconds of audio processed
    seconds: float = 0.0  # wall time of the run
    face_seconds: float = 0.0  # face step compute time (summed over workers)
    features: dict[str, FeatureStats] = field(default_factory=dict)
    faces: dict[str, list[int]] = field(default_factory=dict)  # video → [frames, with a face]
    failures: list[Failure] = field(default_factory=list)
    interrupted: bool = False

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """0 when nothing failed; 1 when something failed; 130 when interrupted."""
        if self.interrupted:
            return 130
        return 1 if self.failed else 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["frames_per_s"] = round(self.frames_per_s, 2)
        out["exit_code"] = self.exit_code
        for name, st in self.features.items():
            out["features"][name]["rows_per_s"] = round(st.rows_per_s, 2)
        return out


class RunStats:
    """The pool's sink: records failures as they happen, counts, drives the progress bar."""

    def __init__(self, summary: RunSummary, plan: Plan, records: RunRecords,
                 progress: bool = True) -> None:
        self.summary = summary
        self.records = records
        self.total = len(plan.tasks)
        self.progress = progress
        self.bar: Any = None
        self.t0 = time.perf_counter()
        summary.skipped = len(plan.skipped)
        summary.deferred = len(plan.deferred)
        for name, count in plan.skipped_pairs.items():
            summary.features.setdefault(name, FeatureStats()).skipped = count

    def __enter__(self) -> RunStats:
        from tqdm import tqdm

        self.bar = tqdm(total=None, unit="frame", desc="extract", file=sys.stderr,
                        disable=not self.progress or not self.total, dynamic_ncols=True)
        self._postfix()
        return self

    def __exit__(self, *exc: object) -> None:
        self.summary.seconds = time.perf_counter() - self.t0
        if self.bar is not None:
            self.bar.close()

    def _postfix(self) -> None:
        if self.bar is not None:
            s = self.summary
            self.bar.set_postfix_str(f"videos {s.done + s.failed + s.busy}/{self.total}"
                                     + (f", failed {s.failed}" if s.failed else ""))

    def _fail(self, failure: Failure) -> None:
        self.summary.failures.append(failure)
        self.records.add_failure(failure)
        for name in failure.features:
            self.summary.features[name].failed += 1

    # ------------------------------------------------------------------ sink
    def started(self, task: Task, worker: int) -> None:
        return None

    def frames(self, count: int) -> None:
        self.summary.frames += count
        if self.bar is not None:
            self.bar.update(count)

    def done(self, task: Task, result: VideoResult) -> None:
        s = self.summary
        if result.skipped is not None:  # another run finished it ("done") or holds it ("busy")
            if result.skipped == "done":
                s.skipped += 1
            else:
                s.busy += 1
            self._postfix()
            return
        if result.done:
            self.records.add_written(task.video_id, result.done, result.rows)
        if result.faces is not None:
            s.faces[task.video_id] = [result.frames, result.faces]
        for name in result.done:
            st = s.features[name]
            st.done += 1
            st.rows += result.rows.get(name, 0)
        for name, secs in result.seconds.items():
            if name in s.features:
                s.features[name].seconds += secs
        s.face_seconds += result.seconds.get("faces", 0.0)
        s.audio_seconds += result.audio_seconds
        for failure in result.failures:
            self._fail(failure)
        if result.failures:
            s.failed += 1
        else:
            s.done += 1
        self._postfix()

    def lost(self, task: Task, worker: int, message: str) -> None:
        self._fail(Failure(task.video_id, list(task.features), "worker", "WorkerDied", message,
                           str(task.item.path), worker if worker >= 0 else None))
        self.summary.failed += 1
        self._postfix()
