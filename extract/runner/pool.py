"""The parent side: start workers, feed them tasks longest first, survive their deaths.

Each worker has its own pair of pipes (a crashed worker cannot wedge a shared queue), and at
most ``depth`` tasks handed out (one computing, the next being decoded; a worker with a CPU
pool takes as many more as it has CPU processes, so that each can read a short video ahead):
dynamic sharding, so a worker that finishes early takes the next longest task. When a worker
dies (crash, OOM kill, SIGKILL), the video it was computing is recorded as failed at stage
"worker", the tasks it had not started go back to the front of the queue, and a replacement
worker is started.
When the sink says stop (the store's disk is full), no more tasks are handed out: the ones
already handed out finish, the rest are reported as not started.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import signal
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from extract.runner.compute import VideoResult
from extract.runner.plan import Task
from extract.runner.worker import WorkerConfig, worker_main

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Receives what the pool learns, as it learns it."""

    def started(self, task: Task, worker: int) -> None: ...

    def frames(self, count: int) -> None: ...

    def done(self, task: Task, result: VideoResult) -> None: ...

    def lost(self, task: Task, worker: int, message: str) -> None: ...

    def should_stop(self) -> bool: ...

    def not_started(self, task: Task) -> None: ...


@dataclass
class Handle:
    """One worker as the parent sees it."""

    cfg: WorkerConfig
    runner: Any  # multiprocessing Process or threading.Thread
    tasks: Connection  # parent → worker
    results: Connection  # worker → parent
    assigned: deque[Task] = field(default_factory=deque)
    started: bool = False  # assigned[0] is being computed
    ready: bool = False
    dead: bool = False
    replaced: bool = False
    fatal: str = ""

    @property
    def alive(self) -> bool:
        return not self.dead and self.runner.is_alive()

    def describe_exit(self) -> str:
        return exit_line(f"worker {self.cfg.index}", self.runner, self.fatal)


def retry_or_lose(task: Task, attempts: dict[str, int], limit: int, pending: deque[Task],
                  sink: Sink, worker: int, why: str) -> None:
    """A task whose worker died: back to the front of the queue, or, once ``limit`` workers
    died holding it, reported lost ("handed to ``limit`` <why>")."""
    attempts[task.video_id] = attempts.get(task.video_id, 0) + 1
    if attempts[task.video_id] >= limit:
        sink.lost(task, worker, f"handed to {limit} {why}")
    else:
        pending.appendleft(task)


def exit_line(who: str, process: Any, fatal: str | None) -> str:
    """Why a worker process is gone, in one line: its own last words, the signal that killed
    it, or its exit code."""
    code = getattr(process, "exitcode", None)
    if fatal:
        return f"{who} stopped: {fatal}"
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"{who} (pid {process.pid}) was killed by {signal.Signals(-code).name}"
    return f"{who} exited unexpectedly (exit code {code})"


