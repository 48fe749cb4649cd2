"""The CPU pool of one compute worker (``extract run --cpu-workers``): frames decoded and faces
found and aligned in parallel processes, crops handed over in shared memory, events in order.

:class:`PooledPrefetcher` has the interface of :class:`extract.runner.decode.Prefetcher`: the
compute loop reads the same event stream, only with ``faces`` events (crops already made) where
the sequential path has ``frames`` events. Behind it a scheduler thread

* takes the worker's tasks, claims each and opens it once (as the sequential path does), and
  cuts its frames into spans (:mod:`extract.runner.spans`): a long video is read by several CPU
  workers at once, and several short videos are in flight together;
* hands the spans out in order, one at a time per CPU worker (:mod:`extract.runner.feeder`);
  each writes its crops into its own ring of shared-memory slots (:mod:`extract.runner.ring`)
  and sends only small per-batch facts over its pipe;
* emits every task's events in order: ``begin``, its batches span after span, ``audio``
  (decoded by a thread here, for the next tasks only), ``end``. A slot is released when the
  compute loop has handled its event, so memory stays bounded: the rings never grow.

Because spans are handed out in order and a CPU worker starts a span only after finishing the
previous one, the span the compute loop waits for always makes progress: its CPU worker's slots
hold only that span's batches, which the loop consumes. A split video whose frames do not
decode as its index says is read again from the first frame by the sequential path (a
``restart`` event first when some of its rows were already handed over). A CPU worker that dies
fails the video whose span it was reading (stage "worker"; batches it had finished are still
used) and is replaced; the run goes on.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing as mp
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

from extract.runner.decode import (
    FRAME_SOURCES,
    DecodeSettings,
    Event,
    audio_events,
    features_of,
    frames_failed,
    start_task,
)
from extract.runner.feeder import BatchInfo, FeederConfig, Job, feeder_main
from extract.runner.plan import Task
from extract.runner.pool import exit_line
from extract.runner.records import Failure
from extract.runner.remote import rebuild
from extract.runner.ring import CropRing, RingLayout
from extract.runner.spans import Span, SpanLimits, plan_spans

log = logging.getLogger(__name__)

STOP = object()


class _Stopping(Exception):
    """The compute loop is gone (:meth:`PooledPrefetcher.close`): stop emitting."""

#: Startup failures in a row after which the pool gives up (a broken setup, not a bad video).
MAX_STARTUP_FAILURES = 2


@dataclass
class FaceFrames:
    """A ``faces`` event's payload: one frame batch whose faces a CPU worker found."""

    count: int  # frames
    times: np.ndarray
    valid: np.ndarray | None  # frames with a readable image
    source: dict[str, Any] | None
    crops: dict[int, np.ndarray] | None  # size → (count, S, S, 3) views into a ring slot
    face_valid: np.ndarray | None
    seconds: float  # face step time in the CPU worker
    error: BaseException | None  # the face step failed on this batch


@dataclass(frozen=True)
class PoolConfig:
    """The CPU pool of one compute worker."""

    workers: int  # CPU worker processes
    sizes: tuple[int, ...]  # crop sizes
    detector: str | None
    face_device: str  # "cpu" | "cuda:<i>"
    plugins: tuple[str, ...]
    worker: int  # the compute worker's index
    limits: SpanLimits = SpanLimits()
    log_level: int = logging.WARNING


def shared_memory_needed(cpu_workers: int, sizes: tuple[int, ...], batch_size: int,
                         limits: SpanLimits) -> int:
    """Bytes of shared memory the rings of ``cpu_workers`` CPU workers take (all workers)."""
    if cpu_workers <= 0 or not sizes:
        return 0
    layout = RingLayout(limits.ring_slots(batch_size), batch_size, tuple(sorted(set(sizes))))
    return cpu_workers * layout.nbytes


def shared_memory_problem(needed: int, folder: str = "/dev/shm") -> str | None:
    """Why rings of ``needed`` bytes do not fit in ``folder`` (None when they do, or when it
    cannot be measured). Writing past a full tmpfs kills the process with SIGBUS, so this is
    checked before the run starts."""
    import os

    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    free = st.f_bavail * st.f_frsize
    if needed <= free:
        return None
    mib = 1 << 20
    return (f"the CPU pool's crop rings need {needed / mib:.0f} MiB of shared memory but "
            f"{folder} has {free / mib:.0f} MiB free; give fewer --cpu-workers, a smaller "
            "--batch-size, or more shared memory (docker run --shm-size=2g)")


