"""A worker: loads every extractor once, then decodes (prefetch thread) and computes its tasks.

It talks to the parent over two one-way pipes: tasks in (a :class:`Task`, or None to stop),
messages out: ``("ready", pid)``, ``("start", video)``, ``("frames", n)``,
``("done", VideoResult)``, ``("fatal", message)``; ``start`` and ``done`` come in the order the
tasks came in. The same function runs in a spawned process or, with ``--workers 0``, in a thread
of the calling process (or of a Ray actor). With ``cpu_workers`` > 0 the worker starts that
many CPU processes that decode and find faces for it (:mod:`extract.runner.feed`); otherwise
its prefetch thread decodes and its compute loop runs the face step itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import traceback
from dataclasses import dataclass
from typing import Any

from extract.catalog import FeatureSpec
from extract.media.sampling import Sampling
from extract.runner.compute import VideoJob, WorkerContext
from extract.runner.decode import DecodeSettings, Prefetcher
from extract.runner.spans import SpanLimits

log = logging.getLogger(__name__)


@dataclass
class WorkerConfig:
    """Everything a worker needs (picklable: it crosses the spawn boundary)."""

    index: int  # worker number (0-based)
    device: str  # "cpu" or "cuda:<i>"
    specs: list[FeatureSpec]  # resolved specs of the run's features
    store: str  # store path
    run_id: str
    sample: str  # frame sampling (all | fps:F | count:N)
    image_fps: float
    batch_size: int
    detector: str | None
    plugins: list[str]  # modules to import first (extra registrations)
    torch_threads: int | None  # torch.set_num_threads in this worker (None: leave as is)
    log_level: int = logging.WARNING
    in_process: bool = False  # running as a thread of the parent
    prefetch: int = 3  # decoded events (frame batches) buffered ahead of compute
    claims: bool = True  # claim each (feature, video) in the store before computing it
    precision: str = "fp32"  # fp32 | bf16 | fp16: the backbones' autocast (resolved by the parent)
    image_clock: Any = None  # extract.media.clock.ImageClockSettings of frame folders
    preloaded: dict[str, Any] | None = None  # in-process only: extractors the parent loaded
    cpu_workers: int = 0  # CPU processes that decode and find faces for this worker (0: itself)
    face_device: str = "cpu"  # where faces are detected: cpu | cuda (this worker's GPU)
    spans: SpanLimits = SpanLimits()  # how the CPU pool cuts inputs (sampled frames per span)

    @property
    def face_sizes(self) -> tuple[int, ...]:
        """Crop sizes of the visual features."""
        return tuple(sorted({s.face_size for s in self.specs
                             if s.modality == "visual" and s.face_size}))

    @property
    def feeders(self) -> int:
        """CPU processes this worker starts (none without visual features)."""
        return self.cpu_workers if self.face_sizes else 0

    @property
    def task_depth(self) -> int:
        """Tasks the parent may hand this worker ahead: with a CPU pool, enough for every CPU
        process to read another short video while the current one is computed."""
        return self.feeders + 2

    @property
    def detect_on(self) -> str:
        """The device of the face detector: ``cpu``, or ``cuda:<this worker's GPU>``."""
        if self.face_device != "cuda":
            return "cpu"
        return self.device if self.device.startswith("cuda") else "cuda:0"


def build_context(cfg: WorkerConfig) -> WorkerContext:
    """Import plugins, set threads, create and load each extractor once, open the store."""
    from extract.extractors.base import create
    from extract.runner.faces import FaceSteps
    from extract.runner.features import import_plugins
    from extract.store import FeatureStore

    import_plugins(cfg.plugins)
    if cfg.torch_threads:
        import torch

        torch.set_num_threads(cfg.torch_threads)
    extractors = {}
    for spec in cfg.specs:
        if cfg.in_process and cfg.preloaded and spec.name in cfg.preloaded:
            extractors[spec.name] = cfg.preloaded[spec.name]  # loaded by the run's checks
            continue
        extractor = create(spec, cfg.device, cfg.precision)
        extractor.load()
        extractors[spec.name] = extractor
    store = FeatureStore(cfg.store, "a")
    claims = None
    if cfg.claims and store.is_local:
        from extract.claims import ClaimBook

        claims = ClaimBook(cfg.store, cfg.run_id)
    return WorkerContext(extractors, store, FaceSteps(cfg.face_sizes, cfg.detector, cfg.detect_on),
                         cfg.run_id, str(Sampling.parse(cfg.sample)), cfg.image_fps, cfg.index,
                         claims)


