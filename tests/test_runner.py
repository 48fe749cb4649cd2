"""``extract run`` end to end on synthetic media: outputs, failures, resume, worker death, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import runner_plugin  # noqa: F401  (registers the test extractors and detector here too)
import yaml
from media_utils import truncate, write_audio, write_garbage, write_image_folder, write_video

from extract.errors import ConfigError, ConfigMismatchError
from extract.ids import MediaItem
from extract.runner import RunOptions, make_plan, run
from extract.runner.features import RunFeature
from extract.store import FeatureStore

REPO = Path(__file__).resolve().parents[1]
FEATURES = ["egemaps", "fbank", "meancolor"]
CATALOG = {
    "egemaps": {"modality": "audio", "extractor": "opensmile", "dim": 25,
                "input": {"sample_rate": 16000, "window": 0.02, "hop": 0.01}, "rate": 100,
                "options": {"feature_set": "eGeMAPSv02", "level": "lld"}},
    "fbank": {"modality": "audio", "extractor": "fbank", "dim": 80,
              "input": {"sample_rate": 16000, "window": 0.025, "hop": 0.01}, "rate": 100},
    "meancolor": {"modality": "visual", "extractor": "test_mean_color", "dim": 6,
                  "input": {"face_size": 32}, "extras": {"gray": 1}},
    "broken": {"modality": "visual", "extractor": "test_broken_load", "dim": 2,
               "input": {"face_size": 32}},
    "failing": {"modality": "audio", "extractor": "test_fail_extract", "dim": 2},
    "huge": {"modality": "audio", "extractor": "test_huge", "dim": 2},
    "needs_weights": {"modality": "visual", "extractor": "densenet", "dim": 1024,
                      "weights": "no_such_checkpoint.pth", "input": {"face_size": 224}},
}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "features.yaml"
    path.write_text(yaml.safe_dump({"features": CATALOG}))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good videos, an audio file, a frame folder, and three broken inputs."""
    root = tmp_path_factory.mktemp("inputs")
    write_video(root / "a.mp4", 50, no_face=(3, 4, 5))
    write_video(root / "sub" / "b.mkv", 30, seed=1)
    write_video(root / "noaud.mp4", 20, audio=False)
    write_garbage(root / "bad.mp4")
    truncate(write_video(root / "trunc.mkv", 100), 0.4)
    write_audio(root / "speech.wav", 1.5)
    write_image_folder(root / "imgs", 12, skip=(5,))
    return root


