"""The CPU pool (``extract run --cpu-workers``): spans read like the sequential reader, pooled
runs write what inline runs write, a killed CPU worker fails only its video, bounded memory,
``--face-device`` and the CLI flags."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pool_plugin
import pytest
import runner_plugin  # noqa: F401  (registers the test extractor and detector here too)
import yaml
from media_utils import (
    face_frame,
    truncate,
    write_audio,
    write_garbage,
    write_image_folder,
    write_video,
)

from extract.demo_media import encode_frames
from extract.errors import ConfigError
from extract.ids import MediaItem
from extract.media.sampling import Sampling
from extract.runner import RunOptions, run
from extract.runner.decode import FRAME_SOURCES, DecodeSettings
from extract.runner.plan import Task
from extract.runner.spans import SpanLimits, SpanMismatch, VideoSpan, plan_spans
from extract.store import FeatureStore

REPO = Path(__file__).resolve().parents[1]
CATALOG = {
    "egemaps": {"modality": "audio", "extractor": "opensmile", "dim": 25,
                "input": {"sample_rate": 16000, "window": 0.02, "hop": 0.01}, "rate": 100,
                "options": {"feature_set": "eGeMAPSv02", "level": "lld"}},
    "meancolor": {"modality": "visual", "extractor": "test_mean_color", "dim": 6,
                  "input": {"face_size": 32}, "extras": {"gray": 1}},
    "meancolor48": {"modality": "visual", "extractor": "test_mean_color", "dim": 6,
                    "input": {"face_size": 48}, "extras": {"gray": 1}},
}
BATCH = 8
SPANS = (16, 40)  # sampled frames per span: small, so that the test inputs are split


def write_gop_video(path: Path, n_frames: int, gop: int = 20, bframes: int = 2,
                    no_face: tuple[int, ...] = ()) -> Path:
    """H.264 with a key frame every ``gop`` frames and B-frames (frames reordered), no audio."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 96, 72, "yuv420p"
        vs.codec_context.options = {"threads": "1", "g": str(gop), "keyint_min": str(gop),
                                    "bf": str(bframes)}
        encode_frames(c, vs, (face_frame(i, 96, 72, face=i not in no_face)
                              for i in range(n_frames)), 25)
    return path


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "features.yaml"
    path.write_text(yaml.safe_dump({"features": CATALOG}))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A long video split into spans, short videos with and without faces or sound, a frame
    folder with gaps and an unreadable image, audio files (one named .mp4), broken inputs."""
    root = tmp_path_factory.mktemp("pool_inputs")
    write_gop_video(root / "long.mp4", 150, no_face=(7, 8, 60, 61, 62, 149))
    write_video(root / "short.mp4", 30, no_face=(3, 4))
    write_video(root / "faceless.mp4", 20, no_face=tuple(range(20)))
    write_video(root / "noaud.mp4", 20, audio=False)
    write_garbage(root / "bad.mp4")
    truncate(write_video(root / "trunc.mkv", 100), 0.4)
    write_audio(root / "speech.wav", 1.0)
    write_audio(root / "voice.mp4", 1.0)  # a video file without a video stream
    folder = write_image_folder(root / "imgs", 70, skip=(5, 33, 34))
    (folder / "00040.jpg").write_bytes((folder / "00040.jpg").read_bytes()[:200])  # truncated
    return root


def options(catalog: Path, root: Path, store: Path, **kw) -> RunOptions:
    base = dict(features=["egemaps", "meancolor"], input=root, store=str(store), workers=0,
                catalog=catalog, detector="test_center", plugins=["runner_plugin", "pool_plugin"],
                progress=False, batch_size=BATCH, span_frames=SPANS)
    return RunOptions(**{**base, **kw})


def stored(path: Path) -> dict:
    store = FeatureStore(path)
    return {(f, v): store.read_video(f, v) for f in store.features() for v in store.videos(f)}


def assert_same_store(ref: Path, got: Path, videos: set[str] | None = None) -> None:
    a, b = stored(ref), stored(got)
    if videos is not None:
        a = {k: v for k, v in a.items() if k[1] in videos}
        b = {k: v for k, v in b.items() if k[1] in videos}
    assert set(a) == set(b)
    for key, x in a.items():
        y = b[key]
        np.testing.assert_array_equal(x.data, y.data, err_msg=str(key))
        np.testing.assert_array_equal(x.timestamps, y.timestamps, err_msg=str(key))
        np.testing.assert_array_equal(x.mask, y.mask, err_msg=str(key))
        skip = {"run_id", "written"}
        left = {k: v for k, v in x.attrs.items() if k not in skip}
        right = {k: v for k, v in y.attrs.items() if k not in skip}
        left["source"] = {k: v for k, v in left["source"].items() if k != "run"}
        right["source"] = {k: v for k, v in right["source"].items() if k != "run"}
        assert left == right, key


def failures(summary) -> list[tuple]:
    return sorted((f.video, tuple(f.features), f.stage, f.error, f.message)
                  for f in summary.failures)


# ------------------------------------------------------------------------------ spans
@pytest.mark.parametrize("sample", ["all", "fps:7", "count:40"])
def test_video_spans_give_the_sequential_batches(inputs: Path, sample: str) -> None:
    s = DecodeSettings(Sampling.parse(sample), BATCH, 30.0, {"meancolor": "visual"})
    spans = plan_spans("video", inputs / "long.mp4", s, SpanLimits(*SPANS))
    assert len(spans) > 1 and all(isinstance(sp, VideoSpan) for sp in spans)
    assert spans[0].seek_pts is None and all(sp.seek_pts is not None for sp in spans[1:])
    ref = list(FRAME_SOURCES["video"](inputs / "long.mp4", s))
    got = [b for sp in spans for b in sp.batches(s)]
    assert [len(b.frames) for b in got] == [len(b.frames) for b in ref]
    for a, b in zip(ref, got, strict=True):
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_array_equal(a.times, b.times)
        np.testing.assert_array_equal(a.indices, b.indices)


def test_folder_spans_give_the_sequential_batches(inputs: Path) -> None:
    s = DecodeSettings(Sampling(), BATCH, 25.0, {"meancolor": "visual"})
    spans = plan_spans("images", inputs / "imgs", s, SpanLimits(*SPANS))
    assert len(spans) > 1
    ref = list(FRAME_SOURCES["images"](inputs / "imgs", s))
    got = [b for sp in spans for b in sp.batches(s)]
    assert len(ref) == len(got)
    for a, b in zip(ref, got, strict=True):
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_array_equal(a.times, b.times)
        np.testing.assert_array_equal(a.valid, b.valid)
        assert a.source == b.source


def test_short_or_stateful_inputs_are_not_split(inputs: Path) -> None:
    s = DecodeSettings(Sampling(), BATCH, 25.0, {"meancolor": "visual"})
    assert [type(sp).__name__ for sp in plan_spans("video", inputs / "short.mp4", s,
                                                    SpanLimits(*SPANS))] == ["WholeSpan"]
    assert len(plan_spans("video", inputs / "long.mp4", s, SpanLimits(*SPANS),
                          splittable=False)) == 1
    assert len(plan_spans("video", inputs / "bad.mp4", s, SpanLimits(*SPANS))) == 1
    from extract.runner.faces import FaceSteps

    assert FaceSteps((32,), "test_center_tracked").has_video_state("video")
    assert not FaceSteps((32,), "test_center").has_video_state("video")
    assert not FaceSteps((32,), "test_center_tracked").has_video_state("images")


def test_a_span_that_does_not_decode_as_indexed_is_refused(inputs: Path) -> None:
    s = DecodeSettings(Sampling(), BATCH, 25.0, {"meancolor": "visual"})
    span = plan_spans("video", inputs / "long.mp4", s, SpanLimits(*SPANS))[1]
    wrong = VideoSpan(span.path, span.index, span.seek_pts, (span.expected[0] + 1,
                      *span.expected[1:]), span.first_position, None, span.kept, span.last)
    with pytest.raises(SpanMismatch, match="index says"):
        list(wrong.batches(s))


# ----------------------------------------------------------------------- whole runs
def test_pooled_run_writes_what_the_inline_run_writes(tmp_path: Path, catalog: Path,
                                                      inputs: Path) -> None:
    ref = run(options(catalog, inputs, tmp_path / "ref.zarr"))
    assert (ref.done, ref.failed) == (7, 2)  # bad (open) and trunc (decode) fail
    got = run(options(catalog, inputs, tmp_path / "pool.zarr", cpu_workers=2))
    assert (got.done, got.failed, got.not_applicable) == (ref.done, ref.failed,
                                                          ref.not_applicable)
    assert failures(got) == failures(ref)
    assert got.faces == ref.faces and got.frames == ref.frames
    assert_same_store(tmp_path / "ref.zarr", tmp_path / "pool.zarr")
    # A worker process with its own CPU pool (and two crop sizes): the same numbers again.
    feats = ["meancolor", "meancolor48"]
    ref2 = run(options(catalog, inputs, tmp_path / "ref2.zarr", features=feats,
                       sample="fps:9"))
    proc = run(options(catalog, inputs, tmp_path / "proc.zarr", features=feats, workers=1,
                       cpu_workers=1, sample="fps:9"))
    assert failures(proc) == failures(ref2) and proc.done == ref2.done
    assert_same_store(tmp_path / "ref2.zarr", tmp_path / "proc.zarr")


def test_pooled_frame_folders_on_their_videos_clock(tmp_path: Path, catalog: Path,
                                                   inputs: Path) -> None:
    """Aff-Wild2 style: crops of some frames of long.mp4, one row per video frame."""
    root = tmp_path / "crops"
    write_image_folder(root / "long", 140, size=48, skip=(1, 2, 50, 51, 52, 90))
    kw = dict(features=["meancolor"], videos=inputs)
    ref = run(options(catalog, root, tmp_path / "ref.zarr", **kw))
    got = run(options(catalog, root, tmp_path / "pool.zarr", cpu_workers=2, **kw))
    assert ref.done == got.done == 1 and ref.frames == got.frames == 150
    assert_same_store(tmp_path / "ref.zarr", tmp_path / "pool.zarr")
    attrs = FeatureStore(tmp_path / "pool.zarr").read_video("meancolor", "long").attrs
    assert attrs["frame_clock"] == "video" and attrs["source_frames"] == 150


def test_pooled_runs_claim_and_release(tmp_path: Path, catalog: Path) -> None:
    from extract.claims import ClaimBook, claim_key

    root = tmp_path / "in"
    for name in ("v1", "v2"):
        write_video(root / f"{name}.mp4", 10)
    store_path = tmp_path / "s.zarr"
    FeatureStore(store_path, "a")
    other = ClaimBook(store_path, "other-run")  # a live run on this host holding v1
    held = other.try_claim(claim_key("meancolor", "v1"))
    assert held is not None
    opts = dict(features=["meancolor"], cpu_workers=1)
    summary = run(options(catalog, root, store_path, **opts))
    assert (summary.done, summary.busy, summary.failed) == (1, 1, 0)
    held.release()
    again = run(options(catalog, root, store_path, **opts))
    assert (again.done, again.skipped, again.busy) == (1, 1, 0)
    assert other.records() == []  # every claim released, the pooled runs' too
    other.close()


def test_a_split_video_that_does_not_seek_exactly_is_read_again(
        tmp_path: Path, catalog: Path, inputs: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from extract.runner import spans as spans_module

    root = tmp_path / "in"
    root.mkdir()
    (root / "long.mp4").symlink_to(inputs / "long.mp4")
    assert run(options(catalog, root, tmp_path / "ref.zarr")).done == 1
    planner = spans_module.PLANNERS["video"]

    def corrupt_last(path, s, limits):  # the last span expects a frame the video lacks
        spans = planner(path, s, limits)
        last = spans[-1]
        spans[-1] = VideoSpan(last.path, last.index, last.seek_pts,
                              (*last.expected[:-1], last.expected[-1] + 1), last.first_position,
                              last.keep_times, last.kept, last.last)
        return spans

    monkeypatch.setitem(spans_module.PLANNERS, "video", corrupt_last)
    caplog.set_level(logging.INFO, logger="extract.runner.worker")
    got = run(options(catalog, root, tmp_path / "pool.zarr", cpu_workers=2))
    assert (got.done, got.failed) == (1, 0)
    assert "reading it again from its first frame" in caplog.text
    assert "rows so far dropped" in caplog.text  # the earlier spans' rows were thrown away
    assert_same_store(tmp_path / "ref.zarr", tmp_path / "pool.zarr")


def test_a_killed_cpu_worker_fails_only_its_video(tmp_path: Path, catalog: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "in"
    for i, n in enumerate((60, 40, 30)):
        write_video(root / f"v{i}.mp4", n, seed=i, no_face=(2,))
    opts = dict(detector="test_center_hang", cpu_workers=2, span_frames=(128, 256))
    ref = run(options(catalog, root, tmp_path / "ref.zarr", detector="test_center_hang"))
    assert ref.done == 3
    hang = tmp_path / "hang"
    hang.mkdir()
    monkeypatch.setenv(pool_plugin.FEEDER_HANG_ENV, str(hang))
    monkeypatch.setenv(pool_plugin.HANG_RED_ENV, "40")  # v0's frames (seed 0) only
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(summary=run(
        options(catalog, root, tmp_path / "s.zarr", **opts))))
    thread.start()
    marker = hang / "hang.pid"
    deadline = time.monotonic() + 120
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline and thread.is_alive(), "no CPU worker hung"
        time.sleep(0.1)
    os.kill(int(marker.read_text()), signal.SIGKILL)  # in the face step of the first span
    thread.join(timeout=180)
    assert not thread.is_alive(), "the run hung after its CPU worker died"
    summary = result["summary"]
    assert summary.exit_code == 1 and (summary.done, summary.failed) == (2, 1)
    (lost,) = summary.failures
    assert lost.video == "v0" and lost.stage == "worker" and lost.error == "CPUWorkerDied"
    assert "CPU worker" in lost.message and "SIGKILL" in lost.message and "v0.mp4" in lost.message
    assert sorted(lost.features) == ["egemaps", "meancolor"]
    assert_same_store(tmp_path / "ref.zarr", tmp_path / "s.zarr", videos={"v1", "v2"})
    again = run(options(catalog, root, tmp_path / "s.zarr", **opts))
    assert (again.done, again.skipped, again.failed) == (1, 2, 0)
    assert_same_store(tmp_path / "ref.zarr", tmp_path / "s.zarr")


# ------------------------------------------------------------------- bounded memory
def test_the_pool_reuses_a_fixed_ring(inputs: Path) -> None:
    from extract.runner.feed import PoolConfig, PooledPrefetcher

    limits = SpanLimits(16, 16)
    frames = DecodeSettings(Sampling(), 4, 25.0, {"meancolor": "visual"})
    cfg = PoolConfig(1, (32,), "test_center", "cpu", ("runner_plugin",), 0, limits)
    item = MediaItem("long", inputs / "long.mp4", "video", 1)
    tasks = [Task(item, ("meancolor",)), None]
    pool = PooledPrefetcher(cfg, frames, depth=2)
    slots = limits.ring_slots(4)
    assert pool.layout.slots == slots == 5 and pool.layout.nbytes == slots * 4 * 32 * 32 * 3
    batches, most = 0, 0
    try:
        pool.start(lambda: tasks.pop(0), frames)
        for event in pool.events():
            most = max(most, len(pool.handles[0].in_use))
            if event.kind == "faces":
                batches += 1
                time.sleep(0.01)  # a slow consumer: the CPU worker must wait for free slots
            event.done()
    finally:
        pool.close()
    assert batches == 150 // 4 + 1 > slots  # every slot was used more than once
    assert most <= slots and not pool.handles[0].in_use


# ------------------------------------------------------------------ options and CLI
def test_cpu_worker_defaults_and_shares(tmp_path: Path, catalog: Path, inputs: Path) -> None:
    from extract.runner.engine import share, worker_configs
    from extract.runner.features import resolve_features

    cores = os.cpu_count() or 1
    assert options(catalog, inputs, tmp_path / "s").resolved_cpu_workers == 0
    assert options(catalog, inputs, tmp_path / "s", gpus=1).resolved_cpu_workers == \
        max(0, cores - 1)
    assert options(catalog, inputs, tmp_path / "s", cpu_workers=3).resolved_cpu_workers == 3
    assert share(7, 3) == [3, 2, 2] and share(1, 2) == [1, 0]
    opts = options(catalog, inputs, tmp_path / "s", workers=2, cpu_workers=3)
    configs = worker_configs(opts, resolve_features(opts), "r")
    assert [c.cpu_workers for c in configs] == [2, 1]
    assert [c.task_depth for c in configs] == [4, 3]
    audio_only = options(catalog, inputs, tmp_path / "s", features=["egemaps"], cpu_workers=2)
    (cfg,) = worker_configs(audio_only, resolve_features(audio_only), "r")
    assert cfg.feeders == 0  # nothing to detect: no CPU pool
    for bad in (-1, 1.5):
        with pytest.raises(ConfigError, match="--cpu-workers must be an integer >= 0"):
            resolve_features(options(catalog, inputs, tmp_path / "s", cpu_workers=bad))


def test_rings_that_do_not_fit_in_shared_memory_are_refused(tmp_path: Path) -> None:
    from extract.runner.feed import shared_memory_needed, shared_memory_problem

    needed = shared_memory_needed(4, (112, 224), 32, SpanLimits(128, 256))
    assert needed == 4 * 9 * 32 * (112 * 112 + 224 * 224) * 3  # 9 slots of 32 frames each
    assert shared_memory_problem(needed, str(tmp_path)) is None  # 216 MiB fit
    assert "--shm-size" in shared_memory_problem(1 << 60, str(tmp_path))
    assert shared_memory_needed(4, (), 32, SpanLimits()) == 0  # no visual feature, no rings


def scrfd_model(tmp_path: Path) -> Path:
    from test_faces import INPUT, constant_model, scrfd_outputs

    return constant_model(tmp_path / "scrfd.onnx", scrfd_outputs(), INPUT, batched=False)


def test_face_device_cuda_is_refused_before_the_store_changes(tmp_path: Path, catalog: Path,
                                                             inputs: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: nothing to refuse")
    store = tmp_path / "s.zarr"
    model = scrfd_model(tmp_path)
    with pytest.raises(ConfigError, match="has no CUDAExecutionProvider"):
        run(options(catalog, inputs, store, detector=f"scrfd:model_path={model}",
                    face_device="cuda"))
    with pytest.raises(ConfigError, match="needs an ONNX face detector"):
        run(options(catalog, inputs, store, face_device="cuda"))
    with pytest.raises(ConfigError, match="--face-device must be one of cpu | cuda"):
        run(options(catalog, inputs, store, face_device="gpu"))
    assert not store.exists()


def test_face_device_enters_the_fingerprint_only_for_cuda(tmp_path: Path) -> None:
    from extract.faces.settings import FaceSettings
    from extract.runner.faces import FaceSteps, check_on_device, faces_config

    pytest.importorskip("onnxruntime")
    settings = FaceSettings.from_spec(f"scrfd:model_path={scrfd_model(tmp_path)}")
    before = faces_config(settings, 112)
    assert faces_config(settings, 112, "cpu") == before  # stores made before keep theirs
    cuda = faces_config(settings, 112, "cuda")
    assert cuda["video"] == {**before["video"], "device": "cuda"}
    assert cuda["images"] == before["images"]  # frame folders detect nothing
    step = FaceSteps((112,), settings.detector.spec(), "cpu").for_kind("video")
    assert step.detector.session.get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(Exception, match="could not start CUDAExecutionProvider"):
        check_on_device(step, "cuda:0")  # onnxruntime fell back to the CPU: refused loudly


def test_remote_errors_keep_their_type_name_and_errno() -> None:
    from extract.runner.records import Failure
    from extract.runner.remote import ErrorRecord, portable, rebuild

    class Odd(Exception):
        def __init__(self, a: int, b: int) -> None:
            super().__init__(f"odd {a} {b}")

    sent = portable(Odd(1, 2))
    assert isinstance(sent, ErrorRecord)
    failure = Failure.of("v", ["f"], "faces", rebuild(sent))
    assert (failure.error, failure.message) == ("Odd", "odd 1 2")
    full = rebuild(portable(OSError(28, "No space left on device")))
    assert Failure.of("v", ["f"], "write", full).stops_run


def test_cli_flags(tmp_path: Path, catalog: Path, inputs: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    base = [sys.executable, "-m", "extract", "run", "--catalog", str(catalog), "--feature",
            "meancolor", "--input", str(inputs / "short.mp4"), "--detector", "test_center",
            "--plugin", "runner_plugin", "--no-progress"]
    out = subprocess.run([sys.executable, "-m", "extract", "run", "--help"], env=env,
                         capture_output=True, text=True)
    assert "--cpu-workers" in out.stdout and "--face-device" in out.stdout
    bad = subprocess.run([*base, "--store", str(tmp_path / "a.zarr"), "--cpu-workers", "-1"],
                         env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "--cpu-workers must be an integer >= 0" in bad.stderr
    assert not (tmp_path / "a.zarr").exists()
    good = subprocess.run([*base, "--store", str(tmp_path / "b.zarr"), "--cpu-workers", "1",
                           "--run-id", "pooled"], env=env, capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    store = FeatureStore(tmp_path / "b.zarr")
    assert store.is_complete("meancolor", "short")
    config = yaml.safe_load((store.run_dir("pooled") / "run.yaml").read_text())
    assert config["options"]["cpu_workers"] == 1 and config["options"]["face_device"] == "cpu"
    summary = json.loads((store.run_dir("pooled") / "summary.json").read_text())
    assert summary["done"] == 1
