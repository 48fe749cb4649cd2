"""Clip-level runs end to end on a synthetic speech emotion corpus (4 speakers with planted
per-speaker offsets, 4 classes): leave-one-speaker-out grids with an SVM on functionals and an
LSTM on LLDs, pooled metrics recomputed from the saved predictions, selection that never sees
the held-out speaker, confusion matrices, true labels beside predictions, checkpoint pruning,
Train-Val-Mix without a val split, per-target snapshot windows, AU selection thresholds."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from fuse import train
from fuse.cli import app
from fuse.outputs.raw import RawOutputs, outputs_path
from fuse.synthetic_clips import speech_set
from fuse.tasks import metrics

CLASSES = ["angry", "happy", "neutral", "sad"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return speech_set(tmp_path_factory.mktemp("speech"), speakers=4, clips_per_class=4)


def run_config(corpus, out: Path, audio: str, encoder: str, **extra) -> dict:
    cfg = yaml.safe_load(corpus.grid.read_text())["overrides"]
    cfg = copy.deepcopy(cfg)
    cfg["data"]["audio"] = [audio]
    cfg["model"]["encoder"]["name"] = encoder
    cfg["train"]["epochs"] = 10
    cfg["output"]["dir"] = str(out)
    for key, value in extra.items():
        section, _, leaf = key.partition("__")
        cfg.setdefault(section, {})[leaf] = value
    return cfg


@pytest.fixture(scope="module")
def loso_grid(corpus, tmp_path_factory):
    """One `fuse grid` (CLI) with folds: loso and three cells."""
    root = tmp_path_factory.mktemp("grid")
    spec = yaml.safe_load(corpus.grid.read_text())
    spec["overrides"]["train"]["epochs"] = 10
    spec["cells"].append({"audio": ["egemaps_func"], "encoder": "svm",
                          "params": {"model.classic.c": 0.1, "data.normalize": "global"}})
    grid_file = root / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["grid", "--grid", str(grid_file), "--out",
                                      str(root / "g"), "--workers", "2"])
    assert result.exit_code == 0, result.output
    return root / "g", result.output


def pooled_dir(grid: Path, audio: str, encoder: str, extra: str = "") -> Path:
    name = f"v-none__a-{audio}__enc-{encoder}{extra}__seed-0"
    return grid / "pooled" / name


def test_loso_grid_prints_and_writes_pooled_metrics(loso_grid, corpus):
    grid, output = loso_grid
    # the printed report: pooled UAR / accuracy / macro F1, the confusion matrix, the folds
    assert "pooled test predictions of all folds" in output
    assert all(word in output for word in ("UAR", "accuracy", "macro F1"))
    assert re.search(r"true \\ pred\s+angry\s+happy\s+neutral\s+sad", output)
    assert "| spk00 | spk01 | spk02 | spk03 | mean |" in output
    assert "Splits grouped by column 'speaker'" in output
    ranking = pd.read_csv(grid / "ranking.csv")
    assert len(ranking) == 3 and set(ranking["val_count"]) == {4}  # folds of a cell together
    pooled = pd.read_csv(grid / "pooled.csv")
    jobs = pd.read_csv(grid / "results.csv")
    for _, row in pooled.iterrows():
        folder = Path(row["pooled_dir"])
        # recompute from each fold's saved test predictions (with their true labels)
        runs = jobs[jobs["job"].str.startswith(folder.name + "__fold-")]
        assert len(runs) == 4
        parts = [pd.read_csv(Path(r) / "predictions" / "test.csv") for r in runs["run"]]
        both = pd.concat(parts)
        assert sorted(both["video"]) == sorted(pd.read_csv(corpus.labels)["video"])
        true, pred = both["true_class"].to_numpy(), both["class"].to_numpy()
        assert row["pooled_uar"] == pytest.approx(metrics.uar(pred, true, 4), abs=1e-12)
        assert row["pooled_accuracy"] == pytest.approx(np.mean(pred == true), abs=1e-12)
        assert row["pooled_f1"] == pytest.approx(metrics.macro_f1(pred, true, 4), abs=1e-12)
        saved = json.loads((folder / "metrics.json").read_text())
        assert saved["split"] == "test" and saved["folds"] == 4 and saved["videos"] == 64
        cm = pd.read_csv(folder / "confusion.csv", index_col=0).to_numpy()
        np.testing.assert_array_equal(cm, metrics.confusion_matrix(pred, true, 4))
    # per-speaker normalisation matters on this corpus (planted speaker offsets)
    by = {(r.encoder, r.params): r.pooled_uar_mean for r in ranking.itertuples()}
    group = by[("svm", '{"model.classic.c": 0.1}')]
    glob = by[("svm", '{"data.normalize": "global", "model.classic.c": 0.1}')]
    assert group > 0.4 and group > glob + 0.15, by  # chance: 0.25
    assert by[("lstm", "{}")] > 0.5, by


def test_selection_never_sees_the_held_out_speaker(loso_grid, corpus, tmp_path):
    """Shuffling the held-out speaker's labels leaves each fold's test outputs identical."""
    grid, _ = loso_grid
    table = pd.read_csv(corpus.labels)
    rng = np.random.default_rng(1)
    for fold, speaker in enumerate(corpus.speakers):
        changed = table.copy()
        rows = changed["speaker"] == speaker
        changed.loc[rows, "emotion"] = rng.permutation(changed.loc[rows, "emotion"].to_numpy())
        assert (changed["emotion"] != table["emotion"]).any()
        labels = tmp_path / f"shuffled_{speaker}.csv"
        changed.to_csv(labels, index=False)
        cfg = run_config(corpus, tmp_path / f"fold{fold}", "egemaps", "lstm",
                         labels__path=str(labels), labels__folds="loso", labels__fold=fold)
        shuffled = train(cfg)
        original = grid / "jobs" / f"v-none__a-egemaps__enc-lstm__seed-0__fold-{fold}" / "run"
        a = RawOutputs.load(outputs_path(original, "test"))
        b = RawOutputs.load(outputs_path(shuffled.out_dir, "test"))
        assert a.videos == b.videos and set(v.split("_")[0] for v in a.videos) == {speaker}
        np.testing.assert_array_equal(a.outputs, b.outputs)  # bit for bit
        assert not np.array_equal(a.y, b.y)  # the labels did change
        orig_metrics = json.loads((original / "metrics.json").read_text())
        assert shuffled.metrics["best_epoch"] == orig_metrics["best_epoch"]
        assert shuffled.metrics["val"] == orig_metrics["val"]


def test_run_files_confusion_truth_pruning_and_predict(corpus, tmp_path):
    out = tmp_path / "svm"
    cfg = run_config(corpus, out, "egemaps_func", "svm", labels__folds="loso",
                     labels__fold=2, output__plots=True, train__keep="best")
    result = train(cfg)
    assert result.metrics["splits"]["grouped_by"] == "column 'speaker'"
    assert result.metrics["splits"]["test_groups"] == "spk02"
    assert result.metrics["score_metric"] == "UAR over 4 classes"
    for split in ("val", "test"):
        for ext in ("csv", "png"):
            assert (out / "confusion" / f"{split}.{ext}").is_file(), (split, ext)
        preds = pd.read_csv(out / "predictions" / f"{split}.csv")
        cm = pd.read_csv(out / "confusion" / f"{split}.csv", index_col=0).to_numpy()
        np.testing.assert_array_equal(cm, metrics.confusion_matrix(
            preds["class"], preds["true_class"], 4))
        assert (preds["true_label"] == [v.split("_")[1] for v in preds["video"]]).all()
        assert result.metrics[split]["uar"] == pytest.approx(
            metrics.uar(preds["class"].to_numpy(), preds["true_class"].to_numpy(), 4))
    assert (out / "best.pt").is_file() and not (out / "last.pt").exists()
    assert "train.keep=best" in (out / "PRUNED.txt").read_text()
    # the pruned run still predicts (best.pt kept), the same classes as its test file; its
    # speakers' statistics are known, a new video needs its group
    runner = CliRunner()
    res = runner.invoke(app, ["predict", "--run", str(out), "--store", str(corpus.store),
                              "--out", str(tmp_path / "p.csv")])
    assert res.exit_code == 0, res.output
    predicted = pd.read_csv(tmp_path / "p.csv").set_index("video")["class"]
    test = pd.read_csv(out / "predictions" / "test.csv").set_index("video")["class"]
    assert (predicted[test.index] == test).all()
    from fuse import api
    from fuse.errors import DataError

    with pytest.raises(DataError, match="1 videos have no known group .* --groups"):
        api.predict(out, [str(_new_clip(corpus, tmp_path))], tmp_path / "n.csv")
    api.predict(out, [str(tmp_path / "new.zarr")], tmp_path / "n.csv",
                groups=tmp_path / "groups.csv")
    assert pd.read_csv(tmp_path / "n.csv")["class"][0] == predicted["spk01_sad_00"]
    # keep=none: outputs only; eval says why there is no model
    none = train(run_config(corpus, tmp_path / "none", "egemaps_func", "svm",
                            labels__folds="loso", train__keep="none"))
    assert not list(none.out_dir.glob("*.pt"))
    res = runner.invoke(app, ["eval", "--run", str(none.out_dir), "--split", "test"])
    assert res.exit_code == 1 and "train.keep=none" in res.output


def _new_clip(corpus, tmp_path: Path) -> Path:
    """A store with one clip of a known speaker under a new id."""
    from extract.store import open_store

    src, dst = open_store(corpus.store), open_store(tmp_path / "new.zarr", "a")
    info = src.feature_info("egemaps_func")
    dst.ensure_feature("egemaps_func", modality="audio", dim=info.dim, extractor=info.extractor,
                       config=info.config, dtype=info.dtype)
    fa = src.read_video("egemaps_func", "spk01_sad_00")
    dst.write_video("egemaps_func", "spk01_sad_99", fa.data, fa.timestamps, fa.mask)
    (tmp_path / "groups.csv").write_text("video,speaker\nspk01_sad_99,spk01\n")
    return tmp_path / "new.zarr"


def test_train_val_mix_needs_no_val_split_and_its_grid_ranks_by_test(corpus, tmp_path):
    table = pd.read_csv(corpus.labels)
    table["split"] = np.where(table["speaker"] == "spk03", "test", "train")  # no val at all
    labels = tmp_path / "split.csv"
    table.to_csv(labels, index=False)
    spec = yaml.safe_load(corpus.grid.read_text())
    spec.pop("folds")
    spec["overrides"]["labels"] |= {"path": str(labels), "train_val_mix": True}
    spec["overrides"]["train"] |= {"epochs": 4, "snapshot_epochs": [3, 4]}
    outcome_dir = tmp_path / "g"
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(spec))
    res = CliRunner().invoke(app, ["grid", "--grid", str(grid_file), "--out", str(outcome_dir)])
    assert res.exit_code == 0, res.output
    assert "RANKED BY TEST" in res.output
    markdown = (outcome_dir / "ranking.md").read_text()
    assert "Ranked by **test**" in markdown and "egemaps_func" in markdown
    ranking = pd.read_csv(outcome_dir / "ranking.csv")
    assert len(ranking) == 2 and ranking["test_mean"].notna().all()
    assert list(ranking["test_mean"]) == sorted(ranking["test_mean"], reverse=True)
    for run in pd.read_csv(outcome_dir / "results.csv")["run"]:
        saved = json.loads((Path(run) / "metrics.json").read_text())
        assert "val" not in saved and saved["best_val_score"] is None and "test" in saved


def test_per_target_snapshot_windows(tmp_path):
    from fuse.synthetic import va_set

    s = va_set(tmp_path, videos=6, seconds=4.0)
    out = tmp_path / "run"
    cfg = {"data": {"stores": [str(s.store)], "visual": ["vis"], "audio": ["aud"],
                    "segment_len": 40},
           "labels": {"path": str(s.labels), "format": "affwild2-va", "train_val_mix": True},
           "task": {"name": "va"},
           "model": {"fusion_dim": 16, "head": [16], "encoder": {"hidden": 16}},
           "train": {"epochs": 4, "batch_size": 4, "threads": 1, "keep_snapshots": False,
                     "snapshot_targets": {"valence": [1, 2], "arousal": [3, 4]}},
           "post": {"smooth": False}, "output": {"dir": str(out), "plots": False,
                                                 "predict_splits": ["train"]}}
    result = train(cfg)
    tvm = result.metrics["train_val_mix"]
    assert tvm["snapshot_epochs"] == [1, 2, 3, 4]
    assert tvm["target_epochs"] == {"valence": [1, 2], "arousal": [3, 4]}
    snaps = {e: RawOutputs.load(out / "snapshots" / f"epoch_{e:03d}_train_outputs.npz").outputs
             for e in (1, 2, 3, 4)}
    assert not list((out / "snapshots").glob("*.pt"))  # pruned; their outputs stay
    final = RawOutputs.load(outputs_path(out, "train")).outputs
    np.testing.assert_allclose(final[:, 0], (snaps[1][:, 0] + snaps[2][:, 0]) / 2, atol=1e-6)
    np.testing.assert_allclose(final[:, 1], (snaps[3][:, 1] + snaps[4][:, 1]) / 2, atol=1e-6)
    bad = copy.deepcopy(cfg)
    bad["train"]["snapshot_targets"] = {"valance": [1, 2]}
    from fuse import check

    problems = "\n".join(check(bad).problems)
    assert "train.snapshot_targets: ['valance'] are not targets of the labels" in problems


def test_au_epoch_selection_uses_the_output_thresholds(tmp_path):
    """With post.tune_thresholds=false the best epoch is chosen under 0.5, as output is."""
    from extract.store import open_store
    from fuse.labels.affwild2 import AU_NAMES

    rng = np.random.default_rng(0)
    store = open_store(tmp_path / "au.zarr", "a")
    store.ensure_feature("face", modality="visual", dim=8, extractor="synthetic",
                         config={"kind": "au"})
    proj = rng.standard_normal((12, 8))
    for k in range(8):
        n = 90
        aus = (rng.random((n, 12)) < 0.3).astype(float)
        x = aus @ proj + 0.8 * rng.standard_normal((n, 8))
        store.write_video("face", f"v{k}", x.astype(np.float16), np.arange(n) / 30.0)
        folder = tmp_path / "au" / ("Validation_Set" if k < 3 else "Train_Set")
        folder.mkdir(parents=True, exist_ok=True)
        np.savetxt(folder / f"v{k}.txt", aus, fmt="%d", delimiter=",",
                   header=",".join(AU_NAMES), comments="")
    out = tmp_path / "run"
    result = train({
        "data": {"stores": [str(tmp_path / "au.zarr")], "visual": ["face"], "segment_len": 30},
        "labels": {"path": str(tmp_path / "au"), "format": "affwild2-au"},
        "task": {"name": "au"},
        "model": {"fusion_dim": 16, "head": [16], "encoder": {"hidden": 16}},
        "train": {"epochs": 5, "batch_size": 4, "threads": 1},
        "post": {"smooth": False, "tune_thresholds": False},
        "output": {"dir": str(out), "plots": False}})
    val = RawOutputs.load(outputs_path(out, "val"))
    assert json.loads((out / "post.json").read_text())["decision"] == {}
    from fuse.config import TaskConfig
    from fuse.tasks import build_task

    task = build_task(TaskConfig(name="au"), AU_NAMES)
    at_half = task.score(val.outputs, val.y, val.valid, {})["score"]
    tuned = task.score(val.outputs, val.y, val.valid, None)["score"]
    assert result.metrics["best_val_score"] == pytest.approx(at_half, abs=1e-6)
    assert result.metrics["val"]["score"] == pytest.approx(at_half, abs=1e-6)
    assert tuned != pytest.approx(at_half, abs=1e-9)  # the two really differ here


def test_grid_jobs_share_staged_data(corpus, tmp_path):
    from fuse.data.cache import StageCache

    cache = StageCache()
    a = train(run_config(corpus, tmp_path / "a", "egemaps_func", "svm", labels__folds="loso",
                         labels__fold=0), cache=cache)
    assert cache.misses == 64 and cache.hits == 0
    b = train(run_config(corpus, tmp_path / "b", "egemaps_func", "svm", labels__folds="loso",
                         labels__fold=1), cache=cache)
    assert cache.hits == 64  # every video staged once for both folds
    fresh = train(run_config(corpus, tmp_path / "c", "egemaps_func", "svm",
                             labels__folds="loso", labels__fold=1))
    np.testing.assert_array_equal(RawOutputs.load(outputs_path(b.out_dir, "test")).outputs,
                                  RawOutputs.load(outputs_path(fresh.out_dir, "test")).outputs)
    assert a.metrics["splits"]["test_groups"] != b.metrics["splits"]["test_groups"]


def test_attentive_statistics_pooling_learns_clip_labels(corpus, tmp_path):
    result = train(run_config(corpus, tmp_path / "att", "egemaps", "identity",
                              labels__folds="loso", model__pool="attentive_stats"))
    assert result.metrics["test"]["uar"] > 0.45, result.metrics["test"]
