"""The README's Aff-Wild2 and Hume-Reaction quickstarts, run as written on mini data sets made
here, and their submissions checked with ``fuse check-submission``.

Only speed settings are appended (``--workers 0`` for extraction; tiny model sizes and two
epochs for training); the commands, paths and flags are the README's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from challenge_fixtures import make_affwild2, make_hume, readme_commands
from typer.testing import CliRunner

from extract.cli import app as extract_app
from extract.media.video import frame_times
from extract.store import open_store
from fuse.cli import app as fuse_app

TINY = ["model.fusion_dim=16", "model.proj_dim=0", "model.head=[16]",
        "model.encoder.hidden=16", "model.encoder.heads=2", "model.encoder.ff_dim=32",
        "model.encoder.layers=1", "train.epochs=2", "train.batch_size=4", "train.lr=3e-3",
        "data.segment_len=32", "post.windows=1,5", "train.threads=2"]
SPEED = {("extract", "run"): ["--workers", "0", "--no-progress"], ("fuse", "train"): TINY}


def run_readme_command(cmd: list[str]):
    """One README command in this process (same CLI apps as the console scripts)."""
    assert cmd[0] in ("extract", "fuse"), cmd
    app = extract_app if cmd[0] == "extract" else fuse_app
    args = [*cmd[1:], *SPEED.get((cmd[0], cmd[1]), [])]
    return CliRunner().invoke(app, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def affwild2_done(tmp_path_factory: pytest.TempPathFactory):
    """The mini Aff-Wild2 after every command of the README's quickstart."""
    root = tmp_path_factory.mktemp("affwild2")
    data = make_affwild2(root)
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    try:
        commands = readme_commands("Quickstart: Aff-Wild2")
        assert [c[:2] for c in commands].count(["fuse", "check-submission"]) == 3
        for cmd in commands:
            result = run_readme_command(cmd)
            assert result.exit_code == 0, (cmd, result.output)
    finally:
        mp.undo()
    return data


@pytest.mark.parametrize("task", ["va", "expr", "au"])
def test_affwild2_submission_has_one_line_per_video_frame(affwild2_done, task):
    root = affwild2_done.root
    files = sorted((root / "submission" / task).glob("*.txt"))
    # every crop id, the unlabelled test video included, with its own video's frame count
    assert {f.stem for f in files} == set(affwild2_done.frames)
    for f in files:
        base = f.stem.replace("_left", "").replace("_right", "")
        video = next((root / "videos").glob(f"{base}.*"))
        lines = f.read_text().splitlines()
        assert len(lines) - 1 == len(frame_times(video)) == affwild2_done.frames[f.stem]
    header = {"va": "valence,arousal", "expr": "Neutral,Anger,Disgust,Fear,Happiness,Sadness,"
              "Surprise,Other", "au": "AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26"}
    assert files[0].read_text().splitlines()[0] == header[task]


def test_affwild2_left_right_keep_their_audio_and_val_files_are_full_length(affwild2_done):
    root = affwild2_done.root
    metrics = json.loads((root / "runs" / "va1" / "metrics.json").read_text())
    assert metrics["dropped_videos"] == []  # vidB_left / vidB_right read vidB's egemaps
    store = open_store(root / "affwild2.zarr")
    assert {"vidB_left", "vidB_right"} <= store.complete_set("fer")
    assert "vidB" in store.complete_set("egemaps") and "vidB_left" not in store.complete_set(
        "egemaps")
    val = (root / "runs" / "va1" / "predictions" / "val" / "vidC.txt").read_text().splitlines()
    assert len(val) - 1 == affwild2_done.frames["vidC"]  # annotations have one line more
    recorded = json.loads((root / "runs" / "va1" / "features.json").read_text())
    assert recorded["egemaps"]["fingerprint"] == store.feature_info("egemaps").fingerprint


def test_predict_refuses_a_store_whose_feature_has_another_config(affwild2_done, tmp_path):
    root = affwild2_done.root
    src = open_store(root / "affwild2.zarr")
    other = open_store(tmp_path / "other.zarr", "a")
    for name in ("fer", "fer.probs", "egemaps"):
        info = src.feature_info(name)
        config = dict(info.config)
        if name == "egemaps":
            config["options"] = {**config.get("options", {}), "level": "lld", "note": "other"}
        other.ensure_feature(name, modality=info.modality, dim=info.dim,
                             extractor=info.extractor, config=config, dtype=info.dtype)
        for vid in src.videos(name):
            fa = src.read_video(name, vid)
            other.write_video(name, vid, fa.data, fa.timestamps, fa.mask)
    result = CliRunner().invoke(fuse_app, ["predict", "--run", str(root / "runs" / "va1"),
                                           "--store", str(tmp_path / "other.zarr"),
                                           "--out", str(tmp_path / "sub")])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "feature 'egemaps'" in text and "was trained on" in text and "note" in text
    assert not (tmp_path / "sub").exists()


def test_check_submission_catches_a_short_file(affwild2_done, tmp_path):
    root = affwild2_done.root
    bad = tmp_path / "va"
    bad.mkdir()
    for f in (root / "submission" / "va").glob("*.txt"):
        (bad / f.name).write_text(f.read_text())
    lines = (bad / "vidA.txt").read_text().splitlines()
    (bad / "vidA.txt").write_text("\n".join(lines[:-3]) + "\n")  # lost the last 3 frames
    (bad / "vidC.txt").write_text("valence,arousal\n" + "0.1,1.5\n" * 66)  # out of range
    result = CliRunner().invoke(fuse_app, ["check-submission", str(bad), "--task", "va",
                                           "--videos", str(root / "videos")])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "vidA.txt: 57 prediction lines, but the video has 60 frames" in text
    assert "vidC.txt line 2, column 2: 1.5 is outside [-1, 1]" in text


def test_hume_quickstart_every_test_id_gets_a_row(tmp_path: Path, monkeypatch):
    tests = make_hume(tmp_path)
    monkeypatch.chdir(tmp_path)
    for cmd in readme_commands("Quickstart: Hume-Reaction"):
        result = run_readme_command(cmd)
        assert result.exit_code == 0, (cmd, result.output)
    rows = (tmp_path / "submission" / "eri.csv").read_text().splitlines()
    assert rows[0] == ("File_ID,Adoration,Amusement,Anxiety,Disgust,Empathic-Pain,Fear,"
                       "Surprise")
    assert sorted(r.split(",")[0] for r in rows[1:]) == sorted(tests)
    values = np.array([r.split(",")[1:] for r in rows[1:]], float)
    assert values.shape == (len(tests), 7) and ((values >= 0) & (values <= 1)).all()
