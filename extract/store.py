"""The feature store: one Zarr v3 group per store, one group per feature, one array per video.

Layout (the contract both stages share)::

    store.zarr/                     root group, attrs {"affect_store": 1}
      <feature>/                    group; attrs: modality, dim, extractor, config, fingerprint
        <video key>                 (T, D) array, dims ("frame", "dim"), float16 by default;
                                    attrs: video id, time (start + frame_shift when regular),
                                    fingerprint, versions, source, and "complete" written last
        _time/<video key>           (T,) float64 row timestamps in seconds
        _mask/<video key>           (T,) bool validity (False: no face, no audio, decode gap)
      _runs/<run id>/               run records (resolved config, failures.jsonl, summary.json)
      _locks/store.lock             flock serialising feature creation between processes
      _claims/                      claim files of concurrent writers (extract.claims)

A video is done when its data array carries ``complete: true``; anything else is redone.
``fuse`` reads the store only through :class:`FeatureStore`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from extract import chunkio
from extract.errors import ConfigMismatchError, StoreError
from extract.ids import video_id_from_key, video_key

log = logging.getLogger(__name__)

STORE_FORMAT = 1
TIME_GROUP = "_time"
MASK_GROUP = "_mask"
RUNS_GROUP = "_runs"
LOCKS_GROUP = "_locks"
TARGET_CHUNK_BYTES = 8 << 20
_VERSION_PACKAGES = ("affect-feature-store", "numpy", "torch", "transformers", "zarr", "av",
                     "opensmile", "opencv-python-headless")


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


def check_name(name: str) -> str:
    """Feature names: letters, digits, ``_ . -``; not starting with ``_`` (reserved)."""
    if not name or name.startswith("_") or not all(c.isalnum() or c in "_.-" for c in name):
        raise StoreError(f"invalid feature name {name!r}: use letters, digits, '_', '.', '-' "
                         "and do not start with '_'")
    return name


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
    """Outcome of :meth:`FeatureStore.verify`."""

    checked: int = 0
    incomplete: list[tuple[str, str]] = field(default_factory=list)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # feature, video, what

    @property
    def ok(self) -> bool:
        return not self.problems


class FeatureStore:
    """A Zarr v3 feature store on a local path or an fsspec URL (``s3://…``, ``memory://…``)."""

    def __init__(self, path: str | Path, mode: str = "r") -> None:
        import zarr

        self.path = str(path)
        self.mode = mode
        self._write_infos: dict[str, FeatureInfo] = {}
        if mode == "r" and not self._exists():
            raise StoreError(f"no feature store at {self.path}")
        try:
            self.root = zarr.open_group(self.path, mode="r" if mode == "r" else "a")
        except Exception as exc:  # zarr raises several types for a non-store path
            raise StoreError(f"cannot open feature store at {self.path}: {exc}") from exc
        if mode != "r" and "affect_store" not in self.root.attrs:
            self.root.attrs.update({"affect_store": STORE_FORMAT})

    def _exists(self) -> bool:
        if "://" in self.path:
            return True
        return (Path(self.path) / "zarr.json").is_file()

    @property
    def is_local(self) -> bool:
        return "://" not in self.path

    # ----------------------------------------------------------------- features
    def features(self) -> list[str]:
        """Feature names in the store."""
        return sorted(k for k in self.root.group_keys() if not k.startswith("_"))

    def has_feature(self, name: str) -> bool:
        return name in self.features()

    def feature_info(self, name: str) -> FeatureInfo:
        group = self._feature_group(name)
        a = dict(group.attrs)
        if "fingerprint" not in a:
            raise StoreError(f"feature group {name!r} in {self.path} has no attributes (its "
                             "creation was interrupted); re-run the extraction to finish it")
        return FeatureInfo(name, a["modality"], int(a["dim"]), a["extractor"], a.get("config", {}),
                           a["fingerprint"], a.get("dtype", "float16"), a.get("provenance", {}))

    def ensure_feature(self, name: str, *, modality: str, dim: int, extractor: str,
                       config: Mapping[str, Any], dtype: str = "float16",
                       provenance: Mapping[str, Any] | None = None) -> FeatureInfo:
        """Create the feature group, or check that the existing one has the same config.

        Raises :class:`ConfigMismatchError` when ``name`` already holds another config.
        """
        check_name(name)
        fp = fingerprint({"extractor": extractor, "config": dict(config), "dim": int(dim),
                          "dtype": dtype})
        with self._lock():
            return self._ensure_feature(name, fp, modality=modality, dim=dim,
                                        extractor=extractor, config=config, dtype=dtype,
                                        provenance=provenance)

    def _ensure_feature(self, name: str, fp: str, *, modality: str, dim: int, extractor: str,
                        config: Mapping[str, Any], dtype: str,
                        provenance: Mapping[str, Any] | None) -> FeatureInfo:
        if self.has_feature(name) and "fingerprint" in self.root[name].attrs:
            info = self.feature_info(name)
            if info.fingerprint != fp:
                raise ConfigMismatchError(
                    f"feature {name!r} in {self.path} was written with config {info.fingerprint} "
                    f"({info.extractor}: {json.dumps(info.config, sort_keys=True, default=str)}); "
                    f"this run asks for {fp} ({extractor}: "
                    f"{json.dumps(dict(config), sort_keys=True, default=str)}). "
                    "Write it under another feature name or into another store.")
            return info
        attrs = {"modality": modality, "dim": int(dim), "extractor": extractor,
                 "config": json.loads(json.dumps(dict(config), default=str)), "fingerprint": fp,
                 "dtype": dtype, "versions": package_versions(), "created": _now(),
                 "provenance": dict(provenance or {})}
        group = self.root.require_group(name)
        group.require_group(TIME_GROUP)
        group.require_group(MASK_GROUP)
        group.attrs.update(attrs)  # last: a group without attrs is not a usable feature yet
        return self.feature_info(name)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise feature creation between processes sharing a local store (flock)."""
        if not self.is_local:
            yield
            return
        import fcntl

        self.root.require_group(LOCKS_GROUP)
        with open(Path(self.path) / LOCKS_GROUP / "store.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def append_provenance(self, name: str, key: str, entry: Mapping[str, Any]) -> None:
        """Append ``entry`` to the list ``provenance[key]`` of feature ``name`` (a later import).

        Serialised with the store lock on local stores.
        """
        with self._lock():
            group = self._feature_group(name)
            prov = dict(group.attrs.get("provenance", {}))
            prov[key] = [*prov.get(key, []), json.loads(json.dumps(dict(entry), default=str))]
            group.attrs.update({"provenance": prov})

    def _feature_group(self, name: str):
        if not self.has_feature(name):
            raise StoreError(f"feature {name!r} is not in {self.path}; it has: "
                             f"{', '.join(self.features()) or '(none)'}")
        return self.root[name]

    # ------------------------------------------------------------------ videos
    def videos(self, feature: str, complete_only: bool = True) -> list[str]:
        """Video ids of ``feature`` (by default only those marked complete)."""
        keys = sorted(self._feature_group(feature).array_keys())
        ids = [video_id_from_key(k) for k in keys]
        if complete_only:
            ids = [v for v in ids if self.is_complete(feature, v)]
        return ids

    def is_complete(self, feature: str, video: str) -> bool:
        """True when the video's array exists and carries the completion marker."""
        try:
            attrs = self._array_attrs(f"{feature}/{video_key(video)}")
        except Exception:  # missing or unreadable metadata both mean "not complete"
            return False
        return bool(attrs.get("complete", False))

    def _array_attrs(self, path: str) -> dict[str, Any]:
        """An array's attributes (straight from its ``zarr.json`` on a local store)."""
        if self.is_local:
            meta = chunkio.read_meta(Path(self.path) / path)
            if meta is None:
                raise StoreError(f"no array {path} in {self.path}")
            return dict(meta.get("attributes", {}))
        return dict(self._open_array(path).attrs)

    def _read_array(self, path: str) -> tuple[np.ndarray, dict[str, Any]]:
        """A whole array and its attributes; raises StoreError when it is missing."""
        if self.is_local:
            meta = chunkio.read_meta(Path(self.path) / path)
            if meta is None:
                raise StoreError(f"no array {path} in {self.path}")
            data = chunkio.read_array(Path(self.path) / path, meta)
            if data is not None:
                return data, dict(meta.get("attributes", {}))
        try:
            arr = self._open_array(path)
        except Exception as exc:  # zarr raises several types for a missing node
            raise StoreError(f"no array {path} in {self.path}") from exc
        return arr[...], dict(arr.attrs)

    def _write_array(self, path: str, data: np.ndarray, chunks: tuple[int, ...],
                     attributes: Mapping[str, Any] | None = None,
                     dimension_names: tuple[str, ...] | None = None) -> None:
        """Create and fill an uncompressed array: chunk files on a local store, else zarr."""
        attributes = dict(attributes or {})
        if self.is_local:
            folder = Path(self.path) / path
            meta = chunkio.array_meta(data.shape, data.dtype, chunks, attributes,
                                      dimension_names)
            chunkio.write_meta(folder, meta, atomic=False)  # a new array: nobody reads it yet
            if not data.size or chunkio.write_array(folder, data, meta):
                return
        import zarr

        arr = zarr.create_array(self.root.store, name=path, shape=data.shape, dtype=data.dtype,
                                chunks=chunks, compressors=None, overwrite=True,
                                dimension_names=dimension_names, attributes=attributes)
        if data.size:
            arr[...] = data

    def _mark_complete(self, path: str) -> None:
        """Set the completion marker (the last write of a video)."""
        if self.is_local:
            folder = Path(self.path) / path
            meta = chunkio.read_meta(folder)
            if meta is None:
                raise StoreError(f"array {path} vanished from {self.path} before completion")
            meta["attributes"] = {**meta.get("attributes", {}), "complete": True}
            chunkio.write_meta(folder, meta)
            return
        self._open_array_rw(path).update_attributes({"complete": True})

    def _open_array_rw(self, path: str):
        import zarr

        return zarr.open_array(self.root.store, path=path, mode="r+")

    def complete_set(self, feature: str) -> set[str]:
        """Ids of the complete videos of ``feature`` (empty when the feature is absent)."""
        if not self.has_feature(feature):
            return set()
        return set(self.videos(feature, complete_only=True))

    def _open_array(self, path: str):
        import zarr

        return zarr.open_array(self.root.store, path=path, mode="r")

    def write_video(self, feature: str, video: str, data: np.ndarray, timestamps: np.ndarray,
                    mask: np.ndarray | None = None, *, source: Mapping[str, Any] | None = None,
                    extra_attrs: Mapping[str, Any] | None = None) -> None:
        """Write one video's (T, D) rows; the completion marker goes on last.

        An incomplete earlier attempt is replaced. Rows of ``data`` where ``mask`` is False
        are kept as given (zeros by convention) and never filled here.
        """
        info = self._info_for_write(feature)
        data = np.asarray(data)
        timestamps = np.asarray(timestamps, dtype=np.float64)
        mask = np.ones(len(data), bool) if mask is None else np.asarray(mask, dtype=bool)
        _check_rows(feature, video, data, timestamps, mask, info.dim)
        key = video_key(video)
        self.remove_video(feature, video)
        n = max(1, len(data))
        self._write_array(f"{feature}/{TIME_GROUP}/{key}", timestamps, (n,))
        self._write_array(f"{feature}/{MASK_GROUP}/{key}", mask, (n,))
        data = data.astype(info.dtype, copy=False)
        rows = chunkio.chunk_rows(len(data), info.dim * data.dtype.itemsize, TARGET_CHUNK_BYTES)
        attrs = {
            "video": video, "num_frames": int(len(data)), "dim": info.dim,
            "time": regular_time(timestamps), "valid_frames": int(mask.sum()),
            "fingerprint": info.fingerprint, "versions": package_versions(),
            "source": dict(source or {}), "written": _now(), **dict(extra_attrs or {}),
        }
        attrs = json.loads(json.dumps(attrs, default=str))
        self._write_array(f"{feature}/{key}", data, (rows, info.dim), attrs, ("frame", "dim"))
        self._mark_complete(f"{feature}/{key}")  # last: the array is done

    def _info_for_write(self, feature: str) -> FeatureInfo:
        """The feature's info, read once per store object (dim, dtype and fingerprint of a
        feature never change: ensure_feature refuses another config under its name)."""
        if feature not in self._write_infos:
            self._write_infos[feature] = self.feature_info(feature)
        return self._write_infos[feature]

    def remove_video(self, feature: str, video: str) -> None:
        """Delete a video's arrays (no error when absent); the data array (and so its
        completion marker) goes first."""
        key = video_key(video)
        if self.is_local:
            for sub in ("", TIME_GROUP, MASK_GROUP):
                chunkio.remove_tree(Path(self.path) / feature / sub / key)
            return
        group = self.root[feature]
        for g in (group, group[TIME_GROUP], group[MASK_GROUP]):
            if key in g:
                del g[key]

    def read_video(self, feature: str, video: str, *, dtype: Any = None) -> FeatureArray:
        """One complete video's rows, timestamps and mask (raises on an incomplete array)."""
        key = video_key(video)
        try:
            attrs = self._array_attrs(f"{feature}/{key}")
        except Exception as exc:
            raise StoreError(f"no array for video {video!r} in feature {feature!r} "
                             f"of {self.path}") from exc
        if not attrs.get("complete"):
            raise StoreError(f"video {video!r} of feature {feature!r} is not complete "
                             "(an interrupted write); re-run the extraction")
        data, _ = self._read_array(f"{feature}/{key}")
        if dtype is not None:
            data = data.astype(dtype, copy=False)
        t, _ = self._read_array(f"{feature}/{TIME_GROUP}/{key}")
        m, _ = self._read_array(f"{feature}/{MASK_GROUP}/{key}")
        return FeatureArray(feature, video, data, t, m, attrs)

    def iter_videos(self, feature: str) -> Iterator[FeatureArray]:
        for v in self.videos(feature):
            yield self.read_video(feature, v)

    # --------------------------------------------------------------- overview
    def table(self) -> list[dict[str, Any]]:
        """One row per (feature, video): frames, dim, rate, extractor, weights, complete."""
        rows = []
        for feat in self.features():
            info = self.feature_info(feat)
            weights = info.config.get("weights")
            for vid in self.videos(feat, complete_only=False):
                try:
                    a = self._array_attrs(f"{feat}/{video_key(vid)}")
                except Exception:  # unreadable metadata: listed as incomplete
                    a = {}
                tinfo = a.get("time") or {}
                shift = tinfo.get("frame_shift")
                rows.append({"feature": feat, "video": vid, "modality": info.modality,
                             "frames": a.get("num_frames"), "dim": info.dim,
                             "rate": round(1.0 / shift, 3) if shift else None,
                             "valid": a.get("valid_frames"), "extractor": info.extractor,
                             "weights": weights, "complete": bool(a.get("complete"))})
        return rows

    def verify(self) -> VerifyReport:
        """Check every array marked complete: readable, shapes, timestamps, fingerprints."""
        report = VerifyReport()
        for feat in self.features():
            info = self.feature_info(feat)
            for vid in self.videos(feat, complete_only=False):
                if not self.is_complete(feat, vid):
                    report.incomplete.append((feat, vid))
                    continue
                report.checked += 1
                for problem in self._check_video(feat, vid, info):
                    report.problems.append((feat, vid, problem))
        return report

    def _check_video(self, feat: str, vid: str, info: FeatureInfo) -> list[str]:
        try:
            fa = self.read_video(feat, vid)
        except Exception as exc:
            return [f"unreadable: {exc}"]
        problems = []
        T = fa.attrs.get("num_frames")
        if fa.data.ndim != 2 or fa.data.shape[1] != info.dim:
            problems.append(f"shape {fa.data.shape} does not match dim {info.dim}")
        if fa.data.shape[0] != T or len(fa.timestamps) != T or len(fa.mask) != T:
            problems.append(f"row counts differ: data {fa.data.shape[0]}, time "
                            f"{len(fa.timestamps)}, mask {len(fa.mask)}, attrs {T}")
        elif T:
            if not np.all(np.isfinite(fa.timestamps)) or np.any(np.diff(fa.timestamps) < 0):
                problems.append("timestamps are not finite and non-decreasing")
            if not np.all(np.isfinite(fa.data[fa.mask])):
                problems.append("non-finite values in valid rows")
            if int(fa.mask.sum()) != fa.attrs.get("valid_frames"):
                problems.append("mask count differs from attrs")
        if fa.attrs.get("fingerprint") != info.fingerprint:
            problems.append(f"fingerprint {fa.attrs.get('fingerprint')} differs from the "
                            f"feature's {info.fingerprint}")
        return problems

    # ------------------------------------------------------------ run records
    def run_dir(self, run_id: str) -> Path:
        """A local folder inside the store for one run's records (config, failures, summary)."""
        if not self.is_local:
            raise StoreError("run records need a local store path")
        self.root.require_group(RUNS_GROUP)
        path = Path(self.path) / RUNS_GROUP / run_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def failures(self) -> list[dict[str, Any]]:
        """Every failure recorded by any run, oldest first."""
        runs = Path(self.path) / RUNS_GROUP
        out = []
        for f in sorted(runs.glob("*/failures.jsonl")) if runs.is_dir() else []:
            out += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        return out


def _check_rows(feature: str, video: str, data: np.ndarray, t: np.ndarray, mask: np.ndarray,
                dim: int) -> None:
    if data.ndim != 2 or data.shape[1] != dim:
        raise StoreError(f"{feature}/{video}: rows have shape {data.shape}, expected (T, {dim})")
    if len(t) != len(data) or len(mask) != len(data):
        raise StoreError(f"{feature}/{video}: {len(data)} rows but {len(t)} timestamps and "
                         f"{len(mask)} mask entries")
    if len(t) and (not np.all(np.isfinite(t)) or np.any(np.diff(t) < 0)):
        raise StoreError(f"{feature}/{video}: timestamps must be finite and non-decreasing")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def open_store(path: str | Path, mode: str = "r") -> FeatureStore:
    """Open (mode "r") or open-or-create (mode "a") a feature store."""
    return FeatureStore(path, mode)
