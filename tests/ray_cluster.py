"""A real two-node Ray cluster on loopback for tests: ``ray start --head`` plus
``ray start --address`` (each ``--block``, in its own session), every port chosen free.

Stopping it ends exactly the processes these two commands started (everything in their two
sessions, by process id): ``ray stop`` would also stop any other Ray instance of this user on
the machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def session_pids(sid: int) -> list[int]:
    """Live processes whose session id is ``sid`` (from /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


class LocalCluster:
    """Head + one worker node on this machine; ``address`` is ``127.0.0.1:PORT``."""

    def __init__(self, head_cpus: int = 1, worker_cpus: int = 1,
                 env: dict[str, str] | None = None) -> None:
        self.env = {**os.environ, **(env or {}), "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_AUTH_MODE": "disabled"}
        self.env.pop("RAY_ADDRESS", None)
        self.head_cpus, self.worker_cpus = head_cpus, worker_cpus
        self.tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: unix socket paths
        self.procs: list[subprocess.Popen] = []
        self.address = ""

    def _node_ports(self) -> list[str]:
        p = free_ports(6)
        return ["--node-manager-port", str(p[0]), "--object-manager-port", str(p[1]),
                "--dashboard-agent-listen-port", str(p[2]),
                "--dashboard-agent-grpc-port", str(p[3]), "--runtime-env-agent-port", str(p[4]),
                "--metrics-export-port", str(p[5]), "--num-gpus", "0",
                "--object-store-memory", str(100 * 1024 * 1024), "--node-ip-address",
                "127.0.0.1", "--disable-usage-stats", "--block"]

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen:
        out = open(Path(self.tmp) / log, "w")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen([RAY, "start", *args], env=self.env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=self.tmp)
        self.procs.append(proc)
        return proc

    def start(self, timeout: float = 120.0) -> LocalCluster:
        gcs, client, dash, lo = free_ports(4)
        base = 21000 + (lo % 20) * 500  # worker ports below the ephemeral range (32768+)
        worker_ports = ["--min-worker-port", str(base), "--max-worker-port", str(base + 200)]
        self._spawn(["--head", "--port", str(gcs), "--ray-client-server-port", str(client),
                     "--include-dashboard", "false", "--dashboard-port", str(dash),
                     "--temp-dir", self.tmp, "--num-cpus", str(self.head_cpus),
                     *worker_ports, *self._node_ports()], "head.log")
        self.address = f"127.0.0.1:{gcs}"
        deadline = time.time() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", gcs), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or self.procs[0].poll() is not None:
                    raise RuntimeError(f"ray head did not start: {self.log('head.log')}") from None
                time.sleep(0.3)
        self._spawn(["--address", self.address, "--num-cpus", str(self.worker_cpus),
                     "--min-worker-port", str(base + 250), "--max-worker-port", str(base + 450),
                     *self._node_ports()], "worker.log")
        self.wait_nodes(2, deadline)
        return self

    def wait_nodes(self, count: int, deadline: float) -> None:
        """Until ``ray status`` lists ``count`` alive nodes (asked in a subprocess, so this
        process never connects to the cluster)."""
        probe = ("import ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
                 "print(sum(n['Alive'] for n in ray.nodes()))")
        while time.time() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"a ray node stopped: {self.log('head.log')}"
                                   f"{self.log('worker.log')}")
            run = subprocess.run([sys.executable, "-c", probe, self.address], env=self.env,
                                 capture_output=True, text=True, timeout=60)
            if run.returncode == 0 and run.stdout.strip().splitlines()[-1:] == [str(count)]:
                return
            time.sleep(1)
        raise RuntimeError(f"the ray cluster did not reach {count} nodes")

    def log(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (Path(self.tmp) / name).read_text()[-2000:]
        return ""

    def stop(self) -> None:
        """End every process of both sessions (SIGTERM, then SIGKILL after 10 s)."""
        sids = [p.pid for p in self.procs]
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            for sid in sids:
                for pid in session_pids(sid):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, sig)
            deadline = time.time() + wait
            while time.time() < deadline and any(session_pids(s) for s in sids):
                time.sleep(0.2)
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
        left = [pid for s in sids for pid in session_pids(s)]
        if left:
            raise RuntimeError(f"ray processes left running: {left}")
        shutil.rmtree(self.tmp, ignore_errors=True)
