"""Challenge metrics in numpy: CCC, Pearson, F1 (macro, per class, per AU), recall and UAR,
confusion matrix.

Arrays hold only valid entries (callers drop invalid frames first). A metric over no entries is
NaN; a constant prediction or target gives a correlation of 0.
"""

from __future__ import annotations

import numpy as np

THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)  # candidates for per-AU tuning


def ccc(pred: np.ndarray, true: np.ndarray) -> float:
    """Concordance correlation coefficient (population moments, as the ABAW scripts)."""
    x, y = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    if len(x) == 0:
        return float("nan")
    mx, my = x.mean(), y.mean()
    cov = ((x - mx) * (y - my)).mean()
    denom = x.var() + y.var() + (mx - my) ** 2
    return float(2 * cov / denom) if denom > 0 else 0.0


def pearson(pred: np.ndarray, true: np.ndarray) -> float:
    x, y = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    if len(x) == 0:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    denom = np.sqrt((dx**2).sum() * (dy**2).sum())
    return float((dx * dy).sum() / denom) if denom > 0 else 0.0


def confusion_matrix(pred: np.ndarray, true: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) counts: rows are true classes, columns predicted."""
    out = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(out, (np.asarray(true, int), np.asarray(pred, int)), 1)
    return out


def f1_per_class(pred: np.ndarray, true: np.ndarray, n_classes: int) -> np.ndarray:
    """(C,) F1 of each class; NaN for a class absent from both ``true`` and ``pred`` (it has
    no F1); a class present in one of them and never right scores 0."""
    cm = confusion_matrix(pred, true, n_classes)
    tp = np.diag(cm).astype(np.float64)
    denom = 2 * tp + (cm.sum(axis=0) - tp) + (cm.sum(axis=1) - tp)
    return np.divide(2 * tp, denom, out=np.full(n_classes, np.nan), where=denom > 0)


def recall_per_class(pred: np.ndarray, true: np.ndarray, n_classes: int) -> np.ndarray:
    """(C,) recall of each class; NaN for a class absent from ``true``."""
    cm = confusion_matrix(pred, true, n_classes)
    support = cm.sum(axis=1).astype(np.float64)
    return np.divide(np.diag(cm), support, out=np.full(n_classes, np.nan), where=support > 0)


def uar(pred: np.ndarray, true: np.ndarray, n_classes: int) -> float:
    """Unweighted average recall: the mean recall over the classes present in ``true``
    (balanced accuracy; the standard metric of speech emotion recognition)."""
    if len(true) == 0:
        return float("nan")
    return float(np.nanmean(recall_per_class(pred, true, n_classes)))


def macro_f1(pred: np.ndarray, true: np.ndarray, n_classes: int) -> float:
    """Mean F1 over the classes present in ``true`` or ``pred`` (scikit-learn's
    ``f1_score(average="macro")`` without ``labels=``, as the ABAW scripts call it): a class
    absent from both does not count as 0."""
    if len(true) == 0:
        return float("nan")
    return float(np.nanmean(f1_per_class(pred, true, n_classes)))


def binary_f1(pred: np.ndarray, true: np.ndarray) -> float:
    p, t = np.asarray(pred, bool), np.asarray(true, bool)
    if len(t) == 0:
        return float("nan")
    tp = np.sum(p & t)
    denom = 2 * tp + np.sum(p & ~t) + np.sum(~p & t)
    return float(2 * tp / denom) if denom > 0 else 0.0


def best_threshold(prob: np.ndarray, true: np.ndarray,
                   candidates: np.ndarray = THRESHOLDS) -> tuple[float, float]:
    """The threshold maximising binary F1 (ties: the one nearest 0.5), and that F1."""
    scores = np.array([binary_f1(prob >= c, true) for c in candidates])
    if np.all(np.isnan(scores)):
        return 0.5, float("nan")
    best = np.flatnonzero(scores == np.nanmax(scores))
    pick = best[np.argmin(np.abs(candidates[best] - 0.5))]
    return float(candidates[pick]), float(scores[pick])
