"""``extract run`` from top to bottom: validate, plan, prepare the store, run the pool, report."""

from __future__ import annotations

import logging
import os
import platform
import time
from typing import Any

from extract.errors import ConfigError
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
from extract.runner.stats import FeatureStats, RunStats, RunSummary
from extract.runner.worker import WorkerConfig

log = logging.getLogger(__name__)


def worker_configs(options: RunOptions, features: list[RunFeature],
                   run_id: str) -> list[WorkerConfig]:
    """One config per worker: ``cuda:i`` per GPU, else CPU processes sharing the cores."""
    cores = os.cpu_count() or 1
    n = options.num_workers
    base = dict(specs=[f.spec for f in features], store=options.store, run_id=run_id,
                sample=options.sample, image_fps=float(options.image_fps),
                batch_size=options.batch_size, detector=options.detector,
                plugins=list(options.plugins), claims=options.claims,
                precision=options.resolved_precision,
                log_level=logging.getLogger().getEffectiveLevel())
    if options.gpus > 0:
        return [WorkerConfig(index=i, device=f"cuda:{i}", torch_threads=max(1, cores // n),
                             **base) for i in range(n)]
    if n == 0:
        return [WorkerConfig(index=0, device="cpu", torch_threads=None, in_process=True, **base)]
    return [WorkerConfig(index=i, device="cpu", torch_threads=max(1, cores // n), **base)
            for i in range(n)]


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
               plan: Plan, discovered: int, run_id: str) -> dict[str, Any]:
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
        "inputs": {"root": str(options.input), "discovered": discovered, "applicable": plan.inputs,
                   "todo": len(plan.tasks), "skipped": len(plan.skipped),
                   "deferred": len(plan.deferred)},
        "versions": {"extract": __version__, "python": platform.python_version(),
                     **package_versions()},
        "host": platform.node(),
    }


def run(options: RunOptions) -> RunSummary:
    """Extract ``options.features`` for every input not yet complete; see :class:`RunOptions`.

    Configuration problems (unknown or unavailable features, a config clash in the store, no
    face detector) raise before any work; a broken input is recorded and the run goes on.
    """
    from extract.ids import discover
    from extract.runner.faces import detector_problem
    from extract.store import FeatureStore

    import_plugins(options.plugins)
    features = resolve_features(options)  # validates the options too
    if options.backend == "local":  # a Ray cluster's GPUs are not on this machine
        check_gpus(options.gpus)
    else:  # connect, check the cluster's GPUs / CPUs, absolute paths: before the store changes
        from extract.runner.ray_pool import prepare

        options = prepare(options)
    items = discover(options.input, input_kinds(features))
    store = FeatureStore(options.store, "a")
    check_store(store, features)
    plan = make_plan(items, features, store, options.limit)
    visual = {f.name for f in features if f.modality == "visual"}
    if any(t.item.kind == "video" and visual & set(t.features) for t in plan.tasks):
        problem = detector_problem(options.detector)
        if problem:
            raise ConfigError(f"cannot run the visual features {sorted(visual)}: {problem}")
    run_id = options.run_id or new_run_id()
    fingerprints = prepare_store(store, features, run_id)
    records = RunRecords(store, run_id)
    records.write_config(run_config(options, features, fingerprints, plan, len(items), run_id))
    summary = RunSummary(run_id, options.store, str(records.dir), plan.inputs,
                         features={f.name: FeatureStats() for f in features})
    log.info("run %s: %d inputs to do, %d already complete, %d deferred by --limit", run_id,
             len(plan.tasks), len(plan.skipped), len(plan.deferred))
    try:
        with RunStats(summary, plan, records, options.progress) as stats:
            if plan.tasks:
                make_pool(options, worker_configs(options, features, run_id)).run(plan.tasks,
                                                                                  stats)
    except KeyboardInterrupt:
        summary.interrupted = True
        records.write_summary(summary.to_dict())
        raise
    records.write_summary(summary.to_dict())
    return summary
