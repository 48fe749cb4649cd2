"""Before a grid's jobs go anywhere: GPUs asked vs present (here, or on the Ray cluster), and,
for Ray, absolute paths that every worker node can see.

Ray tasks run in other processes, often on other machines, whose working folder is not the
caller's: the grid's stores, labels, partition and output folder are made absolute, the output
folder is created, and each worker node is asked whether it sees them
(:func:`extract.distributed.check_visible`), all before the first job starts.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from extract.distributed import DEFAULT_TIMEOUT_S, check_resources, check_visible, ensure_ray
from extract.locations import absolute
from fuse.errors import ConfigError


def check_local_gpus(gpus: int) -> None:
    """Refuse ``--gpus N`` on a machine with fewer than N CUDA devices (one line)."""
    if gpus <= 0:
        return
    import torch

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have < gpus:
        raise ConfigError(f"--gpus {gpus} asks for {gpus} GPU(s) but this machine has {have}; "
                          + (f"give --gpus {have}" if have else "use --workers N for CPU "
                             "processes instead"))


def absolute_config(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of a run config (nested dict) with its paths made absolute: ``data.stores``,
    ``labels.path``, ``labels.partition``, ``output.dir`` (URLs are kept)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    data, labels, output = out.get("data"), out.get("labels"), out.get("output")
    if isinstance(data, dict) and data.get("stores"):
        data["stores"] = [absolute(s) for s in data["stores"]]
    if isinstance(labels, dict):
        for key in ("path", "partition"):
            if labels.get(key):
                labels[key] = absolute(labels[key])
    if isinstance(output, dict) and output.get("dir"):
        output["dir"] = absolute(output["dir"])
    return out


def config_paths(config: dict[str, Any]) -> dict[str, str]:
    """The paths of a run config that a job opens, by the option that set them."""
    data, labels = config.get("data") or {}, config.get("labels") or {}
    paths = {f"--store {i + 1}" if len(data.get("stores") or []) > 1 else "--store": s
             for i, s in enumerate(data.get("stores") or [])}
    if labels.get("path"):
        paths["--labels"] = labels["path"]
    if labels.get("partition"):
        paths["--partition"] = labels["partition"]
    return paths


def prepare_ray(spec: Any, out: str | Path, *, workers: int, gpus: int,
                address: str | None, timeout: float = DEFAULT_TIMEOUT_S) -> tuple[Any, Path]:
    """Connect (``--ray-timeout``), check the cluster's GPUs and CPUs, make the grid's paths
    absolute, create the output folder and check every path from every worker node.

    Returns the grid spec and output folder to use; each problem is one ``ClusterError`` line.
    """
    from extract.store import FeatureStore

    for store in (spec.base.get("data") or {}).get("stores") or []:
        if str(store).startswith("memory://"):
            raise ConfigError(f"--store {store} lives inside one process, where Ray workers "
                              "cannot see it: use a folder or an object-store URL")
    ensure_ray(address, None if gpus else max(1, workers), timeout)
    check_resources(gpus=gpus, slots=1, what=f"fuse grid --backend ray --gpus {gpus}"
                    if gpus else "fuse grid --backend ray")
    spec = dataclasses.replace(spec, base=absolute_config(spec.base))
    out = Path(absolute(out))
    out.mkdir(parents=True, exist_ok=True)
    paths = {**config_paths(spec.base), "--out": str(out)}
    for label, path in paths.items():  # here first: a path missing here is no cluster problem
        if label.startswith("--store"):
            FeatureStore(path, "r").features()
        elif not Path(path).exists():
            raise ConfigError(f"{label} {path} does not exist")
    check_visible(paths, gpus=gpus > 0, timeout=timeout)
    return spec, out
