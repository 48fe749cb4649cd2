"""Per-feature z-scores (``data.normalize``), a registry of how they are fitted:

- ``global``: one mean / std per feature from the valid rows of the training videos only;
- ``group``: one per group (speaker, subject: ``labels.group_by``) and feature, from all of that
  group's videos in every split. Features only, never labels, so a held-out speaker is
  normalised by their own recordings (speaker normalisation, as in speech emotion work). Every
  video needs a real group (never itself), and every group two or more valid rows of each
  feature (one row z-scores to zeros); both are refused otherwise. At ``predict`` time a video
  keeps the group it was fitted with; a new video needs its group given (``fuse predict
  --groups``), and a group the run never saw is fitted on its own videos;
- ``none``: the stored values as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from extract.registry import Registry
from fuse.data.cast import to_f32
from fuse.errors import DataError

log = logging.getLogger(__name__)

BLOCK_ROWS = 8192  # rows summed at a time (bounds the float64 temporaries)
MIN_STD = 1e-6  # a constant column is divided by 1 instead


@dataclass
class Moments:
    """Count, mean and sum of squared deviations of one feature's rows (float64), combined
    block by block with Chan's parallel formula: stable when the mean is large against the
    spread, where sums of squares cancel."""

    dim: int
    count: int = 0
    mean: np.ndarray = field(init=False)
    m2: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.mean = np.zeros(self.dim)
        self.m2 = np.zeros(self.dim)

    def merge(self, other: Moments) -> None:
        """Add another set of moments (of the same feature) to this one."""
        self._combine(other.count, other.mean, other.m2)

    def add(self, rows: np.ndarray) -> None:
        """Accumulate ``rows`` (T, D) in blocks of ``BLOCK_ROWS``: each block's mean in
        float64, its squared deviations from that mean in float32 (centred, so float32 keeps
        its 7 digits), then combined in float64."""
        for start in range(0, len(rows), BLOCK_ROWS):
            block = to_f32(rows[start : start + BLOCK_ROWS])  # (B, D)
            if not len(block):
                continue
            mean = block.sum(axis=0, dtype=np.float64) / len(block)
            dev = block - mean.astype(np.float32)
            self._combine(len(block), mean, np.einsum("ij,ij->j", dev, dev).astype(np.float64))

    def _combine(self, n: int, mean: np.ndarray, m2: np.ndarray) -> None:
        if n == 0:
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        if self.count == 0:
            return np.zeros(self.dim), np.ones(self.dim)
        std = np.sqrt(np.maximum(self.m2 / self.count, 0.0))
        return self.mean.copy(), np.where(std < MIN_STD, 1.0, std)


@dataclass
class Normalizer:
    """Mean and std per feature; saved in every checkpoint."""

    mean: dict[str, np.ndarray]  # feature → (D,) float64
    std: dict[str, np.ndarray]  # feature → (D,) float64

    @classmethod
    def fit(cls, moments: dict[str, Moments]) -> Normalizer:
        stats = {name: m.mean_std() for name, m in moments.items()}
        return cls({n: s[0] for n, s in stats.items()}, {n: s[1] for n, s in stats.items()})

    def apply(self, name: str, values: np.ndarray, group: str | None = None) -> np.ndarray:
        """(N, D) → z-scores as a new float32 array (``group`` is ignored: one set of
        statistics)."""
        z = to_f32(values)
        z -= self.mean[name].astype(np.float32)
        z /= self.std[name].astype(np.float32)
        return z

    def state_dict(self) -> dict:
        return {"mean": {k: v.tolist() for k, v in self.mean.items()},
                "std": {k: v.tolist() for k, v in self.std.items()}}

    @classmethod
    def from_state_dict(cls, state: dict) -> Normalizer:
        """Either kind, as saved in a checkpoint."""
        if state.get("kind") == "group":
            return GroupNormalizer.from_state_dict(state)
        return cls({k: np.asarray(v) for k, v in state["mean"].items()},
                   {k: np.asarray(v) for k, v in state["std"].items()})


@dataclass
class GroupNormalizer(Normalizer):
    """Mean and std per group and feature (``mean`` / ``std`` hold the groups' pooled values,
    used by nothing but kept for inspection)."""

    groups: dict[str, Normalizer] = field(default_factory=dict)  # group → its statistics
    videos: dict[str, str] = field(default_factory=dict)  # video → group, for the videos the
    #                                                       statistics were fitted on

    def group_of(self, video: str, given: str | None) -> str | None:
        """A video's group: the one given (labels, --groups), else the one it was fitted with."""
        return given or self.videos.get(video)

    def apply(self, name: str, values: np.ndarray, group: str | None = None) -> np.ndarray:
        if group not in self.groups:
            raise KeyError(f"data.normalize=group: no statistics for group {group!r}")
        return self.groups[group].apply(name, values)

    def with_groups_of(self, names: list[str], dims: list[int],
                       moments: list[dict[str, Moments]], groups: list[str]) -> GroupNormalizer:
        """This normaliser plus statistics for the groups in ``groups`` it has not seen,
        fitted on those videos' own features (e.g. new speakers at predict time)."""
        new = sorted(set(groups) - set(self.groups))
        if not new:
            return self
        log.warning("data.normalize=group: %d groups the run never saw are normalised by their "
                    "own videos' statistics", len(new))
        fitted = fit_group(names, dims, moments, [g in new for g in groups], groups)
        return GroupNormalizer(self.mean, self.std, {**self.groups, **fitted.groups},
                               dict(self.videos))

    def state_dict(self) -> dict:
        return {"kind": "group", **super().state_dict(),
                "groups": {g: n.state_dict() for g, n in self.groups.items()},
                "videos": dict(self.videos)}

    @classmethod
    def from_state_dict(cls, state: dict) -> GroupNormalizer:
        base = Normalizer.from_state_dict({"mean": state["mean"], "std": state["std"]})
        return cls(base.mean, base.std, {g: Normalizer.from_state_dict(n)
                                         for g, n in state["groups"].items()},
                   dict(state.get("videos", {})))


