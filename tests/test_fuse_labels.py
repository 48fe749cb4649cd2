"""Label adapters on the sample files in data/labels, invalid markers, splits, writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fuse.config import LabelConfig
from fuse.errors import LabelError
from fuse.labels import LABEL_FORMATS, Predictions, get_adapter
from fuse.labels.base import LabelSet, VideoLabels
from fuse.labels.splits import assign_splits

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "labels"
AFF = SAMPLES / "affwild2"


def load(fmt: str, path: Path, **kw):
    return get_adapter(fmt).load(LabelConfig(path=str(path), format=fmt, **kw))


def test_every_layout_is_registered():
    assert {"affwild2-va", "affwild2-expr", "affwild2-au", "hume", "csv"} <= set(LABEL_FORMATS)


def test_affwild2_va_marks_minus_five_invalid_and_takes_splits_from_folders():
    labels = load("affwild2-va", AFF / "VA_Estimation_Challenge")
    assert (labels.level, labels.kind, labels.targets) == ("frame", "regression",
                                                           ["valence", "arousal"])
    a = labels.videos["video_a"]
    assert a.split == "train" and labels.videos["video_b_left"].split == "val"
    assert a.values.shape == (12, 2)
    np.testing.assert_array_equal(np.flatnonzero(~a.valid[:, 0]), [3, 4])
    np.testing.assert_array_equal(a.frames, np.arange(12))


def test_affwild2_expr_and_au_mark_minus_one_invalid():
    expr = load("affwild2-expr", AFF / "EXPR_Classification_Challenge")
    assert expr.kind == "classification" and len(expr.targets) == 8
    np.testing.assert_array_equal(np.flatnonzero(~expr.videos["video_a"].valid[:, 0]), [6])
    au = load("affwild2-au", AFF / "AU_Detection_Challenge")
    assert au.kind == "multilabel" and au.videos["video_a"].values.shape == (12, 12)
    assert not au.videos["video_a"].valid[5].any() and au.videos["video_a"].valid[4].all()


def test_affwild2_wrong_header_names_the_file(tmp_path):
    (tmp_path / "v.txt").write_text("arousal,valence\n0.1,0.2\n")
    with pytest.raises(LabelError, match=r"v\.txt line 1: header"):
        load("affwild2-va", tmp_path)


def test_hume_with_partition_keeps_unlabelled_test_videos():
    labels = load("hume", SAMPLES / "hume" / "labels.csv",
                  partition=str(SAMPLES / "hume" / "partition.csv"))
    assert labels.level == "video" and len(labels.targets) == 7
    assert labels.videos["00000"].split == "train" and labels.videos["00004"].split == "val"
    test = labels.videos["00007"]
    assert test.split == "test" and not test.valid.any()


def test_generic_csv_layouts():
    frames = load("csv", SAMPLES / "csv" / "frames.csv")
    assert frames.level == "frame" and frames.targets == ["valence", "arousal"]
    assert not frames.videos["clip1"].valid[2, 0] and frames.videos["clip1"].valid[2, 1]
    videos = load("csv", SAMPLES / "csv" / "videos.csv", group_by="subject")
    assert videos.level == "video" and videos.videos["clip3"].group == "s1"
    classes = load("csv", SAMPLES / "csv" / "classes.csv", classes=["calm", "happy", "angry"])
    assert classes.kind == "classification"
    np.testing.assert_array_equal(classes.videos["clip2"].values[:, 0], [0, 1, 2, 0, 1])
    np.testing.assert_allclose(classes.videos["clip2"].times, [0, 0.5, 1, 1.5, 2])


def test_made_splits_are_grouped_and_deterministic():
    labels = load("csv", SAMPLES / "csv" / "videos.csv", group_by="subject")
    cfg = LabelConfig(group_by="subject", val_fraction=0.34, split_seed=3)
    first, second = assign_splits(labels, cfg), assign_splits(labels, cfg)
    assert first == second
    by_subject = {}
    for vid, split in first.items():
        by_subject.setdefault(labels.videos[vid].group, set()).add(split)
    assert all(len(s) == 1 for s in by_subject.values())  # a subject never spans two splits
    assert sorted(first.values()).count("val") == 2
    folds = [assign_splits(labels, LabelConfig(group_by="subject", folds=3, fold=k,
                                               fold_holdout="val")) for k in range(3)]
    val_sets = [{v for v, s in f.items() if s == "val"} for f in folds]
    assert set().union(*val_sets) == set(labels.videos) and sum(map(len, val_sets)) == 6
    # nested (the default): each fold's subject is the test split, val another subject
    nested = [assign_splits(labels, LabelConfig(group_by="subject", folds=3, fold=k))
              for k in range(3)]
    test_sets = [{v for v, s in f.items() if s == "test"} for f in nested]
    assert set().union(*test_sets) == set(labels.videos) and sum(map(len, test_sets)) == 6
    for f in nested:
        assert sorted(f.values()).count("val") == 2 and sorted(f.values()).count("train") == 2


def test_given_splits_win_unless_made():
    labels = load("affwild2-va", AFF / "VA_Estimation_Challenge")
    assert assign_splits(labels, LabelConfig()) == {"video_a": "train", "video_b_left": "val"}
    made = assign_splits(labels, LabelConfig(make_splits=True, val_fraction=0.5))
    assert sorted(made.values()) == ["train", "val"]


def test_writers_round_trip_the_affwild2_format(tmp_path):
    adapter = get_adapter("affwild2-va")
    preds = Predictions(["valence", "arousal"], "frame", "regression", ["v1"],
                        [np.array([[0.1, -0.2], [0.3, 0.4]])], [np.arange(2)], [None])
    files = adapter.write(preds, tmp_path / "out")
    assert files[0].read_text().splitlines()[0] == "valence,arousal"
    back = load("affwild2-va", tmp_path / "out")
    np.testing.assert_allclose(back.videos["v1"].values, [[0.1, -0.2], [0.3, 0.4]], atol=1e-6)
    table = adapter.write(preds, tmp_path / "all.csv")[0].read_text().splitlines()
    assert table[0] == "video,frame,valence,arousal"


def test_official_val_split_is_the_last_fold():
    labels = load("csv", SAMPLES / "csv" / "videos.csv", group_by="subject")
    for vid, lab in labels.videos.items():  # pretend the source split clip4 / clip5 off as val
        lab.split = "val" if vid in ("clip4", "clip5") else "train"
    cfg = dict(group_by="subject", folds=3, official_val_fold=True, fold_holdout="val")
    last = assign_splits(labels, LabelConfig(**cfg, fold=2))
    assert {v for v, s in last.items() if s == "val"} == {"clip4", "clip5"}
    others = [{v for v, s in assign_splits(labels, LabelConfig(**cfg, fold=k)).items()
               if s == "val"} for k in (0, 1)]
    assert others[0] | others[1] == {"clip0", "clip1", "clip2", "clip3"}
    assert not others[0] & others[1] and all(others)


def _labels_with_splits(splits: dict[str, str]) -> LabelSet:
    one = np.zeros((1, 1), np.float32)
    return LabelSet("csv", "video", "regression", ["y"], {
        v: VideoLabels(v, one, np.ones((1, 1), bool), split=s) for v, s in splits.items()})


def test_folds_resplit_train_and_val_but_keep_test():
    given = {f"v{i}": "test" if i < 3 else ("val" if i < 6 else "train") for i in range(12)}
    labels = _labels_with_splits(given)
    folds = [assign_splits(labels, LabelConfig(folds=3, fold=k, fold_holdout="val"))
             for k in range(3)]
    for f in folds:  # folds apply even though the labels give splits; test stays test
        assert {v for v, s in f.items() if s == "test"} == {"v0", "v1", "v2"}
    val_sets = [{v for v, s in f.items() if s == "val"} for f in folds]
    assert len({frozenset(s) for s in val_sets}) == 3  # the folds differ
    assert set().union(*val_sets) == {f"v{i}" for i in range(3, 12)}
