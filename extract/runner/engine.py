"""``extract run`` from top to bottom: validate, find the inputs, plan, check every feature
(loaded and tried once), only then prepare the store, run the pool, report.

Nothing in the store changes until every check has passed: a bad option, weights that do not
load or an input folder with nothing to read exit with one message and leave the store as it
was (not even created when it did not exist).
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import sys
import time
from dataclasses import asdict
from typing import Any

from extract.errors import ConfigError, StoreError
from extract.ids import Discovery
from extract.runner.features import (
    RunFeature,
    check_store,
    import_plugins,
    prepare_store,
    resolve_features,
)
from extract.runner.options import RunOptions
from extract.runner.plan import Plan, input_kinds, make_plan
from extract.runner.records import RunRecords, new_run_id
from extract.runner.spans import SpanLimits
from extract.runner.stats import MAX_IGNORED_LISTED, FeatureStats, RunStats, RunSummary
from extract.runner.worker import WorkerConfig
from extract.store import FeatureStore

log = logging.getLogger(__name__)


def share(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal shares (the first ones get the remainder)."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def worker_configs(options: RunOptions, features: list[RunFeature], run_id: str,
                   preloaded: dict[str, Any] | None = None) -> list[WorkerConfig]:
    """One config per worker: ``cuda:i`` per GPU, else CPU processes sharing the cores
    (``preloaded`` extractors go to an in-process worker only). The ``--cpu-workers`` are
    shared among the workers (Ray workers decode themselves: their CPUs are Ray's to count)."""
    cores = os.cpu_count() or 1
    n = options.num_workers
    cpu = 0 if options.backend == "ray" else options.resolved_cpu_workers
    pools = share(cpu, max(1, n))
    base = dict(specs=[f.spec for f in features], store=options.store, run_id=run_id,
                sample=options.sample, image_fps=float(options.image_fps),
                batch_size=options.batch_size, detector=options.detector,
                plugins=list(options.plugins), claims=options.claims,
                precision=options.resolved_precision,
                image_clock=options.image_clock, face_device=options.face_device,
                spans=SpanLimits(*options.span_frames),
                log_level=logging.getLogger().getEffectiveLevel())
    if options.gpus > 0:
        return [WorkerConfig(index=i, device=f"cuda:{i}", torch_threads=max(1, cores // n),
                             cpu_workers=pools[i], **base) for i in range(n)]
    if n == 0:
        return [WorkerConfig(index=0, device="cpu", torch_threads=None, in_process=True,
                             preloaded=preloaded or None, cpu_workers=pools[0], **base)]
    threads = max(1, (cores - cpu) // n)  # the CPU pool's processes take their share of cores
    return [WorkerConfig(index=i, device="cpu", torch_threads=threads, cpu_workers=pools[i],
                         **base) for i in range(n)]


def check_shared_memory(options: RunOptions, features: list[RunFeature]) -> None:
    """The CPU pool's crop rings fit in shared memory (else one line, before the store
    changes)."""
    from extract.runner.feed import shared_memory_needed, shared_memory_problem

    if options.backend != "local":  # Ray workers decode themselves (no CPU pool)
        return
    sizes = tuple(f.spec.face_size for f in features
                  if f.modality == "visual" and f.spec.face_size)
    needed = shared_memory_needed(options.resolved_cpu_workers, sizes, options.batch_size,
                                  SpanLimits(*options.span_frames))
    problem = shared_memory_problem(needed) if needed else None
    if problem:
        raise ConfigError(f"cannot run: {problem}")


def make_pool(options: RunOptions, configs: list[WorkerConfig]) -> Any:
    """The worker pool of ``options.backend``: local processes or Ray shards."""
    if options.backend == "ray":
        from extract.runner.ray_pool import RayPool

        return RayPool(configs, options.ray_address, timeout=options.ray_timeout)
    from extract.runner.pool import Pool

    return Pool(configs)


def check_gpus(count: int) -> None:
    if count <= 0:
        return
    import torch

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have < count:
        raise ConfigError(f"--gpus {count} asks for {count} GPU(s) but this machine has {have}")


def run_config(options: RunOptions, features: list[RunFeature], fingerprints: dict[str, str],
               plan: Plan, found: Discovery, run_id: str) -> dict[str, Any]:
    """The resolved run, saved as ``run.yaml`` beside its failures and summary."""
    from extract import __version__
    from extract.store import package_versions

    return {
        "run_id": run_id,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "options": options.to_dict(),
        "features": {
            f.name: {"spec": f.spec.to_dict(), "config": f.config, "weights": f.availability,
                     "outputs": {o: {"dim": d, "fingerprint": fingerprints[o]}
                                 for o, d in f.outputs.items()}}
            for f in features},
        "inputs": {"root": str(options.input), "discovered": len(found.items),
                   "applicable": plan.inputs, "todo": len(plan.tasks),
                   "skipped": len(plan.skipped), "deferred": len(plan.deferred),
                   "ignored": len(found.ignored),
                   "ignored_entries": [asdict(e) for e in found.ignored[:MAX_IGNORED_LISTED]]},
        "versions": {"extract": __version__, "python": platform.python_version(),
                     **package_versions()},
        "host": platform.node(),
    }


def find_inputs(options: RunOptions, features: list[RunFeature]) -> Discovery:
    """The run's inputs; none at all is an error saying what was looked for and what was seen."""
    from extract.ids import scan

    found = scan(options.input, input_kinds(features))
    if not found.items:
        seen = found.describe_ignored() or "the folder is empty"
        raise ConfigError(f"no input found in {options.input} for {', '.join(options.features)}:"
                          f" looked for {found.looked_for()}; {seen}")
    if found.ignored:
        log.info("%s: %s", options.input, found.describe_ignored())
    return found


def existing_store(path: str) -> FeatureStore | None:
    """The store at ``path`` when there is one (opened to check and plan), else None: it is
    created only once every check has passed."""
    try:
        FeatureStore(path, "r")
    except StoreError:
        return None
    return FeatureStore(path, "a")


def quiet_downloads() -> None:
    """No Hugging Face download / loading progress bars in the run's output (this process and
    the workers it starts): the run has its own progress bar. The environment reaches the
    workers and later imports; libraries this process imported already are told directly."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "transformers" in sys.modules:
        with contextlib.suppress(Exception):  # an old version without the switch: bars stay
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        with contextlib.suppress(Exception):
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()


def run(options: RunOptions) -> RunSummary:
    """Extract ``options.features`` for every input not yet complete; see :class:`RunOptions`.

    Configuration problems (unknown or unavailable features, a config clash in the store, no
    face detector, nothing to read, an option or weights file a feature cannot use) raise
    before the store changes; a broken input is recorded and the run goes on; a full disk
    stops the hand-out of work (see :class:`RunStats`).
    """
    from extract.runner.faces import detector_problem
    from extract.runner.preflight import preflight

    quiet_downloads()
    options = options.absolute()  # records and source attributes name findable files
    import_plugins(options.plugins)
    features = resolve_features(options)  # validates the options too
    check_shared_memory(options, features)
    if options.backend == "local":  # a Ray cluster's GPUs are not on this machine
        check_gpus(options.gpus)
    else:  # connect, check the cluster's GPUs / CPUs: before the store changes
        from extract.runner.ray_pool import prepare

        prepare(options)
    found = find_inputs(options, features)
    items = found.items
    store = existing_store(options.store)
    if store is not None:
        check_store(store, features)
    plan = make_plan(items, features, store, options.limit)
    visual = {f.name for f in features if f.modality == "visual"}
    if any(t.item.kind == "video" and visual & set(t.features) for t in plan.tasks):
        problem = detector_problem(options.detector)
        if problem:
            raise ConfigError(f"cannot run the visual features {sorted(visual)}: {problem}")
    preloaded: dict[str, Any] = {}
    if plan.tasks:
        todo = {name for t in plan.tasks for name in t.features}
        in_process = options.num_workers == 0 and options.backend == "local"
        preloaded = preflight([f for f in features if f.name in todo], keep=in_process,
                              precision=options.resolved_precision)
    run_id = options.run_id or new_run_id()
    try:
        if store is None:
            store = FeatureStore(options.store, "a")
        fingerprints = prepare_store(store, features, run_id)
        records = RunRecords(store, run_id)
        records.write_config(run_config(options, features, fingerprints, plan, found, run_id))
    except OSError as exc:  # the store cannot be written (full, read-only): name it
        if exc.filename:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), options.store) from exc
    summary = RunSummary(run_id, options.store, str(records.dir), plan.inputs,
                         features={f.name: FeatureStats() for f in features},
                         strict=options.strict, ignored_count=len(found.ignored),
                         ignored=[asdict(e) for e in found.ignored[:MAX_IGNORED_LISTED]],
                         ignored_text=found.describe_ignored())
    log.info("run %s: %d inputs to do, %d already complete, %d deferred by --limit", run_id,
             len(plan.tasks), len(plan.skipped), len(plan.deferred))
    try:
        with RunStats(summary, plan, records, options.progress) as stats:
            if plan.tasks:
                configs = worker_configs(options, features, run_id, preloaded)
                preloaded = {}
                make_pool(options, configs).run(plan.tasks, stats)
    except KeyboardInterrupt:
        summary.interrupted = True
        records.write_summary(summary.to_dict())
        raise
    records.write_summary(summary.to_dict())
    summary.records_error = records.error
    return summary
