"""A real two-node Ray cluster (``ray start --head`` + ``ray start --address`` on loopback, one
CPU each): ``extract run`` and ``fuse grid`` with relative paths from a folder other than the
cluster's equal the local backend; a killed Ray worker fails only the video it was computing
and the summary matches the store; GPUs asked of a GPU-less cluster and paths the nodes cannot
see are refused up front, in one line. The cluster is always stopped (its processes only)."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from media_utils import write_video
from ray_cluster import LocalCluster
from runner_plugin import CATALOG, OUTPUTS
from s3_server import moto_server

from extract.overview import store_rows
from extract.runner import RunOptions, run
from extract.store import FeatureStore, open_store

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
BUCKET = "cluster"
RUN = ["--feature", "meancolor,fbank", "--input", "inputs", "--catalog", "features.yaml",
       "--plugin", "runner_plugin", "--detector", "test_center", "--batch-size", "4",
       "--no-progress"]


def _pythonpath() -> str:
    return os.pathsep.join([str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")])


@pytest.fixture(scope="module")
def hang_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``EXTRACT_TEST_HANG_DIR`` of the cluster's workers; disarmed while hang.pid exists."""
    folder = tmp_path_factory.mktemp("hang")
    (folder / "hang.pid").write_text("")
    return folder


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory: pytest.TempPathFactory):
    """A loopback S3 server for the cluster's nodes too (None when it cannot start)."""
    stack = contextlib.ExitStack()
    try:
        env = stack.enter_context(moto_server(tmp_path_factory.mktemp("moto") / "log", BUCKET))
    except RuntimeError:
        env = None
    with stack:
        yield env


@pytest.fixture(scope="module")
def cluster(hang_dir: Path, s3_env: dict[str, str] | None):
    pytest.importorskip("ray")
    c = LocalCluster(head_cpus=1, worker_cpus=1,
                     env={"PYTHONPATH": _pythonpath(), "EXTRACT_TEST_HANG_DIR": str(hang_dir),
                          **(s3_env or {})})
    try:
        yield c.start()
    finally:
        c.stop()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's folder: videos, a catalog, a feature store for fuse, labels."""
    root = tmp_path_factory.mktemp("work")
    (root / "features.yaml").write_text(yaml.safe_dump({"features": CATALOG}))
    for i in range(6):
        write_video(root / "inputs" / f"v{i:02d}.mp4", 10 + 2 * i, seed=i)
    _fuse_data(root / "g.zarr", root / "labels.csv")
    return root


def _fuse_data(store_path: Path, labels: Path, fps: float = 10.0) -> None:
    """``good`` carries valence and arousal, ``bad`` is noise (8 videos, 6 train, 2 val)."""
    rng = np.random.default_rng(0)
    store = open_store(store_path, "a")
    for name in ("good", "bad"):
        store.ensure_feature(name, modality="visual", dim=4, extractor="synthetic",
                             config={"name": name})
    rows = []
    for v in range(8):
        n = 60
        t = np.arange(n) / fps
        va = np.tanh(np.cumsum(rng.standard_normal((n, 2)), axis=0) / 4)
        store.write_video("good", f"v{v}", np.hstack([va, va]) + 0.1 * rng.standard_normal(
            (n, 4)), t)
        store.write_video("bad", f"v{v}", rng.standard_normal((n, 4)), t)
        rows += [{"video": f"v{v}", "split": "train" if v < 6 else "val", "frame": i,
                  "time": t[i], "valence": va[i, 0], "arousal": va[i, 1]} for i in range(n)]
    store.close()
    with labels.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _cli(tool: str, args: list[str], cwd: Path, timeout: float = 300, **extra: str) -> Any:
    env = {**os.environ, "PYTHONPATH": _pythonpath(), **extra}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", tool, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _same_arrays(a: FeatureStore, b: FeatureStore) -> None:
    for feature in OUTPUTS:
        assert a.videos(feature) == b.videos(feature)
        for video in a.videos(feature):
            x, y = a.read_video(feature, video), b.read_video(feature, video)
            np.testing.assert_array_equal(x.data, y.data)
            np.testing.assert_array_equal(x.timestamps, y.timestamps)
            np.testing.assert_array_equal(x.mask, y.mask)


