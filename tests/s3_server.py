"""A real S3-compatible server on loopback for tests: moto's standalone server in its own
session, and the environment that points s3fs (and boto) at it. Stopped by process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server(log: Path, bucket: str, timeout: float = 60.0) -> Iterator[dict[str, str]]:
    """Start the server, create ``bucket``, yield the ``AWS_*`` environment; RuntimeError when
    it cannot start (moto or s3fs missing, or no answer within ``timeout``)."""
    import importlib.util

    for module in ("moto", "s3fs"):
        if importlib.util.find_spec(module) is None:
            raise RuntimeError(f"{module} is not installed (the 'test' extra)")
    port = _free_port()
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                 str(port)], stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.time() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"the moto S3 server did not start: "
                                       f"{log.read_text()[-500:]}") from None
                time.sleep(0.2)
        env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
        import fsspec
        import s3fs

        fsspec.filesystem("s3", skip_instance_cache=True, endpoint_url=env["AWS_ENDPOINT_URL"],
                          key="testing", secret="testing").mkdir(bucket)
        s3fs.S3FileSystem.clear_instance_cache()  # cached clients of an earlier server
        yield env
    finally:
        with contextlib.suppress(Exception):
            import s3fs

            s3fs.S3FileSystem.clear_instance_cache()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