def options(catalog: Path, inputs: Path, store: Path, **kw) -> RunOptions:
    base = dict(features=FEATURES, input=inputs, store=str(store), workers=0, catalog=catalog,
                detector="test_center", plugins=["runner_plugin"], progress=False, batch_size=8)
    return RunOptions(**{**base, **kw})


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_run_writes_records_failures_and_resumes(tmp_path: Path, catalog: Path,
                                                 inputs: Path) -> None:
    store_path = tmp_path / "s.zarr"
    summary = run(options(catalog, inputs, store_path))
    assert (summary.done, summary.failed, summary.skipped) == (5, 2, 0)
    assert summary.exit_code == 1 and summary.frames > 0
    failures = read_jsonl(Path(summary.run_dir) / "failures.jsonl")
    stages = {f["video"]: (f["stage"], sorted(f["features"]), f["error"]) for f in failures}
    assert stages == {
        "bad": ("open", sorted(FEATURES), "MediaError"),
        "trunc": ("decode", sorted(FEATURES), "MediaError"),
    }
    # The video without sound: its audio features do not apply (not failed); the frame folder
    # gets no audio features and the wav no visual one, by kind.
    na = read_jsonl(Path(summary.run_dir) / "not_applicable.jsonl")
    assert {(r["video"], tuple(r["features"])) for r in na} == {
        ("noaud", ("egemaps", "fbank")), ("imgs", ("egemaps", "fbank")),
        ("speech", ("meancolor",))}
    assert summary.not_applicable == 3
    assert {n: st.not_applicable for n, st in summary.features.items()} == {
        "egemaps": 2, "fbank": 2, "meancolor": 1}
    store = FeatureStore(store_path)
    assert store.complete_set("egemaps") == store.complete_set("fbank") == {"a", "sub/b", "speech"}
    visual = {"a", "sub/b", "noaud", "imgs"}  # the video without audio still gets its rows
    assert store.complete_set("meancolor") == store.complete_set("meancolor.gray") == visual

    # Visual rows: one per frame at the real times; no face → zero row, mask False.
    fa = store.read_video("meancolor", "a")
    assert fa.data.shape == (50, 6)
    np.testing.assert_allclose(fa.timestamps, np.arange(50) / 25, atol=1e-6)
    assert fa.mask.tolist() == [i not in (3, 4, 5) for i in range(50)]
    assert np.all(fa.data[3:6] == 0) and np.all(fa.data[fa.mask].sum(axis=1) > 0)
    assert fa.attrs["source"]["faces"] == "detector test_center"
    gray = store.read_video("meancolor.gray", "a")
    assert gray.data.shape == (50, 1) and gray.mask.tolist() == fa.mask.tolist()
    # Frame folder: already aligned (no detection), time = (index - 1) / image_fps.
    imgs = store.read_video("meancolor", "imgs")
    np.testing.assert_allclose(imgs.timestamps, np.array([0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11]) / 30)
    assert imgs.mask.all() and imgs.attrs["source"]["faces"] == "aligned input"
    # Audio rows at their own rate, on the container clock.
    eg = store.read_video("egemaps", "a")
    assert eg.data.shape[1] == 25 and abs(len(eg.timestamps) - 200) <= 6
    assert eg.timestamps[0] == pytest.approx(0.01 + eg.attrs["source"]["audio_start"])
    fb = store.read_video("fbank", "speech")
    np.testing.assert_allclose(np.diff(fb.timestamps), 0.01, atol=1e-9)
    assert store.verify().ok

    run_dir = Path(summary.run_dir)
    cfg = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert set(cfg["features"]) == set(FEATURES)
    outputs = cfg["features"]["meancolor"]["outputs"]
    gray_info = store.feature_info("meancolor.gray")
    assert outputs["meancolor.gray"]["fingerprint"] == gray_info.fingerprint
    assert cfg["inputs"]["todo"] == 7 and "numpy" in cfg["versions"]
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["exit_code"] == 1 and saved["features"]["meancolor"]["done"] == 4

    # Re-run: the finished videos are skipped (untouched), the broken ones are tried again.
    written = store.read_video("meancolor", "a").attrs["written"]
    again = run(options(catalog, inputs, store_path))
    assert (again.done, again.skipped, again.failed) == (1, 4, 2)  # done: noaud, opened again
    assert again.features["meancolor"].skipped == 4 and again.features["egemaps"].skipped == 3
    assert FeatureStore(store_path).read_video("meancolor", "a").attrs["written"] == written
    assert len(store.failures()) == 4  # both runs' records


def test_options_sampling_and_image_fps(tmp_path: Path, catalog: Path) -> None:
    root = tmp_path / "in"
    write_video(root / "v.mp4", 40, audio=False)
    write_image_folder(root / "f", 6)
    summary = run(options(catalog, root, tmp_path / "s.zarr", features=["meancolor"],
                          sample="count:5", image_fps=10.0))
    assert summary.exit_code == 0 and summary.done == 2
    store = FeatureStore(tmp_path / "s.zarr")
    v = store.read_video("meancolor", "v")
    np.testing.assert_allclose(v.timestamps, np.round(np.linspace(0, 39, 5)) / 25, atol=1e-6)
    assert v.attrs["source"]["sampling"] == "count:5"
    # 6 frames at 10 fps, 5 kept (count:5 picks indices 0, 1, 2, 4, 5).
    np.testing.assert_allclose(store.read_video("meancolor", "f").timestamps,
                               [0.0, 0.1, 0.2, 0.4, 0.5])


def test_config_problems_refused_before_any_work(tmp_path: Path, catalog: Path,
                                                 inputs: Path) -> None:
    store_path = tmp_path / "s.zarr"
    store = FeatureStore(store_path, "a")
    store.ensure_feature("egemaps", modality="audio", dim=25, extractor="opensmile",
                         config={"something": "else"})
    with pytest.raises(ConfigMismatchError, match="egemaps"):
        run(options(catalog, inputs, store_path, features=["egemaps", "fbank"]))
    assert not (store_path / "_runs").exists() and not store.has_feature("fbank")

    with pytest.raises(ConfigError) as err:
        run(options(catalog, inputs, store_path, features=["needs_weights", "nope", "fbank"],
                    batch_size=0, weights={"other": "x.pth"}))
    text = str(err.value)
    for part in ("needs_weights", "no_such_checkpoint.pth", "unknown feature 'nope'",
                 "--batch-size", "'other'"):
        assert part in text
    with pytest.raises(ConfigError, match="no_such_detector"):
        run(options(catalog, inputs, tmp_path / "t.zarr", features=["meancolor"],
                    detector="no_such_detector"))


