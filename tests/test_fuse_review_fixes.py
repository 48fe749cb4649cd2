"""Defects a review found in fuse, each pinned by a test that failed before its fix:
pooled folds with unlabelled videos, Train-Val-Mix predict / eval, predict's candidate videos,
true labels beside Hume ids, per-group normalisation, ids read as text, macro F1, frame-folder
tolerances, references that do not start at frame 0, ERI clipping, VA validity, made splits
that would leak a speaker into test."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from extract.store import open_store
from fuse import check, evaluate, predict, train
from fuse.config import LabelConfig, TaskConfig
from fuse.data.align import Grid, align_nearest
from fuse.data.dataset import FusedData, VideoRequest, load_fused
from fuse.data.features import FeatureSources, FeatureSpec
from fuse.data.grid import GridNotes, GridSpec, frame_grid, reference_clock
from fuse.data.videomap import VideoMap
from fuse.errors import DataError, LabelError, RunError
from fuse.labels.affwild2 import EXPR_CLASSES, AffWild2VA
from fuse.labels.base import Predictions
from fuse.labels.generic import GenericCSV
from fuse.labels.hume import EMOTIONS, HumeReaction
from fuse.labels.splits import assign_splits
from fuse.labels.writers import write_csv
from fuse.outputs.submission import check_submission
from fuse.outputs.truth import add_truth
from fuse.synthetic import eri_set
from fuse.synthetic_clips import speech_set
from fuse.tasks import build_task, metrics

TINY = {"fusion_dim": 8, "head": [8]}


# ------------------------------------------------- 1. pooled folds with unlabelled videos
@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Three speakers; two clips have no label (unlabelled test ids, empty CSV cells)."""
    c = speech_set(tmp_path_factory.mktemp("speech"), speakers=3, clips_per_class=2)
    table = pd.read_csv(c.labels, dtype=str)
    table.loc[[0, 9], "emotion"] = None
    table.to_csv(c.labels, index=False)
    return c, sorted(table.loc[[0, 9], "video"])


def svm_grid(c) -> dict:
    spec = yaml.safe_load(c.grid.read_text())
    spec["cells"] = [cell for cell in spec["cells"] if cell.get("encoder") == "svm"][:1]
    return spec


def test_unlabelled_videos_are_predicted_by_every_fold_but_pooled_by_none(speech, tmp_path):
    from fuse.experiments.grid import load_grid
    from fuse.experiments.runner import run_grid

    c, unlabelled = speech
    outcome = run_grid(load_grid(svm_grid(c)), tmp_path / "g", progress=False)
    assert outcome.ok and not outcome.pool_errors, outcome.tables.get("pool_errors")
    (pooled,) = outcome.tables["pooled"].values()
    labelled = len(pd.read_csv(c.labels).dropna(subset=["emotion"]))
    assert pooled.folds == 3 and pooled.videos == labelled
    table = pd.read_csv(pooled.files["predictions"])
    assert not set(unlabelled) & set(table["video"])
    assert table["video"].is_unique
    # every fold predicted the unlabelled clips (kept for prediction) ...
    fold_files = sorted((tmp_path / "g" / "jobs").rglob("predictions/test.csv"))
    assert len(fold_files) == 3
    for path in fold_files:
        assert set(unlabelled) <= set(pd.read_csv(path)["video"])
    # ... and the pooled score is the task's metric on the labelled test predictions
    true, pred = table["true_class"].to_numpy(), table["pred_class"].to_numpy()
    assert pooled.metrics["uar"] == pytest.approx(metrics.uar(pred, true, 4), abs=1e-12)
    assert "Pooling FAILED" not in (tmp_path / "g" / "ranking.md").read_text()


def test_a_pool_that_fails_fails_the_grid(speech, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import fuse.experiments.pooled as pooled_module
    from fuse.cli import app

    c, _ = speech

    def broken(*args, **kwargs):
        raise RunError("video 'x' is held out in fold a and in fold b")

    monkeypatch.setattr(pooled_module, "pool_runs", broken)
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(svm_grid(c)))
    result = CliRunner().invoke(app, ["grid", "--grid", str(grid_file), "--out",
                                      str(tmp_path / "g")])
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "pooling failed" in text and "held out in fold a and in fold b" in text
    ranking = (tmp_path / "g" / "ranking.md").read_text()
    assert ranking.startswith("**Pooling FAILED** for 1 cell/seed(s)")
    failures = json.loads((tmp_path / "g" / "failures.json").read_text())
    assert failures and "held out in fold a" in failures[0]["error"]


