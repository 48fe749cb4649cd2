"""`extract run --backend ray`: one Ray actor per worker (one GPU each with ``--gpus``), fed
video by video like the local pool, each finished video reported as it finishes.

An actor runs the ordinary worker loop (extractors loaded once, prefetch decoding, claims) in a
thread; the driver hands it at most ``depth`` videos at a time and collects its messages with
short ``step`` calls. When an actor dies (its process killed, its node lost), the video it was
computing is recorded as failed (unless the store shows it complete: then it counts as done),
the videos it had not started go back to the queue, and a replacement actor is started: the
summary matches the store. Before any actor starts, every path the actors will open (store,
inputs, weights) is checked from every worker node (:func:`extract.distributed.check_visible`).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from extract.catalog import FeatureSpec, resolve_local_weights
from extract.distributed import DEFAULT_TIMEOUT_S, check_resources, check_visible, ensure_ray
from extract.locations import absolute
from extract.runner.compute import VideoResult
from extract.runner.options import RunOptions
from extract.runner.plan import Task
from extract.runner.pool import Sink, retry_or_lose
from extract.runner.records import Failure
from extract.runner.worker import WorkerConfig, worker_main

log = logging.getLogger(__name__)


def prepare(options: RunOptions) -> None:
    """Connect to the cluster (``--ray-timeout``) and check its GPUs and CPUs, before the store
    is touched (the run's paths are already absolute: ``RunOptions.absolute``). Problems are
    one ``ClusterError`` line."""
    n = max(1, options.num_workers)
    ensure_ray(options.ray_address, None if options.gpus else n, options.ray_timeout)
    flag = f"--gpus {options.gpus}" if options.gpus else f"--workers {n}"
    check_resources(gpus=options.gpus, slots=n, what=f"extract run --backend ray {flag}")


def worker_specs(specs: list[FeatureSpec]) -> list[FeatureSpec]:
    """The specs as a remote worker needs them: local weights as absolute paths (the
    fingerprint, computed here from the specs as given, does not change)."""
    out = []
    for spec in specs:
        local = resolve_local_weights(spec.weights)
        out.append(replace(spec, weights=absolute(local)) if local is not None else spec)
    return out


def paths_to_check(cfg: WorkerConfig, tasks: list[Task]) -> dict[str, str]:
    """What the actors will open, by a label for messages: store, weights, every input."""
    paths = {"--store": absolute(cfg.store)}
    for spec in cfg.specs:
        if spec.weights and resolve_local_weights(spec.weights) is not None:
            paths[f"weights of {spec.name}"] = spec.weights
    for i, task in enumerate(tasks):
        paths[f"input #{i + 1}"] = absolute(task.item.path)
    return paths


class _QueueIn:
    """The task side of a worker's pipe, over a queue (None: no more work)."""

    def __init__(self, q: queue.Queue) -> None:
        self.q = q

    def recv(self) -> Task | None:
        return self.q.get()


class _QueueOut:
    """The message side of a worker's pipe, over a queue."""

    def __init__(self, q: queue.Queue) -> None:
        self.q = q

    def send(self, message: tuple[str, Any]) -> None:
        self.q.put(message)


class RayWorker:
    """The Ray actor: the worker loop in a thread, fed and drained by :meth:`step` calls."""

    def __init__(self, cfg: WorkerConfig) -> None:
        self.inbox: queue.Queue = queue.Queue()
        self.outbox: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=worker_main, name=f"worker{cfg.index}",
                                       args=(cfg, _QueueIn(self.inbox), _QueueOut(self.outbox)),
                                       daemon=True)
        self.thread.start()

    def step(self, tasks: list[Task | None], wait_s: float) -> tuple[list[tuple[str, Any]], bool]:
        """Queue ``tasks``, then return the messages sent so far (waiting up to ``wait_s`` for
        the first) and whether the loop still runs (False: it ended and all was read)."""
        for task in tasks:
            self.inbox.put(task)
        messages = []
        with contextlib.suppress(queue.Empty):
            messages.append(self.outbox.get(timeout=wait_s))
            while True:
                messages.append(self.outbox.get_nowait())
        alive = self.thread.is_alive() or not self.outbox.empty()
        return messages, alive