def test_extractor_failure_and_broken_worker(tmp_path: Path, catalog: Path) -> None:
    root = tmp_path / "in"
    write_video(root / "v.mp4", 10)
    # An extractor that raises: recorded at stage "extract"; the other features still finish.
    # Rows that overflow the stored float16 are refused at "write", never stored as inf.
    summary = run(options(catalog, root, tmp_path / "s.zarr",
                          features=["failing", "huge", "egemaps"]))
    assert summary.exit_code == 1
    assert sorted((f.video, f.features, f.stage, f.error) for f in summary.failures) == [
        ("v", ["failing"], "extract", "ValueError"), ("v", ["huge"], "write", "ValueError")]
    assert "float32" in next(f.message for f in summary.failures if f.stage == "write")
    assert FeatureStore(tmp_path / "s.zarr").complete_set("egemaps") == {"v"}
    # A model that cannot load: refused before the store is even created (checked once).
    with pytest.raises(ConfigError, match="'broken' cannot load its model.*checkpoint is "
                                          "corrupt"):
        run(options(catalog, root, tmp_path / "t.zarr", features=["broken"]))
    assert not (tmp_path / "t.zarr").exists()


def test_plan_longest_first_limit_and_skip(tmp_path: Path, catalog: Path) -> None:
    from extract.catalog import load_catalog

    specs = load_catalog(catalog)
    feats = [RunFeature(specs[n], {}, {n: specs[n].dim}, "") for n in ("egemaps", "meancolor")]
    store = FeatureStore(tmp_path / "s.zarr", "a")
    for f in feats:
        store.ensure_feature(f.name, modality=f.modality, dim=f.spec.dim, extractor="x",
                             config={})
    for name, dim in (("egemaps", 25), ("meancolor", 6)):
        store.write_video(name, "done", np.zeros((2, dim)), np.arange(2.0))
    store.write_video("egemaps", "half", np.zeros((2, 25)), np.arange(2.0))
    items = [MediaItem("small", Path("small.mp4"), "video", 10),
             MediaItem("big", Path("big.mp4"), "video", 1000),
             MediaItem("done", Path("done.mp4"), "video", 5000),
             MediaItem("half", Path("half.mp4"), "video", 500),
             MediaItem("voice", Path("voice.wav"), "audio", 700),
             MediaItem("frames", Path("frames"), "images", 20)]
    plan = make_plan(items, feats, store)
    assert [(t.video_id, t.features) for t in plan.tasks] == [
        ("big", ("egemaps", "meancolor")), ("voice", ("egemaps",)), ("half", ("meancolor",)),
        ("frames", ("meancolor",)), ("small", ("egemaps", "meancolor"))]
    assert plan.skipped == ["done"] and plan.skipped_pairs == {"egemaps": 2, "meancolor": 1}
    limited = make_plan(items, feats, store, limit=2)
    assert [t.video_id for t in limited.tasks] == ["big", "voice"]
    assert limited.deferred == ["half", "frames", "small"]


def _store_arrays(path: Path) -> dict:
    store = FeatureStore(path)
    return {(f, v): store.read_video(f, v) for f in store.features() for v in store.videos(f)}


def test_killed_worker_is_recorded_and_rerun_finishes(tmp_path: Path, catalog: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "in"
    for i, n in enumerate((60, 40, 30)):
        write_video(root / f"v{i}.mp4", n, seed=i, no_face=(2,))
    feats = ["egemaps", "meancolor"]
    # The reference and the re-run may run in-process (same code, same numbers); the run that
    # is interrupted needs a worker process to kill.
    reference = run(options(catalog, root, tmp_path / "ref.zarr", features=feats))
    assert reference.exit_code == 0 and reference.done == 3

    hang = tmp_path / "hang"
    hang.mkdir()
    monkeypatch.setenv(runner_plugin.HANG_ENV, str(hang))
    store_path = tmp_path / "s.zarr"
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(summary=run(
        options(catalog, root, store_path, features=feats, workers=1))))
    thread.start()
    marker = hang / "hang.pid"
    deadline = time.monotonic() + 120
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline and thread.is_alive(), "the worker never hung"
        time.sleep(0.1)
    os.kill(int(marker.read_text()), signal.SIGKILL)  # mid-video: inside the visual extractor
    thread.join(timeout=180)
    assert not thread.is_alive(), "the run hung after its worker died"
    summary = result["summary"]
    assert summary.exit_code == 1 and (summary.done, summary.failed) == (2, 1)
    (lost,) = summary.failures
    assert lost.stage == "worker" and "SIGKILL" in lost.message and lost.video == "v0"
    store = FeatureStore(store_path)
    assert not any(store.is_complete(f, "v0") for f in ("egemaps", "meancolor"))

    again = run(options(catalog, root, store_path, features=feats))
    assert (again.done, again.skipped, again.failed) == (1, 2, 0)
    ref, got = _store_arrays(tmp_path / "ref.zarr"), _store_arrays(store_path)
    assert set(ref) == set(got) and len(ref) == 9
    for key, a in ref.items():
        b = got[key]
        np.testing.assert_array_equal(a.data, b.data, err_msg=str(key))
        np.testing.assert_array_equal(a.timestamps, b.timestamps, err_msg=str(key))
        np.testing.assert_array_equal(a.mask, b.mask, err_msg=str(key))


