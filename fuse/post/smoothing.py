"""Centred moving average per prediction column (paper 004: 20 frames valence, 50 arousal)."""

from __future__ import annotations

import numpy as np


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """(N, K) → (N, K): the mean over ``window`` steps centred on each step.

    An odd window takes ``window // 2`` steps each side. An even window is centred too: the
    ``window - 1`` middle steps count fully and the two steps at ``± window / 2`` count half
    (total weight ``window``), so a ramp stays in place instead of lagging by half a step. At
    the ends the taps outside the video are left out and the rest renormalised.
    """
    n = len(x)
    if window <= 1 or n == 0:
        return x.copy()
    csum = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0, dtype=np.float64)])
    i = np.arange(n)
    half = window // 2
    even = window % 2 == 0
    first, last = (i - half + 1, i + half - 1) if even else (i - half, i + half)
    lo, hi = np.clip(first, 0, n), np.clip(last + 1, 0, n)
    total = csum[hi] - csum[lo]  # (N, K) full-weight taps
    weight = (hi - lo).astype(np.float64)  # (N,)
    if even:
        for side in (i - half, i + half):
            inside = (side >= 0) & (side < n)
            total[inside] += 0.5 * x[side[inside]]
            weight[inside] += 0.5
    return (total / weight[:, None]).astype(x.dtype)


def smooth_columns(x: np.ndarray, windows: list[int]) -> np.ndarray:
    """Each column k smoothed with its own window ``windows[k]``."""
    out = x.copy()
    for w in sorted(set(windows)):
        cols = [k for k, wk in enumerate(windows) if wk == w]
        if w > 1:
            out[:, cols] = moving_average(x[:, cols], w)
    return out
