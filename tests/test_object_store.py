"""Stores on object storage from the command line, against a real S3-compatible server on
loopback (moto's standalone server, reached through s3fs): ``extract run`` writes into the
bucket, is SIGKILLed and resumed, ``extract verify`` passes, ``import`` / ``export`` / ``ls`` /
``inspect`` / ``rm`` work, ``claims`` refuses in one line, and ``fuse train`` trains from it.
Skipped only when the server cannot start; the server is always stopped."""

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
from runner_plugin import CATALOG, OUTPUTS
from s3_server import moto_server
from typer.testing import CliRunner

from extract.cli import app
from extract.runner import RunOptions, run
from extract.store import FeatureStore, open_store

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
BUCKET = "affect"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    """A moto S3 server on 127.0.0.1; its environment is set for this module's tests."""
    stack = contextlib.ExitStack()
    try:
        env = stack.enter_context(moto_server(tmp_path_factory.mktemp("moto") / "log", BUCKET))
    except RuntimeError as exc:
        pytest.skip(str(exc))
    with stack, pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield env


def _fs():
    import fsspec

    return fsspec.filesystem("s3", skip_instance_cache=True)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("s3in")
    (root / "features.yaml").write_text(yaml.safe_dump({"features": CATALOG}))
    for i in range(6):
        write_video(root / "inputs" / f"v{i:02d}.mp4", 10 + 2 * i, seed=i)
    return root


def _env(s3: dict[str, str], **extra: str) -> dict[str, str]:
    env = {**os.environ, **s3, **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO), env.get("PYTHONPATH", "")])
    return env


