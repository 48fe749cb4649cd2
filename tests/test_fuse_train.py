"""Training on synthetic stores with planted signal (CPU, small)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from extract.store import open_store
from fuse import train
from fuse.synthetic import eri_set, expr_set, va_set

TINY = {"fusion_dim": 32, "dropout": 0.0, "head": [32]}


def va_config(s, out, encoder: str, **model):
    return {"data": {"stores": [str(s.store)], "visual": ["vis"], "audio": ["aud"],
                     "segment_len": 100},
            "labels": {"path": str(s.labels), "format": "affwild2-va"},
            "task": {"name": "va"},
            "model": {**TINY, **model, "encoder": {"name": encoder, "hidden": 32}},
            "train": {"epochs": 8, "batch_size": 8, "lr": 3e-3, "threads": 2},
            "post": {"smooth": False},
            "output": {"dir": str(out), "plots": False}}


@pytest.fixture(scope="module")
def va(tmp_path_factory):
    root = tmp_path_factory.mktemp("va")
    return va_set(root, videos=16, seconds=15.0, seed=0), root


@pytest.fixture(scope="module")
def va_lstm_run(va):
    s, root = va
    return train(va_config(s, root / "lstm", "lstm"))


def test_lstm_beats_a_per_frame_linear_model(va, va_lstm_run):
    """Valence lags feature A (30 fps), arousal integrates feature B (50 Hz)."""
    s, root = va
    linear = train(va_config(s, root / "linear", "identity", head=[]))
    lstm_ccc, linear_ccc = va_lstm_run.metrics["val"]["score"], linear.metrics["val"]["score"]
    assert lstm_ccc > 0.8, va_lstm_run.metrics
    assert lstm_ccc - linear_ccc > 0.3, (lstm_ccc, linear_ccc)


def test_normaliser_is_fitted_on_training_videos_only(va, va_lstm_run):
    s, _ = va
    store = open_store(s.store)
    ckpt = torch.load(va_lstm_run.out_dir / "best.pt", weights_only=True)
    train_videos = sorted((s.labels / "Train_Set").glob("*.txt"))
    for feature in ("vis", "aud"):
        rows = [store.read_video(feature, p.stem) for p in train_videos]
        valid = np.concatenate([r.data[r.mask].astype(np.float64) for r in rows])
        np.testing.assert_allclose(ckpt["normalizer"]["mean"][feature], valid.mean(0),
                                   rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(ckpt["normalizer"]["std"][feature], valid.std(0), rtol=1e-5)
        everything = np.concatenate([r.data.astype(np.float64) for r in
                                     store.iter_videos(feature)])
        assert not np.allclose(ckpt["normalizer"]["mean"][feature], everything.mean(0))


def test_expr_reaches_high_macro_f1(tmp_path):
    s = expr_set(tmp_path, videos=10, seconds=8.0)
    result = train({
        "data": {"stores": [str(s.store)], "visual": ["face"], "audio": ["voice"],
                 "segment_len": 64, "segment_stride": 32},
        "labels": {"path": str(s.labels), "format": "affwild2-expr"},
        "task": {"name": "expr", "rdrop_alpha": 1.0, "focal_gamma": 1.0},
        "model": {**TINY, "encoder": {"name": "transformer", "hidden": 32, "heads": 4,
                                      "ff_dim": 64, "dropout": 0.1}},
        "train": {"epochs": 8, "batch_size": 8, "lr": 3e-3},
        "output": {"dir": str(tmp_path / "run"), "plots": False}})
    assert result.metrics["val"]["score"] > 0.9, result.metrics["val"]


def test_eri_per_video_reaches_high_mean_pearson(tmp_path):
    s = eri_set(tmp_path, videos=100, seconds=3.0)
    result = train({
        "data": {"stores": [str(s.store)], "visual": ["vit"], "audio": ["spec:mean"],
                 "grid": "steps:8"},
        "labels": {"path": str(s.labels), "format": "hume", "partition": str(s.partition)},
        "task": {"name": "eri", "aux_weight": 0.01},
        "model": {"proj_dim": 32, "fusion_dim": 32, "dropout": 0.0, "head": [],
                  "pool": "attention", "encoder": {"name": "lstm", "hidden": 32}},
        "train": {"epochs": 15, "batch_size": 16, "lr": 5e-3, "ema_decay": 0.9,
                  "grad_clip": 1.0, "patience": 5},
        "output": {"dir": str(tmp_path / "run"), "plots": False}})
    assert result.metrics["val"]["score"] > 0.8, result.metrics["val"]
    predictions = (tmp_path / "run" / "predictions" / "test.csv").read_text().splitlines()
    assert predictions[0].startswith("File_ID,Adoration") and len(predictions) == 21


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    s = expr_set(tmp_path, videos=6, seconds=4.0, seed=2)

    def config(out, epochs):
        return {"data": {"stores": [str(s.store)], "visual": ["face"], "audio": ["voice"],
                         "segment_len": 30},
                "labels": {"path": str(s.labels), "format": "affwild2-expr"},
                "task": {"name": "expr"},
                "model": {"fusion_dim": 8, "dropout": 0.2, "head": [8],
                          "encoder": {"name": "lstm", "hidden": 8}},
                "train": {"epochs": epochs, "batch_size": 4, "lr": 1e-2, "ema_decay": 0.5},
                "output": {"dir": str(out), "plots": False}}

    straight = train(config(tmp_path / "a", 3))
    train(config(tmp_path / "b", 2))
    resumed = train(config(tmp_path / "b", 3), resume=True)
    a = torch.load(straight.out_dir / "last.pt", weights_only=True)
    b = torch.load(resumed.out_dir / "last.pt", weights_only=True)
    for key in a["raw_model"]:
        torch.testing.assert_close(a["raw_model"][key], b["raw_model"][key], rtol=0, atol=0)
    log_lines = (resumed.out_dir / "log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in log_lines] == ["epoch", "1", "2", "3"]
