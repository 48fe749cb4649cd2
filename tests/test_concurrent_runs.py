"""Several `extract run` commands on one store at once (one per GPU, started by hand), one of
them SIGKILLed midway; and the Ray backend producing the same store as the local one."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from media_utils import write_video

from extract.runner import RunOptions, run
from extract.store import FeatureStore

TESTS = Path(__file__).resolve().parent
CATALOG = {
    "meancolor": {"modality": "visual", "extractor": "test_mean_color", "dim": 6,
                  "input": {"face_size": 32}, "extras": {"gray": 1}},
    "fbank": {"modality": "audio", "extractor": "fbank", "dim": 80,
              "input": {"sample_rate": 16000, "window": 0.025, "hop": 0.01}, "rate": 100},
}
FEATURES = ["meancolor", "fbank"]
OUTPUTS = ["meancolor", "meancolor.gray", "fbank"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("conc")
    catalog = root / "features.yaml"
    catalog.write_text(yaml.safe_dump({"features": CATALOG}))
    inputs = root / "inputs"
    for i in range(12):
        write_video(inputs / f"v{i:02d}.mp4", 12 + i, seed=i)
    return catalog, inputs


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _launch(catalog: Path, inputs: Path, store: Path, run_id: str, **env: str):
    cmd = [sys.executable, "-m", "extract", "run", "--feature", ",".join(FEATURES),
           "--input", str(inputs), "--store", str(store), "--catalog", str(catalog),
           "--plugin", "runner_plugin", "--detector", "test_center", "--workers", "1",
           "--batch-size", "4", "--run-id", run_id, "--no-progress"]
    return subprocess.Popen(cmd, env=_env(**env), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _reference(catalog: Path, inputs: Path, store: Path, backend: str = "local") -> None:
    summary = run(RunOptions(features=FEATURES, input=inputs, store=str(store), workers=1,
                             catalog=catalog, detector="test_center",
                             plugins=["runner_plugin"], progress=False, batch_size=4,
                             backend=backend))
    assert summary.exit_code == 0, summary.to_dict()


def _assert_same_arrays(a: FeatureStore, b: FeatureStore) -> None:
    for feature in OUTPUTS:
        assert a.videos(feature) == b.videos(feature)
        for video in a.videos(feature):
            x, y = a.read_video(feature, video), b.read_video(feature, video)
            np.testing.assert_array_equal(x.data, y.data)
            np.testing.assert_array_equal(x.timestamps, y.timestamps)
            np.testing.assert_array_equal(x.mask, y.mask)


def _written(store: Path) -> list[dict]:
    lines = []
    for f in (store / "_runs").glob("*/written.jsonl"):
        lines += [json.loads(s) for s in f.read_text().splitlines() if s.strip()]
    return lines


def test_three_runs_one_killed_then_rerun(setup, tmp_path, monkeypatch):
    catalog, inputs = setup
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    ref_path = tmp_path / "ref.zarr"
    _reference(catalog, inputs, ref_path)

    store_path = tmp_path / "shared.zarr"
    procs = [_launch(catalog, inputs, store_path, f"p{i}", EXTRACT_TEST_SLOW_S="0.15")
             for i in range(3)]
    deadline = time.time() + 120
    while len(_written(store_path)) < 3 and time.time() < deadline:
        time.sleep(0.2)
    assert len(_written(store_path)) >= 3, "the runs never got going"
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(procs[0].pid, signal.SIGKILL)  # the command and its worker die mid-run
    procs[0].wait()
    for p in procs[1:]:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0, out  # videos held by another run are "busy", not failures
    rerun = _launch(catalog, inputs, store_path, "rerun")
    out, _ = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, out

    store = FeatureStore(store_path)
    assert all(len(store.videos(f)) == 12 for f in OUTPUTS)
    _assert_same_arrays(FeatureStore(ref_path), store)
    verify = subprocess.run([sys.executable, "-m", "extract", "verify", "--store",
                             str(store_path)], env=_env(), capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # Every (feature, video) was completed by exactly one run: its audit line (the killed run
    # may have died between its write and its line; then the array names it as the writer).
    counts: dict[tuple[str, str], list[str]] = {}
    for line in _written(store_path):
        for feature in line["features"]:
            counts.setdefault((feature, line["video"]), []).append(line["run"])
    for feature in FEATURES:
        for video in store.videos(feature):
            runs = counts.get((feature, video), [])
            writer = store.read_video(feature, video).attrs["run_id"]
            assert len(runs) <= 1, f"{feature}/{video} completed by {runs}"
            assert runs == [writer] or (not runs and writer == "p0"), (feature, video, runs)
    live = {w for r in counts.values() for w in r}
    assert {"p1", "p2"} & live, "the surviving runs did no work"
    for run_id in ("p1", "p2", "rerun"):  # a video another run wrote is skipped per feature too
        summary = json.loads((store_path / "_runs" / run_id / "summary.json").read_text())
        assert all(summary["features"][f]["skipped"] >= summary["skipped"] for f in FEATURES)


def test_ray_backend_gives_the_same_store(setup, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    import ray

    catalog, inputs = setup
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])  # Ray's workers import the plugin
    _reference(catalog, inputs, tmp_path / "local.zarr")
    try:
        _reference(catalog, inputs, tmp_path / "ray.zarr", backend="ray")
    finally:
        ray.shutdown()
    _assert_same_arrays(FeatureStore(tmp_path / "local.zarr"), FeatureStore(tmp_path / "ray.zarr"))
