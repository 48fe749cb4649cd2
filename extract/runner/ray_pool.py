"""`extract run --backend ray`: video shards as Ray tasks, one GPU each when GPUs are asked for.

Each shard runs the same worker loop as a local worker (extractors loaded once per shard,
prefetch decoding, claims), inside a Ray task; its messages come back when the shard ends and
are replayed into the run's statistics. The store must be on a path every node sees (shared
file system) or an fsspec URL. ``ensure_ray`` starts a local instance when no address is given.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import replace
from typing import Any

from extract.runner.plan import Task
from extract.runner.pool import Sink
from extract.runner.worker import WorkerConfig, worker_main

log = logging.getLogger(__name__)


class _Inbox:
    """The task side of a worker's pipe, fed from a list (then None: no more work)."""

    def __init__(self, tasks: list[Task]) -> None:
        self.items: deque[Task | None] = deque([*tasks, None])

    def recv(self) -> Task | None:
        return self.items.popleft()


class _Outbox:
    """The result side of a worker's pipe, kept as a list."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, Any]] = []

    def send(self, message: tuple[str, Any]) -> None:
        self.messages.append(message)


def run_shard(cfg: WorkerConfig, tasks: list[Task]) -> list[tuple[str, Any]]:
    """Run one shard with the ordinary worker loop; returns the worker's messages in order."""
    inbox, outbox = _Inbox(tasks), _Outbox()
    worker_main(cfg, inbox, outbox)
    return outbox.messages


def make_shards(tasks: list[Task], count: int) -> list[list[Task]]:
    """Longest-first greedy split into ``count`` shards of about equal total size."""
    shards: list[list[Task]] = [[] for _ in range(max(1, min(count, len(tasks))))]
    loads = [0] * len(shards)
    for task in sorted(tasks, key=lambda t: -t.item.size):
        i = loads.index(min(loads))
        shards[i].append(task)
        loads[i] += max(1, task.item.size)
    return [s for s in shards if s]


def replay(shard: list[Task], messages: list[tuple[str, Any]], sink: Sink, index: int) -> None:
    """Feed a finished shard's messages to the sink; tasks never finished are lost."""
    remaining = deque(shard)
    fatal = ""
    for kind, payload in messages:
        if kind == "start" and remaining:
            sink.started(remaining[0], index)
        elif kind == "frames":
            sink.frames(int(payload))
        elif kind == "done" and remaining:
            sink.done(remaining.popleft(), payload)
        elif kind == "fatal":
            fatal = str(payload)
    for task in remaining:
        sink.lost(task, index, f"ray shard {index} stopped: {fatal or 'no result'}")


class RayPool:
    """Same interface as :class:`extract.runner.pool.Pool`, on Ray."""

    def __init__(self, configs: list[WorkerConfig], address: str | None = None,
                 shards_per_worker: int = 4) -> None:
        self.configs = configs
        self.address = address
        self.shards_per_worker = shards_per_worker

    def run(self, tasks: list[Task], sink: Sink) -> None:
        import ray

        from extract.distributed import ensure_ray

        gpus = self.configs[0].device.startswith("cuda")
        ensure_ray(self.address, None if gpus else len(self.configs))
        remote = ray.remote(run_shard).options(num_gpus=1 if gpus else 0, num_cpus=1,
                                               max_retries=0)
        shards = make_shards(tasks, len(self.configs) * self.shards_per_worker)
        base = self.configs[0]
        # Ray sets CUDA_VISIBLE_DEVICES per task, so each shard sees its GPU as cuda:0.
        cfg = replace(base, device="cuda:0" if gpus else "cpu", in_process=True)
        pending = {remote.remote(replace(cfg, index=i), shard): (i, shard)
                   for i, shard in enumerate(shards)}
        log.info("ray: %d shards over %d workers", len(shards), len(self.configs))
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            index, shard = pending.pop(done[0])
            try:
                messages = ray.get(done[0])
            except Exception as exc:  # the task or its node died
                messages = [("fatal", f"{type(exc).__name__}: {exc}")]
            replay(shard, messages, sink, index)
