"""Metrics against hand-computed values; invalid labels masked out of losses and metrics;
smoothing and the post-processing chosen on validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fuse.config import PostConfig, TaskConfig
from fuse.post.pipeline import PostProcess, tune_post
from fuse.post.smoothing import moving_average
from fuse.tasks import build_task, losses, metrics


def test_ccc_and_pearson_by_hand():
    x, y = np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0])
    # means 2, 4; population variances 2/3, 8/3; covariance 4/3
    assert metrics.ccc(x, y) == pytest.approx((8 / 3) / (2 / 3 + 8 / 3 + 4))
    assert metrics.pearson(x, y) == pytest.approx(1.0)
    assert metrics.ccc(x, x) == pytest.approx(1.0)
    assert metrics.pearson(x, np.ones(3)) == 0.0
    assert np.isnan(metrics.ccc(np.array([]), np.array([])))


def test_f1_by_hand():
    true, pred = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 2])
    # class 0: tp 1, fn 1 -> 2/3; class 1: tp 2, fp 1 -> 4/5; class 2: 1
    np.testing.assert_allclose(metrics.f1_per_class(pred, true, 3), [2 / 3, 0.8, 1.0])
    assert metrics.macro_f1(pred, true, 3) == pytest.approx((2 / 3 + 0.8 + 1) / 3)
    # a 4th class in neither labels nor predictions has no F1 (scikit-learn's macro F1)
    assert metrics.macro_f1(pred, true, 4) == pytest.approx((2 / 3 + 0.8 + 1) / 3)
    np.testing.assert_array_equal(metrics.confusion_matrix(pred, true, 3),
                                  [[1, 1, 0], [0, 2, 0], [0, 0, 1]])
    assert metrics.binary_f1(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0])) == pytest.approx(0.5)


def test_best_threshold():
    prob, true = np.array([0.1, 0.3, 0.35, 0.8]), np.array([0, 1, 1, 1])
    thr, f1 = metrics.best_threshold(prob, true)
    assert 0.1 < thr <= 0.3 and f1 == pytest.approx(1.0)


def test_moving_average_by_hand():
    x = np.array([0.0, 0.0, 3.0, 0.0, 0.0])[:, None]
    np.testing.assert_allclose(moving_average(x, 3)[:, 0], [0, 1, 1, 1, 0])
    np.testing.assert_allclose(moving_average(x, 1), x)


def test_invalid_labels_are_masked_out_of_the_va_loss():
    task = build_task(TaskConfig(name="va"), ["valence", "arousal"])
    pred = torch.randn(2, 30, 2, requires_grad=True)
    y = torch.rand(2, 30, 2) * 2 - 1
    ok = torch.rand(2, 30, 2) > 0.2
    y_bad = torch.where(ok, y, torch.full_like(y, -5.0))  # invalid entries hold the marker
    loss = task.loss([pred], y_bad, ok)
    loss.backward()
    assert pred.grad[~ok].abs().max() == 0  # no gradient from invalid frames
    assert loss.item() == pytest.approx(task.loss([pred], y, ok).item())


def test_invalid_labels_are_masked_out_of_expr_loss_and_metric():
    task = build_task(TaskConfig(name="expr", rdrop_alpha=1.0), [str(i) for i in range(8)])
    logits = torch.randn(40, 8, requires_grad=True)
    target = torch.randint(0, 8, (40, 1)).float()
    ok = torch.ones(40, 1, dtype=torch.bool)
    ok[::3] = False
    garbage = torch.where(ok, target, torch.full_like(target, -1.0)).clamp(min=0)
    loss = task.loss([logits, logits], garbage, ok)
    loss.backward()
    assert logits.grad[~ok[:, 0]].abs().max() == 0
    # the metric ignores invalid frames whatever the prediction there
    pred = torch.softmax(logits, -1).detach().numpy()
    y, valid = target.numpy(), ok.numpy()
    scrambled = pred.copy()
    scrambled[~valid[:, 0]] = np.roll(scrambled[~valid[:, 0]], 3, axis=1)
    assert task.score(pred, y, valid) == task.score(scrambled, y, valid)


def test_au_loss_masks_invalid_units():
    task = build_task(TaskConfig(name="au"), [f"AU{i}" for i in range(12)])
    logits = torch.randn(10, 12, requires_grad=True)
    y = torch.randint(0, 2, (10, 12)).float()
    ok = torch.rand(10, 12) > 0.3
    task.loss([logits], torch.where(ok, y, -torch.ones_like(y)).clamp(min=0), ok).backward()
    assert logits.grad[~ok].abs().max() == 0


def test_ccc_loss_matches_the_metric():
    x, y = torch.randn(200, 2), torch.randn(200, 2)
    ok = torch.ones(200, 2, dtype=torch.bool)
    expected = 1 - np.mean([metrics.ccc(x[:, k].numpy(), y[:, k].numpy()) for k in range(2)])
    assert losses.ccc_loss(x, y, ok).item() == pytest.approx(expected, abs=1e-5)


def test_eri_auxiliary_loss_adds_cross_entropy_on_the_argmax_emotion():
    targets = [f"e{i}" for i in range(7)]
    plain = build_task(TaskConfig(name="eri"), targets)
    aux = build_task(TaskConfig(name="eri", aux_weight=0.01), targets)
    assert plain.out_dim == 7 and aux.out_dim == 14
    out = torch.randn(4, 14)
    y, ok = torch.rand(4, 7), torch.ones(4, 7, dtype=torch.bool)
    ce = torch.nn.functional.cross_entropy(out[:, 7:], y.argmax(1))
    expected = torch.nn.functional.mse_loss(out[:, :7], y) + 0.01 * ce
    assert aux.loss([out], y, ok).item() == pytest.approx(expected.item(), rel=1e-5)
    assert aux.activate(out).shape == (4, 7)


def test_smoothing_window_chosen_per_target_on_validation():
    rng = np.random.default_rng(0)
    t = np.arange(2000)
    smooth = np.sin(t / 60.0)
    truth = np.stack([smooth, smooth], axis=1)
    # column 0 is noisy (smoothing helps), column 1 is exact (smoothing only hurts)
    pred = truth + np.stack([0.8 * rng.standard_normal(2000), np.zeros(2000)], axis=1)
    task = build_task(TaskConfig(name="va"), ["valence", "arousal"])
    post = tune_post(task, [pred], [truth], [np.ones_like(truth, bool)],
                     PostConfig(windows=[1, 5, 20, 50]), "frame")
    assert post.windows[0] > 1 and post.windows[1] == 1
    assert post.clip == (-1.0, 1.0)
    again = PostProcess.from_dict(post.to_dict())
    np.testing.assert_allclose(again.apply(pred), post.apply(pred))
    assert np.abs(post.apply(pred)).max() <= 1.0


def test_au_thresholds_are_tuned_only_when_no_decision_is_given():
    task = build_task(TaskConfig(name="au"), ["AU1"])
    pred = np.array([[0.1], [0.2], [0.3], [0.4]])  # all below 0.5, but ordered like the truth
    y, ok = np.array([[0], [0], [1], [1]]), np.ones((4, 1), bool)
    assert task.score(pred, y, ok, None)["score"] == 1.0  # tuned here (model selection on val)
    assert task.score(pred, y, ok, {})["score"] == 0.0  # given: 0.5, never tuned on this split
    assert task.score(pred, y, ok, {"thresholds": [0.25]})["score"] == 1.0
