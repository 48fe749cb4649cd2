"""A CPU worker of the pool (``--cpu-workers``): decodes spans of frames, finds and aligns the
faces, and writes the crops into its shared-memory ring for its compute worker.

Messages in (its job pipe): ``("job", Job)`` (only when idle), ``("free", slot)``,
``("cancel", job_id)``, ``None`` (stop). Messages out: ``("ready", pid)``, per frame batch
``("batch", job_id, BatchInfo)``, then ``("done", job_id, batches)``, or ``("mismatch",
job_id, why)`` (a split video span did not decode as indexed: read the video sequentially) or
``("error", job_id, exception)`` (the reader failed: stage "decode", or not applicable). The
face step runs on every batch; when it fails, the batch carries the error and the rest of the
job goes on without it (decoding continues, as the sequential path does).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from extract.runner.decode import DecodeSettings
from extract.runner.remote import ErrorRecord, portable
from extract.runner.ring import CropRing, RingLayout
from extract.runner.spans import Span

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeederConfig:
    """What one CPU worker needs (picklable: it crosses the spawn boundary)."""

    index: int  # CPU worker number within its compute worker
    worker: int  # the compute worker it feeds
    settings: DecodeSettings
    sizes: tuple[int, ...]  # crop sizes of the run's visual features
    detector: str | None  # NAME[:KEY=VALUE,...]
    face_device: str  # "cpu" or "cuda:<i>"
    plugins: tuple[str, ...]
    ring: str  # shared-memory name of its crop ring
    layout: RingLayout
    busy: tuple[int, ...] = ()  # slots still in use (a replacement of a worker that died)
    log_level: int = logging.WARNING


@dataclass(frozen=True)
class Job:
    """One span of one task."""

    id: int
    video: str
    kind: str  # input kind (chooses the face step)
    span: Span


@dataclass
class BatchInfo:
    """One frame batch, minus its crops (those are in ring slot ``slot``)."""

    seq: int  # batch number within the job
    count: int  # frames
    times: np.ndarray
    valid: np.ndarray | None  # frames with a readable image (frame folders)
    source: dict[str, Any] | None  # the frame clock's attrs (a folder's first batch)
    slot: int | None = None  # ring slot of the crops (None: no face step result)
    face_valid: np.ndarray | None = None  # (count,) a face was found and aligned
    seconds: float = 0.0  # face step time
    error: BaseException | ErrorRecord | None = None  # the face step failed on this batch


class Cancelled(Exception):
    """The compute worker no longer wants this job."""


class Feeder:
    """The loop of one CPU worker process (see the module doc)."""

    def __init__(self, cfg: FeederConfig, jobs: Any, results: Any) -> None:
        from extract.runner.faces import FaceSteps

        self.cfg = cfg
        self.jobs = jobs
        self.results = results
        self.ring = CropRing.attach(cfg.ring, cfg.layout)
        self.free = set(range(cfg.layout.slots)) - set(cfg.busy)
        self.cancelled: set[int] = set()
        self.stopping = False
        self.faces = FaceSteps(cfg.sizes, cfg.detector, cfg.face_device)

    def warm_up(self) -> None:
        """Build the video face step now (model files, graphs), not on the first video; a
        failure is reported where a video needs the step, as without the pool."""
        with contextlib.suppress(Exception):
            self.faces.for_kind("video")

    # -------------------------------------------------------------- messages
    def _handle(self, message: Any) -> Any:
        """Apply a control message; returns a job message (or None to stop) to the caller."""
        if message is None:
            self.stopping = True
            return None
        kind = message[0]
        if kind == "free":
            self.free.add(int(message[1]))
        elif kind == "cancel":
            self.cancelled.add(int(message[1]))
        elif kind == "job":
            return message[1]
        return False

    def _poll(self) -> None:
        while self.jobs.poll():
            if self._handle(self.jobs.recv()) is not False:
                raise RuntimeError("the compute worker sent a job to a busy CPU worker")

    def _slot(self, job: Job) -> int:
        """A free slot, waiting for the compute worker to release one."""
        while not self.free:
            if self._handle(self.jobs.recv()) is not False:
                raise RuntimeError("the compute worker sent a job to a busy CPU worker")
            if self.stopping or job.id in self.cancelled:
                raise Cancelled
        return self.free.pop()

    def run(self) -> None:
        self.results.send(("ready", os.getpid()))
        while not self.stopping:
            job = self._handle(self.jobs.recv())
            if isinstance(job, Job):
                self.run_job(job)

    # ------------------------------------------------------------------ jobs
    def run_job(self, job: Job) -> None:
        seq, faces_failed = 0, False
        try:
            for batch in job.span.batches(self.cfg.settings):
                self._poll()
                if self.stopping or job.id in self.cancelled:
                    raise Cancelled
                info = BatchInfo(seq, len(batch.frames), np.asarray(batch.times), batch.valid,
                                 batch.source)
                if not faces_failed:
                    faces_failed = not self._faces(job, batch.frames, info, first=seq == 0)
                self.results.send(("batch", job.id, info))
                seq += 1
        except Cancelled:
            self.results.send(("done", job.id, seq))
            return
        except Exception as exc:
            log.debug("%s: span %d stopped:\n%s", job.video, job.span.index,
                      traceback.format_exc())
            if job.span.split:  # the sequential path reproduces (or avoids) it exactly
                self.results.send(("mismatch", job.id, f"{type(exc).__name__}: {exc}"))
            else:
                self.results.send(("error", job.id, portable(exc)))
            return
        self.results.send(("done", job.id, seq))

    def _faces(self, job: Job, frames: np.ndarray, info: BatchInfo, first: bool) -> bool:
        """Run the face step on one batch and put its crops into a slot (False: it failed)."""
        t0 = time.perf_counter()
        try:
            step = self.faces.for_kind(job.kind)
            if first:
                step.reset()
            found = step(frames)
        except Exception as exc:
            log.debug("%s: face step failed:\n%s", job.video, traceback.format_exc())
            info.error = portable(exc)
            return False
        info.seconds = time.perf_counter() - t0
        info.slot = self._slot(job)
        self.ring.write(info.slot, {s: found.crops[s] for s in self.cfg.layout.sizes})
        info.face_valid = np.asarray(found.valid, bool)
        return True

    def close(self) -> None:
        self.ring.close()


def feeder_main(cfg: FeederConfig, jobs: Any, results: Any) -> None:
    """Entry point of a CPU worker process."""
    logging.basicConfig(level=cfg.log_level, format=f"%(levelname)s worker{cfg.worker}."
                        f"cpu{cfg.index}: %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    from extract.runner.features import import_plugins

    try:
        import_plugins(list(cfg.plugins))
        feeder = Feeder(cfg, jobs, results)
    except Exception as exc:
        with contextlib.suppress(OSError):
            results.send(("fatal", f"{type(exc).__name__}: {exc}"))
        return
    try:
        feeder.warm_up()
        feeder.run()
    except (EOFError, OSError, BrokenPipeError):
        pass  # the compute worker is gone: nothing left to do
    finally:
        feeder.close()
