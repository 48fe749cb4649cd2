"""Frame folders on their video's own clock; unreadable images are invalid frames, never a
failed folder or a silently stored grey frame."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from media_utils import truncate, write_image_folder, write_video

from extract.errors import ConfigError, MediaError
from extract.media.clock import (
    ImageClockSettings,
    base_video,
    find_video,
    folder_clock,
    read_fps_table,
    video_clock,
)
from extract.media.images import iter_image_frames, read_image
from extract.media.video import frame_times
from extract.runner import RunOptions, run
from extract.store import FeatureStore

CATALOG = {"meancolor": {"modality": "visual", "extractor": "test_mean_color", "dim": 6,
                         "input": {"face_size": 32}, "extras": {"gray": 1}}}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "features.yaml"
    path.write_text(yaml.safe_dump({"features": CATALOG}))
    return path


def _run(catalog: Path, inputs: Path, store: Path, **kw):
    return run(RunOptions(features=["meancolor"], input=inputs, store=str(store), workers=0,
                          catalog=catalog, plugins=["runner_plugin"], progress=False,
                          batch_size=4, **kw))


def test_base_video_and_raw_video_lookup(tmp_path: Path) -> None:
    assert base_video("10-60-1280x720_left") == "10-60-1280x720"
    assert base_video("video_leftover") == "video_leftover"
    write_video(tmp_path / "batch1" / "X.avi", 5, audio=False)
    write_video(tmp_path / "Y.mp4", 5, audio=False)
    assert find_video(tmp_path, "X_right").name == "X.avi"  # any extension, any depth
    assert find_video(tmp_path, "Y").name == "Y.mp4"
    with pytest.raises(MediaError, match="no raw video named Z_left.* or Z.*"):
        find_video(tmp_path, "Z_left")


def test_fps_table_is_checked_row_by_row(tmp_path: Path) -> None:
    good = tmp_path / "fps.csv"
    good.write_text("video,fps\nA,25\nB,29.97\n")
    assert read_fps_table(good) == {"A": 25.0, "B": 29.97}
    bad = tmp_path / "bad.csv"
    bad.write_text("video,fps\nA,25\nB,fast\n")
    with pytest.raises(ConfigError, match=r"bad.csv line 3, column fps: 'fast'"):
        read_fps_table(bad)
    settings = ImageClockSettings(30.0, fps_table=tuple(read_fps_table(good).items()))
    assert folder_clock("A_left", settings).fps == 25.0
    with pytest.raises(MediaError, match="not in the --fps-table"):
        folder_clock("C", settings)


def test_folder_on_its_video_clock_has_one_row_per_video_frame(tmp_path: Path) -> None:
    video = write_video(tmp_path / "videos" / "X.mp4", 20, fps=25, audio=False)
    # images 1-2 missing (leading gap), 9-11 (middle), 19-20 (trailing): frames 0-1, 8-10, 18-19
    folder = write_image_folder(tmp_path / "crops" / "X_left", 20, size=32,
                                skip=(1, 2, 9, 10, 11, 19, 20))
    clock = video_clock(find_video(tmp_path / "videos", "X_left"))
    assert clock.frames == 20 and clock.fps == 25
    batches = list(iter_image_frames(folder, sampling=None, batch_size=6, clock=clock))
    times = np.concatenate([b.times for b in batches])
    valid = np.concatenate([b.valid for b in batches])
    np.testing.assert_allclose(times, frame_times(video))
    assert np.flatnonzero(~valid).tolist() == [0, 1, 8, 9, 10, 18, 19]
    frames = np.concatenate([b.frames for b in batches])
    assert not frames[~valid].any() and frames[valid].any()
    assert batches[0].source["source_frames"] == 20 and batches[1].source is None


def test_corrupt_and_truncated_images_are_invalid_frames_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = write_image_folder(tmp_path / "f", 8, size=32)
    truncate(folder / "00003.jpg", 0.5)
    (folder / "00005.jpg").write_bytes(b"not a jpeg at all")
    assert read_image(folder / "00001.jpg").shape == (32, 32, 3)
    with caplog.at_level(logging.WARNING):
        batches = list(iter_image_frames(folder, fps=25, batch_size=4))
    valid = np.concatenate([b.valid for b in batches])
    assert valid.tolist() == [True, True, False, True, False, True, True, True]
    text = caplog.text
    assert "00003.jpg: unreadable image" in text and "00005.jpg: unreadable image" in text


def test_extract_run_with_videos_and_unreadable_images(tmp_path: Path, catalog: Path) -> None:
    videos = tmp_path / "videos"
    write_video(videos / "A.mp4", 12, fps=25, audio=False)
    write_video(videos / "B.mkv", 15, fps=30, audio=False, seed=1)
    crops = tmp_path / "cropped_aligned"
    write_image_folder(crops / "A", 12, size=32, skip=(1, 6))
    write_image_folder(crops / "B_left", 15, size=32, skip=(15,))
    write_image_folder(crops / "B_right", 14, size=32)
    truncate(crops / "A" / "00004.jpg", 0.5)  # a truncated jpg: that frame is invalid
    summary = _run(catalog, crops, tmp_path / "s.zarr", videos=videos)
    assert summary.exit_code == 0 and summary.done == 3, summary.failures
    store = FeatureStore(tmp_path / "s.zarr")
    a = store.read_video("meancolor", "A")
    assert a.data.shape == (12, 6)
    np.testing.assert_allclose(a.timestamps, frame_times(videos / "A.mp4"))
    assert np.flatnonzero(~a.mask).tolist() == [0, 3, 5] and not a.data[~a.mask].any()
    assert a.attrs["source_frames"] == 12 and a.attrs["source_fps"] == 25
    assert a.attrs["frame_rows"] == "all" and a.attrs["source_video"].endswith("A.mp4")
    for side in ("B_left", "B_right"):  # both sides on B's own 30 fps clock
        b = store.read_video("meancolor", side)
        assert b.data.shape == (15, 6) and b.attrs["source_fps"] == 30
        np.testing.assert_allclose(b.timestamps, frame_times(videos / "B.mkv"))
        assert not b.mask[14]  # the trailing frame has no image
    # a folder without its raw video fails on its own (recorded, named), the others go on
    write_image_folder(crops / "C", 5, size=32)
    again = _run(catalog, crops, tmp_path / "s.zarr", videos=videos)
    assert again.exit_code == 1 and [f.video for f in again.failures] == ["C"]
    assert "no raw video named C.*" in again.failures[0].message


def test_fps_table_times_each_folder(tmp_path: Path, catalog: Path) -> None:
    crops = tmp_path / "crops"
    write_image_folder(crops / "A", 6, size=32, skip=(3,))
    write_image_folder(crops / "B", 6, size=32)
    table = tmp_path / "fps.csv"
    table.write_text("video,fps\nA,25\nB,10\n")
    summary = _run(catalog, crops, tmp_path / "s.zarr", fps_table=table)
    assert summary.exit_code == 0, summary.failures
    store = FeatureStore(tmp_path / "s.zarr")
    a = store.read_video("meancolor", "A")
    np.testing.assert_allclose(a.timestamps, np.array([0, 1, 3, 4, 5]) / 25)
    assert a.attrs["frame_rows"] == "images" and a.attrs["source_frames"] is None
    np.testing.assert_allclose(store.read_video("meancolor", "B").timestamps, np.arange(6) / 10)
    with pytest.raises(ConfigError, match="give one"):
        RunOptions(features=["meancolor"], input=crops, store=str(tmp_path / "x.zarr"),
                   videos=tmp_path, fps_table=table).validate()