# ---------------------------------------------------- 2. Train-Val-Mix predict and eval
def tvm_config(s, out: Path, **train_opts) -> dict:
    return {"data": {"stores": [str(s.store)], "visual": ["vit"], "audio": ["spec"]},
            "labels": {"path": str(s.labels), "partition": str(s.partition), "format": "hume",
                       "train_val_mix": True},
            "task": {"name": "eri"}, "model": TINY,
            "train": {"epochs": 5, "threads": 1, "lr": 0.01, "snapshot_epochs": [2, 5],
                      "snapshot_targets": {"Fear": [4, 5]}, **train_opts},
            "output": {"dir": str(out), "plots": False}}


@pytest.fixture(scope="module")
def eri(tmp_path_factory):
    return eri_set(tmp_path_factory.mktemp("eri"), videos=30, seconds=2.0)


def test_train_val_mix_predict_and_eval_give_the_runs_own_outputs(eri, tmp_path):
    # keep=none: best.pt and last.pt go, the snapshots stay and are all predict needs
    result = train(tvm_config(eri, tmp_path / "run", keep="none"))
    assert not (result.out_dir / "best.pt").exists()
    own = pd.read_csv(result.out_dir / "predictions" / "test.csv", dtype={"File_ID": str})
    predict(result.out_dir, [str(eri.store)], tmp_path / "sub.csv", split="test")
    again = pd.read_csv(tmp_path / "sub.csv", dtype={"File_ID": str})
    assert list(again["File_ID"]) == list(own["File_ID"]) and len(own) == 6
    np.testing.assert_allclose(again[EMOTIONS].to_numpy(), own[EMOTIONS].to_numpy(), atol=2e-6)
    scores = evaluate(result.out_dir, "train")
    assert scores["score"] == pytest.approx(result.metrics["train"]["score"], abs=1e-6)
    # the default clip keeps ERI outputs in [0, 1]: the tool's own submission passes
    assert check_submission(tmp_path / "sub.csv", "eri", partition=eri.partition).ok


def test_train_val_mix_without_its_snapshots_is_refused(eri, tmp_path):
    result = train(tvm_config(eri, tmp_path / "run", keep_snapshots=False))
    assert not list((result.out_dir / "snapshots").glob("*.pt"))
    for call in (lambda: predict(result.out_dir, [str(eri.store)], tmp_path / "p.csv"),
                 lambda: evaluate(result.out_dir, "train")):
        with pytest.raises(RunError, match="Train-Val-Mix run.*keep_snapshots=false.*"
                                           "retrain with train.keep_snapshots=true"):
            call()


# -------------------------------------------------------- 3. predict's candidate videos
def write_pair_store(root: Path, scene: bool = False) -> Path:
    """Crops ``fer`` under X_left / X_right / vidA, audio ``aud`` (and ``scene``) under X /
    vidA, on each video's own clock; EXPR labels for every crop id."""
    rng = np.random.default_rng(0)
    st = open_store(root / "s.zarr", "a")
    st.ensure_feature("fer", modality="visual", dim=4, extractor="synthetic", config={"k": 1})
    st.ensure_feature("aud", modality="audio", dim=3, extractor="synthetic", config={"k": 2})
    if scene:
        st.ensure_feature("scene", modality="visual", dim=2, extractor="synthetic",
                          config={"k": 3})
    for base, fps, n, split in (("vidA", 25, 50, "Train_Set"), ("X", 30, 60, "Train_Set"),
                                ("vidC", 30, 40, "Validation_Set")):
        t = np.arange(n) / fps
        attrs = {"frame_rows": "all", "source_frames": n, "source_fps": fps}
        m = int(n / fps * 100)
        st.write_video("aud", base, rng.standard_normal((m, 3)).astype(np.float16),
                       (np.arange(m) + 0.5) / 100)
        if scene:
            st.write_video("scene", base, rng.standard_normal((n, 2)).astype(np.float16), t,
                           extra_attrs=attrs)
        for crop in ([f"{base}_left", f"{base}_right"] if base == "X" else [base]):
            lab = np.arange(n) // 10 % 8
            st.write_video("fer", crop, (np.eye(8)[lab][:, :4] * 2).astype(np.float16), t,
                           extra_attrs=attrs)
            path = root / "labels" / split / f"{crop}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savetxt(path, lab[:, None], fmt="%d", header=",".join(EXPR_CLASSES),
                       comments="")
    return root / "s.zarr"