def cpu_pool(cfg: WorkerConfig) -> Any:
    """The worker's CPU pool, its processes started (None without one): started before the
    extractors load, so that both warm up at once."""
    if cfg.feeders <= 0:
        return None
    from extract.runner.feed import PoolConfig, PooledPrefetcher

    pool = PoolConfig(cfg.feeders, cfg.face_sizes, cfg.detector, cfg.detect_on,
                      tuple(cfg.plugins), cfg.index, cfg.spans, cfg.log_level)
    frames = DecodeSettings(Sampling.parse(cfg.sample), cfg.batch_size, cfg.image_fps,
                            {s.name: s.modality for s in cfg.specs},
                            image_clock=cfg.image_clock)
    return PooledPrefetcher(pool, frames).spawn()


def _setup_process(cfg: WorkerConfig) -> None:
    logging.basicConfig(level=cfg.log_level,
                        format=f"%(levelname)s worker{cfg.index}: %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us


def _guarded(job: VideoJob, step: Any, *args: Any) -> Any:
    """Run one step of a job; an unexpected error fails this video (stage "worker"), not the
    worker. The stages' own errors (open, decode, faces, audio, extract, write) are recorded
    by the job itself."""
    try:
        return step(*args)
    except Exception as exc:
        log.error("%s: unexpected error:\n%s", job.task.video_id, traceback.format_exc())
        job.fail(list(job.task.features), "worker", exc)
        if job.claim is not None:
            with contextlib.suppress(Exception):
                job.claim.release()
        return job.result


def _step(job: VideoJob | None, event: Any, ctx: WorkerContext, results: Any) -> VideoJob | None:
    """Handle one event of the stream; returns the job in progress."""
    if event.kind == "begin":
        results.send(("start", event.task.video_id))
        return VideoJob(event.task, ctx, claim=event.payload)
    if event.kind == "end":
        results.send(("done", _guarded(job, job.finish)))
        return None
    if event.kind == "restart":  # its frames are read again from the first one
        log.info("%s: rows so far dropped (%s)", event.task.video_id, event.payload)
        return VideoJob(event.task, ctx, claim=job.claim)
    _guarded(job, job.handle, event)
    if event.kind == "frames":
        results.send(("frames", len(event.payload.frames)))
    elif event.kind == "faces":
        results.send(("frames", event.payload.count))
    return job


def worker_main(cfg: WorkerConfig, tasks: Any, results: Any) -> None:
    """Entry point: ``tasks`` / ``results`` are the worker's ends of two pipes."""
    if not cfg.in_process:
        _setup_process(cfg)
    pool = None
    try:
        from extract.runner.features import import_plugins

        import_plugins(cfg.plugins)  # before the pool: a plugin may register its detector
        pool = cpu_pool(cfg)
        ctx = build_context(cfg)
    except Exception as exc:
        log.debug("worker %d failed to start:\n%s", cfg.index, traceback.format_exc())
        if pool is not None:
            pool.close()
        results.send(("fatal", f"{type(exc).__name__}: {exc}"))
        return
    results.send(("ready", os.getpid()))
    modality = {s.name: s.modality for s in cfg.specs}
    outputs = {name: tuple(e.outputs()) for name, e in ctx.extractors.items()}
    rates = {name: e.input_rate for name, e in ctx.extractors.items() if e.modality == "audio"}
    settings = DecodeSettings(Sampling.parse(cfg.sample), cfg.batch_size, cfg.image_fps, modality,
                              outputs, audio_rates=rates, image_clock=cfg.image_clock)
    job: VideoJob | None = None
    prefetch: Any = pool
    try:
        if pool is not None:
            pool.start(tasks.recv, settings, ctx.claims)
        else:
            prefetch = Prefetcher(tasks.recv, settings, cfg.prefetch, ctx.claims).start()
        for event in prefetch.events():
            try:
                job = _step(job, event, ctx, results)
            finally:
                event.done()  # its crops were copied: the CPU pool may reuse their memory
    except Exception as exc:
        log.debug("worker %d stopped:\n%s", cfg.index, traceback.format_exc())
        with contextlib.suppress(OSError):  # the parent may be gone already
            results.send(("fatal", f"{type(exc).__name__}: {exc}"))
    finally:
        if prefetch is not None:
            prefetch.close()
        with contextlib.suppress(Exception):  # every video was committed when it finished
            ctx.store.close()  # seals this worker's packs
        if ctx.claims is not None:
            ctx.claims.close()  # releases whatever is still held
