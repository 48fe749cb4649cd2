"""Counting what a run did (the pool's sink): progress bar, failure records, the summary."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from extract.runner.compute import VideoResult
from extract.runner.plan import Plan, Task
from extract.runner.records import Failure, RunRecords

log = logging.getLogger(__name__)

#: Ignored input entries kept in the summary (the rest are counted).
MAX_IGNORED_LISTED = 200


@dataclass
class FeatureStats:
    """Per-feature counts of one run."""

    done: int = 0  # videos written by this run
    skipped: int = 0  # videos already complete before the run
    failed: int = 0
    not_applicable: int = 0  # inputs without the stream it needs (no video / no audio)
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
    done: int = 0  # videos with every applicable requested feature now complete
    skipped: int = 0  # videos already complete before the run
    failed: int = 0  # videos with at least one failed feature
    not_applicable: int = 0  # inputs where some requested feature does not apply
    deferred: int = 0  # left for a later run by --limit
    busy: int = 0  # held by another live run sharing the store (claims)
    not_started: int = 0  # left when the run stopped early (disk full)
    frames: int = 0  # sampled video frames processed
    audio_seconds: float = 0.0  # seconds of audio processed
    seconds: float = 0.0  # wall time of the run
    face_seconds: float = 0.0  # face step compute time (summed over workers)
    features: dict[str, FeatureStats] = field(default_factory=dict)
    faces: dict[str, list[int]] = field(default_factory=dict)  # video → [frames, with a face]
    failures: list[Failure] = field(default_factory=list)
    ignored: list[dict[str, str]] = field(default_factory=list)  # input entries not read
    ignored_count: int = 0
    ignored_text: str = ""  # "3 ignored: 2 not a media file (a.txt, b.txt); …"
    stopped: str = ""  # why the run stopped handing out work (disk full), else ""
    records_error: str = ""  # a run record that could not be written
    strict: bool = False  # --strict: not applicable counts as failed
    interrupted: bool = False

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """0 when everything applicable is done; 1 when something failed or the run stopped
        early; 130 when interrupted."""
        if self.interrupted:
            return 130
        return 1 if self.failed or self.stopped or self.not_started else 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["frames_per_s"] = round(self.frames_per_s, 2)
        out["exit_code"] = self.exit_code
        for name, st in self.features.items():
            out["features"][name]["rows_per_s"] = round(st.rows_per_s, 2)
        return out


class RunStats:
    """The pool's sink: records failures as they happen, counts, drives the progress bar.

    A failure that no later video can escape (disk full, read-only store) sets ``stopped``:
    the pool then hands out no more work and reports the rest as not started.
    """

    def __init__(self, summary: RunSummary, plan: Plan, records: RunRecords,
                 progress: bool = True) -> None:
        self.summary = summary
        self.records = records
        self.total = len(plan.tasks)
        self.progress = progress
        self.bar: Any = None
        self.t0 = time.perf_counter()
        self._na_videos: set[str] = set()  # inputs with a feature not applicable
        self._strict_videos: set[str] = set()  # inputs failed by --strict
        summary.skipped = len(plan.skipped)
        summary.deferred = len(plan.deferred)
        for name, count in plan.skipped_pairs.items():
            summary.features.setdefault(name, FeatureStats()).skipped = count
        tasked = {t.video_id for t in plan.tasks}
        for na in plan.not_applicable:
            self._not_applicable(na.video, {f: na.reason for f in na.features}, na.path)
            if na.video not in tasked and na.video in self._strict_videos:
                summary.failed += 1  # nothing else to do for it: it counts now

    def __enter__(self) -> RunStats:
        from tqdm import tqdm

        self.bar = tqdm(total=None, unit="frame", desc="extract", file=sys.stderr,
                        disable=not self.progress or not self.total, dynamic_ncols=True)
        self._postfix()
        return self

    def __exit__(self, *exc: object) -> None:
        self.summary.seconds = time.perf_counter() - self.t0
        self.summary.records_error = self.records.error
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
        if failure.stops_run and not self.summary.stopped:
            self.summary.stopped = (f"{failure.message} (at {failure.stage}, {failure.video}); "
                                    "no more work was handed out")
            log.error("stopping: %s", self.summary.stopped)

    def _not_applicable(self, video: str, reasons: dict[str, str], path: str) -> None:
        """Features that do not apply to ``video``; failures under ``--strict``."""
        s = self.summary
        by_reason: dict[str, list[str]] = {}
        for name, reason in reasons.items():
            by_reason.setdefault(reason, []).append(name)
        for reason, names in by_reason.items():
            if s.strict:
                self._fail(Failure(video, names, "open", "NotApplicable",
                                   f"{reason} (--strict)", path))
                self._strict_videos.add(video)
                continue
            self.records.add_not_applicable(video, names, reason)
            for name in names:
                s.features[name].not_applicable += 1
            if video not in self._na_videos:
                self._na_videos.add(video)
                s.not_applicable += 1

    # ------------------------------------------------------------------ sink
    def should_stop(self) -> bool:
        """True once a failure means no later video can succeed (the pool stops feeding)."""
        return bool(self.summary.stopped)

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
                for name in task.features:  # the other run wrote them: skipped here too
                    if name in s.features:
                        s.features[name].skipped += 1
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
        if result.not_applicable:
            self._not_applicable(task.video_id, result.not_applicable, str(task.item.path))
        if result.failures or task.video_id in self._strict_videos:
            s.failed += 1
        else:
            s.done += 1
        self._postfix()

    def lost(self, task: Task, worker: int, message: str) -> None:
        self._fail(Failure(task.video_id, list(task.features), "worker", "WorkerDied", message,
                           str(task.item.path), worker if worker >= 0 else None))
        self.summary.failed += 1
        self._postfix()

    def not_started(self, task: Task) -> None:
        """A task left in the queue when the run stopped early."""
        self.summary.not_started += 1
        self._postfix()
