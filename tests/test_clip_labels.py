"""Label mistakes get one line naming the file, line, column and the fix; splits follow one
grouping rule; nested folds and LOSO hold a fold out as test and draw validation elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fuse.config import LabelConfig
from fuse.errors import LabelError
from fuse.labels import get_adapter
from fuse.labels.base import LabelSet, VideoLabels
from fuse.labels.splits import (
    assign_splits,
    check,
    fold_groups,
    fold_names,
    group_of,
    grouping,
    split_report,
)


def load(path: Path, **kw) -> LabelSet:
    return get_adapter("csv").load(LabelConfig(path=str(path), format="csv", **kw))


def write(tmp_path: Path, text: str, name: str = "labels.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def speech_csv(tmp_path: Path, speakers: int = 5, per: int = 8) -> Path:
    classes = ["angry", "happy", "neutral", "sad"]
    lines = ["video,speaker,emotion"]
    for s in range(speakers):
        for k in range(per):
            lines.append(f"s{s}_c{k},spk{s},{classes[k % 4]}")
    return write(tmp_path, "\n".join(lines) + "\n")


def test_label_file_mistakes_name_file_line_column_and_fix(tmp_path):
    def error(text: str, **kw) -> str:
        with pytest.raises(LabelError) as exc:
            load(write(tmp_path, text), **kw)
        assert "\n" not in str(exc.value)  # one line
        return str(exc.value)

    assert "no label rows, only the header" in error("video,arousal\n")
    assert "the file is empty" in error("")
    msg = error("video,arousal\nv1,\nv2,\n")
    assert "labels.csv: every value of ['arousal'] is empty or invalid" in msg
    msg = error("video,valence,arousal\nv1,0.1,\nv2,,\n")
    assert "target columns ['arousal'] have no value in any row" in msg
    msg = error("video,arousal\nv1,0.5\nv2,high\nv3,0.2\n", make_splits=True)
    assert "line 3, column 'arousal': could not convert 'high' to a number" in msg
    # class names without labels.classes: the values are listed with the fix
    msg = error("video,emotion\nv1,Angry\nv2,Happy\n")
    assert "'emotion' holds text" in msg and "labels.classes=[Angry,Happy]" in msg
    msg = error("video,emotion\nv1,Angry\nv2,Happy\n", targets=["emotion"])
    assert "line 2, column 'emotion': could not convert 'Angry'" in msg
    assert "set labels.classes=[Angry,Happy] and task.name=classification" in msg
    msg = error("video,emotion\nv1,Angry\nv2,Calm\n", classes=["Angry", "Happy"])
    assert "line 3, column 'emotion': class 'Calm' is not one of labels.classes" in msg
    msg = error("video,emotion\nv1,Angry\n", classes=["Angry"], group_by="speaker")
    assert "no column 'speaker' to group by (labels.group_by)" in msg


def test_forgetting_group_by_names_the_fix(tmp_path):
    path = speech_csv(tmp_path)
    with pytest.raises(LabelError, match="labels.group_by is not set, so splits would be made "
                       "per video, but column 'speaker' has 5 values repeated over 40 videos"):
        load(path, classes=["angry", "happy", "neutral", "sad"], folds="loso")
    # explicit choices are accepted, and the summary says which grouping was used
    by_video = load(path, classes=["angry", "happy", "neutral", "sad"], group_by="video")
    assert by_video.videos["s0_c0"].group is None
    labels = load(path, classes=["angry", "happy", "neutral", "sad"], group_by="speaker")
    assert labels.targets == ["angry", "happy", "neutral", "sad"]  # emotion found as the target
    assert grouping(labels, LabelConfig(group_by="speaker")) == "column 'speaker'"
    assert grouping(labels, LabelConfig(group_by="video")) == "video"
    # a labels file that gives its own splits makes none, so nothing to guess
    given = write(tmp_path, "video,speaker,split,y\na,s1,train,1\nb,s1,val,2\n", "given.csv")
    assert load(given).videos["a"].split == "train"


def test_grouping_rule_column_then_adapter_then_video():
    one = np.ones((1, 1), np.float32)

    def lab(group: str | None) -> VideoLabels:
        return VideoLabels("x", one, np.ones((1, 1), bool), group=group)

    labels = LabelSet("affwild2-va", "video", "regression", ["y"],
                      {"X_left": lab("X"), "X_right": lab("X"), "Y": lab(None)})
    assert group_of(labels, "X_left", LabelConfig()) == "X"  # the format's own group
    assert group_of(labels, "Y", LabelConfig()) == "Y"  # else the video itself
    assert group_of(labels, "X_left", LabelConfig(group_by="video")) == "X_left"
    assert grouping(labels, LabelConfig()) == "the affwild2-va label format's groups"
    splits = assign_splits(labels, LabelConfig(make_splits=True, val_fraction=0.5))
    assert splits["X_left"] == splits["X_right"]  # a pair never spans two splits


def test_nested_loso_holds_each_speaker_out_as_test(tmp_path):
    classes = ["angry", "happy", "neutral", "sad"]
    labels = load(speech_csv(tmp_path, speakers=5), classes=classes, group_by="speaker")
    cfg = dict(group_by="speaker", folds="loso", val_fraction=0.5)
    names = fold_names(labels, LabelConfig(**cfg))
    assert names == [f"spk{s}" for s in range(5)]
    seen_test = set()
    for k, name in enumerate(names):
        splits = assign_splits(labels, LabelConfig(**cfg, fold=k))
        per = {s: {v.split("_")[0] for v, x in splits.items() if x == s}
               for s in ("train", "val", "test")}
        assert per["test"] == {f"s{k}"}  # exactly the held-out speaker
        assert len(per["val"]) == 2 and not per["val"] & per["test"]  # val: other speakers
        assert per["train"] == {f"s{i}" for i in range(5)} - per["val"] - per["test"]
        seen_test |= per["test"]
        report = split_report(labels, splits, LabelConfig(**cfg, fold=k))
        assert report["grouped_by"] == "column 'speaker'" and report["test_groups"] == name
        assert "groups_in_test_and_training" not in report
    assert seen_test == {f"s{i}" for i in range(5)}
    # Train-Val-Mix: no validation drawn, the other speakers all train
    mixed = assign_splits(labels, LabelConfig(**cfg, fold=0), train_val_mix=True)
    assert "val" not in mixed.values()


def test_nested_val_draw_never_reads_the_held_out_labels(tmp_path):
    classes = ["angry", "happy", "neutral", "sad"]
    labels = load(speech_csv(tmp_path, speakers=6), classes=classes, group_by="speaker")
    cfg = LabelConfig(group_by="speaker", folds=3, fold=1, val_fraction=0.25)
    before = assign_splits(labels, cfg)
    test = [v for v, s in before.items() if s == "test"]
    rng = np.random.default_rng(0)
    for v in test:  # shuffle the held-out fold's labels: the splits must not move
        labels.videos[v].values[:] = rng.integers(0, 4)
    assert assign_splits(labels, cfg) == before
    _, folds = fold_groups(labels, cfg)
    assert sorted(g for f in folds for g in f) == [f"spk{s}" for s in range(6)]


def test_stratified_val_draw_balances_classes():
    classes = ["a", "b"]
    videos = {}
    for s in range(8):  # speakers 0-3 only say "a", 4-7 only "b"
        for k in range(3):
            cls = 0 if s < 4 else 1
            videos[f"s{s}_{k}"] = VideoLabels(f"s{s}_{k}", np.array([[cls]], np.float32),
                                              np.ones((1, 1), bool), group=f"spk{s}")
    labels = LabelSet("csv", "video", "classification", classes, videos)
    for fold in range(4):
        splits = assign_splits(labels, LabelConfig(group_by="spk", folds=4, fold=fold,
                                                   val_fraction=0.34))
        val = [int(labels.videos[v].values[0, 0]) for v, s in splits.items() if s == "val"]
        assert sorted(set(val)) == [0, 1], (fold, val)  # both classes in validation


def test_fold_config_problems_are_reported():
    assert "labels.folds: use a number of folds (>= 2), loso, or 0; got 'lso'" in check(
        LabelConfig(folds="lso"))[0]
    assert "labels.fold: must be in [0, folds=3), got 3" in check(LabelConfig(folds=3, fold=3))[0]
    assert "set labels.fold_holdout=val" in check(LabelConfig(folds=3, official_val_fold=True))[0]
    assert "fold_holdout: 'train' is not one of test, val" in check(
        LabelConfig(fold_holdout="train"))[0]


def test_validate_describes_one_class_column(tmp_path):
    from fuse.validate import _describe_targets

    labels = load(speech_csv(tmp_path), classes=["angry", "happy", "neutral", "sad"],
                  group_by="speaker")
    assert _describe_targets(labels) == "1 class column, 4 classes"
