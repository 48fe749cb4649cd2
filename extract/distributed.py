"""Ray connection helper shared by `extract run --backend ray` and `fuse grid --backend ray`.

Point it at a cluster with ``--ray-address ray://HEAD:10001`` (or ``RAY_ADDRESS``); without
one, a local Ray instance is started with ``num_cpus`` workers. Stores must then live on a path
every node sees (a shared file system) or on object storage through an fsspec URL.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to ``address`` (or $RAY_ADDRESS), else start a local instance, once."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=False)
    else:
        log.info("starting a local Ray instance with %s CPUs", num_cpus or "all")
        ray.init(num_cpus=num_cpus or None, include_dashboard=False, log_to_driver=False)
