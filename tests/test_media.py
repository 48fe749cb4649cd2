"""Decoding: real timestamps (variable frame rate), sampling, audio to 16 kHz mono, real clips."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from media_utils import write_audio, write_image_folder, write_video

from extract.errors import ConfigError, MediaError, NoAudioStreamError
from extract.media.audio import read_audio
from extract.media.images import iter_image_frames
from extract.media.sampling import Sampling
from extract.media.video import frame_times, iter_frames, probe, read_frames

VFR_MS = [0, 40, 80, 200, 240, 500, 520, 540, 1000, 1040, 1100, 1500]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    write_video(root / "cfr.mp4", 50, fps=25)
    write_video(root / "vfr.mkv", len(VFR_MS), pts_ms=VFR_MS)
    write_video(root / "vfr.mp4", len(VFR_MS), pts_ms=VFR_MS)
    write_video(root / "silent.mp4", 10, audio=False)
    write_audio(root / "tone.wav", 1.5, rate=44100, channels=2)
    write_audio(root / "tone.m4a", 1.5, rate=22050, channels=1)
    return root


@pytest.mark.parametrize("name", ["vfr.mkv", "vfr.mp4"])
def test_variable_frame_rate_timestamps(media: Path, name: str) -> None:
    fb = read_frames(media / name)
    np.testing.assert_allclose(fb.times, np.array(VFR_MS) / 1000, atol=1e-6)
    np.testing.assert_array_equal(fb.indices, np.arange(len(VFR_MS)))
    np.testing.assert_allclose(frame_times(media / name), np.array(VFR_MS) / 1000, atol=1e-6)


def test_constant_rate_and_batches(media: Path) -> None:
    batches = list(iter_frames(media / "cfr.mp4", batch_size=16))
    assert [len(b.frames) for b in batches] == [16, 16, 16, 2]
    times = np.concatenate([b.times for b in batches])
    np.testing.assert_allclose(times, np.arange(50) / 25, atol=1e-6)
    assert batches[0].frames.shape[1:] == (72, 96, 3) and batches[0].frames.dtype == np.uint8
    info = probe(media / "cfr.mp4")
    assert (info.width, info.height, info.fps, info.has_audio) == (96, 72, 25.0, True)


def test_sampling_policies(media: Path) -> None:
    every = read_frames(media / "cfr.mp4", Sampling.parse("all"))
    assert len(every.times) == 50
    five = read_frames(media / "cfr.mp4", Sampling.parse("fps:5"))
    np.testing.assert_allclose(five.times, np.arange(0, 1.97, 0.2), atol=1e-6)
    count = read_frames(media / "cfr.mp4", Sampling.parse("count:7"))
    assert len(count.times) == 7 and count.indices[0] == 0 and count.indices[-1] == 49
    vfr = read_frames(media / "vfr.mkv", Sampling.parse("fps:2"))
    assert np.all(np.isin(np.round(vfr.times * 1000), VFR_MS))  # real frames, never invented
    assert str(Sampling.parse("fps:2.5")) == "fps:2.5"
    for bad in ("fps:0", "count:2.5", "every:3", "fps:x"):
        with pytest.raises(ConfigError, match="sampling"):
            Sampling.parse(bad)


@pytest.mark.parametrize("name,seconds", [("tone.wav", 1.5), ("tone.m4a", 1.5), ("cfr.mp4", 2.0)])
def test_audio_resampled_to_16k_mono(media: Path, name: str, seconds: float) -> None:
    audio = read_audio(media / name)
    assert audio.sample_rate == 16000 and audio.wav.ndim == 1 and audio.wav.dtype == np.float32
    assert abs(audio.duration - seconds) < 0.05
    assert audio.start >= 0 and 0.01 < np.abs(audio.wav).max() <= 1.0
    # The 220 Hz fundamental survives resampling (peak of the spectrum near 220 Hz).
    spec = np.abs(np.fft.rfft(audio.wav[: 16000]))
    freqs = np.fft.rfftfreq(16000, 1 / 16000)
    assert abs(freqs[spec.argmax()] - 220) < 5


def test_no_audio_stream(media: Path) -> None:
    with pytest.raises(NoAudioStreamError, match="no audio stream"):
        read_audio(media / "silent.mp4")
    with pytest.raises(MediaError, match="cannot open"):
        read_audio(media / "missing.mp4")


def test_image_folder_times(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "v", 8, skip=(3,))
    batches = list(iter_image_frames(folder, fps=30, batch_size=4))
    times = np.concatenate([b.times for b in batches])
    np.testing.assert_allclose(times, np.array([0, 1, 3, 4, 5, 6, 7]) / 30)
    assert np.concatenate([b.indices for b in batches]).tolist() == [1, 2, 4, 5, 6, 7, 8]


# ------------------------------------------------------------------- real clips (../shared)
def _manifest(folder: Path) -> list[dict[str, str]]:
    with (folder / "manifest.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def egemaps():
    from extract.catalog import load_catalog
    from extract.extractors.base import create

    extractor = create(load_catalog()["egemaps"])
    extractor.load()
    return extractor


@pytest.mark.parametrize("corpus", ["grid", "cremad"])
def test_shared_clips_decode_and_get_egemaps(shared_media: Path, corpus: str, egemaps) -> None:
    folder = shared_media / corpus
    rows = _manifest(folder)
    assert rows
    for row in rows:
        path = folder / Path(row["file"]).name  # cremad's manifest names them data/<file>
        expected = int(row["decoded_frames"] or 0)
        if expected:
            frames = sum(len(b.times) for b in iter_frames(path, batch_size=256))
            assert frames == expected, path.name
        audio = read_audio(path)
        out = egemaps.extract(audio.wav)
        times = out.times + audio.start
        duration = float(row["duration_s"])
        assert out.values[""].shape == (len(times), 25)
        assert times[0] <= 0.05 and times[-1] >= duration - 0.1, path.name
        assert abs(len(times) - duration * 100) <= 8, path.name
        assert np.all(np.diff(times) >= 0) and out.mask.all()