# ------------------------------------------------------------------------------ CPU workers
class FeederHandle:
    """One CPU worker process as its compute worker sees it, with the ring it writes into."""

    def __init__(self, index: int, ring: CropRing) -> None:
        self.index = index
        self.ring = ring
        self.lock = threading.Lock()  # guards jobs (sends) and in_use (release vs restart)
        self.in_use: set[int] = set()  # slots holding a batch not yet released
        self.process: Any = None
        self.jobs: Connection | None = None  # → CPU worker
        self.results: Connection | None = None  # ← CPU worker
        self.job: JobState | None = None  # the span it is reading
        self.ready = False
        self.dead = False
        self.fatal = ""
        self.startup_failures = 0

    def send(self, message: Any) -> None:
        with self.lock:
            if self.jobs is not None:
                with contextlib.suppress(OSError, ValueError):  # it died: the restart settles it
                    self.jobs.send(message)

    def release(self, slot: int) -> None:
        with self.lock:
            self.in_use.discard(slot)
            if self.jobs is not None and not self.dead:
                with contextlib.suppress(OSError, ValueError):
                    self.jobs.send(("free", slot))

    def describe_exit(self) -> str:
        return exit_line(f"CPU worker {self.index}", self.process, self.fatal)


# ------------------------------------------------------------------------------ scheduling
@dataclass
class JobState:
    """One span of one task, as the scheduler follows it."""

    job: Job
    task: TaskState
    feeder: int | None = None
    batches: dict[int, BatchInfo] = field(default_factory=dict)  # received, not yet emitted
    received: int = 0
    emitted: int = 0
    end: tuple[str, Any] | None = None  # ("done", n) | ("error", exc) | ("mismatch", why) |
    #                                      ("lost", why)
    dropped: bool = False  # its task no longer needs it


@dataclass
class TaskState:
    """One task from its claim to its ``end`` event."""

    task: Task
    prefix: deque[Event]  # events ready to go (begin, ...)
    spans: list[JobState] = field(default_factory=list)
    position: int = 0  # the span being emitted
    complete: bool = False  # prefix ends with "end": nothing else to emit
    frames_out: bool = False  # a batch of it went to the compute loop
    audio: Future | None = None
    spans_over: bool = False  # every frame event is out (or no frames to read)


