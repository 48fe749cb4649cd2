"""Per-feature z-scores, fitted on the valid rows of the training videos only."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BLOCK_ROWS = 8192  # rows summed at a time (bounds the float64 temporaries)
MIN_STD = 1e-6  # a constant column is divided by 1 instead


@dataclass
class Moments:
    """Running count, sum and sum of squares of one feature's rows (float64)."""

    dim: int
    count: int = 0
    total: np.ndarray = field(init=False)
    squares: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.total = np.zeros(self.dim)
        self.squares = np.zeros(self.dim)

    def add(self, rows: np.ndarray) -> None:
        """Accumulate ``rows`` (T, D) in blocks (no whole-array float64 copy)."""
        for start in range(0, len(rows), BLOCK_ROWS):
            block = rows[start : start + BLOCK_ROWS].astype(np.float64)
            self.total += block.sum(axis=0)
            self.squares += np.square(block).sum(axis=0)
        self.count += len(rows)

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        if self.count == 0:
            return np.zeros(self.dim), np.ones(self.dim)
        mean = self.total / self.count
        var = np.maximum(self.squares / self.count - mean**2, 0.0)
        std = np.sqrt(var)
        return mean, np.where(std < MIN_STD, 1.0, std)


@dataclass
class Normalizer:
    """Mean and std per feature; saved in every checkpoint."""

    mean: dict[str, np.ndarray]  # feature → (D,) float64
    std: dict[str, np.ndarray]  # feature → (D,) float64

    @classmethod
    def fit(cls, moments: dict[str, Moments]) -> Normalizer:
        stats = {name: m.mean_std() for name, m in moments.items()}
        return cls({n: s[0] for n, s in stats.items()}, {n: s[1] for n, s in stats.items()})

    def apply(self, name: str, values: np.ndarray) -> np.ndarray:
        """(N, D) → z-scores as float32."""
        return ((values.astype(np.float32) - self.mean[name].astype(np.float32))
                / self.std[name].astype(np.float32))

    def state_dict(self) -> dict[str, dict[str, list[float]]]:
        return {"mean": {k: v.tolist() for k, v in self.mean.items()},
                "std": {k: v.tolist() for k, v in self.std.items()}}

    @classmethod
    def from_state_dict(cls, state: dict) -> Normalizer:
        return cls({k: np.asarray(v) for k, v in state["mean"].items()},
                   {k: np.asarray(v) for k, v in state["std"].items()})
