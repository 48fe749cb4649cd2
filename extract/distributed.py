"""Ray for ``extract run --backend ray`` and ``fuse grid --backend ray``: connect within a
timeout, check the cluster's resources, and check from every node that it sees the run's paths,
all before any work starts; each problem is one line (:class:`ClusterError`).

Point it at a cluster with ``--ray-address HOST:PORT`` (the head's GCS port, 6379 unless
``ray start --head --port`` said otherwise) or ``ray://HOST:10001`` (Ray Client), or
``$RAY_ADDRESS``; without one a local Ray instance is started. Tasks run in other processes,
often on other machines, whose working folder is not the caller's: every path handed to them is
made absolute first (:func:`extract.locations.absolute`) and must be visible on every node (a
shared file system), or the store an object-store URL.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from extract.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0  # --ray-timeout: connecting, and the up-front checks on the nodes
INSTALL_HINT = ("pip install 'ray[default]>=2.9' (or, in the project's checkout, "
                "pip install -e '.[ray]')")


class ClusterError(ConfigError):
    """The Ray cluster cannot run the work as asked; one line saying what and how to fix it."""


@dataclass(frozen=True)
class Address:
    """A Ray address as given: ``HOST:PORT`` (GCS), ``ray://HOST:PORT`` (Ray Client) or auto."""

    text: str
    kind: str  # gcs | client | auto
    host: str = ""
    port: int = 0


def parse_address(text: str, source: str = "--ray-address") -> Address:
    """Check the form of a Ray address; anything else is one :class:`ClusterError` line."""
    raw = text.strip()
    if raw == "auto":
        return Address(raw, "auto")
    kind, rest = ("client", raw[len("ray://"):]) if raw.startswith("ray://") else ("gcs", raw)
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")
    usage = ("expected HOST:PORT (the head's GCS port, 6379 by default, as printed by "
             "`ray start --head`) or ray://HOST:10001 (Ray Client)")
    if "://" in rest or not sep or not host or "/" in host or not port.isdigit():
        raise ClusterError(f"{source} {raw!r}: {usage}")
    if not 0 < int(port) < 65536:
        raise ClusterError(f"{source} {raw!r}: port {port} is out of range; {usage}")
    return Address(raw, kind, host, int(port))


def _reachable(addr: Address, timeout: float, source: str) -> None:
    """A TCP connection to the address, or one line: refused at once, silence after timeout."""
    try:
        socket.create_connection((addr.host, addr.port), timeout=timeout).close()
    except TimeoutError:
        raise ClusterError(f"no Ray cluster answered at {addr.text} ({source}) within "
                           f"{timeout:g} s; check the address and the firewall, or give "
                           "--ray-timeout more seconds") from None
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise ClusterError(f"cannot reach a Ray cluster at {addr.text} ({source}): {why}; "
                           f"start one there (`ray start --head --port {addr.port}`) or fix "
                           "the address") from None


def _init_within(call: Any, timeout: float, what: str) -> None:
    """Run ``ray.init`` in a helper thread and give up after ``timeout`` seconds (Ray itself
    retries an address that accepts connections but is not a Ray head forever)."""
    outcome: dict[str, BaseException | None] = {}

    def target() -> None:
        try:
            call()
            outcome["error"] = None
        except BaseException as exc:  # noqa: BLE001 (reported in the caller's thread)
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="ray-init", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ClusterError(f"{what} did not answer as a Ray cluster within {timeout:g} s "
                           "(is it the head's GCS port?); --ray-timeout gives it longer")
    error = outcome.get("error")
    if error is not None:
        first = next((ln.strip() for ln in str(error).splitlines() if ln.strip()), "")
        raise ClusterError(f"cannot connect to {what}: {type(error).__name__}: {first}") from None


