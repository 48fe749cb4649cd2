"""Classic baselines as encoders: ``svm`` | ``logreg`` | ``ridge`` (scikit-learn, linear).

A classic run is a :class:`~fuse.model.net.FusionNet` without learned layers: the z-scored,
filled features are pooled over each clip (``model.pool``: ``mean`` or ``mean_std``; per-frame
tasks use each step) and a linear read-out maps them to the task's outputs. The read-out is
fitted once, in closed form / by the scikit-learn solver, on the training split; its weights
live in ``best.pt`` like any model's, so ``eval``, ``predict``, ensembles and grids treat both
kinds alike.

Per label kind (``model.classic.c`` / ``alpha`` / ``max_iter``, ``train.class_weights``):

| encoder | classification | regression | multilabel (AU) |
|---|---|---|---|
| ``svm`` | ``LinearSVC`` (one-vs-rest) | ``LinearSVR`` per target | ``LinearSVC`` per AU |
| ``logreg`` | ``LogisticRegression`` (multinomial) | refused | ``LogisticRegression`` per AU |
| ``ridge`` | ``RidgeClassifier`` | ``Ridge`` | ``RidgeClassifier`` per AU |

The read-out's outputs go through the task's activation as a network's would: a softmax for
classes (the exact probabilities of ``logreg``; for ``svm`` / ``ridge`` a softmax of decision
scores, whose argmax is the estimator's own prediction but which are not calibrated
probabilities), a sigmoid for AUs (0.5 is the estimator's own boundary).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from fuse.model.encoders.base import ENCODERS
from fuse.model.encoders.identity import IdentityEncoder

CLASSIC_POOLS = ("mean", "mean_std")  # pooling without learned weights
ABSENT = -1.0e4  # read-out bias of a class the training split never shows


class ClassicEncoder(IdentityEncoder):
    """Marks a classic estimator; passes the features through unchanged (no parameters)."""

    classic: ClassVar[bool] = True
    kinds: ClassVar[tuple[str, ...]] = ("classification", "regression", "multilabel")

    @classmethod
    def estimator(cls, kind: str, cfg, class_weight: dict[int, float] | None, seed: int):
        """A fresh scikit-learn estimator for one fit (single output for regression and
        multilabel columns)."""
        raise NotImplementedError


@ENCODERS.register("svm")
class SVMEncoder(ClassicEncoder):
    @classmethod
    def estimator(cls, kind, cfg, class_weight, seed):
        from sklearn.svm import LinearSVC, LinearSVR

        if kind == "regression":
            return LinearSVR(C=cfg.c, max_iter=cfg.max_iter, random_state=seed, dual="auto")
        return LinearSVC(C=cfg.c, max_iter=cfg.max_iter, class_weight=class_weight,
                         random_state=seed, dual="auto")


@ENCODERS.register("logreg")
class LogRegEncoder(ClassicEncoder):
    kinds = ("classification", "multilabel")

    @classmethod
    def estimator(cls, kind, cfg, class_weight, seed):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=cfg.c, max_iter=cfg.max_iter, class_weight=class_weight,
                                  random_state=seed)


@ENCODERS.register("ridge")
class RidgeEncoder(ClassicEncoder):
    @classmethod
    def estimator(cls, kind, cfg, class_weight, seed):
        from sklearn.linear_model import Ridge, RidgeClassifier

        if kind == "regression":
            return Ridge(alpha=cfg.alpha)
        return RidgeClassifier(alpha=cfg.alpha, class_weight=class_weight)


def is_classic(name: str) -> bool:
    return name in ENCODERS and getattr(ENCODERS.get(name), "classic", False)


def check(name: str, kind: str, pool: str, level: str) -> list[str]:
    """Problems of a classic encoder with the labels' kind and the pooling."""
    enc = ENCODERS.get(name)
    p = []
    if kind not in enc.kinds:
        p.append(f"model.encoder.name: {name!r} does not fit {kind} labels; use "
                 f"{' or '.join(n for n in ENCODERS.names() if is_classic(n) and kind in ENCODERS.get(n).kinds)}")  # noqa: E501
    if level == "video" and pool not in CLASSIC_POOLS:
        p.append(f"model.pool: {pool!r} has learned weights; a classic encoder ({name}) pools "
                 f"with {' or '.join(CLASSIC_POOLS)}")
    return p


def fit_readout(name: str, kind: str, x: np.ndarray, y: np.ndarray, ok: np.ndarray,
                n_out: int, cfg, class_weights: np.ndarray | None,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fit on rows ``x`` (N, D) with labels ``y`` / ``ok`` (N, K); the read-out's weight
    (n_out, D) and bias (n_out,)."""
    from fuse.errors import DataError

    enc = ENCODERS.get(name)
    weight = np.zeros((n_out, x.shape[1]), np.float64)
    bias = np.zeros(n_out, np.float64)
    if kind == "classification":
        rows = ok[:, 0]
        target = y[rows, 0].astype(int)
        present = np.unique(target)
        if len(present) < 2:
            raise DataError(f"{name}: the training split has labels of {len(present)} class "
                            "only; a classifier needs two or more")
        weights = None if class_weights is None else {
            int(c): float(class_weights[c]) for c in present}
        est = enc.estimator(kind, cfg, weights, seed).fit(x[rows], target)
        coef = np.atleast_2d(est.coef_)
        inter = np.atleast_1d(est.intercept_)
        bias[:] = ABSENT
        if len(est.classes_) == 2:  # one decision d: scores [0, d] (softmax = sigmoid(d))
            bias[est.classes_[0]] = 0.0
            weight[est.classes_[1]], bias[est.classes_[1]] = coef[0], inter[0]
        else:
            weight[est.classes_], bias[est.classes_] = coef, inter
        return weight, bias
    for k in range(y.shape[1]):  # one estimator per target / AU, on its valid rows
        rows = ok[:, k]
        if not rows.any():
            raise DataError(f"{name}: target {k} has no valid training label")
        target = y[rows, k]
        if kind == "multilabel":
            target = target.astype(int)
            if len(np.unique(target)) < 2:  # constant in training: a fixed decision
                bias[k] = -ABSENT if target[0] == 1 else ABSENT
                continue
        est = enc.estimator(kind, cfg, None, seed).fit(x[rows], target)
        weight[k] = np.ravel(est.coef_)  # binary: the decision d of class 1 (sigmoid ≥ ½ ⇔ d ≥ 0)
        bias[k] = float(np.ravel(est.intercept_)[0])
    return weight, bias
