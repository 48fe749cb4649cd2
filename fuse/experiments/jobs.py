"""Run independent jobs in parallel, locally or on Ray; a re-run skips finished jobs.

A job is finished when its ``result.json`` exists (written atomically, last). A failing job
leaves ``error.txt`` beside it, is reported, and is tried again by the next run; the others go on.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from extract.registry import Registry

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
ERROR_FILE = "error.txt"
JobFn = Callable[[dict[str, Any], Path], dict[str, Any]]


@dataclass
class Job:
    """One unit of work: ``fn(payload, out)`` must return a JSON-able result dict."""

    name: str
    payload: dict[str, Any]
    out: Path


@dataclass
class JobResult:
    name: str
    status: str  # done | skipped | failed
    seconds: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def is_done(job: Job) -> bool:
    return (Path(job.out) / RESULT_FILE).is_file()


def load_result(job: Job) -> dict[str, Any]:
    return json.loads((Path(job.out) / RESULT_FILE).read_text())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def execute(fn: JobFn, job: Job) -> JobResult:
    """Run one job in this process: result.json on success, error.txt on failure."""
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ERROR_FILE).unlink(missing_ok=True)
    start = time.perf_counter()
    try:
        result = fn(job.payload, out)
    except Exception as exc:  # one failing job is recorded; the pool goes on
        (out / ERROR_FILE).write_text(traceback.format_exc())
        return JobResult(job.name, "failed", time.perf_counter() - start,
                         error=f"{type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - start
    _write_atomic(out / RESULT_FILE, json.dumps({"result": result, "seconds": seconds},
                                                  indent=2, default=float))
    return JobResult(job.name, "done", seconds, result)


BACKENDS: Registry[Callable[..., list[JobResult]]] = Registry("job backend")


def run_jobs(fn: JobFn, jobs: list[Job], *, backend: str = "local", workers: int = 1,
             gpus: int = 0, ray_address: str | None = None,
             progress: bool = True) -> list[JobResult]:
    """Run the unfinished ``jobs`` with ``backend``; finished ones come back as "skipped"."""
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError("job names must be unique")
    todo = [j for j in jobs if not is_done(j)]
    skipped = {j.name: JobResult(j.name, "skipped", result=load_result(j)["result"])
               for j in jobs if is_done(j)}
    log.info("%d jobs: %d finished already, %d to run on %s", len(jobs), len(skipped), len(todo),
             backend)
    ran = {r.name: r for r in BACKENDS.get(backend)(fn, todo, workers=workers, gpus=gpus,
                                                     ray_address=ray_address, progress=progress)}
    for r in ran.values():
        if r.status == "failed":
            log.error("job %s failed: %s", r.name, r.error)
    return [skipped.get(n) or ran[n] for n in names]


def _bar(total: int, progress: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="job", disable=not progress or total == 0)


def _init_worker(counter, gpus: int) -> None:
    """Pin each local worker process to one GPU (before torch touches CUDA)."""
    with counter.get_lock():
        slot = counter.value
        counter.value += 1
    if gpus > 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)


@BACKENDS.register("local")
def _run_local(fn: JobFn, jobs: list[Job], *, workers: int, gpus: int, progress: bool,
               **_: Any) -> list[JobResult]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from fuse.experiments.cluster import check_local_gpus

    check_local_gpus(gpus)
    n = max(1, gpus or workers)
    results = []
    with _bar(len(jobs), progress, "jobs") as bar:
        if n == 1 and gpus == 0:
            for job in jobs:
                results.append(execute(fn, job))
                bar.update()
            return results
        ctx = mp.get_context("spawn")
        counter = ctx.Value("i", 0)
        with ProcessPoolExecutor(n, mp_context=ctx, initializer=_init_worker,
                                 initargs=(counter, gpus)) as pool:
            futures = {pool.submit(execute, fn, job): job for job in jobs}
            for fut in as_completed(futures):
                job = futures[fut]
                try:
                    results.append(fut.result())
                except Exception as exc:  # the worker process itself died
                    results.append(JobResult(job.name, "failed", error=f"worker died: {exc}"))
                bar.update()
    if jobs and all(r.error.startswith("worker died: ") for r in results):
        from fuse.errors import FuseError

        raise FuseError(f"every job's worker process died ({results[0].error}); in a script, "
                        "call run_grid(..., workers > 1) under `if __name__ == \"__main__\":` "
                        "(worker processes re-import the script); otherwise run with workers=1 "
                        "to see the error")
    return results


@BACKENDS.register("ray")
def _run_ray(fn: JobFn, jobs: list[Job], *, workers: int, gpus: int, ray_address: str | None,
             progress: bool, **_: Any) -> list[JobResult]:
    """Each job a Ray task (1 GPU each when ``gpus`` > 0); outputs go to a shared path (see
    :func:`fuse.experiments.cluster.prepare_ray` for the checks made before)."""
    from extract.distributed import ensure_ray

    ensure_ray(ray_address, max(1, workers))  # a missing package or bad address: one line
    import ray

    remote = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0, max_retries=0)(execute)
    pending = {remote.remote(fn, job): job for job in jobs}
    results = []
    with _bar(len(jobs), progress, "jobs (ray)") as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(done[0])
            try:
                results.append(ray.get(done[0]))
            except Exception as exc:  # task or worker failure
                results.append(JobResult(job.name, "failed", error=f"ray task failed: {exc}"))
            bar.update()
    return results
