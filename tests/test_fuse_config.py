"""Config layers and overrides; validation reports every problem at once; light imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from extract.store import open_store
from fuse import build_config, check
from fuse.cli import app
from fuse.config import load_yaml, parse_overrides, presets
from fuse.synthetic import va_set

REPO = Path(__file__).resolve().parents[1]


def test_overrides_are_typed_from_the_dataclasses():
    extra, problems = parse_overrides(["train.lr=1e-4", "data.visual=a,b", "model.head=[64, 32]",
                                       "model.encoder.bidirectional=true", "post.clip=-1,1"])
    cfg, type_problems = build_config({"train": {"lr": 0.1}}, extra)
    assert not problems and not type_problems
    assert cfg.train.lr == 1e-4 and cfg.data.visual == ["a", "b"] and cfg.model.head == [64, 32]
    assert cfg.model.encoder.bidirectional is True and cfg.post.clip == "-1,1"


def test_type_problems_are_all_reported_with_suggestions():
    _, problems = build_config({"train": {"lr": "fast", "epoch": 3}, "model": {"head": "x"}})
    text = "\n".join(problems)
    assert "train.lr: expected a number" in text
    assert "did you mean 'train.epochs'" in text
    assert "model.head" in text and len(problems) == 3


def test_presets_are_valid_configs():
    assert {"va_lstm", "va_transformer", "expr_transformer", "eri", "au"} <= set(presets())
    for name in presets():
        _, problems = build_config(load_yaml(name))
        assert not problems, (name, problems)


@pytest.fixture(scope="module")
def store_with_gap(tmp_path_factory):
    """A VA set where one labelled video has no audio feature."""
    root = tmp_path_factory.mktemp("gap")
    s = va_set(root, videos=5, seconds=4.0, seed=3)
    open_store(s.store, "a").remove_video("aud", "video004")
    return s


def base_config(s, out) -> dict:
    return {"data": {"stores": [str(s.store)], "visual": ["vis"], "audio": ["aud"]},
            "labels": {"path": str(s.labels), "format": "affwild2-va"},
            "task": {"name": "va"}, "output": {"dir": str(out)}}


def test_validate_reports_every_problem_at_once(store_with_gap, tmp_path):
    cfg = base_config(store_with_gap, tmp_path)
    cfg["model"] = {"encoder": {"name": "lstmm"}}
    cfg["train"] = {"lr": -1.0, "optimiser": "adam"}
    cfg["data"]["audio"] = ["aud", "wav2vec"]
    cfg["task"]["name"] = "expr"
    result = check(cfg)
    text = "\n".join(result.problems)
    assert not result.ok and result.plan is None
    for expected in ("unknown temporal encoder 'lstmm'", "train.lr: must be > 0",
                     "did you mean 'train.optimizer'", "['wav2vec'] are in none of the stores",
                     "'expr' needs classification labels"):
        assert expected in text, (expected, text)


def test_missing_features_listed_or_dropped(store_with_gap, tmp_path):
    result = check(base_config(store_with_gap, tmp_path))
    assert len(result.problems) == 1
    assert "video004 (lacks aud)" in result.problems[0] and "--drop-missing" in result.problems[0]
    cfg = base_config(store_with_gap, tmp_path)
    cfg["data"]["drop_missing"] = True
    result = check(cfg)
    assert result.ok and list(result.plan.dropped) == ["video004"]
    assert sum(result.plan.summary()["videos"].values()) == 4


def test_frame_counts_must_match_the_reference_feature(store_with_gap, tmp_path):
    cfg = base_config(store_with_gap, tmp_path)
    cfg["data"]["drop_missing"] = True
    short = store_with_gap.labels / "Train_Set" / "video002.txt"
    lines = short.read_text().splitlines()
    short.write_text("\n".join(lines + lines[1:21]) + "\n")  # 20 label frames too many
    try:
        problems = check(cfg).problems
    finally:
        short.write_text("\n".join(lines) + "\n")
    assert len(problems) == 1 and "video002 (140 label frames, 120 rows)" in problems[0]


def test_cli_validate_exits_non_zero_listing_problems(store_with_gap, tmp_path):
    runner = CliRunner()
    args = ["validate", "--store", str(store_with_gap.store), "--labels",
            str(store_with_gap.labels), "--label-format", "affwild2-va", "--task", "va",
            "--visual", "vis", "--audio", "aud,nope", "--encoder", "transformer",
            "model.encoder.heads=5", "train.batch_size=0"]
    result = runner.invoke(app, args, terminal_width=200)
    assert result.exit_code == 1, result.output
    for expected in ("nope", "multiple of heads", "train.batch_size", "problem(s)"):
        assert expected in result.output
    ok = runner.invoke(app, [*args[:11], "--audio", "aud", "--drop-missing"])
    assert ok.exit_code == 0, ok.output
    assert "ok" in ok.output


def test_cli_help_and_config_import_neither_torch_nor_numpy():
    code = ("import sys, fuse.cli, fuse.config; "
            "print(sorted(m for m in ('torch', 'numpy', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
    assert np  # numpy stays a test-side import only


def test_audio_only_runs_on_frame_indexed_labels_need_frame_times(store_with_gap, tmp_path):
    cfg = base_config(store_with_gap, tmp_path)
    cfg["data"].update(visual=[], drop_missing=True)
    result = check(cfg)  # label line i is video frame i: audio rows cannot say when that is
    assert not result.ok and any("labels.fps" in p and "no visual feature" in p
                                 for p in result.problems), result.problems
    cfg["labels"]["fps"] = 30.0
    assert check(cfg).ok
