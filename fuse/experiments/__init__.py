"""Experiments at scale: job pools (local or Ray), ablation grids, cross-validation, ensembles.

``from fuse.experiments import load_grid, run_grid, ensemble`` (imported on first use, so
importing one submodule stays light).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "GridSpec": "fuse.experiments.grid", "load_grid": "fuse.experiments.grid",
    "expand": "fuse.experiments.grid",
    "GridOutcome": "fuse.experiments.runner", "run_grid": "fuse.experiments.runner",
    "print_ranking": "fuse.experiments.runner",
    "ensemble": "fuse.experiments.ensemble",
    "Job": "fuse.experiments.jobs", "JobResult": "fuse.experiments.jobs",
    "run_jobs": "fuse.experiments.jobs",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fuse.experiments' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
