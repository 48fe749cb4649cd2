"""Checks made before any work, each one line: store locations (URLs, ``file://``, a lost
slash), Ray addresses that are malformed, refused or silent, GPUs that are not there, a script
without a ``__main__`` guard, and ``fuse train --resume`` against the run's saved config."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from extract.cli import app as extract_app
from extract.distributed import ClusterError, parse_address
from extract.errors import ConfigError
from extract.locations import absolute, store_location
from extract.runner import RunOptions
from fuse.api import train
from fuse.errors import ConfigError as FuseConfigError
from fuse.synthetic import expr_set

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO), env.get("PYTHONPATH", "")])
    env.pop("RAY_ADDRESS", None)
    return env


# ------------------------------------------------------------------------ store locations
def test_store_locations():
    assert store_location("features.zarr") == "features.zarr"
    assert store_location("file:///data/f.zarr") == "/data/f.zarr"
    assert store_location("memory://x/f.zarr") == "memory://x/f.zarr"
    with pytest.raises(ConfigError, match=r"did you mean 's3://bucket/f.zarr'"):
        store_location("s3:/bucket/f.zarr")
    with pytest.raises(ConfigError, match="file:// URL needs an absolute path"):
        store_location("file://data/f.zarr")
    with pytest.raises(ConfigError, match="fsspec knows no protocol 'nosuch'"):
        store_location("nosuch://bucket/f.zarr")
    if importlib.util.find_spec("gcsfs") is None:
        with pytest.raises(ConfigError, match="gs:// needs a package that is not installed"):
            store_location("gs://bucket/f.zarr")
    assert absolute("s3://b/x") == "s3://b/x"
    assert absolute("rel.zarr") == os.path.join(os.getcwd(), "rel.zarr")


def test_cli_refuses_a_store_url_with_a_lost_slash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(extract_app, ["ls", "--store", "s3:/bucket/f.zarr"])
    assert res.exit_code == 2 and "did you mean 's3://bucket/f.zarr'" in res.output, res.output
    assert not (tmp_path / "s3:").exists()
    from fuse.cli import app as fuse_app

    res = CliRunner().invoke(fuse_app, ["validate", "--store", "a.zarr,s3:/b/f.zarr"])
    assert res.exit_code == 2 and "did you mean 's3://b/f.zarr'" in res.output, res.output


def test_file_url_store_is_the_local_folder(tmp_path):
    options = RunOptions(features=["x"], input=tmp_path, store=f"file://{tmp_path}/f.zarr")
    assert options.store == f"{tmp_path}/f.zarr"  # claims and run records work as for a folder


def test_memory_store_needs_one_process(tmp_path):
    problems = RunOptions(features=["x"], input=tmp_path, store="memory://f.zarr",
                          workers=2).problems()
    assert any("lives inside one process" in p for p in problems), problems
    ok = RunOptions(features=["x"], input=tmp_path, store="memory://f.zarr", workers=0)
    assert not any("one process" in p for p in ok.problems())


def test_ray_address_needs_the_ray_backend(tmp_path):
    problems = RunOptions(features=["x"], input=tmp_path, store="s.zarr",
                          ray_address="head:6379").problems()
    assert any("used only with --backend ray" in p for p in problems), problems


# ---------------------------------------------------------------------------- Ray addresses
@pytest.mark.parametrize("text", ["bogus", "http://127.0.0.1:6379", "127.0.0.1", "head:port",
                                  "ray://", "127.0.0.1:70000"])
def test_malformed_ray_addresses(text):
    with pytest.raises(ClusterError, match="--ray-address"):
        parse_address(text)


def test_good_ray_addresses():
    assert parse_address("127.0.0.1:6379").kind == "gcs"
    assert parse_address("ray://head.example:10001").port == 10001
    assert parse_address("auto").kind == "auto"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_cluster_is_one_line(tmp_path):
    pytest.importorskip("ray")
    (tmp_path / "in").mkdir()
    runner = CliRunner()
    start = time.monotonic()
    res = runner.invoke(extract_app, ["run", "--feature", "fbank", "--input",
                                      str(tmp_path / "in"), "--store", str(tmp_path / "s.zarr"),
                                      "--backend", "ray", "--ray-address", "127.0.0.1:1"])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot reach a Ray cluster at 127.0.0.1:1" in lines[0], lines
    assert not (tmp_path / "s.zarr").exists()
    res = runner.invoke(extract_app, ["run", "--feature", "fbank", "--input",
                                      str(tmp_path / "in"), "--store", str(tmp_path / "s.zarr"),
                                      "--backend", "ray", "--ray-address", "http://head:1"])
    assert res.exit_code == 2 and "expected HOST:PORT" in res.output, res.output
    assert time.monotonic() - start < 30


def test_silent_address_times_out_in_one_line(tmp_path):
    """Something listens but is no Ray head: Ray would retry forever; --ray-timeout ends it."""
    pytest.importorskip("ray")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        grid = tmp_path / "grid.yaml"
        grid.write_text(yaml.safe_dump({"visual": [["a"]]}))
        start = time.monotonic()
        res = subprocess.run([sys.executable, "-m", "fuse", "grid", "--grid", str(grid),
                              "--store", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "g"),
                              "--backend", "ray", "--ray-address", f"127.0.0.1:{port}",
                              "--ray-timeout", "3"], env=_env(), capture_output=True,
                             text=True, timeout=120)
        took = time.monotonic() - start
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"127.0.0.1:{port}" in res.stdout and "within 3 s" in res.stdout, res.stdout
    assert took < 60, took


def test_fuse_grid_gpus_refused_without_gpus(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has GPUs")
    from fuse.cli import app as fuse_app

    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"visual": [["a"]]}))
    res = CliRunner().invoke(fuse_app, ["grid", "--grid", str(grid), "--store", "x.zarr",
                                        "--out", str(tmp_path / "g"), "--gpus", "2"])
    assert res.exit_code == 2 and "--gpus 2 asks for 2 GPU(s) but this machine has 0" \
        in res.output, res.output
    assert not (tmp_path / "g" / "jobs").exists()


def test_run_grid_in_a_script_without_main_guard_raises(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(f"""
        from fuse.experiments import load_grid, run_grid
        spec = load_grid({{"visual": [["a"], ["b"]], "overrides": {{
            "data": {{"stores": [{str(tmp_path / "none.zarr")!r}]}}}}}})
        run_grid(spec, {str(tmp_path / "g")!r}, workers=2, progress=False)
    """))
    res = subprocess.run([sys.executable, str(script)], env=_env(), capture_output=True,
                         text=True, timeout=240, cwd=tmp_path)
    assert res.returncode != 0
    assert "FuseError" in res.stderr and "if __name__ ==" in res.stderr, res.stderr[-3000:]


# -------------------------------------------------------------------------------- --resume
@pytest.fixture(scope="module")
def saved_run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("resume")
    s = expr_set(root, videos=4, seconds=3.0, seed=3)
    config = {"data": {"stores": [str(s.store)], "visual": ["face"], "segment_len": 30},
              "labels": {"path": str(s.labels), "format": "affwild2-expr"},
              "task": {"name": "expr"},
              "model": {"fusion_dim": 8, "dropout": 0.0, "head": [8],
                        "encoder": {"name": "lstm", "hidden": 8}},
              "train": {"epochs": 1, "batch_size": 4, "threads": 1},
              "output": {"dir": str(root / "run"), "plots": False}}
    train(config)
    return root / "run"


def test_resume_refuses_changes_to_model_or_data(saved_run):
    with pytest.raises(FuseConfigError) as err:
        train({"output": {"dir": str(saved_run)}, "model": {"encoder": {"hidden": 16}},
               "data": {"audio": ["voice"]}}, resume=True)
    (line,) = err.value.problems
    assert "model.encoder.hidden: 8 -> 16" in line and 'data.audio: [] -> ["voice"]' in line
    assert "train.epochs" in line  # what may change is listed too


def test_resume_from_the_saved_config_records_harmless_changes(saved_run):
    from fuse.cli import app as fuse_app

    res = CliRunner().invoke(fuse_app, ["train", "--out", str(saved_run), "--resume",
                                        "train.epochs=2"])
    assert res.exit_code == 0, res.output
    saved = yaml.safe_load((saved_run / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 2 and saved["model"]["encoder"]["hidden"] == 8
    (record,) = [json.loads(s) for s in (saved_run / "resumes.jsonl").read_text().splitlines()]
    assert record["changed"] == {"train.epochs": [1, 2]}
    log = (saved_run / "log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in log] == ["epoch", "1", "2"]


def test_resume_without_a_run_folder(tmp_path):
    with pytest.raises(FuseConfigError, match="is not a run folder"):
        train({"output": {"dir": str(tmp_path / "nothing")}}, resume=True)


def test_local_run_records_absolute_paths(tmp_path: Path) -> None:
    """Relative -i / --store from another folder: run.yaml and each video's source name files
    that can be found from anywhere."""
    from media_utils import write_audio

    from extract.store import open_store

    work = tmp_path / "work"
    write_audio(tmp_path / "wavs" / "a.wav", seconds=0.5, rate=16000, channels=1)
    work.mkdir()
    out = subprocess.run([sys.executable, "-m", "extract", "run", "-f", "fbank", "-i", "../wavs",
                          "--store", "rel.zarr", "--workers", "0", "--no-progress",
                          "--run-id", "r1"], cwd=work, env=_env(), capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    store = open_store(work / "rel.zarr")
    assert store.video_attrs("fbank", "a")["source"]["path"] == str(tmp_path / "wavs" / "a.wav")
    run = yaml.safe_load((work / "rel.zarr" / "_runs" / "r1" / "run.yaml").read_text())
    assert run["options"]["store"] == str(work / "rel.zarr")
    assert run["inputs"]["root"] == str(tmp_path / "wavs")
