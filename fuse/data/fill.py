"""Fill policies for invalid grid steps (no face, no audio), applied after normalisation.

- ``nearest``: the nearest valid step in time (ties: the earlier one), as papers 002/004 do.
- ``hold``: the last valid step before; steps before the first valid one take the first valid.
- ``zero``: zeros (the feature's training mean, since values are z-scored first).

A video with no valid step at all gets zeros. The validity mask itself is kept for the model.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from extract.registry import Registry

FillPolicy = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
FILL_POLICIES: Registry[FillPolicy] = Registry("fill policy")


def source_rows(policy: str, valid: np.ndarray, times: np.ndarray) -> np.ndarray | None:
    """Index each step takes its values from (-1: zeros), or None when nothing is invalid."""
    if valid.all():
        return None
    return FILL_POLICIES.get(policy)(valid, times)


@FILL_POLICIES.register("nearest")
def fill_nearest(valid: np.ndarray, times: np.ndarray) -> np.ndarray:
    good = np.flatnonzero(valid)
    if len(good) == 0:
        return np.full(len(valid), -1)
    if len(good) == 1:
        return np.full(len(valid), good[0])
    t = times[good]
    pos = np.clip(np.searchsorted(t, times, side="left"), 1, len(good) - 1)
    take_left = (times - t[pos - 1]) <= (t[pos] - times)
    return np.where(take_left, good[pos - 1], good[pos])


@FILL_POLICIES.register("hold")
def fill_hold(valid: np.ndarray, times: np.ndarray) -> np.ndarray:
    good = np.flatnonzero(valid)
    if len(good) == 0:
        return np.full(len(valid), -1)
    last = np.maximum.accumulate(np.where(valid, np.arange(len(valid)), -1))
    return np.where(last >= 0, last, good[0])


@FILL_POLICIES.register("zero")
def fill_zero(valid: np.ndarray, times: np.ndarray) -> np.ndarray:
    return np.where(valid, np.arange(len(valid)), -1)


def apply_fill(values: np.ndarray, valid: np.ndarray, times: np.ndarray, policy: str) -> None:
    """Fill ``values`` (N, D) in place at the invalid steps."""
    src = source_rows(policy, valid, times)
    if src is None:
        return
    bad = ~valid
    take = src[bad]
    values[bad] = np.where((take >= 0)[:, None], values[np.maximum(take, 0)], 0)
