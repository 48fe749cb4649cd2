"""The job pool: parallel runs, resume after a kill, one failure recorded, the Ray backend."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fuse.experiments.jobs import ERROR_FILE, RESULT_FILE, Job, run_jobs


def square(payload: dict, out: Path) -> dict:
    """A job: counts its own runs, can be told to fail or to sleep."""
    runs = out / "runs.txt"
    runs.write_text(runs.read_text() + "x" if runs.exists() else "x")
    if payload.get("fail"):
        raise ValueError(f"job {payload['x']} was told to fail")
    time.sleep(payload.get("sleep", 0.0))
    return {"y": payload["x"] ** 2, "pid": os.getpid()}


def _jobs(tmp_path: Path, n: int, **extra) -> list[Job]:
    return [Job(f"j{i}", {"x": i, **extra}, tmp_path / f"j{i}") for i in range(n)]


def test_local_pool_runs_skips_and_records_failures(tmp_path):
    jobs = _jobs(tmp_path, 4) + [Job("bad", {"x": 9, "fail": True}, tmp_path / "bad")]
    results = {r.name: r for r in run_jobs(square, jobs, workers=2, progress=False)}
    assert [results[f"j{i}"].result["y"] for i in range(4)] == [0, 1, 4, 9]
    assert results["bad"].status == "failed" and "told to fail" in results["bad"].error
    assert (tmp_path / "bad" / ERROR_FILE).is_file()
    assert len({results[f"j{i}"].result["pid"] for i in range(4)}) >= 1
    again = {r.name: r for r in run_jobs(square, jobs, workers=2, progress=False)}
    assert all(again[f"j{i}"].status == "skipped" for i in range(4))
    assert all((tmp_path / f"j{i}" / "runs.txt").read_text() == "x" for i in range(4))
    assert again["bad"].status == "failed"  # failed jobs are tried again


def test_killed_pool_resumes_without_rerunning_finished_jobs(tmp_path):
    script = tmp_path / "pool.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_jobs import square
        from fuse.experiments.jobs import Job, run_jobs
        if __name__ == "__main__":
            root = Path(sys.argv[1])
            jobs = [Job(f"j{{i}}", {{"x": i, "sleep": 0.3 if i < 2 else 30}}, root / f"j{{i}}")
                    for i in range(4)]
            run_jobs(square, jobs, workers=1, progress=False)
    """))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], start_new_session=True)
    deadline = time.time() + 60
    while (not (tmp_path / "j1" / RESULT_FILE).exists() and time.time() < deadline
           and proc.poll() is None):
        time.sleep(0.1)
    assert (tmp_path / "j1" / RESULT_FILE).exists(), "the first jobs never finished"
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "j2" / RESULT_FILE).exists()
    jobs = [Job(f"j{i}", {"x": i}, tmp_path / f"j{i}") for i in range(4)]
    results = {r.name: r for r in run_jobs(square, jobs, workers=1, progress=False)}
    assert results["j0"].status == results["j1"].status == "skipped"
    assert results["j2"].status == results["j3"].status == "done"
    assert (tmp_path / "j0" / "runs.txt").read_text() == "x"
    assert json.loads((tmp_path / "j3" / RESULT_FILE).read_text())["result"]["y"] == 9


def test_ray_backend_matches_local(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    here = str(Path(__file__).parent)  # Ray's workers import this module by name
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
    local = run_jobs(square, _jobs(tmp_path / "local", 3), workers=1, progress=False)
    remote = run_jobs(square, _jobs(tmp_path / "ray", 3), backend="ray", workers=2,
                      progress=False)
    assert [r.result["y"] for r in local] == [r.result["y"] for r in remote]
    assert all(r.status == "done" for r in remote)
    ray.shutdown()