# ------------------------------------------------------------------------------------ CLI
def test_cli_help_is_fast() -> None:
    cmd = [sys.executable, "-m", "extract", "--help"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, check=True)
    elapsed = time.perf_counter() - start
    for command in ("run", "list", "ls", "inspect", "verify"):
        assert command in out.stdout
    assert elapsed < 5.0  # ~0.3 s here; generous for a loaded CI machine
    heavy = subprocess.run([sys.executable, "-c", "import extract.cli, sys; print(sorted(m for m "
                            "in ('torch', 'zarr', 'av', 'numpy', 'cv2') if m in sys.modules))"],
                           capture_output=True, text=True, env=env, cwd=REPO, check=True)
    assert heavy.stdout.strip() == "[]"


def test_cli_commands(tmp_path: Path, catalog: Path, inputs: Path) -> None:
    from typer.testing import CliRunner

    from extract.cli import app

    cli = CliRunner()
    listed = cli.invoke(app, ["list", "--catalog", str(catalog)])
    assert listed.exit_code == 0, listed.output
    assert "egemaps" in listed.output and "no_such_checkpoint.pth" in listed.output
    store = str(tmp_path / "s.zarr")
    args = ["run", "-f", "egemaps", "--feature", "meancolor", "-i", str(inputs), "-s", store,
            "--workers", "0", "--catalog", str(catalog), "--detector", "test_center",
            "--plugin", "runner_plugin", "--no-progress", "--batch-size", "8"]
    ran = cli.invoke(app, args)
    assert ran.exit_code == 1, ran.output  # bad, trunc, noaud failed
    assert "failure(s)" in ran.output and "videos" in ran.output
    ls = cli.invoke(app, ["ls", "--store", store])
    assert ls.exit_code == 0 and "meancolor.gray" in ls.output
    feat = cli.invoke(app, ["inspect", "--store", store, "egemaps"])
    assert feat.exit_code == 0 and json.loads(feat.output)["videos"] == 3
    one = json.loads(cli.invoke(app, ["inspect", "--store", store, "meancolor", "a"]).output)
    assert one["shape"] == [50, 6] and one["invalid"] == 3 and one["longest_gap"] == 3
    assert cli.invoke(app, ["verify", "--store", store]).exit_code == 0
    missing = cli.invoke(app, ["inspect", "--store", store, "nope"])
    assert missing.exit_code == 2 and "nope" in missing.output
    bad = cli.invoke(app, ["run", "-f", "egemaps", "-i", str(inputs), "-s", store,
                           "--catalog", str(catalog), "--sample", "every:3"])
    assert bad.exit_code == 2 and "every:3" in bad.output


def test_videos_held_by_another_run_are_left_to_it(tmp_path: Path, catalog: Path) -> None:
    from extract.claims import ClaimBook, claim_key

    root = tmp_path / "in"
    for name in ("v1", "v2"):
        write_video(root / f"{name}.mp4", 10)
    store_path = tmp_path / "s.zarr"
    FeatureStore(store_path, "a")
    other = ClaimBook(store_path, "other-run")  # a live run on this host holding v1
    held = other.try_claim(claim_key("fbank", "v1"))
    assert held is not None
    summary = run(options(catalog, root, store_path, features=["fbank"]))
    assert (summary.done, summary.busy, summary.failed, summary.exit_code) == (1, 1, 0, 0)
    store = FeatureStore(store_path)
    assert store.complete_set("fbank") == {"v2"}
    held.release()
    again = run(options(catalog, root, store_path, features=["fbank"]))
    assert (again.done, again.skipped, again.busy) == (1, 1, 0)
    assert not list((store_path / "_claims").glob("*.claim"))  # every claim released
    other.close()
