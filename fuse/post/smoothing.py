"""Centred moving average per prediction column (paper 004: 20 frames valence, 50 arousal)."""

from __future__ import annotations

import numpy as np


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """(N, K) → (N, K): mean of the ``window`` steps centred on each step (fewer at the edges)."""
    n = len(x)
    if window <= 1 or n == 0:
        return x.copy()
    csum = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0, dtype=np.float64)])
    i = np.arange(n)
    lo = np.clip(i - window // 2, 0, n)
    hi = np.clip(i - window // 2 + window, 0, n)
    return ((csum[hi] - csum[lo]) / (hi - lo)[:, None]).astype(x.dtype)


def smooth_columns(x: np.ndarray, windows: list[int]) -> np.ndarray:
    """Each column k smoothed with its own window ``windows[k]``."""
    out = x.copy()
    for w in sorted(set(windows)):
        cols = [k for k, wk in enumerate(windows) if wk == w]
        if w > 1:
            out[:, cols] = moving_average(x[:, cols], w)
    return out