@dataclass
class _Handle:
    """One actor as the driver sees it."""

    cfg: WorkerConfig
    actor: Any
    assigned: deque[Task] = field(default_factory=deque)
    call: Any = None  # the step call in flight (an ObjectRef)
    ready: bool = False
    started: bool = False  # assigned[0] is being computed
    dead: bool = False
    closing: bool = False
    fatal: str = ""


class RayPool:
    """Same interface as :class:`extract.runner.pool.Pool`, on Ray actors."""

    def __init__(self, configs: list[WorkerConfig], address: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT_S, depth: int = 2, max_attempts: int = 2,
                 poll_s: float = 0.5) -> None:
        self.configs = configs
        self.address = address
        self.timeout = timeout
        self.depth = depth
        self.max_attempts = max_attempts
        self.poll_s = poll_s
        self.handles: list[_Handle] = []
        self.attempts: dict[str, int] = {}
        self.store: Any = None

    # ---------------------------------------------------------------- setup
    def run(self, tasks: list[Task], sink: Sink) -> None:
        """Process every task; returns when each is done or lost."""
        import ray

        from extract.store import FeatureStore

        gpus = self.configs[0].device.startswith("cuda")
        ensure_ray(self.address, None if gpus else len(self.configs), self.timeout)
        # Ray sets CUDA_VISIBLE_DEVICES per actor, so each sees its GPU as cuda:0.
        base = replace(self.configs[0], device="cuda:0" if gpus else "cpu", in_process=True,
                       store=absolute(self.configs[0].store),
                       specs=worker_specs(self.configs[0].specs))
        check_visible(paths_to_check(base, tasks), plugins=base.plugins, gpus=gpus,
                      timeout=self.timeout)
        self.remote = ray.remote(RayWorker).options(num_cpus=1, num_gpus=1 if gpus else 0,
                                                    max_restarts=0, max_task_retries=0)
        self.store = FeatureStore(base.store, "r")  # settles the videos of a dead actor
        self.handles = [self._start(replace(base, index=i)) for i in range(len(self.configs))]
        log.info("ray: %d tasks over %d actors", len(tasks), len(self.handles))
        try:
            self._loop(deque(tasks), sink)
        except BaseException:
            self._kill_all()
            raise
        self._close_all()

    def _start(self, cfg: WorkerConfig) -> _Handle:
        return _Handle(cfg, self.remote.remote(cfg))

    # ----------------------------------------------------------------- loop
    def _loop(self, pending: deque[Task], sink: Sink) -> None:
        import ray

        restarts_left = max(3, len(pending))
        should_stop = getattr(sink, "should_stop", None)  # sinks that stop a run (full disk)
        while pending or any(h.assigned for h in self.handles if not h.dead):
            if pending and should_stop is not None and should_stop():
                for task in pending:  # what was handed out finishes; the rest is not started
                    sink.not_started(task)  # type: ignore[attr-defined]
                pending.clear()
                continue
            live = [h for h in self.handles if not h.dead]
            if not live:
                if restarts_left <= 0 or self._only_startup_failures():
                    reason = self._describe(self.handles[-1]) if self.handles else "no worker"
                    for task in pending:
                        sink.lost(task, -1, f"no Ray worker could run it: {reason}")
                    return
                restarts_left -= 1
                self.handles.append(self._start(replace(self.handles[-1].cfg)))
                continue
            for h in live:
                if h.call is None:
                    self._send(h, pending)
            calls = {h.call: h for h in live}
            finished, _ = ray.wait(list(calls), num_returns=1, timeout=10 * self.poll_s)
            for ref in finished:
                h = calls[ref]
                self._receive(h, pending, sink)
                if h.dead and h.ready and pending and restarts_left > 0:
                    restarts_left -= 1
                    self.handles.append(self._start(replace(h.cfg)))

    def _only_startup_failures(self) -> bool:
        recent = self.handles[-max(2, len(self.configs)):]
        return len(recent) >= 2 and all(not h.ready for h in recent)

    def _send(self, h: _Handle, pending: deque[Task]) -> None:
        new: list[Task | None] = []
        while h.ready and pending and len(h.assigned) < self.depth:
            task = pending.popleft()
            h.assigned.append(task)
            new.append(task)
        h.call = h.actor.step.remote(new, self.poll_s)

    def _receive(self, h: _Handle, pending: deque[Task], sink: Sink) -> None:
        import ray

        ref, h.call = h.call, None
        try:
            messages, alive = ray.get(ref)
        except ray.exceptions.RayError as exc:  # the actor's process or node died
            self._on_death(h, pending, sink, _first_line(exc))
            return
        for kind, payload in messages:
            if kind == "ready":
                h.ready = True
            elif kind == "start":
                h.started = True
                sink.started(h.assigned[0], h.cfg.index)
            elif kind == "frames":
                sink.frames(int(payload))
            elif kind == "done":
                h.started = False
                sink.done(h.assigned.popleft(), payload)
            elif kind == "fatal":
                h.fatal = str(payload)
                log.error("ray worker %d: %s", h.cfg.index, payload)
        if not alive and not h.closing:  # its loop ended without being asked to
            self._on_death(h, pending, sink, self._describe(h))

    def _describe(self, h: _Handle) -> str:
        if h.fatal:
            return f"ray worker {h.cfg.index} stopped: {h.fatal}"
        return f"ray worker {h.cfg.index} stopped unexpectedly"

    # ---------------------------------------------------------------- deaths
    def _on_death(self, h: _Handle, pending: deque[Task], sink: Sink, why: str) -> None:
        if h.dead:
            return
        h.dead = True
        with contextlib.suppress(Exception):
            import ray

            ray.kill(h.actor, no_restart=True)
        if not h.fatal and not why.startswith("ray worker"):
            why = f"ray worker {h.cfg.index} died: {why}"
        log.warning("%s", why)
        for i, task in enumerate(list(h.assigned)):
            done, result = self._settle(task, why)
            if done:
                sink.done(task, result)
            elif i == 0 and h.started:
                if result.done:  # some features were committed before it died
                    sink.done(task, result)
                else:
                    sink.lost(task, h.cfg.index, why)
            else:
                retry_or_lose(task, self.attempts, self.max_attempts, pending, sink, h.cfg.index,
                              f"Ray workers that died; last: {why}")
        h.assigned.clear()
        h.started = False

    def _settle(self, task: Task, why: str) -> tuple[bool, VideoResult]:
        """What the store says of a task whose worker died: (all its features are complete,
        a result listing those that are and failing the others)."""
        done, rows, foreign = [], {}, False
        for spec in self.configs[0].specs:
            if spec.name not in task.features:
                continue
            outputs = [spec.name, *(f"{spec.name}.{k}" for k in spec.extras)]
            try:
                complete = all(self.store.is_complete(o, task.video_id) for o in outputs)
                if complete:
                    entry = self.store.entry(spec.name, task.video_id)
                    rows[spec.name] = entry.rows
                    foreign |= entry.attrs.get("run_id") != self.configs[0].run_id
            except Exception:  # noqa: BLE001 (an unreadable index: count it as not done)
                complete = False
            if complete:
                done.append(spec.name)
        left = [f for f in task.features if f not in done]
        if not left and foreign:  # another run sharing the store finished it
            return True, VideoResult(task.video_id, skipped="done")
        failures = [Failure(task.video_id, left, "worker", "WorkerDied", why,
                            str(task.item.path))] if left else []
        return not left, VideoResult(task.video_id, done=done, rows=rows, failures=failures)

    # ---------------------------------------------------------------- close
    def _close_all(self, wait_s: float = 120.0) -> None:
        """Ask every live actor to finish (its worker seals its packs), then end it."""
        import ray

        live = [h for h in self.handles if not h.dead]
        for h in live:
            if h.call is not None:
                with contextlib.suppress(ray.exceptions.RayError):
                    ray.get(h.call)
            h.closing = True
            h.call = h.actor.step.remote([None], self.poll_s)
        deadline = time.monotonic() + wait_s
        while live and time.monotonic() < deadline:
            for h in list(live):
                try:
                    _, alive = ray.get(h.call)
                except ray.exceptions.RayError:
                    alive = False
                if alive:
                    h.call = h.actor.step.remote([], self.poll_s)
                else:
                    live.remove(h)
        self._kill_all()

    def _kill_all(self) -> None:
        import ray

        for h in self.handles:
            with contextlib.suppress(Exception):
                ray.kill(h.actor, no_restart=True)
            h.dead = True


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = next((ln for ln in lines if "died" in ln or "killed" in ln or "Error" in ln),
                lines[0] if lines else type(exc).__name__)
    return text[:300]
