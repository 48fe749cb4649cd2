"""The CLI round trip: train (preset + overrides) → eval → predict, and --resume."""

from __future__ import annotations

import json

import numpy as np
import yaml
from typer.testing import CliRunner

from fuse.cli import app
from fuse.synthetic import va_set

TINY = ["model.fusion_dim=16", "model.head=[16]", "model.encoder.hidden=16",
        "train.epochs=2", "train.batch_size=4", "train.lr=3e-3", "train.scheduler=cosine",
        "train.warmup_epochs=0.5", "train.ema_decay=0.9", "train.grad_clip=1.0",
        "data.segment_len=50", "post.windows=1,5,20"]


def test_train_eval_predict_round_trip(tmp_path):
    s = va_set(tmp_path, videos=5, seconds=5.0, seed=4)
    run = tmp_path / "run"
    runner = CliRunner()
    train_args = ["train", "--store", str(s.store), "--labels", str(s.labels),
                  "--label-format", "affwild2-va", "--task", "va", "--visual", "vis",
                  "--audio", "aud:mean", "--encoder", "lstm", "--config", "va_lstm",
                  "--out", str(run), *TINY]
    result = runner.invoke(app, train_args, terminal_width=160)
    assert result.exit_code == 0, result.output
    assert "best epoch" in result.output and "ccc/valence" in result.output

    for name in ("config.yaml", "metrics.json", "log.csv", "best.pt", "last.pt", "post.json",
                 "predictions/val.csv", "plots/learning_curves.png",
                 "plots/val_per_target.png"):
        assert (run / name).is_file(), name
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["encoder"]["hidden"] == 16 and config["data"]["audio"] == ["aud:mean"]
    assert config["train"]["epochs"] == 2 and config["task"]["name"] == "va"
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"train", "val", "best_epoch"} <= set(metrics)
    log_rows = (run / "log.csv").read_text().splitlines()
    assert log_rows[0] == "epoch,train_loss,val_score,lr,seconds,data_seconds,eval_seconds,best"
    assert len(log_rows) == 3
    val_files = sorted((run / "predictions" / "val").glob("*.txt"))
    assert [f.stem for f in val_files] == ["video000"]
    lines = val_files[0].read_text().splitlines()
    assert lines[0] == "valence,arousal" and len(lines) == 1 + 150

    result = runner.invoke(app, ["eval", "--run", str(run), "--split", "val"])
    assert result.exit_code == 0, result.output
    scores = json.loads((run / "eval_val.json").read_text())
    assert abs(scores["score"] - metrics["val"]["score"]) < 1e-9

    out_csv = tmp_path / "pred.csv"
    result = runner.invoke(app, ["predict", "--run", str(run), "--store", str(s.store),
                                 "--out", str(out_csv)])
    assert result.exit_code == 0, result.output
    table = out_csv.read_text().splitlines()
    assert table[0] == "video,frame,time,valence,arousal" and len(table) == 1 + 5 * 150
    out_dir = tmp_path / "submission"
    result = runner.invoke(app, ["predict", "--run", str(run), "--store", str(s.store),
                                 "--out", str(out_dir), "--videos", "video001,video003"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out_dir.iterdir()) == ["video001.txt", "video003.txt"]
    assert (tmp_path / "submission.config.yaml").is_file()
    assert (tmp_path / "pred.config.yaml").is_file()
    # the same frames predicted by the run (val video) and by predict agree
    val_pred = [r for r in table[1:] if r.startswith("video000,")]
    ours = np.array([r.split(",")[3:] for r in val_pred], float)
    np.testing.assert_allclose(ours, np.loadtxt(val_files[0], delimiter=",", skiprows=1),
                               atol=1e-5)

    result = runner.invoke(app, [*train_args, "train.epochs=3", "--resume"])
    assert result.exit_code == 0, result.output
    assert len((run / "log.csv").read_text().splitlines()) == 4