def _extract(args: list[str], cwd: Path, env: dict[str, str], **kw):
    return subprocess.Popen([sys.executable, "-m", "extract", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kw)


def _run_args(store: str) -> list[str]:
    return ["run", "--feature", "meancolor,fbank", "--input", "inputs", "--store", store,
            "--catalog", "features.yaml", "--plugin", "runner_plugin", "--detector",
            "test_center", "--workers", "1", "--batch-size", "4", "--no-progress"]


def test_extract_run_killed_and_resumed_against_the_bucket(s3, inputs, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    url = f"s3://{BUCKET}/f.zarr"
    slow = _extract(_run_args(url), inputs, _env(s3, EXTRACT_TEST_SLOW_S="0.3"))
    deadline = time.time() + 120
    done: set[str] = set()
    error = None
    while time.time() < deadline and slow.poll() is None and len(done) < 2:
        time.sleep(0.5)
        try:
            seen = FeatureStore(url)
            done = set.intersection(*(seen.complete_set(f) for f in OUTPUTS))
        except Exception as exc:  # noqa: BLE001 (the store may not exist yet)
            error = exc
    assert slow.poll() is None and 2 <= len(done) < 6, (done, slow.poll(), error)
    os.killpg(slow.pid, signal.SIGKILL)
    slow.wait()
    rerun = _extract(_run_args(url), inputs, _env(s3))
    out, _ = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, out

    store = FeatureStore(url)
    assert all(len(store.videos(f)) == 6 for f in OUTPUTS)
    keys = _fs().find(f"{BUCKET}/f.zarr")
    assert f"{BUCKET}/f.zarr/zarr.json" in keys and any("/meancolor/" in k for k in keys)
    assert not any(p.name.startswith("s3") for p in inputs.iterdir()), "a local 's3:' folder"
    # the resumed run skipped what the killed one had finished; its records are kept here
    (summary_file,) = (inputs / "extract_runs").glob("*/summary.json")  # the killed run has none
    last = json.loads(summary_file.read_text())["features"]["meancolor"]
    assert last["skipped"] >= len(done) and last["done"] == 6 - last["skipped"], last
    assert last["failed"] == 0, last
    ref = tmp_path / "ref.zarr"
    summary = run(RunOptions(features=["meancolor", "fbank"], input=inputs / "inputs",
                             store=str(ref), workers=0, catalog=inputs / "features.yaml",
                             detector="test_center", plugins=["runner_plugin"], progress=False,
                             batch_size=4))
    assert summary.exit_code == 0
    local = FeatureStore(ref)
    for feature in OUTPUTS:
        for video in local.videos(feature):
            a, b = local.read_video(feature, video), store.read_video(feature, video)
            np.testing.assert_array_equal(a.data, b.data)
            np.testing.assert_array_equal(a.timestamps, b.timestamps)
            np.testing.assert_array_equal(a.mask, b.mask)
    verify = subprocess.run([sys.executable, "-m", "extract", "verify", "--store", url],
                            env=_env(s3), capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_store_commands_on_the_bucket(s3, tmp_path):
    url = f"s3://{BUCKET}/io.zarr"
    rng = np.random.default_rng(1)
    arrays = {v: rng.standard_normal((5 + i, 3)).astype(np.float32)
              for i, v in enumerate(("a", "b"))}
    (tmp_path / "npy").mkdir()
    for video, x in arrays.items():
        np.save(tmp_path / "npy" / f"{video}.npy", x)
    runner = CliRunner()

    def cli(*args: str):
        res = runner.invoke(app, list(args))
        return res.exit_code, res.output

    code, out = cli("import", "--format", "npy", "--name", "emb", "--source",
                    str(tmp_path / "npy"), "--store", url, "--modality", "visual", "--fps", "25",
                    "--dtype", "float32")
    assert code == 0, out
    code, out = cli("ls", "--store", url)
    assert code == 0 and "emb" in out, out
    code, out = cli("inspect", "--store", url, "emb", "b")
    assert code == 0 and json.loads(out)["shape"] == [6, 3], out
    code, out = cli("export", "--store", url, "emb", str(tmp_path / "emb.h5"))
    assert code == 0, out
    code, out = cli("import", "--format", "h5", "--name", "emb", "--source",
                    str(tmp_path / "emb.h5"), "--store", str(tmp_path / "back.zarr"))
    assert code == 0, out
    back = FeatureStore(tmp_path / "back.zarr")
    for video, x in arrays.items():
        np.testing.assert_array_equal(back.read_video("emb", video).data, x)
    code, out = cli("verify", "--store", url)
    assert code == 0, out
    code, out = cli("rm", "--store", url, "emb", "a", "--yes")
    assert code == 0, out
    assert FeatureStore(url).videos("emb") == ["b"]
    code, out = cli("claims", "--store", url)
    assert code == 2 and "claims live only in local stores" in out, out
    assert len([ln for ln in out.splitlines() if ln.strip()]) == 1, out


def test_fuse_train_reads_the_bucket(s3, tmp_path):
    url = f"s3://{BUCKET}/fuse.zarr"
    rng = np.random.default_rng(0)
    store = open_store(url, "a")
    store.ensure_feature("face", modality="visual", dim=4, extractor="synthetic", config={})
    rows = ["video,split,frame,time,valence,arousal"]
    for v in range(6):
        t = np.arange(40) / 10.0
        va = np.tanh(np.cumsum(rng.standard_normal((40, 2)), axis=0) / 4)
        store.write_video("face", f"v{v}", np.hstack([va, va]), t)
        rows += [f"v{v},{'train' if v < 4 else 'val'},{i},{t[i]},{va[i, 0]},{va[i, 1]}"
                 for i in range(40)]
    store.close()
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    res = subprocess.run(
        [sys.executable, "-m", "fuse", "train", "--store", url, "--labels", "labels.csv",
         "--label-format", "csv", "--task", "va", "--visual", "face", "--config", "va_lstm",
         "--out", "run1", "data.segment_len=20", "model.fusion_dim=8",
         "model.encoder.hidden=8", "model.head=8", "train.epochs=2", "train.batch_size=4",
         "train.threads=1", "output.plots=false"],
        cwd=tmp_path, env=_env(s3), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    metrics = json.loads((tmp_path / "run1" / "metrics.json").read_text())
    assert "val" in metrics and metrics["epochs"] == 2, metrics
    assert yaml.safe_load((tmp_path / "run1" / "config.yaml").read_text())["data"]["stores"] \
        == [url]