def ensure_ray(address: str | None = None, num_cpus: int | None = None,
               timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """Connect to ``address`` (or ``$RAY_ADDRESS``), else start a local instance, once.

    A malformed address, nothing listening, or no answer within ``timeout`` seconds is one
    :class:`ClusterError` line; so is a missing ``ray`` package.
    """
    try:
        import ray
    except ImportError:
        raise ClusterError(f"the ray backend needs the 'ray' package: {INSTALL_HINT}") from None
    if ray.is_initialized():
        return
    if not timeout > 0:
        raise ClusterError(f"--ray-timeout must be positive, got {timeout!r}")
    source = "--ray-address"
    if not address and os.environ.get("RAY_ADDRESS"):
        address, source = os.environ["RAY_ADDRESS"], "$RAY_ADDRESS"
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not address:
        log.info("starting a local Ray instance with %s CPUs", num_cpus or "all")
        quiet = logging.ERROR if log.getEffectiveLevel() > logging.INFO else logging.INFO
        ray.init(num_cpus=num_cpus or None, include_dashboard=False, log_to_driver=False,
                 logging_level=quiet)
        return
    addr = parse_address(address, source)
    if addr.kind != "auto":
        _reachable(addr, timeout, source)
    log.info("connecting to the Ray cluster at %s", addr.text)
    quiet = logging.ERROR if log.getEffectiveLevel() > logging.INFO else logging.INFO
    _init_within(lambda: ray.init(address=addr.text, log_to_driver=False, logging_level=quiet),
                 timeout, f"{addr.text} ({source})")


def where() -> str:
    """The connected cluster, in words (for messages)."""
    import ray

    try:
        return f"the Ray cluster at {ray.get_runtime_context().gcs_address}"
    except Exception:  # noqa: BLE001 (Ray Client has no GCS address to show)
        return "the Ray cluster"


def check_resources(*, gpus: int, slots: int, what: str) -> dict[str, float]:
    """Refuse at once when the cluster has fewer GPUs than ``gpus`` or fewer CPUs than
    ``slots`` (actors that hold one CPU each); returns the cluster's resources."""
    import ray

    have = ray.cluster_resources()
    n_gpu, n_cpu = int(have.get("GPU", 0)), int(have.get("CPU", 0))
    if gpus > n_gpu:
        raise ClusterError(f"{what} asks for {gpus} GPU(s) but {where()} has {n_gpu}; give "
                           f"--gpus {n_gpu}" + (" or leave --gpus out" if n_gpu else
                                                " (leave --gpus out to use CPUs)"))
    if slots > n_cpu:
        raise ClusterError(f"{what} needs {slots} CPU(s) on {where()} (one per worker) but it "
                           f"has {n_cpu}; use fewer workers or add nodes")
    return dict(have)


def _probe(paths: dict[str, str], plugins: list[str]) -> dict[str, Any]:
    """On one node: which ``paths`` (label → path or URL) it cannot see, which ``plugins`` it
    cannot import."""
    import importlib.util
    import platform

    from extract.locations import is_url

    missing = {}
    for label, path in paths.items():
        try:
            if is_url(path):
                import fsspec

                fs, rel = fsspec.core.url_to_fs(path)
                seen = bool(fs.exists(rel))
            else:
                seen = os.path.exists(path)
        except Exception as exc:  # noqa: BLE001 (credentials, endpoint: reported as the reason)
            missing[label] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            continue
        if not seen:
            missing[label] = "not found"
    bad = [m for m in plugins if importlib.util.find_spec(m.split(".")[0]) is None]
    return {"node": platform.node(), "missing": missing, "plugins": bad}


def worker_nodes(gpus: bool = False) -> list[dict[str, Any]]:
    """The alive nodes that can run a worker (CPUs, and GPUs when asked for)."""
    import ray

    nodes = []
    for node in ray.nodes():
        res = node.get("Resources", {})
        if node.get("Alive") and res.get("CPU", 0) > 0 and (not gpus or res.get("GPU", 0) > 0):
            nodes.append(node)
    return nodes


def check_visible(paths: Mapping[str, str], *, plugins: Sequence[str] = (), gpus: bool = False,
                  timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """Ask every worker node whether it sees ``paths`` (label → absolute path or URL) and can
    import ``plugins``; the first problem is one :class:`ClusterError` line."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    paths = {label: str(p) for label, p in paths.items()}
    probe = ray.remote(num_cpus=0, max_retries=0)(_probe)
    refs = {}
    for node in worker_nodes(gpus):
        strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        refs[probe.options(scheduling_strategy=strategy).remote(paths, list(plugins))] = node
    if not refs:
        raise ClusterError(f"{where()} has no alive node with "
                           f"{'GPUs' if gpus else 'CPUs'} to run workers")
    ready, waiting = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
    if waiting:
        nodes = ", ".join(refs[r]["NodeManagerAddress"] for r in waiting)
        raise ClusterError(f"Ray node(s) {nodes} did not run a 1-second check within "
                           f"{timeout:g} s; are they overloaded? (--ray-timeout gives longer)")
    for ref in ready:
        node = refs[ref]
        try:
            report = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 (the worker cannot even import this package)
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise ClusterError(f"Ray node {node['NodeManagerAddress']} cannot run this "
                               f"package's code ({first.strip()}); install affect-feature-"
                               "store on every node") from None
        name = f"{node['NodeManagerAddress']} ({report['node']})"
        if report["plugins"]:
            raise ClusterError(f"Ray node {name} cannot import the plugin module(s) "
                               f"{report['plugins']}: install them on every node (or put them "
                               "on the PYTHONPATH the cluster was started with)")
        if report["missing"]:
            label, why = next(iter(report["missing"].items()))
            more = len(report["missing"]) - 1
            others = f" (and {more} other path(s))" if more else ""
            raise ClusterError(
                f"{label} {paths[label]} is not visible from Ray node {name}: {why}{others}; "
                "every node needs the same paths (a shared file system such as NFS or "
                "Lustre) or, for the store, an object-store URL")
