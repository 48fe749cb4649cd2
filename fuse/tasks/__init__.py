"""Tasks (filled by import): va, expr, au, eri, regression, classification."""

from fuse.tasks import au, classification, regression  # noqa: F401  (registration)
from fuse.tasks.base import TASKS, Task, build_task

__all__ = ["TASKS", "Task", "build_task"]
