"""The ``extract run`` engine: plan the missing (feature, video) work, run it on workers.

Public API: :func:`run` (options → :class:`RunSummary`), :class:`RunOptions`, and the pieces a
caller may want on their own: :func:`make_plan`, :class:`Failure`, :data:`STAGES`.
Importing this package is cheap; torch, PyAV and the models load inside the workers.
"""

from extract.runner.engine import run
from extract.runner.options import (
    RunOptions,
    parse_batch_sizes,
    parse_sets,
    parse_weights,
    split_names,
)
from extract.runner.plan import Plan, Task, make_plan
from extract.runner.records import STAGES, Failure
from extract.runner.stats import FeatureStats, RunSummary

__all__ = ["STAGES", "Failure", "FeatureStats", "Plan", "RunOptions", "RunSummary", "Task",
           "make_plan", "parse_batch_sizes", "parse_sets", "parse_weights", "run", "split_names"]
