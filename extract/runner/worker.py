"""A worker: loads every extractor once, then decodes (prefetch thread) and computes its tasks.

It talks to the parent over two one-way pipes: tasks in (a :class:`Task`, or None to stop),
messages out: ``("ready", pid)``, ``("start", video)``, ``("frames", n)``,
``("done", VideoResult)``, ``("fatal", message)``. The same function runs in a spawned process
or, with ``--workers 0``, in a thread of the calling process.
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
    sizes = tuple(s.face_size for s in cfg.specs if s.modality == "visual" and s.face_size)
    store = FeatureStore(cfg.store, "a")
    claims = None
    if cfg.claims and store.is_local:
        from extract.claims import ClaimBook

        claims = ClaimBook(cfg.store, cfg.run_id)
    return WorkerContext(extractors, store, FaceSteps(sizes, cfg.detector), cfg.run_id,
                         str(Sampling.parse(cfg.sample)), cfg.image_fps, cfg.index, claims)


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


def worker_main(cfg: WorkerConfig, tasks: Any, results: Any) -> None:
    """Entry point: ``tasks`` / ``results`` are the worker's ends of two pipes."""
    if not cfg.in_process:
        _setup_process(cfg)
    try:
        ctx = build_context(cfg)
    except Exception as exc:
        log.debug("worker %d failed to start:\n%s", cfg.index, traceback.format_exc())
        results.send(("fatal", f"{type(exc).__name__}: {exc}"))
        return
    results.send(("ready", os.getpid()))
    modality = {s.name: s.modality for s in cfg.specs}
    outputs = {name: tuple(e.outputs()) for name, e in ctx.extractors.items()}
    rates = {name: e.input_rate for name, e in ctx.extractors.items() if e.modality == "audio"}
    settings = DecodeSettings(Sampling.parse(cfg.sample), cfg.batch_size, cfg.image_fps, modality,
                              outputs, audio_rates=rates, image_clock=cfg.image_clock)
    prefetch = Prefetcher(tasks.recv, settings, cfg.prefetch, ctx.claims).start()
    job: VideoJob | None = None
    try:
        for event in prefetch.events():
            if event.kind == "begin":
                job = VideoJob(event.task, ctx, claim=event.payload)
                results.send(("start", event.task.video_id))
            elif event.kind == "end":
                results.send(("done", _guarded(job, job.finish)))
                job = None
            else:
                _guarded(job, job.handle, event)
                if event.kind == "frames":
                    results.send(("frames", len(event.payload.frames)))
    except Exception as exc:
        log.debug("worker %d stopped:\n%s", cfg.index, traceback.format_exc())
        with contextlib.suppress(OSError):  # the parent may be gone already
            results.send(("fatal", f"{type(exc).__name__}: {exc}"))
    finally:
        with contextlib.suppress(Exception):  # every video was committed when it finished
            ctx.store.close()  # seals this worker's packs
        if ctx.claims is not None:
            ctx.claims.close()  # releases whatever is still held