class Pool:
    """Runs tasks on ``len(configs)`` workers (processes, or one thread when in-process)."""

    def __init__(self, configs: list[WorkerConfig], depth: int = 2, max_attempts: int = 2,
                 poll_s: float = 0.5) -> None:
        self.configs = configs
        self.depth = depth
        self.max_attempts = max_attempts
        self.poll_s = poll_s
        self.ctx = mp.get_context("spawn")
        self.handles: list[Handle] = []
        self.attempts: dict[str, int] = {}

    # -------------------------------------------------------------- workers
    def _start(self, cfg: WorkerConfig) -> Handle:
        if cfg.in_process:
            task_r, task_w = mp.Pipe(duplex=False)
            res_r, res_w = mp.Pipe(duplex=False)
            runner: Any = threading.Thread(target=worker_main, args=(cfg, task_r, res_w),
                                           name=f"worker{cfg.index}", daemon=True)
            runner.start()
        else:
            task_r, task_w = self.ctx.Pipe(duplex=False)
            res_r, res_w = self.ctx.Pipe(duplex=False)
            # A worker with a CPU pool starts processes of its own, which a daemonic process
            # may not; it is stopped by _stop_all and its CPU workers stop with it.
            runner = self.ctx.Process(target=worker_main, args=(cfg, task_r, res_w),
                                      name=f"extract-worker{cfg.index}",
                                      daemon=cfg.feeders == 0)
            runner.start()
            task_r.close()  # the child holds these ends; closing ours makes its death an EOF
            res_w.close()
        log.debug("started worker %d on %s", cfg.index, cfg.device)
        return Handle(cfg, runner, task_w, res_r)

    def _stop_all(self, graceful: bool) -> None:
        for h in self.handles:
            if h.alive and graceful:
                with contextlib.suppress(OSError):
                    h.tasks.send(None)
        for h in self.handles:
            h.runner.join(timeout=10 if graceful else 0.1)
            if h.runner.is_alive() and hasattr(h.runner, "terminate"):
                h.runner.terminate()
                h.runner.join(timeout=5)
            for conn in (h.tasks, h.results):
                conn.close()

    # ----------------------------------------------------------------- run
    def run(self, tasks: list[Task], sink: Sink) -> None:
        """Process every task; returns when each is done or lost."""
        pending: deque[Task] = deque(tasks)
        restarts_left = max(3, len(tasks))
        self.handles = [self._start(cfg) for cfg in self.configs]
        try:
            while pending or any(h.assigned for h in self.handles if not h.dead):
                if pending and sink.should_stop():
                    for task in pending:
                        sink.not_started(task)
                    pending.clear()
                    continue
                live = [h for h in self.handles if not h.dead]
                if not live:
                    if restarts_left <= 0 or self._only_startup_failures():
                        reason = self.handles[-1].describe_exit() if self.handles else "no worker"
                        for task in pending:
                            sink.lost(task, -1, f"no worker could run it: {reason}")
                        return
                    restarts_left -= 1
                    self.handles.append(self._start(self._next_config()))
                    continue
                self._feed(live, pending)
                self._poll(live, pending, sink)
                for h in live:
                    if not h.dead and not h.runner.is_alive():
                        self._drain(h, pending, sink)
                        self._on_death(h, pending, sink)
                    if h.dead and not h.replaced:
                        h.replaced = True  # a worker that never got ready is not replaced here
                        if pending and h.ready and restarts_left > 0:
                            restarts_left -= 1
                            self.handles.append(self._start(replace(h.cfg)))
        except BaseException:
            self._stop_all(graceful=False)
            raise
        self._stop_all(graceful=True)

    def _next_config(self) -> WorkerConfig:
        return replace(self.handles[-1].cfg) if self.handles else self.configs[0]

    def _only_startup_failures(self) -> bool:
        """True when recent workers all died before becoming ready (a broken setup)."""
        recent = self.handles[-max(2, len(self.configs)):]
        return len(recent) >= 2 and all(not h.ready for h in recent)

    def _feed(self, live: list[Handle], pending: deque[Task]) -> None:
        for h in live:
            depth = max(self.depth, h.cfg.task_depth)
            while h.ready and pending and len(h.assigned) < depth:
                task = pending.popleft()
                try:
                    h.tasks.send(task)
                except OSError:  # it died; the death handler requeues
                    pending.appendleft(task)
                    break
                h.assigned.append(task)

    def _poll(self, live: list[Handle], pending: deque[Task], sink: Sink) -> None:
        waitables: list[Any] = [h.results for h in live]
        waitables += [h.runner.sentinel for h in live if hasattr(h.runner, "sentinel")]
        for obj in wait(waitables, timeout=self.poll_s):
            h = next((h for h in live if h.results is obj), None)
            if h is not None and not h.dead:
                self._receive(h, pending, sink)

    def _receive(self, h: Handle, pending: deque[Task], sink: Sink) -> None:
        try:
            kind, payload = h.results.recv()
        except (EOFError, OSError):
            self._on_death(h, pending, sink)
            return
        HANDLERS[kind](self, h, payload, sink)

    def _drain(self, h: Handle, pending: deque[Task], sink: Sink) -> None:
        """Read what a dead worker sent before dying (a finished video counts)."""
        with contextlib.suppress(EOFError, OSError):
            while not h.dead and h.results.poll():
                self._receive(h, pending, sink)

    def _on_death(self, h: Handle, pending: deque[Task], sink: Sink) -> None:
        if h.dead:
            return
        h.dead = True
        with contextlib.suppress(Exception):
            h.runner.join(timeout=1)
            if h.runner.is_alive() and hasattr(h.runner, "terminate"):
                h.runner.terminate()  # its pipe broke but it still runs: make sure it stops
                h.runner.join(timeout=5)
        why = h.describe_exit()
        log.warning("%s", why)
        if h.started and h.assigned:
            sink.lost(h.assigned.popleft(), h.cfg.index, why)
        for task in reversed(h.assigned):
            retry_or_lose(task, self.attempts, self.max_attempts, pending, sink, h.cfg.index,
                          f"workers that died; last: {why}")
        h.assigned.clear()
        h.started = False

    # ------------------------------------------------------------- messages
    def _on_ready(self, h: Handle, payload: Any, sink: Sink) -> None:
        h.ready = True
        log.debug("worker %d ready (pid %s)", h.cfg.index, payload)

    def _on_start(self, h: Handle, payload: Any, sink: Sink) -> None:
        h.started = True
        sink.started(h.assigned[0], h.cfg.index)

    def _on_frames(self, h: Handle, payload: Any, sink: Sink) -> None:
        sink.frames(int(payload))

    def _on_done(self, h: Handle, payload: Any, sink: Sink) -> None:
        h.started = False
        sink.done(h.assigned.popleft(), payload)

    def _on_fatal(self, h: Handle, payload: Any, sink: Sink) -> None:
        h.fatal = str(payload)
        log.error("worker %d: %s", h.cfg.index, payload)


HANDLERS: dict[str, Callable[[Pool, Handle, Any, Sink], None]] = {
    "ready": Pool._on_ready,
    "start": Pool._on_start,
    "frames": Pool._on_frames,
    "done": Pool._on_done,
    "fatal": Pool._on_fatal,
}
