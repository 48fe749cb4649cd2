"""An audio feature with ``rate: frames`` gets windows centred on the sampled video frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import runner_plugin  # noqa: F401  (registers the test extractors here too)
import yaml
from media_utils import write_video

from extract.media.sampling import Sampling
from extract.media.video import frame_times
from extract.runner import RunOptions, run
from extract.store import FeatureStore

CATALOG = {
    "echo_frames": {"modality": "audio", "extractor": "test_echo_centers", "dim": 1,
                    "rate": "frames"},
    "echo_native": {"modality": "audio", "extractor": "test_echo_centers", "dim": 1, "rate": 10},
    "meancolor": {"modality": "visual", "extractor": "test_mean_color", "dim": 6,
                  "input": {"face_size": 32}, "extras": {"gray": 1}},
}


def _run(tmp_path: Path, features: list[str], sample: str) -> FeatureStore:
    catalog = tmp_path / "features.yaml"
    catalog.write_text(yaml.safe_dump({"features": CATALOG}))
    video = write_video(tmp_path / "in" / "v.mp4", 40, fps=25)
    summary = run(RunOptions(features=features, input=video.parent, store=str(tmp_path / "s"),
                             workers=0, catalog=catalog, detector="test_center",
                             plugins=["runner_plugin"], progress=False, sample=sample))
    assert summary.exit_code == 0
    return FeatureStore(tmp_path / "s")


def test_audio_rows_centred_on_sampled_frames(tmp_path: Path) -> None:
    store = _run(tmp_path, ["echo_frames", "echo_native", "meancolor"], "fps:10")
    frames = store.read_video("meancolor", "v").timestamps
    audio = store.read_video("echo_frames", "v")
    np.testing.assert_allclose(audio.timestamps, frames)  # one row per sampled frame
    np.testing.assert_allclose(audio.data[:, 0] + audio.attrs["source"]["audio_start"], frames,
                               atol=1e-3)
    native = store.read_video("echo_native", "v").timestamps
    assert len(native) != len(frames) and np.allclose(np.diff(native), 0.1)


def test_audio_only_run_still_finds_the_frames(tmp_path: Path) -> None:
    store = _run(tmp_path, ["echo_frames"], "count:7")
    everything = frame_times(tmp_path / "in" / "v.mp4")
    expected = everything[Sampling.parse("count:7").select(everything)]
    np.testing.assert_allclose(store.read_video("echo_frames", "v").timestamps, expected)
