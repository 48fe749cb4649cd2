"""Train-Val-Mix (papers 002 / 004): train on train + val, combine a fixed window of snapshots."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from fuse import check, evaluate, predict, train
from fuse.data.batches import Planner
from fuse.errors import DataError
from fuse.experiments.ensemble import combine
from fuse.labels.affwild2 import VA_TARGETS
from fuse.outputs.raw import RawOutputs
from fuse.synthetic import expr_set, va_set
from fuse.training.snapshots import outputs_path

MODEL = {"fusion_dim": 16, "dropout": 0.1, "head": [16],
         "encoder": {"name": "lstm", "hidden": 16}}


def config(s, out, task: str, label_format: str, **train_opts) -> dict:
    features = ({"visual": ["vis"], "audio": ["aud"]} if task == "va"
                else {"visual": ["face"], "audio": ["voice"]})
    return {"data": {"stores": [str(s.store)], **features, "segment_len": 40},
            "labels": {"path": str(s.labels), "format": label_format, "make_splits": True,
                       "val_fraction": 0.34, "test_fraction": 0.25, "train_val_mix": True},
            "task": {"name": task}, "model": MODEL,
            "train": {"epochs": 5, "batch_size": 4, "lr": 5e-3, "threads": 2,
                      "snapshot_epochs": [2, 4], **train_opts},
            "post": {"windows": [5]},
            "output": {"dir": str(out), "plots": False}}


@pytest.fixture(scope="module")
def va(tmp_path_factory):
    root = tmp_path_factory.mktemp("tvm")
    return va_set(root, videos=8, seconds=4.0, seed=6), root


@pytest.fixture(scope="module")
def va_run(va):
    s, root = va
    seen: list[list[str]] = []
    original = Planner.plan

    def recording(self, videos, rng):
        if rng is not None:  # training epochs shuffle; inference does not
            seen.append(sorted(self.data.videos[v] for v in videos))
        return original(self, videos, rng)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Planner, "plan", recording)
        result = train(config(s, root / "run", "va", "affwild2-va"))
    return result, seen


def test_trains_on_train_and_val_videos(va, va_run):
    s, root = va
    result, seen = va_run
    plain = config(s, root / "plain", "va", "affwild2-va")
    plain["labels"]["train_val_mix"] = False
    plain["train"]["snapshot_epochs"] = []
    splits = check(plain).raise_if_failed().splits
    train_val = sorted(v for v, split in splits.items() if split in ("train", "val"))
    assert {"train", "val", "test"} == set(splits.values())
    assert len(seen) == 4 and all(epoch == train_val for epoch in seen)  # stops after epoch 4
    metrics = json.loads((result.out_dir / "metrics.json").read_text())
    assert "val" not in metrics and metrics["best_val_score"] is None
    assert metrics["validation"].startswith("none: labels.train_val_mix")
    assert metrics["train_val_mix"] == {"snapshot_epochs": [2, 3, 4], "combine": "mean",
                                        "train_videos": len(train_val)}
    assert {"train", "test"} <= set(metrics)
    log_rows = pd.read_csv(result.out_dir / "log.csv")
    assert list(log_rows["epoch"]) == [1, 2, 3, 4] and log_rows["val_score"].isna().all()
    with pytest.raises(DataError, match="train_val_mix"):
        evaluate(result.out_dir, "val")


def test_snapshots_cover_exactly_the_window_and_are_combined(va, va_run):
    s, root = va
    result, _ = va_run
    run = result.out_dir
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == [
        f"epoch_{e:03d}{suffix}" for e in (2, 3, 4) for suffix in (".pt", "_test_outputs.npz")]
    snaps = [RawOutputs.load(outputs_path(run, e, "test")) for e in (2, 3, 4)]
    assert not np.allclose(snaps[0].outputs, snaps[2].outputs)  # they really differ
    final = RawOutputs.load(run / "predictions" / "test_outputs.npz")
    assert final.videos == snaps[0].videos and final.labelled
    expected = combine([r.outputs for r in snaps], "regression", "mean")
    np.testing.assert_allclose(final.outputs, expected, atol=1e-7)
    np.testing.assert_allclose(final.outputs, np.mean([r.outputs for r in snaps], axis=0),
                               atol=1e-6)
    table = pd.read_csv(run / "predictions" / "test.csv")
    np.testing.assert_allclose(table[VA_TARGETS].to_numpy(), expected, atol=1e-6)
    assert not (run / "predictions" / "val.csv").exists()  # no val split any more

    # best.pt is the last snapshot, but predict combines the snapshots as train did: the
    # run's own outputs, not the last snapshot's
    best = torch.load(run / "best.pt", weights_only=True)["model"]
    last = torch.load(run / "snapshots" / "epoch_004.pt", weights_only=True)["model"]
    assert all(torch.equal(best[k], last[k]) for k in best)
    out = root / "predicted.csv"
    predict(run, [str(s.store)], out, videos=snaps[2].videos)
    np.testing.assert_allclose(pd.read_csv(out)[VA_TARGETS].to_numpy(), expected, atol=2e-6)


def test_classes_are_voted_across_snapshots(tmp_path):
    s = expr_set(tmp_path, videos=8, seconds=4.0, seed=7)
    result = train(config(s, tmp_path / "run", "expr", "affwild2-expr", epochs=3,
                          snapshot_epochs=[1, 3], snapshot_combine="vote"))
    run = result.out_dir
    snaps = [RawOutputs.load(outputs_path(run, e, "test")) for e in (1, 2, 3)]
    np.testing.assert_allclose(snaps[0].outputs.sum(1), 1.0, atol=1e-5)  # probabilities
    final = RawOutputs.load(run / "predictions" / "test_outputs.npz")
    votes = combine([r.outputs for r in snaps], "classification", "vote")
    np.testing.assert_allclose(final.outputs, votes, atol=1e-7)
    table = pd.read_csv(run / "predictions" / "test.csv")
    np.testing.assert_array_equal(table["class"], votes.argmax(1))
    assert result.metrics["train_val_mix"]["combine"] == "vote"


def test_inconsistent_settings_are_all_refused(va, tmp_path):
    s, _ = va

    def problems(labels: dict, train_opts: dict, task: str = "va") -> str:
        cfg = config(s, tmp_path, "va", "affwild2-va")
        cfg["labels"].update(labels)
        cfg["train"].update(train_opts)
        cfg["task"]["name"] = task
        result = check(cfg)
        assert not result.ok and result.plan is None
        return "\n".join(result.problems)

    text = problems({"folds": 4, "fold_holdout": "val"}, {"snapshot_epochs": [], "patience": 5})
    assert "labels.train_val_mix: needs train.snapshot_epochs" in text
    assert "train.patience: early stopping needs a validation score" in text
    assert "labels.folds=4 with labels.fold_holdout=val (a validation fold) contradicts" in text
    text = problems({}, {"snapshot_epochs": [3, 12], "epochs": 10, "snapshot_combine": "vote"})
    assert "the window [3, 12] ends after train.epochs=10" in text
    assert "'vote' does not apply to regression outputs" in text
    text = problems({"train_val_mix": False}, {"snapshot_epochs": [5]})
    assert "only used with labels.train_val_mix=true" in text and "give [first, last]" in text
    text = problems({}, {"snapshot_epochs": [4, 2], "snapshot_combine": "median"})
    assert "need 1 <= first <= last, got [4, 2]" in text
    assert "unknown ensemble combiner 'median'; known: auto, mean, prob_mean, vote" in text
