"""Frames, times and labels line up to the frame: labels placed by their frame's time, gaps
invalid (never filled from far away), predictions one per video frame, left/right and explicit
video maps, drops named once, feature configs checked, centred smoothing."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from challenge_fixtures import write_av
from media_utils import face_frame

from extract.runner import RunOptions, run
from extract.store import open_store
from fuse import train
from fuse.data.align import Grid, align_mean, align_nearest
from fuse.data.dataset import FrameTiming, VideoRequest, load_fused
from fuse.data.features import FeatureSources, FeatureSpec
from fuse.data.grid import GridSpec
from fuse.data.videomap import VideoMap
from fuse.errors import FeatureMismatchError, LabelError
from fuse.labels.affwild2 import EXPR_CLASSES
from fuse.labels.base import VideoLabels
from fuse.post.smoothing import moving_average

CATALOG = {
    "meancolor": {"modality": "visual", "extractor": "test_mean_color", "dim": 6,
                  "input": {"face_size": 32}, "extras": {"gray": 1}},
    "fbank": {"modality": "audio", "extractor": "fbank", "dim": 80,
              "input": {"sample_rate": 16000, "window": 0.025, "hop": 0.01}, "rate": 100},
}
A, B = 0, 4  # Neutral, Happiness


# ------------------------------------------------------------------------ planted signal
def planted_video(root: Path, name: str, fps: int, n: int, change: int, back: int, gap: int,
                  split: str) -> None:
    """Label A, then B from frame ``change`` (right after ``gap`` faceless frames), then A
    from ``back``. The crop's colours and the audio's pitch both follow the label; the audio
    switches half a frame before each change."""
    label = np.full(n, A)
    label[change:back] = B
    frames = np.stack([face_frame(i, 64, 48) for i in range(n)])
    write_frames = root / "cropped_aligned" / name
    write_frames.mkdir(parents=True, exist_ok=True)
    import cv2

    missing = {0, 1, *range(change - gap, change), n - 1}  # leading, before the change, last
    for i in range(n):
        if i in missing:
            continue
        crop = face_frame(i, 32, 32)
        if label[i] == B:
            crop = crop[:, :, ::-1].copy()  # another colour: the visual signal
        cv2.imwrite(str(write_frames / f"{i + 1:05d}.jpg"), crop[:, :, ::-1])
    rate = 16000
    t = np.arange(int(n / fps * rate)) / rate
    frame_of_sample = np.floor(t * fps + 0.5).astype(int)  # switch half a frame early
    pitch = np.where(label[np.clip(frame_of_sample, 0, n - 1)] == B, 1500.0, 300.0)
    wav = 0.3 * np.sin(2 * np.pi * np.cumsum(pitch) / rate)
    write_av(root / "videos" / f"{name}.mp4", frames, fps, wav, rate)
    folder = root / "labels" / ("Validation_Set" if split == "val" else "Train_Set")
    folder.mkdir(parents=True, exist_ok=True)
    np.savetxt(folder / f"{name}.txt", label[:, None], fmt="%d",
               header=",".join(EXPR_CLASSES), comments="")


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("planted")
    specs = [("p0", 25, 75, 30, 55, 6, "train"), ("p1", 30, 80, 36, 60, 8, "train"),
             ("p2", 25, 70, 25, 50, 5, "train"), ("p3", 30, 90, 44, 70, 7, "train"),
             ("p4", 25, 75, 33, 58, 7, "val"), ("p5", 30, 84, 40, 66, 6, "val")]
    for spec in specs:
        planted_video(root, *spec)
    catalog = root / "features.yaml"
    catalog.write_text(yaml.safe_dump({"features": CATALOG}))
    for inputs, feats, extra in ((root / "cropped_aligned", ["meancolor"],
                                  {"videos": root / "videos"}),
                                 (root / "videos", ["fbank"], {})):
        summary = run(RunOptions(features=feats, input=inputs, store=str(root / "s.zarr"),
                                 workers=0, catalog=catalog, plugins=["runner_plugin"],
                                 progress=False, **extra))
        assert summary.exit_code == 0, summary.failures
    return root, {s[0]: s for s in specs}


def planted_run(root: Path, out: str, audio: list[str]):
    return train({
        "data": {"stores": [str(root / "s.zarr")], "visual": ["meancolor"], "audio": audio,
                 "segment_len": 40},
        "labels": {"path": str(root / "labels"), "format": "affwild2-expr"},
        "task": {"name": "expr"},
        "model": {"fusion_dim": 32, "dropout": 0.0, "head": [32],
                  "encoder": {"name": "identity"}},  # per frame: no context to lean on
        "train": {"epochs": 40, "batch_size": 4, "lr": 1e-2, "threads": 2},
        "post": {"smooth": False},
        "output": {"dir": str(root / out), "plots": False}})


@pytest.mark.parametrize("audio", [[], ["fbank"]], ids=["image", "image+audio"])
def test_label_after_a_faceless_gap_is_learnt_to_the_frame(planted, audio):
    """Image i and the audio at frame i's time predict label i; with audio every frame is
    right (the faceless ones too), with images alone every frame that has an image."""
    root, specs = planted
    result = planted_run(root, f"run_{len(audio)}", audio)
    for vid in ("p4", "p5"):
        _, fps, n, change, back, gap, _ = specs[vid]
        lines = (result.out_dir / "predictions" / "val" / f"{vid}.txt").read_text()
        pred = np.array([int(x) for x in lines.splitlines()[1:]])
        assert len(pred) == n  # one line per video frame, the faceless ones included
        truth = np.full(n, A)
        truth[change:back] = B
        assert pred[change] == B and pred[change - gap - 1] == A  # both sides of the gap
        has_image = open_store(root / "s.zarr").read_video("meancolor", vid).mask
        checked = np.ones(n, bool) if audio else has_image
        np.testing.assert_array_equal(pred[checked], truth[checked])  # to the frame


def test_rows_are_placed_at_their_frames_time(planted):
    """Label i gets the image of frame i and the audio row at frame i's time (both fps)."""
    root, specs = planted
    store = open_store(root / "s.zarr")
    sources = FeatureSources([store], ["meancolor", "fbank"])
    specs_ = [FeatureSpec("meancolor", "visual", "nearest"), FeatureSpec("fbank", "audio",
                                                                          "nearest")]
    for vid in ("p0", "p1"):
        _, fps, n, change, back, gap, _ = specs[vid]
        labels = VideoLabels(vid, np.zeros((n, 1), np.float32), np.ones((n, 1), bool),
                             frames=np.arange(n))
        data, _ = load_fused(sources, specs_, [VideoRequest(vid, "train", labels)],
                             level="frame", grid=GridSpec("labels"), fill="zero",
                             timing=FrameTiming("meancolor"))
        vis = store.read_video("meancolor", vid)
        np.testing.assert_allclose(data.times[0], vis.timestamps)  # the video's own clock
        assert data.lengths[0] == n and np.allclose(np.diff(data.times[0]), 1 / fps)
        valid_vis = data.valid[:n, 0]
        assert valid_vis.tolist() == vis.mask.tolist()  # gaps stay invalid, never borrowed
        assert not valid_vis[change - gap : change].any() and valid_vis[change]
        aud = store.read_video("fbank", vid)  # 100 Hz rows at window centres (12.5 ms on)
        near = np.abs(aud.timestamps[None, :] - vis.timestamps[:, None]).min(axis=1)
        # a frame's audio row is the one nearest its time, within half an audio row step;
        # frame 0 (t = 0) has none that near: invalid there, not borrowed from 12.5 ms
        np.testing.assert_array_equal(data.valid[:n, 1], near <= 0.005 + 1e-9)
        assert not data.valid[0, 1] and data.valid[1 : n - 1, 1].all()