@pytest.fixture(scope="module")
def reference(work: Path, tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    """The same extraction with the local backend, in this process (the plugin module is
    importable: pytest puts this folder on sys.path)."""
    store = tmp_path_factory.mktemp("ref") / "local.zarr"
    summary = run(RunOptions(features=["meancolor", "fbank"], input=work / "inputs",
                             store=str(store), workers=0, catalog=work / "features.yaml",
                             detector="test_center", plugins=["runner_plugin"],
                             progress=False, batch_size=4))
    assert summary.exit_code == 0, summary.to_dict()
    return FeatureStore(store)


def test_extract_run_with_relative_paths_equals_local(cluster, work, reference):
    ray_run = _cli("extract", ["run", *RUN, "--store", "rel.zarr", "--backend", "ray",
                               "--ray-address", cluster.address, "--workers", "2"], cwd=work)
    assert ray_run.returncode == 0, ray_run.stdout + ray_run.stderr
    assert not (Path(cluster.tmp) / "rel.zarr").exists(), "a stray store in the cluster's folder"
    _same_arrays(reference, FeatureStore(work / "rel.zarr"))
    assert all(len(FeatureStore(work / "rel.zarr").videos(f)) == 6 for f in OUTPUTS)


def test_extract_run_on_ray_into_a_bucket(cluster, work, reference, s3_env, monkeypatch):
    if s3_env is None:
        pytest.skip("the moto S3 server could not start")
    url = f"s3://{BUCKET}/ray.zarr"
    ray_run = _cli("extract", ["run", *RUN, "--store", url, "--backend", "ray",
                               "--ray-address", cluster.address, "--workers", "2"], cwd=work,
                   **s3_env)
    assert ray_run.returncode == 0, ray_run.stdout + ray_run.stderr
    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    _same_arrays(reference, FeatureStore(url))
    runs = list((work / "extract_runs").glob("*/summary.json"))  # records beside the command
    assert len(runs) == 1, runs


def test_fuse_grid_with_relative_paths_equals_local(cluster, work):
    args = ["grid", "--config", "va_lstm", "--store", "g.zarr", "--labels", "labels.csv",
            "--label-format", "csv", "--visual-sets", "good;bad", "--seeds", "0",
            "data.segment_len=20", "model.fusion_dim=8", "model.encoder.hidden=8",
            "model.head=8", "train.epochs=3", "train.batch_size=4", "train.threads=1",
            "post.smooth=false", "output.plots=false"]
    local = _cli("fuse", [*args, "--out", "grid_local"], cwd=work)
    assert local.returncode == 0, local.stdout + local.stderr
    remote = _cli("fuse", [*args, "--out", "grid_ray", "--backend", "ray", "--ray-address",
                           cluster.address], cwd=work)
    assert remote.returncode == 0, remote.stdout + remote.stderr

    def scores(folder: str) -> dict[str, str]:
        with (work / folder / "results.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == 2, rows
        return {r["visual"]: r["val"] for r in rows}

    assert scores("grid_local") == scores("grid_ray")  # bit-identical, as text
    assert not (Path(cluster.tmp) / "grid_ray").exists()


def test_gpus_on_a_gpu_less_cluster_fail_at_once(cluster, work):
    start = time.monotonic()
    res = _cli("extract", ["run", *RUN, "--store", "gpu.zarr", "--backend", "ray",
                           "--ray-address", cluster.address, "--gpus", "1"], cwd=work)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and lines[-1].startswith("error: ") and "has 0" in lines[-1], \
        res.stderr
    assert not (work / "gpu.zarr").exists()
    res = _cli("fuse", ["grid", "--config", "va_lstm", "--store", "g.zarr", "--labels",
                        "labels.csv", "--label-format", "csv", "--visual-sets", "good",
                        "--out", "grid_gpu", "--backend", "ray", "--ray-address",
                        cluster.address, "--gpus", "1"], cwd=work)
    assert res.returncode == 1 and "asks for 1 GPU(s)" in res.stdout, res.stdout + res.stderr
    assert not (work / "grid_gpu").exists()
    assert time.monotonic() - start < 120


def test_paths_a_node_cannot_see_are_refused(cluster, work):
    ray = pytest.importorskip("ray")
    from extract.distributed import ClusterError, check_visible, ensure_ray

    ensure_ray(cluster.address)
    try:
        check_visible({"--store": str(work / "g.zarr")}, timeout=60)  # seen by both nodes
        with pytest.raises(ClusterError, match=r"--labels /nowhere/labels.csv is not visible "
                                               r"from Ray node .*: not found"):
            check_visible({"--store": str(work / "g.zarr"),
                           "--labels": "/nowhere/labels.csv"}, timeout=60)
        with pytest.raises(ClusterError, match="cannot import the plugin"):
            check_visible({}, plugins=["no_such_plugin_module"], timeout=60)
    finally:
        ray.shutdown()


def test_killed_ray_worker_fails_only_its_video(cluster, work, hang_dir, tmp_path,
                                                monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.syspath_prepend(str(TESTS))
    marker = hang_dir / "hang.pid"
    marker.unlink()  # armed: the first video computed hangs, writing its process id
    killed: list[int] = []

    def killer() -> None:
        deadline = time.time() + 200
        while time.time() < deadline:
            text = marker.read_text() if marker.exists() else ""
            if text.strip():
                time.sleep(2.0)  # the driver has seen the video start
                os.kill(int(text), signal.SIGKILL)
                killed.append(int(text))
                return
            time.sleep(0.1)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    store = tmp_path / "k.zarr"
    try:
        summary = run(RunOptions(features=["meancolor", "fbank"], input=work / "inputs",
                                 store=str(store), workers=2, catalog=work / "features.yaml",
                                 detector="test_center", plugins=["runner_plugin"],
                                 progress=False, batch_size=4, backend="ray",
                                 ray_address=cluster.address, ray_timeout=60))
    finally:
        ray.shutdown()
        thread.join(timeout=5)
    assert killed, "no Ray worker hung"
    assert summary.failed == 1 and summary.done == 5, summary.to_dict()
    (failure,) = summary.failures
    assert failure.stage == "worker" and "died" in failure.message, failure
    # the summary is what `extract ls` shows
    listed = {r["feature"]: r["videos"] for r in store_rows(store)}
    for name in ("meancolor", "fbank"):
        assert listed[name] == summary.features[name].done == 5
        assert summary.features[name].failed == 1
    assert listed["meancolor.gray"] == 5
    assert failure.video not in FeatureStore(store).videos("meancolor")
