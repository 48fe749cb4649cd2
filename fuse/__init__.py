"""Stage 2 of the affect feature store: fuse stored features and train temporal models.

The Python API (imported lazily, so ``import fuse`` and ``fuse --help`` stay instant)::

    from fuse import FuseConfig, train, evaluate, predict, check
    result = train({"data": {...}, "labels": {...}, "task": {"name": "va"}, ...})
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fuse.api import RunResult, check, evaluate, predict, train
    from fuse.config import FuseConfig, build_config, load_yaml

__all__ = ["FuseConfig", "RunResult", "build_config", "check", "evaluate", "load_yaml",
           "predict", "train"]
_HOME = {"FuseConfig": "fuse.config", "build_config": "fuse.config", "load_yaml": "fuse.config",
         "RunResult": "fuse.api", "check": "fuse.api", "evaluate": "fuse.api",
         "predict": "fuse.api", "train": "fuse.api"}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        import importlib

        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'fuse' has no attribute {name!r}")