def test_predict_candidates_do_not_depend_on_feature_order(tmp_path):
    from fuse.api import predictable
    from fuse.labels.affwild2 import AffWild2Expr

    store = write_pair_store(tmp_path, scene=True)
    aliases = AffWild2Expr().aliases
    for order in (["scene", "fer", "aud"], ["fer", "scene", "aud"], ["aud", "scene", "fer"]):
        sources = FeatureSources([str(store)], order, VideoMap(aliases=aliases))
        videos, dropped = predictable(sources)
        assert videos == ["X_left", "X_right", "vidA", "vidC"], order
        assert dropped == {}, order  # X is read by X_left / X_right, not left out
    # a crop without X's audio is named with what it really lacks
    st = open_store(store, "a")
    st.remove_video("aud", "vidC")
    sources = FeatureSources([str(store)], ["scene", "fer", "aud"], VideoMap(aliases=aliases))
    assert predictable(sources)[1] == {"vidC": ["aud"]}


def test_audio_only_run_predicts_left_and_right_not_the_raw_video(tmp_path):
    store = write_pair_store(tmp_path)
    cfg = {"data": {"stores": [str(store)], "audio": ["aud"], "segment_len": 16},
           "labels": {"path": str(tmp_path / "labels"), "format": "affwild2-expr", "fps": 30},
           "task": {"name": "expr"}, "model": {**TINY, "encoder": {"name": "identity"}},
           "train": {"epochs": 1, "batch_size": 4, "threads": 1}, "post": {"smooth": False},
           "output": {"dir": str(tmp_path / "run"), "plots": False}}
    result = train(cfg)
    files = predict(result.out_dir, [str(store)], tmp_path / "sub")
    assert sorted(f.name for f in files) == ["X_left.txt", "X_right.txt", "vidA.txt",
                                             "vidC.txt"]
    # the checker, given the label ids (the annotation folder), catches a missing video
    (tmp_path / "sub" / "X_right.txt").unlink()
    report = check_submission(tmp_path / "sub", "expr", expect=tmp_path / "labels")
    assert report.problems == [f"{tmp_path / 'sub'}: no prediction file for X_right "
                               "(X_right.txt)"]
    assert check_submission(tmp_path / "sub", "expr",
                            expect=tmp_path / "labels" / "Validation_Set").ok


