"""``fuse train --resume``: continue a run from its own saved ``config.yaml``.

The run folder's resolved config is the base; what the command line adds is laid over it. A
change that would make the checkpoint describe another model or other data (features, encoder,
labels, splits, learning rate, …) is refused with one line listing each change; the harmless
ones (:data:`RESUME_SAFE`: more epochs, patience, threads, device, plots, post-processing) are
allowed, logged, and recorded in the run folder's ``resumes.jsonl``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from fuse.config import FuseConfig, build_config, config_from_dict, deep_merge
from fuse.errors import ConfigError
from fuse.outputs.rundir import RunDir

log = logging.getLogger(__name__)

#: Settings a resumed run may change (a key, or a section prefix ending in ".").
RESUME_SAFE = ("train.epochs", "train.patience", "train.threads", "train.device", "train.amp",
               "train.deterministic", "data.device_cache", "output.plots",
               "output.predict_splits", "post.")
RESUMES_FILE = "resumes.jsonl"


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _safe(key: str) -> bool:
    return any(key == s or (s.endswith(".") and key.startswith(s)) for s in RESUME_SAFE)


def changes(before: FuseConfig, after: FuseConfig) -> dict[str, tuple[Any, Any]]:
    """``{key: (saved value, new value)}`` for every setting that differs."""
    a, b = _flat(before.to_dict()), _flat(after.to_dict())
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def resume_config(config: FuseConfig | dict[str, Any]) -> tuple[FuseConfig,
                                                                  dict[str, tuple[Any, Any]]]:
    """The config to resume with (the run's saved config, the given settings laid over it)
    and the harmless changes; raises :class:`ConfigError` (one line) for any other change."""
    out = (config.output.dir if isinstance(config, FuseConfig)
           else (config.get("output") or {}).get("dir"))
    if not out:
        raise ConfigError("--resume needs --out RUN_FOLDER: the run to continue")
    run = RunDir(Path(out))
    if not run.config.is_file():
        what = "is not a run folder" if not run.root.is_dir() else "has no config.yaml"
        raise ConfigError(f"--resume: {run.root} {what}; train it first without --resume")
    import yaml

    saved = config_from_dict(yaml.safe_load(run.config.read_text()) or {})
    if isinstance(config, FuseConfig):
        new = config
    else:
        new, problems = build_config(deep_merge(saved.to_dict(), config))
        if problems:
            raise ConfigError(problems)
    diff = changes(saved, new)
    refused = {k: v for k, v in diff.items() if not _safe(k)}
    if refused:
        listed = "; ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, (a, b) in refused.items())
        allowed = ", ".join(s + "*" if s.endswith(".") else s for s in RESUME_SAFE)
        raise ConfigError(f"--resume {run.root}: these settings differ from the run's saved "
                          f"config.yaml and would change its model or data: {listed}. Start a "
                          f"new run (another --out), or drop them (allowed on resume: {allowed})")
    return new, diff


def record_resume(run_root: Path, diff: dict[str, tuple[Any, Any]]) -> None:
    """Append this resume and its (harmless) changes to ``resumes.jsonl``; log them."""
    for key, (a, b) in diff.items():
        log.info("resume: %s %s -> %s", key, _show(a), _show(b))
    line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "changed": {k: [a, b] for k, (a, b) in diff.items()}}
    with (Path(run_root) / RESUMES_FILE).open("a") as fh:
        fh.write(json.dumps(line, default=str) + "\n")


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
