"""Frame sampling policies: every frame, a target fps, or N evenly spaced frames per video."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from extract.errors import ConfigError


@dataclass(frozen=True)
class Sampling:
    """``all``, ``fps:F`` (nearest frame to each 1/F step) or ``count:N`` (N evenly spaced)."""

    mode: str = "all"
    value: float = 0.0

    @classmethod
    def parse(cls, text: str | None) -> Sampling:
        if not text or text == "all":
            return cls()
        mode, _, value = text.partition(":")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if mode not in ("fps", "count") or number <= 0:
            raise ConfigError(f"sampling {text!r}: use 'all', 'fps:F' (F > 0) or 'count:N' (N > 0)")
        if mode == "count" and number != int(number):
            raise ConfigError(f"sampling {text!r}: the count must be a whole number")
        return cls(mode, number)

    def __str__(self) -> str:
        return "all" if self.mode == "all" else f"{self.mode}:{self.value:g}"

    def select(self, times: np.ndarray) -> np.ndarray:
        """Indices (sorted, unique) of the frames to keep, given all frame times (sorted)."""
        n = len(times)
        if self.mode == "all" or n == 0:
            return np.arange(n)
        if self.mode == "count":
            k = int(self.value)
            if k >= n:
                return np.arange(n)
            return np.unique(np.round(np.linspace(0, n - 1, k)).astype(int))
        targets = np.arange(times[0], times[-1] + 1e-9, 1.0 / self.value)
        pos = np.clip(np.searchsorted(times, targets), 1, n - 1)
        left_closer = (targets - times[pos - 1]) <= (times[pos] - targets)
        idx = np.where(left_closer, pos - 1, pos)
        if n == 1:
            idx = np.zeros_like(idx)
        return np.unique(idx)