# ------------------------------------------------------------------------------ fitting
Fit = Callable[[list[str], list[int], list[dict[str, Moments]], list[bool], list[str]],
               Normalizer]
NORMALIZATIONS: Registry[Fit] = Registry("normalisation")


def fit_normalizer(kind: str, names: list[str], dims: list[int],
                   moments: list[dict[str, Moments]], fits: list[bool],
                   groups: list[str]) -> Normalizer:
    """Fit ``kind`` from per-video sums; ``fits`` marks the videos a global fit may use
    (training split), ``groups`` gives each video's group."""
    return NORMALIZATIONS.get(kind)(names, dims, moments, fits, groups)


@NORMALIZATIONS.register("global")
def fit_global(names: list[str], dims: list[int], moments: list[dict[str, Moments]],
               fits: list[bool], groups: list[str]) -> Normalizer:
    total = {n: Moments(d) for n, d in zip(names, dims, strict=True)}
    for video, use in zip(moments, fits, strict=True):
        if use:
            for n in names:
                total[n].merge(video[n])
    return Normalizer.fit(total)


@NORMALIZATIONS.register("group")
def fit_group(names: list[str], dims: list[int], moments: list[dict[str, Moments]],
              fits: list[bool], groups: list[str]) -> GroupNormalizer:
    """One set per group from the videos ``fits`` marks (``load_fused`` passes every video:
    features are not labels)."""
    per: dict[str, dict[str, Moments]] = {}
    pooled = {n: Moments(d) for n, d in zip(names, dims, strict=True)}
    for video, group, use in zip(moments, groups, fits, strict=True):
        if not use:
            continue
        sums = per.setdefault(group, {n: Moments(d) for n, d in zip(names, dims, strict=True)})
        for n in names:
            sums[n].merge(video[n])
            pooled[n].merge(video[n])
    thin = sorted(f"{g} ({n}: {sums[n].count} row)" for g, sums in per.items() for n in names
                  if sums[n].count == 1)
    if thin:
        raise DataError(f"data.normalize=group: {len(thin)} group/feature pairs have a single "
                        f"valid row, which z-scores to all zeros: {', '.join(thin[:5])}"
                        f"{' …' if len(thin) > 5 else ''}; every group needs two or more rows "
                        "of each feature (more videos per speaker / subject, or "
                        "data.normalize=global)")
    base = Normalizer.fit(pooled)
    return GroupNormalizer(base.mean, base.std, {g: Normalizer.fit(m) for g, m in per.items()})


@NORMALIZATIONS.register("none")
def fit_none(names: list[str], dims: list[int], moments: list[dict[str, Moments]],
             fits: list[bool], groups: list[str]) -> Normalizer:
    return Normalizer({n: np.zeros(d) for n, d in zip(names, dims, strict=True)},
                      {n: np.ones(d) for n, d in zip(names, dims, strict=True)})
