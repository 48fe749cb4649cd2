"""Small pieces of the store shared by its modules: fingerprints, versions, names, times."""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np

from extract.errors import StoreError

_VERSION_PACKAGES = ("affect-feature-store", "numpy", "torch", "transformers", "zarr", "av",
                     "opensmile", "opencv-python-headless", "mediapipe", "onnxruntime",
                     "dlib-bin", "pillow")


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small objects at once.

    Loading an index of 200k videos or listing 200k input files otherwise triggers repeated
    full collections that walk every object made so far (measured: 2x slower). Reference
    counting still frees everything; only cycle detection waits until the block ends.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def fingerprint(obj: Mapping[str, Any]) -> str:
    """Stable short hash of a JSON-able config."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape a feature's numbers (looked up once per process)."""
    return dict(_package_versions())


@functools.lru_cache(maxsize=1)
def _package_versions() -> dict[str, str]:
    out = {}
    for name in _VERSION_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def regular_time(timestamps: np.ndarray, tol: float = 1e-6) -> dict[str, float] | None:
    """``{"start", "frame_shift"}`` when the rows are evenly spaced, else None."""
    if len(timestamps) < 2:
        return None
    steps = np.diff(timestamps)
    if np.all(np.abs(steps - steps[0]) <= tol * max(1.0, abs(steps[0]))):
        return {"start": float(timestamps[0]), "frame_shift": float(steps[0])}
    return None


def row_rate(timestamps: np.ndarray) -> float | None:
    """Rows per second from the median step (None for fewer than 2 rows or no spacing).

    The median, so a shorter last window (openSMILE) or one decode gap does not hide the rate.
    """
    if len(timestamps) < 2:
        return None
    step = float(np.median(np.diff(timestamps)))
    return round(1.0 / step, 6) if step > 0 else None


def check_name(name: str) -> str:
    """Feature names: letters, digits, ``_ . -``; not starting with ``_`` (reserved)."""
    if not name or name.startswith("_") or not all(c.isalnum() or c in "_.-" for c in name):
        raise StoreError(f"invalid feature name {name!r}: use letters, digits, '_', '.', '-' "
                         "and do not start with '_'")
    return name


def check_rows(feature: str, video: str, data: np.ndarray, t: np.ndarray, mask: np.ndarray,
               dim: int) -> None:
    if not video:
        raise StoreError(f"{feature}: a video id must not be empty")
    if data.ndim != 2 or data.shape[1] != dim:
        raise StoreError(f"{feature}/{video}: rows have shape {data.shape}, expected (T, {dim})")
    if len(t) != len(data) or len(mask) != len(data):
        raise StoreError(f"{feature}/{video}: {len(data)} rows but {len(t)} timestamps and "
                         f"{len(mask)} mask entries")
    if len(t) and (not np.all(np.isfinite(t)) or np.any(np.diff(t) < 0)):
        raise StoreError(f"{feature}/{video}: timestamps must be finite and non-decreasing")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def plain(obj: Any) -> Any:
    """``obj`` as JSON-able values (numpy scalars, paths … become numbers and strings)."""
    return json.loads(json.dumps(obj, default=_default))


def _default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


@dataclass(frozen=True)
class FeatureInfo:
    """What a feature group says about itself."""

    name: str
    modality: str
    dim: int
    extractor: str
    config: dict[str, Any]
    fingerprint: str
    dtype: str
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass
class FeatureArray:
    """One video's rows of one feature."""

    feature: str
    video: str
    data: np.ndarray  # (T, D)
    timestamps: np.ndarray  # (T,) seconds
    mask: np.ndarray  # (T,) bool
    attrs: dict[str, Any]

    @property
    def num_frames(self) -> int:
        return int(self.data.shape[0])


@dataclass
class VerifyReport:
    """Outcome of :meth:`FeatureStore.verify`: one line per problem, and what ``fix`` did."""

    checked: int = 0
    bytes_checked: int = 0
    incomplete: list[tuple[str, str]] = field(default_factory=list)  # damaged earlier (fixed)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # feature, what, why
    fixed: list[tuple[str, str, str]] = field(default_factory=list)  # feature, what, action

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def unfixed(self) -> list[tuple[str, str, str]]:
        done = {(f, w) for f, w, _ in self.fixed}
        return [p for p in self.problems if (p[0], p[1]) not in done]