class PooledPrefetcher:
    """Decode + faces in a CPU pool, events in order (see the module doc)."""

    def __init__(self, cfg: PoolConfig, frames: DecodeSettings, depth: int = 8) -> None:
        self.cfg = cfg
        self.frames = frames  # what the CPU workers read frames with
        self.settings = frames  # the compute worker's own (set by start)
        self.next_task: Callable[[], Task | None] = lambda: None
        self.claims: Any = None
        self.out: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.incoming: queue.Queue[Any] = queue.Queue()
        self.ctx = mp.get_context("spawn")
        self.wake_r, self.wake_w = self.ctx.Pipe(duplex=False)
        self.wake_lock = threading.Lock()
        self.layout = RingLayout(cfg.limits.ring_slots(frames.batch_size), frames.batch_size,
                                 tuple(sorted(set(cfg.sizes))))
        self.handles: list[FeederHandle] = []
        self.active: deque[TaskState] = deque()
        self.todo: deque[JobState] = deque()  # spans not handed out yet, in order
        self.jobs: dict[int, JobState] = {}
        self.ids = itertools.count()
        self.no_more_tasks = False
        self.audio_pool = ThreadPoolExecutor(1, thread_name_prefix="audio")
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="cpu-pool", daemon=True)
        self.reader = threading.Thread(target=self._read_tasks, name="task-reader", daemon=True)
        from extract.runner.faces import FaceSteps

        self.faces = FaceSteps(cfg.sizes, cfg.detector, cfg.face_device)  # for has_video_state

    # ----------------------------------------------------------------- public
    def spawn(self) -> PooledPrefetcher:
        """Start the CPU worker processes (they load their face detector meanwhile)."""
        if not self.handles:
            self.handles = [FeederHandle(i, CropRing.create(self.layout))
                            for i in range(self.cfg.workers)]
            for h in self.handles:
                self._spawn(h)
        return self

    def start(self, next_task: Callable[[], Task | None], settings: DecodeSettings,
              claims: Any = None) -> PooledPrefetcher:
        """Take tasks from ``next_task`` (None: no more) and emit their events."""
        if settings.batch_size != self.frames.batch_size:
            raise ValueError("the CPU pool and its compute worker disagree on the batch size")
        self.next_task, self.settings, self.claims = next_task, settings, claims
        self.spawn()
        self.reader.start()
        self.thread.start()
        return self

    def events(self) -> Iterator[Event]:
        """Events in order until the task source is exhausted."""
        while (ev := self.out.get()) is not STOP:
            if isinstance(ev, BaseException):
                raise RuntimeError(f"CPU pool failed: {ev!r}") from ev
            yield ev

    def close(self) -> None:
        """Stop the CPU workers and remove the rings (the compute loop is done)."""
        self.stopping.set()
        self._wake()
        if self.thread.is_alive():
            self.thread.join(timeout=10)
        for h in self.handles:
            h.send(None)
            if h.results is not None:  # a CPU worker blocked sending a batch stops at once
                h.results.close()
                h.results = None
        for h in self.handles:
            if h.process is not None:
                h.process.join(timeout=5)
                if h.process.is_alive():
                    h.process.terminate()
                    h.process.join(timeout=5)
            for conn in (h.jobs, h.results):
                if conn is not None:
                    conn.close()
            h.ring.close()
        self.audio_pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ processes
    def _spawn(self, h: FeederHandle) -> None:
        with h.lock:
            busy = tuple(sorted(h.in_use))
            jobs_r, jobs_w = self.ctx.Pipe(duplex=False)
            res_r, res_w = self.ctx.Pipe(duplex=False)
            cfg = FeederConfig(h.index, self.cfg.worker, self.frames, self.layout.sizes,
                               self.cfg.detector, self.cfg.face_device, self.cfg.plugins,
                               h.ring.name, self.layout, busy, self.cfg.log_level)
            h.process = self.ctx.Process(target=feeder_main, args=(cfg, jobs_r, res_w),
                                         name=f"extract-worker{self.cfg.worker}-cpu{h.index}",
                                         daemon=True)
            h.process.start()
            jobs_r.close()  # the child holds these ends; closing ours makes its death an EOF
            res_w.close()
            h.jobs, h.results = jobs_w, res_r
            h.ready, h.dead, h.fatal, h.job = False, False, "", None

    def _on_death(self, h: FeederHandle) -> None:
        """A CPU worker died: fail the video of the span it was reading, start another."""
        if h.dead:
            return
        with h.lock:
            h.dead = True
        with contextlib.suppress(Exception):
            h.process.join(timeout=1)
            if h.process.is_alive():
                h.process.terminate()
                h.process.join(timeout=5)
        why = h.describe_exit()
        log.warning("worker %d: %s", self.cfg.worker, why)
        if not h.ready:
            h.startup_failures += 1
            if h.startup_failures >= MAX_STARTUP_FAILURES:
                raise RuntimeError(f"CPU workers of worker {self.cfg.worker} cannot start: "
                                   f"{why}")
        js, h.job = h.job, None
        if js is not None and js.end is None:
            span = js.job.span
            js.end = ("lost", f"{why} while reading {describe_span(span)}")
        for conn in (h.jobs, h.results):
            if conn is not None:
                conn.close()
        h.jobs = h.results = None
        self._spawn(h)

    # ------------------------------------------------------------- threads
    def _wake(self) -> None:
        with self.wake_lock, contextlib.suppress(OSError):
            self.wake_w.send_bytes(b".")

    def _read_tasks(self) -> None:
        try:
            while not self.stopping.is_set():
                task = self.next_task()
                self.incoming.put(task)
                self._wake()
                if task is None:
                    return
        except BaseException as exc:  # noqa: BLE001 — handed to the scheduler, then the loop
            self.incoming.put(exc)
            self._wake()

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                self._take_tasks()
                self._assign()
                moved = self._emit()
                if self.no_more_tasks and not self.active:
                    break
                if not moved:
                    self._wait(0.5)
        except _Stopping:
            return
        except BaseException as exc:  # noqa: BLE001 — the compute loop re-raises it
            log.debug("CPU pool scheduler stopped", exc_info=True)
            with contextlib.suppress(_Stopping):
                self._put(exc)
        with contextlib.suppress(_Stopping):
            self._put(STOP)

    def _put(self, item: Any) -> None:
        """Hand an event to the compute loop (waits while it is busy; raises
        :class:`_Stopping` once :meth:`close` was called)."""
        while not self.stopping.is_set():
            try:
                self.out.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        raise _Stopping

    # -------------------------------------------------------------- planning
    def _take_tasks(self) -> None:
        """Plan tasks while some CPU worker would otherwise have no span to read next."""
        while not self.no_more_tasks and len(self.todo) < len(self.handles):
            try:
                item = self.incoming.get_nowait()
            except queue.Empty:
                return
            if item is None:
                self.no_more_tasks = True
            elif isinstance(item, BaseException):
                raise item
            else:
                self.active.append(self._plan(item))

    def _plan(self, task: Task) -> TaskState:
        s = self.settings
        task, events, go_on = start_task(task, s, self.claims)
        state = TaskState(task, deque(events))
        if not go_on:
            state.complete = True
            return state
        if not features_of(task, s, "visual"):
            state.spans_over = True
            return state
        kind = task.item.kind
        spans = plan_spans(kind, task.item.path, s, self.cfg.limits,
                           splittable=not self.faces.has_video_state(kind))
        for span in spans:
            js = JobState(Job(next(self.ids), task.video_id, kind, span), state)
            self.jobs[js.job.id] = js
            state.spans.append(js)
            self.todo.append(js)
        if len(spans) > 1:
            log.debug("%s: %d spans", task.video_id, len(spans))
        return state

    def _assign(self) -> None:
        for h in self.handles:
            if not (h.ready and not h.dead and h.job is None):
                continue
            while self.todo and self.todo[0].dropped:
                self.todo.popleft()
            if not self.todo:
                return
            js = self.todo.popleft()
            js.feeder = h.index
            h.job = js
            h.send(("job", js.job))

    # ------------------------------------------------------------- messages
    def _wait(self, timeout: float) -> None:
        conns: list[Any] = [self.wake_r]
        for h in self.handles:
            if h.results is not None and not h.dead:
                conns += [h.results, h.process.sentinel]
        for obj in wait(conns, timeout=timeout):
            if obj is self.wake_r:
                with contextlib.suppress(EOFError, OSError):
                    while self.wake_r.poll():
                        self.wake_r.recv_bytes()
                continue
            h = next((h for h in self.handles if obj in (h.results, h.process.sentinel)), None)
            if h is None or h.dead:
                continue
            self._drain(h)

    def _drain(self, h: FeederHandle) -> None:
        """Read everything the CPU worker sent; handle its death after its last words."""
        try:
            while h.results is not None and h.results.poll():
                self._message(h, h.results.recv())
        except (EOFError, OSError):
            self._on_death(h)
            return
        if not h.process.is_alive():
            self._on_death(h)

    def _message(self, h: FeederHandle, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            h.ready, h.startup_failures = True, 0
            return
        if kind == "fatal":
            h.fatal = str(message[1])
            return
        js = self.jobs.get(message[1])
        if kind == "batch":
            info: BatchInfo = message[2]
            if info.slot is not None:
                with h.lock:
                    h.in_use.add(info.slot)
            if js is None or js.dropped:
                self._release(h.index, info)
            else:
                js.received += 1
                js.batches[info.seq] = info
            return
        h.job = None  # done, error, mismatch: the CPU worker is free again
        if js is None:
            return
        if kind == "done":
            js.end = ("done", int(message[2]))
        elif kind == "error":
            js.end = ("error", rebuild(message[2]))
        else:
            js.end = ("mismatch", str(message[2]))
        if js.dropped:
            self.jobs.pop(js.job.id, None)

    def _release(self, feeder: int, info: BatchInfo) -> None:
        if info.slot is not None:
            self.handles[feeder].release(info.slot)

    # ------------------------------------------------------------- emitting
    def _emit(self) -> bool:
        """Emit what the head tasks have ready; True when anything moved."""
        moved = False
        for state in itertools.islice(self.active, 2):  # audio of the next tasks, ahead
            if state.audio is None and features_of(state.task, self.settings, "audio") and \
                    not state.complete:
                state.audio = self.audio_pool.submit(audio_events, state.task, self.settings)
                state.audio.add_done_callback(lambda _f: self._wake())
        while self.active and not self.stopping.is_set():
            state = self.active[0]
            step = self._emit_head(state)
            moved = moved or step
            if state.complete and not state.prefix:
                self.active.popleft()
                self._forget(state)
                moved = True
                continue
            if not step:
                break
        return moved

    def _emit_head(self, state: TaskState) -> bool:
        moved = False
        while state.prefix:
            self._put(state.prefix.popleft())
            moved = True
        if state.complete:
            return moved
        if not state.spans_over:
            moved = self._emit_spans(state) or moved
            if not state.spans_over or state.complete:
                return moved
        if features_of(state.task, self.settings, "audio"):
            if state.audio is None:
                state.audio = self.audio_pool.submit(audio_events, state.task, self.settings)
                state.audio.add_done_callback(lambda _f: self._wake())
            if not state.audio.done():
                return moved
            for event in state.audio.result():
                self._put(event)
        self._put(Event("end", state.task))
        state.complete = True
        return True

    def _emit_spans(self, state: TaskState) -> bool:
        moved = False
        while state.position < len(state.spans):
            js = state.spans[state.position]
            while js.emitted in js.batches:
                self._emit_batch(js, js.batches.pop(js.emitted))
                js.emitted += 1
                moved = True
            if js.end is None or js.emitted < js.received:
                return moved
            outcome, detail = js.end
            if outcome == "done":
                state.position += 1
                self.jobs.pop(js.job.id, None)
                continue
            if outcome == "mismatch":
                self._sequential(state, detail)
                return True
            self._drop_spans(state)
            if outcome == "lost":
                event = Event("error", state.task, Failure(
                    state.task.video_id, list(state.task.features), "worker", "CPUWorkerDied",
                    detail, str(state.task.item.path)))
            else:
                event = frames_failed(state.task, self.settings, detail)
            self._put(event)
            if event.kind == "error":
                self._put(Event("end", state.task))
                state.complete = True
                return True
            break  # not applicable: no video stream; its audio features still run
        state.spans_over = True
        return True

    def _emit_batch(self, js: JobState, info: BatchInfo) -> None:
        h = self.handles[js.feeder]  # type: ignore[index]
        crops = h.ring.view(info.slot, info.count) if info.slot is not None else None
        error = rebuild(info.error) if info.error is not None else None
        payload = FaceFrames(info.count, info.times, info.valid, info.source, crops,
                             info.face_valid, info.seconds, error)
        release = None
        if info.slot is not None:
            release = lambda h=h, slot=info.slot: h.release(slot)  # noqa: E731
        js.task.frames_out = True
        self._put(Event("faces", js.task.task, payload, release=release))

    def _drop_spans(self, state: TaskState) -> None:
        """The task needs no more frames: cancel its spans, free what they hold."""
        for js in state.spans:
            if js.dropped:
                continue
            js.dropped = True
            for info in js.batches.values():
                self._release(js.feeder, info)  # type: ignore[arg-type]
            js.batches.clear()
            if js.feeder is not None and js.end is None:
                self.handles[js.feeder].send(("cancel", js.job.id))
            else:
                self.jobs.pop(js.job.id, None)

    def _sequential(self, state: TaskState, why: str) -> None:
        """Read the task's frames from the first one, here, as without the pool (a split
        video that did not decode as indexed)."""
        task = state.task
        log.warning("%s: %s; reading it again from its first frame, in order", task.video_id,
                    why)
        self._drop_spans(state)
        if state.frames_out:
            self._put(Event("restart", task, why))
        state.spans_over = True
        try:
            for batch in FRAME_SOURCES[task.item.kind](task.item.path, self.settings):
                self._put(Event("frames", task, batch))
        except Exception as exc:
            event = frames_failed(task, self.settings, exc)
            self._put(event)
            if event.kind == "error":
                self._put(Event("end", task))
                state.complete = True

    def _forget(self, state: TaskState) -> None:
        for js in state.spans:
            if js.end is not None or js.feeder is None:
                self.jobs.pop(js.job.id, None)


def describe_span(span: Span) -> str:
    """Which frames a span covers, for a failure message."""
    first = getattr(span, "first_position", None)
    if first is not None:
        return f"frames {first}-{first + len(span.expected) - 1} of {span.path}"
    indices = getattr(span, "indices", None)
    if indices is not None and len(indices):
        return f"images {int(indices[0])}-{int(indices[-1])} of {span.path}"
    return f"{span.path}"
