"""Clip-level building blocks on hand-made inputs: UAR, focal alpha, class-balanced weights,
statistics pooling, length buckets, per-group normalisation, classic read-outs, the stage
cache, config coercion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fuse.config import TaskConfig, build_config
from fuse.data.normalize import GroupNormalizer, Moments, Normalizer, fit_normalizer
from fuse.model.heads import POOLS
from fuse.tasks import build_task, losses, metrics
from fuse.tasks.classification import balanced_weights


def test_uar_recall_and_metric_selection():
    true = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 0, 2, 1])
    # recalls: 3/4, 1/2, 1/2 → UAR 0.5833; accuracy 5/8
    np.testing.assert_allclose(metrics.recall_per_class(pred, true, 4)[:3], [0.75, 0.5, 0.5])
    assert np.isnan(metrics.recall_per_class(pred, true, 4)[3])  # class 3 absent: no recall
    assert metrics.uar(pred, true, 4) == pytest.approx((0.75 + 0.5 + 0.5) / 3)
    probs = np.eye(4)[pred]
    y, ok = true[:, None].astype(np.float32), np.ones((8, 1), bool)
    classes = ["a", "b", "c", "d"]
    by_uar = build_task(TaskConfig(name="classification", metric="uar"), classes)
    scores = by_uar.score(probs, y, ok)
    assert scores["score"] == scores["uar"] == pytest.approx(0.58333, abs=1e-5)
    assert scores["accuracy"] == pytest.approx(5 / 8)
    assert scores["f1"] == pytest.approx(metrics.macro_f1(pred, true, 4))
    assert scores["recall/a"] == 0.75 and "recall/d" not in scores
    assert build_task(TaskConfig(name="classification"), classes).score(
        probs, y, ok)["score"] == scores["f1"]  # auto = macro F1
    assert "UAR over 4 classes" == by_uar.metric_label
    problems = type(by_uar).check(TaskConfig(name="classification", metric="pearson"))
    assert "task.metric: 'pearson' is not one of auto, f1, uar, accuracy" in problems[0]


def test_focal_loss_with_alpha_is_paper_001_equation_9():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [1.0, 1.0, 1.0]])
    target = torch.tensor([0, 2, 1])
    ok = torch.tensor([True, True, False])
    alpha = torch.tensor([0.25, 1.0, 2.0])
    gamma = 2.0
    p = torch.softmax(logits, -1)[torch.arange(3), target]
    by_hand = -(alpha[target] * (1 - p) ** gamma * torch.log(p))[:2].mean()
    got = losses.cross_entropy(logits, target, ok, gamma, alpha)
    assert got.item() == pytest.approx(by_hand.item(), rel=1e-6)
    plain = losses.cross_entropy(logits, target, ok)
    assert plain.item() == pytest.approx(-torch.log(p[:2]).mean().item(), rel=1e-6)
    # through the task: focal_alpha from the config, one weight per class
    task = build_task(TaskConfig(name="classification", focal_gamma=gamma,
                                 focal_alpha=[0.25, 1.0, 2.0]), ["a", "b", "c"])
    y, valid = target[:, None].float(), ok[:, None]
    assert task.loss([logits], y, valid).item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert task.check_targets(["a", "b"])[0].startswith("task.focal_alpha: 3 weights for 2")


def test_balanced_weights_follow_the_training_counts():
    w = balanced_weights(np.array([30, 10, 0, 20]))
    np.testing.assert_allclose(w, [60 / (3 * 30), 60 / (3 * 10), 1.0, 60 / (3 * 20)], rtol=1e-6)


@pytest.mark.parametrize("name", ["mean_std", "attentive_stats"])
def test_statistics_pooling_ignores_padding(name):
    torch.manual_seed(0)
    pool = POOLS.get(name)(6)
    h = torch.randn(2, 5, 6)
    pad = torch.tensor([[False] * 5, [False, False, False, True, True]])
    out = pool(h, pad)
    assert out.shape == (2, 12) and pool.out_dim == 12
    garbage = h.clone()
    garbage[1, 3:] = 100.0  # what padding holds must not matter
    torch.testing.assert_close(pool(garbage, pad), out)
    if name == "mean_std":
        ref = h[1, :3]
        torch.testing.assert_close(out[1, :6], ref.mean(0))
        torch.testing.assert_close(out[1, 6:], ref.std(0, unbiased=False), atol=1e-4, rtol=1e-4)


def test_per_video_batches_are_bucketed_by_length():
    from fuse.data.batches import Planner
    from fuse.data.dataset import FusedData

    lengths = np.array([5, 50, 6, 48, 7, 52, 4, 49])
    data = FusedData(["f"], [1], "video", [f"v{i}" for i in range(8)],
                     np.array(["train"] * 8, dtype=object),
                     np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths,
                     np.zeros((lengths.sum() + 1, 1), np.float16),
                     np.ones((lengths.sum() + 1, 1), bool), [], [])
    rng = np.random.default_rng(0)
    bucketed = Planner(data, seg_len=10, stride=0, batch_size=4, carry=False, bucket=True)
    steps = bucketed.plan(np.arange(8), rng)
    assert sorted(s.length for s in steps) == [7, 52]  # short clips together, long together
    plain = Planner(data, seg_len=10, stride=0, batch_size=4, carry=False)
    assert sum(s.length for s in plain.plan(np.arange(8), np.random.default_rng(0))) > 59
    covered = np.sort(np.concatenate([s.segments[:, 0] for s in steps]))
    np.testing.assert_array_equal(covered, np.arange(8))  # every video once


def test_group_normaliser_uses_each_groups_own_statistics():
    rng = np.random.default_rng(0)
    rows = {"a1": rng.normal(5, 2, (40, 3)), "a2": rng.normal(5, 2, (30, 3)),
            "b1": rng.normal(-3, 0.5, (50, 3))}
    groups = ["A", "A", "B"]
    sums = []
    for data in rows.values():
        m = Moments(3)
        m.add(data)
        sums.append({"f": m})
    norm = fit_normalizer("group", ["f"], [3], sums, [True] * 3, groups)
    assert isinstance(norm, GroupNormalizer)
    a = np.concatenate([rows["a1"], rows["a2"]])
    np.testing.assert_allclose(norm.groups["A"].mean["f"], a.mean(0))
    np.testing.assert_allclose(norm.groups["B"].std["f"], rows["b1"].std(0))
    z = norm.apply("f", rows["b1"], "B")
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    back = Normalizer.from_state_dict(norm.state_dict())  # what a checkpoint holds
    np.testing.assert_allclose(back.apply("f", rows["a1"], "A"), norm.apply("f", rows["a1"], "A"))
    # a group the run never saw is fitted on its own rows (predict time)
    c = Moments(3)
    c.add(rows["b1"] + 10)
    more = back.with_groups_of(["f"], [3], [{"f": c}], ["C"])
    np.testing.assert_allclose(more.apply("f", rows["b1"] + 10, "C").mean(0), 0, atol=1e-5)
    glob = fit_normalizer("global", ["f"], [3], sums, [True, False, False], groups)
    np.testing.assert_allclose(glob.mean["f"], rows["a1"].mean(0))  # training rows only


def test_classic_readout_reproduces_scikit_learn():
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    from fuse.config import ClassicConfig
    from fuse.model.encoders.classic import fit_readout

    rng = np.random.default_rng(0)
    x = rng.standard_normal((90, 5))
    true = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int)  # classes 0, 1, 2
    y, ok = true[:, None].astype(np.float32), np.ones((90, 1), bool)
    cfg = ClassicConfig(c=0.5)
    w, b = fit_readout("logreg", "classification", x, y, ok, 4, cfg, None, 0)
    ref = LogisticRegression(C=0.5, max_iter=5000, random_state=0).fit(x, true)
    probs = torch.softmax(torch.from_numpy(x @ w.T + b), -1).numpy()
    np.testing.assert_allclose(probs[:, :3], ref.predict_proba(x), atol=1e-6)
    assert probs[:, 3].max() < 1e-6  # class 3 never in training: never predicted
    w, b = fit_readout("svm", "classification", x, y, ok, 3, cfg, None, 0)
    svc = LinearSVC(C=0.5, max_iter=5000, random_state=0, dual="auto").fit(x, true)
    np.testing.assert_array_equal((x @ w.T + b).argmax(1), svc.predict(x))
    binary = (x[:, 0] > 0).astype(np.float32)[:, None]
    w, b = fit_readout("logreg", "classification", x, binary, ok, 2, cfg, None, 0)
    ref = LogisticRegression(C=0.5, max_iter=5000, random_state=0).fit(x, binary[:, 0])
    probs = torch.softmax(torch.from_numpy(x @ w.T + b), -1).numpy()
    np.testing.assert_allclose(probs, ref.predict_proba(x), atol=1e-6)


def test_config_takes_loso_and_per_target_windows():
    cfg, problems = build_config({"labels": {"folds": "loso"},
                                  "train": {"snapshot_targets": {"arousal": "16,25"}}})
    assert not problems and cfg.labels.folds == "loso"
    assert cfg.train.snapshot_targets == {"arousal": [16, 25]}
    cfg, _ = build_config({"labels": {"folds": "5"}})
    assert cfg.labels.folds == 5


def test_stage_cache_is_bounded():
    from fuse.data.align import Aligned
    from fuse.data.cache import StageCache
    from fuse.data.dataset import StagedVideo

    def item(n: int) -> StagedVideo:
        return StagedVideo(np.zeros(n), None, {"f": Aligned(np.zeros((n, 4), np.float16),
                                                          np.ones(n, bool))}, {})

    size = item(10).nbytes
    cache = StageCache(max_bytes=3 * size)
    for k in range(5):
        cache.put(("k", k), item(10))
    assert len(cache) == 3 and cache.get(("k", 0)) is None and cache.get(("k", 4)) is not None
    assert cache.bytes == 3 * size