# ---------------------------------------------------------------------------- alignment
def test_nearest_and_mean_mark_steps_in_a_gap_invalid():
    t = np.concatenate([np.arange(10), np.arange(30, 40)]) / 25  # a 20-frame gap of rows
    data = np.arange(20, dtype=np.float16)[:, None]
    grid = Grid.from_times(np.arange(45) / 25)
    for align in (align_nearest, align_mean):
        out = align(data, t, np.ones(20, bool), grid)
        assert out.valid[:10].all() and out.valid[30:40].all()
        assert not out.valid[10:30].any() and not out.valid[40:].any()
    wide = align_nearest(data, t, np.ones(20, bool), grid, tolerance=5.0)  # in row steps
    assert wide.valid[10:15].all() and wide.valid[25:30].all() and not wide.valid[15:25].any()


def test_centred_smoothing_keeps_a_ramp_in_place():
    x = np.arange(20, dtype=np.float64)[:, None]
    for window in (2, 3, 4, 5, 10):
        out = moving_average(x, window)
        half = window // 2
        np.testing.assert_allclose(out[half:-half, 0], x[half:-half, 0])  # no half-frame lag
    step = np.r_[np.zeros(10), np.ones(10)][:, None]
    np.testing.assert_allclose(moving_average(step, 4)[8:12, 0], [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(moving_average(np.ones((5, 1)), 4), np.ones((5, 1)))


# ----------------------------------------------------------------------- video map, drops
def test_video_map_csv_is_most_specific_first(tmp_path: Path):
    path = tmp_path / "map.csv"
    path.write_text("video,feature_video,applies_to\nclipA,rawA,audio\nclipA,bodyA,pose\n"
                    "clipB,rawB,\n")
    vm = VideoMap.load(path, aliases=lambda v: [v.split("_")[0]])
    assert vm.candidates("clipA", "egemaps", "audio") == ["rawA"]
    assert vm.candidates("clipA", "pose", "visual") == ["bodyA"]
    assert vm.candidates("clipA", "fer", "visual") == ["clipA"]
    assert vm.candidates("clipB", "fer", "visual") == ["rawB"]
    assert vm.candidates("x_left", "fer", "visual") == ["x_left", "x"]
    sample = VideoMap.load(Path(__file__).parents[1] / "data/labels/csv/video_map.csv")
    assert sample.candidates("clip_01", "egemaps", "audio") == ["session_01"]
    assert sample.candidates("clip_02", "fer", "visual") == ["session_01"]
    bad = tmp_path / "bad.csv"
    bad.write_text("video,feature_video\nclipA,\n")
    with pytest.raises(LabelError, match="bad.csv line 2"):
        VideoMap.load(bad)


def test_video_map_lets_labels_read_features_under_other_ids(tmp_path: Path, caplog):
    from fuse import check
    from fuse.synthetic import va_set

    s = va_set(tmp_path, videos=4, seconds=2.0, seed=1)
    store = open_store(s.store, "a")
    fa = store.read_video("aud", "video003")  # the audio of video003 stored as "raw003"
    store.write_video("aud", "raw003", fa.data, fa.timestamps, fa.mask)
    store.remove_video("aud", "video003")
    store.remove_video("aud", "video002")
    cfg = {"data": {"stores": [str(s.store)], "visual": ["vis"], "audio": ["aud"],
                    "drop_missing": True},
           "labels": {"path": str(s.labels), "format": "affwild2-va"},
           "task": {"name": "va"}, "output": {"dir": str(tmp_path / "r")}}
    with caplog.at_level(logging.WARNING):
        plan = check(cfg).raise_if_failed()
    assert sorted(plan.dropped) == ["video002", "video003"]
    assert "video002 (lacks aud), video003 (lacks aud)" in caplog.text  # named, once
    assert caplog.text.count("video002 (lacks aud)") == 1
    (tmp_path / "map.csv").write_text("video,feature_video,applies_to\nvideo003,raw003,aud\n")
    cfg["labels"]["video_map"] = str(tmp_path / "map.csv")
    plan = check(cfg).raise_if_failed()
    assert list(plan.dropped) == ["video002"]
    assert plan.sources.resolve("aud", "video003") == "raw003"
    assert plan.sources.resolve("vis", "video003") == "video003"


def test_grid_names_dropped_videos_once_per_command(tmp_path: Path, monkeypatch):
    from typer.testing import CliRunner

    import fuse.validate
    from fuse.cli import app
    from fuse.synthetic import va_set

    s = va_set(tmp_path, videos=4, seconds=2.0, seed=2)
    open_store(s.store, "a").remove_video("aud", "video002")
    monkeypatch.delenv(fuse.validate.DROPS_REPORTED_ENV, raising=False)
    messages = []
    monkeypatch.setattr(fuse.validate.log, "log",
                        lambda level, msg, *a: messages.append((level, msg % a)))
    result = CliRunner().invoke(app, [
        "grid", "--out", str(tmp_path / "grid"), "--store", str(s.store), "--labels",
        str(s.labels), "--label-format", "affwild2-va", "--task", "va",
        "--visual-sets", "vis", "--audio-sets", "aud", "--seeds", "0,1",
        "data.drop_missing=true", "train.epochs=1", "model.fusion_dim=8", "model.head=[8]",
        "model.encoder.hidden=8", "data.segment_len=20", "post.smooth=false"])
    assert result.exit_code == 0, result.output
    loud = [m for lvl, m in messages if lvl >= logging.WARNING and "video002" in m]
    assert len(loud) == 1 and "video002 (lacks aud)" in loud[0]  # two jobs, one message


# ------------------------------------------------------------------- feature config check
def test_saved_run_refuses_a_feature_with_another_config(tmp_path: Path):
    from fuse.saved import SavedRun
    from fuse.synthetic import va_set

    s = va_set(tmp_path, videos=4, seconds=2.0, seed=5)
    result = train({"data": {"stores": [str(s.store)], "visual": ["vis"], "audio": ["aud"],
                             "segment_len": 20},
                    "labels": {"path": str(s.labels), "format": "affwild2-va"},
                    "task": {"name": "va"},
                    "model": {"fusion_dim": 8, "head": [8], "encoder": {"name": "identity"}},
                    "train": {"epochs": 1}, "post": {"smooth": False},
                    "output": {"dir": str(tmp_path / "run"), "plots": False}})
    saved = SavedRun.load(result.out_dir)
    src = open_store(s.store)
    other = open_store(tmp_path / "other.zarr", "a")
    for name, dim in (("vis", 8), ("aud", 7)):  # aud: another width
        info = src.feature_info(name)
        other.ensure_feature(name, modality=info.modality, dim=dim, extractor=info.extractor,
                             config=info.config)
    saved.check_features(FeatureSources([src], ["vis", "aud"]))  # the training store: fine
    with pytest.raises(FeatureMismatchError, match="feature 'aud'.*dim 7.*dim 6"):
        saved.check_features(FeatureSources([other], ["vis", "aud"]))
