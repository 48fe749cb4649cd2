"""Ensembles of runs: saved outputs, combiners, scoring beside the members, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from fuse import train
from fuse.cli import app
from fuse.config import TaskConfig
from fuse.errors import ConfigError
from fuse.experiments.ensemble import combine, ensemble
from fuse.labels.affwild2 import AU_NAMES, EXPR_CLASSES, VA_TARGETS
from fuse.outputs.raw import RawOutputs, outputs_path
from fuse.synthetic import va_set
from fuse.tasks import build_task

FORMATS = {"va": ("affwild2-va", "regression", VA_TARGETS),
           "expr": ("affwild2-expr", "classification", EXPR_CLASSES),
           "au": ("affwild2-au", "multilabel", AU_NAMES)}


def write_member(root: Path, task: str, lengths: dict[str, int], outputs: np.ndarray,
                 y: np.ndarray, valid: np.ndarray, split: str = "val",
                 val_score: float | None = None, decision: dict | None = None) -> Path:
    """A run folder as `fuse train` leaves it, as far as ensembles read it."""
    label_format, kind, targets = FORMATS[task]
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(yaml.safe_dump({"task": {"name": task}}))
    metrics = {"val": {"score": val_score}} if val_score is not None else {}
    (root / "metrics.json").write_text(json.dumps(metrics))
    cuts = np.cumsum(list(lengths.values()))[:-1]
    RawOutputs.build(task=task, label_format=label_format, kind=kind, targets=targets,
                     split=split, level="frame", videos=list(lengths),
                     outputs=np.split(outputs, cuts),
                     frames=[np.arange(n) for n in lengths.values()],
                     times=[np.arange(n) / 30.0 for n in lengths.values()],
                     labels=list(zip(np.split(y, cuts), np.split(valid, cuts), strict=True)),
                     decision=decision).save(outputs_path(root, split))
    return root


def reorder(lengths: dict[str, int], array: np.ndarray, order: list[str]) -> np.ndarray:
    """Rows of ``array`` (videos in ``lengths`` order) with the videos in ``order``."""
    blocks = dict(zip(lengths, np.split(array, np.cumsum(list(lengths.values()))[:-1]),
                      strict=True))
    return np.concatenate([blocks[v] for v in order])


LENGTHS = {"vidA": 300, "vidB": 250, "vidC": 350, "vidD": 200}
ROWS = sum(LENGTHS.values())


def va_truth(rng: np.random.Generator) -> np.ndarray:
    walk = np.cumsum(rng.standard_normal((ROWS, 2)) * 0.15, axis=0)
    return np.tanh(walk - walk.mean(0)).astype(np.float32)


def test_mean_of_noisy_regression_members_beats_each(tmp_path):
    rng = np.random.default_rng(0)
    truth = va_truth(rng)
    valid = rng.random((ROWS, 2)) > 0.05
    members = []
    for k in range(5):
        noisy = np.clip(truth + 1.0 * rng.standard_normal(truth.shape), -1, 1)
        lengths = LENGTHS if k % 2 == 0 else dict(reversed(LENGTHS.items()))  # other order
        order = list(lengths)
        members.append((write_member(tmp_path / f"m{k}", "va", lengths,
                                     reorder(LENGTHS, noisy, order),
                                     reorder(LENGTHS, truth, order),
                                     reorder(LENGTHS, valid, order)), noisy))
        write_member(tmp_path / f"m{k}", "va", lengths, np.zeros((ROWS, 2)),
                     np.zeros((ROWS, 2)), np.zeros((ROWS, 2), bool), split="test")  # unlabelled

    result = ensemble([m for m, _ in members], tmp_path / "ens", "val,test")
    val = result.scores["val"]
    assert result.combine == "mean" and set(result.scores) == {"val"}  # test has no labels
    for run, _ in members:
        assert val["ensemble"]["score"] > val[str(run)]["score"] + 0.1, val
    assert result.best_member("val")[1] < result.score("val")

    combined = RawOutputs.load(tmp_path / "ens" / "predictions" / "val_outputs.npz")
    expected = np.mean([noisy for _, noisy in members], axis=0)
    assert combined.videos == list(LENGTHS)  # the first member's order
    np.testing.assert_allclose(combined.outputs, expected, atol=1e-6)
    lines = (tmp_path / "ens" / "predictions" / "val" / "vidB.txt").read_text().splitlines()
    assert lines[0] == "valence,arousal" and len(lines) == 1 + LENGTHS["vidB"]
    assert (tmp_path / "ens" / "predictions" / "test.csv").is_file()
    table = pd.read_csv(tmp_path / "ens" / "ensemble.csv")
    assert list(table.loc[table.split == "val", "run"])[-1] == "ensemble"
    info = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert info["scores"]["val"]["ensemble"]["score"] == pytest.approx(result.score("val"))
    assert info["gain_over_best_member"]["val"] > 0.1


def expr_members(tmp_path: Path, n: int, rng: np.random.Generator) -> tuple[list[Path], ...]:
    truth = rng.integers(0, 8, ROWS)
    valid = rng.random((ROWS, 1)) > 0.05
    runs = []
    for k in range(n):
        logits = 1.6 * np.eye(8)[truth] + rng.standard_normal((ROWS, 8))
        prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        runs.append(write_member(tmp_path / f"e{k}", "expr", LENGTHS, prob,
                                 truth[:, None].astype(np.float32), valid))
    return runs, truth


@pytest.mark.parametrize("method", ["auto", "prob_mean"])
def test_vote_and_prob_mean_beat_each_member_macro_f1(tmp_path, method):
    runs, truth = expr_members(tmp_path, 7, np.random.default_rng(1))
    result = ensemble(runs, tmp_path / "ens", "val", combine=method)
    assert result.combine == ("vote" if method == "auto" else "prob_mean")
    val = result.scores["val"]
    best = max(val[str(r)]["score"] for r in runs)
    assert val["ensemble"]["score"] > best + 0.1, (val["ensemble"]["score"], best)
    table = pd.read_csv(tmp_path / "ens" / "predictions" / "val.csv")
    assert list(table.columns) == ["video", "frame", "time", "class", "label"]
    combined = RawOutputs.load(tmp_path / "ens" / "predictions" / "val_outputs.npz")
    np.testing.assert_array_equal(table["class"], combined.outputs.argmax(1))


def test_vote_majority_then_ties_by_summed_probability():
    a = np.array([[0.6, 0.3, 0.1], [0.9, 0.05, 0.05], [0.33, 0.33, 0.34]])
    b = np.array([[0.05, 0.55, 0.4], [0.4, 0.5, 0.1], [0.3, 0.3, 0.4]])
    c = np.array([[0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.99, 0.005, 0.005]])
    tie = combine([a, b], "classification", "vote")
    assert tie.argmax(1).tolist()[:2] == [1, 0]  # 1-1 ties: summed probability decides
    majority = combine([a, b, c], "classification", "vote")
    assert majority.argmax(1).tolist() == [1, 1, 2]  # 2 votes beat one confident member
    np.testing.assert_allclose(majority[2], [1 / 3, 0, 2 / 3], atol=1e-6)
    weighted = combine([a, b, c], "classification", "vote", weights=[1, 1, 3])
    assert weighted.argmax(1).tolist() == [1, 1, 0]


def test_au_mean_probability_then_thresholds_tuned_on_val(tmp_path):
    rng = np.random.default_rng(2)
    truth = (rng.random((ROWS, 12)) < 0.3).astype(np.float32)
    valid = np.ones((ROWS, 12), bool)
    task = build_task(TaskConfig(name="au"), AU_NAMES)
    runs = []
    for k in range(5):
        prob = 1 / (1 + np.exp(-(2.0 * (2 * truth - 1) + 2.0 * rng.standard_normal(truth.shape))))
        decision = task.tune_decision(prob, truth, valid)
        runs.append(write_member(tmp_path / f"a{k}", "au", LENGTHS, prob, truth, valid,
                                 decision=decision))
    result = ensemble(runs, tmp_path / "ens")
    assert result.combine == "prob_mean" and len(result.decision["thresholds"]) == 12
    val = result.scores["val"]
    assert val["ensemble"]["score"] > max(val[str(r)]["score"] for r in runs) + 0.05
    info = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert info["decision_from"] == "tuned on the combined val"


def test_weighted_by_validation_score(tmp_path):
    rng = np.random.default_rng(3)
    truth = va_truth(rng)
    valid = np.ones((ROWS, 2), bool)
    a, b = (np.clip(truth + s * rng.standard_normal(truth.shape), -1, 1) for s in (0.8, 0.3))
    run_a = write_member(tmp_path / "a", "va", LENGTHS, a, truth, valid, val_score=0.2)
    run_b = write_member(tmp_path / "b", "va", LENGTHS, b, truth, valid, val_score=0.6)
    result = ensemble([run_a, run_b], tmp_path / "ens", weighted=True)
    assert result.weights == pytest.approx([0.25, 0.75])
    combined = RawOutputs.load(tmp_path / "ens" / "predictions" / "val_outputs.npz")
    np.testing.assert_allclose(combined.outputs, 0.25 * a + 0.75 * b, atol=1e-6)
    plain = ensemble([run_a, run_b], tmp_path / "plain")
    assert result.score() > plain.score()

    no_val = write_member(tmp_path / "tvm", "va", LENGTHS, b, truth, valid)  # no val score
    with pytest.raises(ConfigError, match="tvm has no validation score"):
        ensemble([run_a, no_val], tmp_path / "x", weighted=True)


def test_mismatched_runs_are_refused_with_every_problem(tmp_path):
    rng = np.random.default_rng(4)
    truth, valid = va_truth(rng), np.ones((ROWS, 2), bool)
    va = write_member(tmp_path / "va", "va", LENGTHS, truth, truth, valid)
    expr, _ = expr_members(tmp_path, 2, rng)
    fewer = dict(list(LENGTHS.items())[:3])
    n = sum(fewer.values())
    short = write_member(tmp_path / "short", "va", fewer, truth[:n], truth[:n], valid[:n])
    longer = {**LENGTHS, "vidA": LENGTHS["vidA"] + 5}
    pad = np.concatenate([truth, truth[:5]])
    rows = write_member(tmp_path / "rows", "va", longer, pad, pad, np.ones((ROWS + 5, 2), bool))
    relabelled = write_member(tmp_path / "relab", "va", LENGTHS, truth, -truth, valid)

    with pytest.raises(ConfigError) as err:
        ensemble([va, expr[0], short, rows, relabelled], tmp_path / "ens")
    text = "\n".join(err.value.problems)
    assert "task.name differs" in text
    assert "the video sets differ (1 only in" in text and "vidD" in text
    assert "different numbers of rows: vidA" in text
    assert "the labels differ" in text

    with pytest.raises(ConfigError) as err:
        ensemble([va, relabelled], tmp_path / "va", "val,nope", combine="median")
    text = "\n".join(err.value.problems)
    assert "nope is not among train, val, test" in text
    assert "--out" in text and "is one of the runs" in text
    with pytest.raises(ConfigError, match="unknown ensemble combiner 'median'; known: auto"):
        ensemble([va, relabelled], tmp_path / "ens", combine="median")
    with pytest.raises(ConfigError, match="'mean' does not apply to classification outputs"):
        ensemble(expr, tmp_path / "ens", combine="mean")
    with pytest.raises(ConfigError, match="at least 2 runs"):
        ensemble([va], tmp_path / "ens")
    with pytest.raises(ConfigError, match="test_outputs.npz"):
        ensemble([va, relabelled], tmp_path / "ens", "test")


# ------------------------------------------------------------------- real runs, end to end
@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    s = va_set(root, videos=8, seconds=6.0, seed=5)
    runs = []
    for seed in range(3):
        runs.append(train({
            "data": {"stores": [str(s.store)], "visual": ["vis"], "audio": ["aud"],
                     "segment_len": 60},
            "labels": {"path": str(s.labels), "format": "affwild2-va"},
            "task": {"name": "va"},
            "model": {"fusion_dim": 16, "dropout": 0.1, "head": [16],
                      "encoder": {"name": "lstm", "hidden": 16}},
            "train": {"epochs": 6, "batch_size": 4, "lr": 5e-3, "seed": seed, "threads": 2},
            "post": {"windows": [1, 5, 10]},
            "output": {"dir": str(root / f"seed{seed}"), "plots": False}}))
    return s, root, runs


def test_runs_save_their_outputs(seed_runs):
    s, _, runs = seed_runs
    run = runs[0]
    raw = RawOutputs.load(run.out_dir / "predictions" / "val_outputs.npz")
    val_videos = sorted(p.stem for p in (s.labels / "Validation_Set").glob("*.txt"))
    assert raw.videos == val_videos and raw.task == "va" and raw.targets == VA_TARGETS
    assert raw.level == "frame" and raw.kind == "regression" and raw.split == "val"
    labels = np.loadtxt(s.labels / "Validation_Set" / f"{val_videos[0]}.txt", delimiter=",",
                        skiprows=1)
    first = raw.rows(0)
    np.testing.assert_array_equal(raw.frames[first], np.arange(len(labels)))
    np.testing.assert_array_equal(raw.valid[first], labels != -5)
    np.testing.assert_allclose(raw.y[first][raw.valid[first]], labels[labels != -5], atol=1e-6)
    table = pd.read_csv(run.out_dir / "predictions" / "val.csv")
    np.testing.assert_allclose(table[VA_TARGETS].to_numpy(), raw.outputs, atol=1e-6)
    assert np.abs(raw.outputs).max() <= 1.0  # post-processed: clipped
    task = build_task(TaskConfig(name="va"), VA_TARGETS)
    score = task.score(raw.outputs, raw.y, raw.valid)["score"]
    assert score == pytest.approx(run.metrics["val"]["score"], abs=1e-9)


def test_ensemble_of_seeds_through_the_cli(seed_runs):
    _, root, runs = seed_runs
    out = root / "ens"
    result = CliRunner().invoke(app, ["ensemble", *(str(r.out_dir) for r in runs), "--out",
                                      str(out), "--split", "val", "--weighted"],
                                terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "ensemble" in result.output and "val score" in result.output
    info = json.loads((out / "ensemble.json").read_text())
    members = [r.metrics["val"]["score"] for r in runs]
    for r, score in zip(runs, members, strict=True):
        assert info["scores"]["val"][str(r.out_dir)]["score"] == pytest.approx(score, abs=1e-9)
    assert info["weights"] == pytest.approx(dict(zip([str(r.out_dir) for r in runs],
                                                     np.array(members) / sum(members),
                                                     strict=True)))
    assert info["scores"]["val"]["ensemble"]["score"] > min(members)
    assert len(list((out / "predictions" / "val").glob("*.txt"))) == 2