def test_checker_refuses_the_raw_id_of_a_split_video(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    for name in ("X_left", "X_right", "X", "vidA"):
        (sub / f"{name}.txt").write_text("Neutral,Anger,Disgust,Fear,Happiness,Sadness,"
                                         "Surprise,Other\n0\n3\n")
    report = check_submission(sub, "expr")
    assert report.problems == [f"{sub / 'X.txt'}: X is split into X_left / X_right (two "
                               "persons), which have files here; the challenge has no X"]
    (sub / "X.txt").unlink()
    assert check_submission(sub, "expr").ok


# ------------------------------------------------------------ 4. true labels, Hume ids
def test_true_labels_join_on_the_ids_the_file_writes(tmp_path):
    vids = ["00001", "00002"]
    y = np.array([[0.1] * 7, [0.9] * 7], np.float32)
    data = FusedData(["f"], [1], "video", vids, np.array(["val", "val"], object),
                     np.array([0, 1]), np.array([1, 1]), np.zeros((3, 1), np.float16),
                     np.zeros((3, 1), bool), [None, None], [None, None], y,
                     np.ones_like(y, bool))
    for ids in ({"00001": "[00001]", "00002": "[00002]"}, {}):
        preds = Predictions(EMOTIONS, "video", "regression", vids, [y[:1], y[1:]],
                            [None, None], [None, None], ids)
        path = tmp_path / "val.csv"
        write_csv(preds, path, id_column="File_ID")
        assert add_truth(path, data, np.arange(2), EMOTIONS, "regression", ids)
        table = pd.read_csv(path, dtype=str)
        assert list(table["File_ID"]) == [ids.get(v, v) for v in vids]  # not "1", "2"
        np.testing.assert_allclose(table["true_Adoration"].astype(float), [0.1, 0.9])


# ------------------------------------------------------------- 5. per-group normalising
def test_group_normalisation_needs_a_real_group_for_every_video(tmp_path):
    s = eri_set(tmp_path, videos=12, seconds=1.0)
    table = pd.read_csv(s.labels, dtype=str)
    table["subject"] = [f"s{i % 3}" for i in range(len(table))]
    table.to_csv(s.labels, index=False)
    cfg = {"data": {"stores": [str(s.store)], "visual": ["vit"], "audio": ["spec"],
                    "normalize": "group"},
           "labels": {"path": str(s.labels), "partition": str(s.partition), "format": "hume",
                      "group_by": "subject"},
           "task": {"name": "eri"}, "model": TINY, "output": {"dir": str(tmp_path / "o")}}
    problems = check(cfg).problems
    assert len(problems) == 1 and "2 videos have no 'subject' value" in problems[0]
    assert "00010, 00011" in problems[0]  # the test ids, listed only in the partition
    # the partition may name them: then every video has its subject
    part = pd.read_csv(s.partition, dtype=str)
    part["subject"] = [f"s{i % 3}" for i in range(len(part))]
    part.to_csv(s.partition, index=False)
    plan = check(cfg).raise_if_failed()
    assert {r.video: r.group for r in plan.requests}["00010"] == "s1"
    # a video is never its own group
    cfg["labels"]["group_by"] = "video"
    assert any("labels.group_by=video makes every video its own group" in p
               for p in check(cfg).problems)


def test_group_normalisation_refuses_one_row_groups(tmp_path):
    c = speech_set(tmp_path, speakers=2, clips_per_class=1)
    sources = FeatureSources([str(c.store)], ["egemaps_func"])
    vids = sorted(sources.complete("egemaps_func"))
    kw = {"level": "video", "grid": GridSpec("steps", 4), "fill": "zero", "timing": None,
          "normalize": "group"}
    specs = [FeatureSpec("egemaps_func", "audio", "mean")]
    with pytest.raises(DataError, match="8 videos have no group"):
        load_fused(sources, specs, [VideoRequest(v, "train") for v in vids], **kw)
    with pytest.raises(DataError, match="single valid row, which z-scores to all zeros"):
        load_fused(sources, specs, [VideoRequest(v, "train", group=v) for v in vids], **kw)
    speakers = [VideoRequest(v, "train", group=v.split("_")[0]) for v in vids]
    data, _ = load_fused(sources, specs, speakers, **kw)
    assert np.abs(data.x[:-1].astype(np.float32)).max() > 0.5


# ------------------------------------------------------------------- 6. ids as text
def test_ids_are_read_as_text(tmp_path):
    labels = tmp_path / "h.csv"
    labels.write_text("File_ID," + ",".join(EMOTIONS) + "\n00001," + ",".join(["0.5"] * 7)
                      + "\n00002," + ",".join(["0.1"] * 7) + "\n")
    part = tmp_path / "p.csv"
    part.write_text("File_ID,Split\n00001,Train\n00002,Val\n00003,Test\n")
    hume = HumeReaction().load(SimpleNamespace(path=str(labels), partition=str(part),
                                               group_by=""))
    assert {v: (lab.split, bool(lab.valid.any())) for v, lab in hume.videos.items()} == {
        "00001": ("train", True), "00002": ("val", True), "00003": ("test", False)}
    csv = tmp_path / "g.csv"
    csv.write_text("video,speaker,y\n00001,007,0.5\n00002,007,0.1\n00003,010,0.3\n")
    generic = GenericCSV().load(LabelConfig(path=str(csv), group_by="speaker"))
    assert {v: lab.group for v, lab in generic.videos.items()} == {
        "00001": "007", "00002": "007", "00003": "010"}


# --------------------------------------------------------------------- minor defects
def test_macro_f1_counts_only_classes_in_labels_or_predictions():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        true, pred = rng.integers(0, 4, 30), rng.integers(0, 4, 30)
        true[true == 3] = 0
        pred[pred == 3] = 1  # class 3 in neither
        assert metrics.macro_f1(pred, true, 5) == pytest.approx(
            f1_score(true, pred, average="macro"))
    task = build_task(TaskConfig(name="classification"), ["a", "b", "c"])
    scores = task.score(np.eye(3)[[0, 1, 1]], np.array([[0], [1], [1]], np.float32),
                        np.ones((3, 1), bool))
    assert scores["f1"] == 1.0 and "f1/c" not in scores and scores["uar"] == 1.0


def test_frame_folder_tolerance_comes_from_its_recorded_frame_rate():
    from fuse.data.align import recorded_step

    # images 0, 2, 4, … of a 25 fps folder (every other one missing), without --videos
    t = np.arange(0, 20, 2) / 25
    attrs = {"frame_rows": "images", "source_fps": 25.0}
    grid = Grid.from_times(np.arange(19) / 25)
    data = np.ones((len(t), 2), np.float16)
    out = align_nearest(data, t, np.ones(len(t), bool), grid, step=recorded_step(attrs))
    assert out.valid.tolist() == [k % 2 == 0 for k in range(19)]
    assert recorded_step({"frame_rows": "sampled", "source_fps": 25.0}) is None


def test_frame_folder_gaps_stay_invalid_when_loaded(tmp_path):
    from fuse.data.dataset import FrameTiming
    from fuse.labels.base import VideoLabels

    st = open_store(tmp_path / "s.zarr", "a")
    st.ensure_feature("img", modality="visual", dim=2, extractor="synthetic", config={"k": 1})
    t = np.arange(0, 20, 2) / 25  # images 1, 3, 5, … of a 25 fps folder (--image-fps 25)
    st.write_video("img", "v", np.ones((len(t), 2), np.float16), t,
                   extra_attrs={"frame_rows": "images", "source_fps": 25.0})
    labels = VideoLabels("v", np.zeros((19, 1), np.float32), np.ones((19, 1), bool),
                         frames=np.arange(19))
    data, _ = load_fused(FeatureSources([str(tmp_path / "s.zarr")], ["img"]),
                         [FeatureSpec("img", "visual", "nearest")],
                         [VideoRequest("v", "train", labels)], level="frame",
                         grid=GridSpec("labels"), fill="zero", timing=FrameTiming("img"))
    assert data.valid[:-1, 0].tolist() == [k % 2 == 0 for k in range(19)]


def test_a_reference_that_starts_late_is_extended_back_or_refused():
    t = (10 + np.arange(20)) / 25  # rows of frames 10 … 29, no frame attributes
    notes = GridNotes()
    clock = reference_clock("v", {}, t, notes=notes)
    np.testing.assert_allclose(clock.times, np.arange(30) / 25, atol=1e-9)
    assert notes.late_start == ["v (first row at 0.400 s = frame 10)"]
    placed = frame_grid("v", clock, np.array([0, 12]), np.array([[1.0], [2.0]]),
                        np.ones((2, 1), bool), 5, GridNotes())
    np.testing.assert_allclose(placed.grid.times[[0, 12]], [0.0, 12 / 25], atol=1e-9)
    with pytest.raises(DataError, match="first row of reference is at 0.4160 s"):
        reference_clock("v", {}, t + 0.016)


def test_va_frame_with_one_invalid_value_is_invalid_for_both(tmp_path):
    path = tmp_path / "Train_Set" / "v.txt"
    path.parent.mkdir()
    path.write_text("valence,arousal\n0.5,-5\n-5,0.2\n0.1,0.3\n")
    lab = AffWild2VA().load(SimpleNamespace(path=str(tmp_path), partition="")).videos["v"]
    assert lab.valid.tolist() == [[False, False], [False, False], [True, True]]


def test_made_splits_never_put_a_speaker_in_test_and_training(tmp_path):
    path = tmp_path / "l.csv"
    rows = ["video,speaker,y,split"]
    rows += [f"a{i},A,{i},{'test' if i == 0 else ''}" for i in range(4)]
    rows += [f"{s}{i},{s.upper()},{i}," for s in "bcd" for i in range(4)]
    path.write_text("\n".join(rows) + "\n")
    cfg = LabelConfig(path=str(path), group_by="speaker", val_fraction=0.3, test_fraction=0.0)
    labels = GenericCSV().load(cfg)
    with pytest.raises(LabelError, match="1 groups .* in the test split and in training, "
                                         "e.g. 'A': test a0"):
        assign_splits(labels, cfg)
    # the same speaker given test for every video: made splits keep it out of training
    path.write_text(path.read_text().replace("A,1,\n", "A,1,test\n").replace(
        "A,2,\n", "A,2,test\n").replace("A,3,\n", "A,3,test\n"))
    splits = assign_splits(GenericCSV().load(cfg), cfg)
    assert {splits[f"a{i}"] for i in range(4)} == {"test"}


def test_eri_outputs_are_clipped_to_the_intensity_range_by_default():
    from fuse.post.pipeline import parse_clip

    task = build_task(TaskConfig(name="eri"), EMOTIONS)
    assert parse_clip("auto", task) == (0.0, 1.0)
    assert parse_clip("none", task) is None
