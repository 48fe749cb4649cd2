"""The feature store (format 2): one Zarr v3 group per feature, rows in packs, an index.

See ``docs/store.md`` for the layout and its reasons. The contract both stages rely on is
logical: per (feature, video) a reader gets ``(T, D)`` rows, their timestamps, a validity mask
and attributes; a video is complete once its index entry is committed. ``fuse`` reads the store
only through :class:`FeatureStore`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from extract.errors import ConfigMismatchError, StoreError
from extract.store.common import (
    FeatureArray,
    FeatureInfo,
    VerifyReport,
    check_name,
    check_rows,
    fingerprint,
    now,
    package_versions,
    plain,
    regular_time,
    row_rate,
)
from extract.store.fs import Files, files_for
from extract.store.index import Entry, FeatureIndex, del_line
from extract.store.layout import (
    CHUNK_BYTES,
    FEATURE_COPY,
    INDEX,
    LOCKS_GROUP,
    META,
    PACK_BYTES,
    PACKS,
    REMOTE_CHUNK_BYTES,
    RUNS_GROUP,
    STORE_FORMAT,
    PackLayout,
    group_doc,
    pack_dir,
)
from extract.store.packs import PackReader, PackWriter

log = logging.getLogger(__name__)


class FeatureStore:
    """A feature store on a local path or an fsspec URL (``s3://…``, ``memory://…``).

    Mode ``"r"`` reads an existing store; ``"a"`` opens or creates one. Writes are staged in
    packs owned by this object and become visible when committed (``write_video`` commits by
    default); :meth:`close` (or ``with``) commits and seals them.
    """

    def __init__(self, path: str | Path, mode: str = "r", *, strict: bool = True,
                 pack_bytes: int = PACK_BYTES, chunk_bytes: int | None = None) -> None:
        if mode not in ("r", "a"):
            raise StoreError(f"unknown store mode {mode!r}: use 'r' or 'a'")
        self.files: Files = files_for(path)
        self.path = self.files.root if self.files.local else str(path)  # file:// → a path
        self.mode = mode
        self.pack_bytes = pack_bytes
        self.chunk_bytes = chunk_bytes or (CHUNK_BYTES if self.files.local
                                           else REMOTE_CHUNK_BYTES)
        self._known: set[str] = set()  # features seen to exist (they are removed only here)
        self._infos: dict[str, FeatureInfo] = {}
        self._indexes: dict[str, FeatureIndex] = {}
        self._stale: set[str] = set()
        self._writers: dict[str, PackWriter] = {}
        self._reader = PackReader(self.files)
        self._admin = f"admin-{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}-" \
                      f"{secrets.token_hex(3)}"
        self._admin_seq = 0
        self.root_problem: str | None = None
        self._open(strict)

    # ----------------------------------------------------------------- open
    def _open(self, strict: bool) -> None:
        raw = self._read_meta("")
        if raw is None and not (not strict and self._has_features()):
            if self.mode == "r":
                raise StoreError(f"no feature store at {self.path}")
            self._create()
            return
        try:
            doc = json.loads(raw or b"")
            fmt = doc.get("attributes", {}).get("affect_store")
        except (ValueError, AttributeError):
            fmt, doc = None, None
        if doc is None or (fmt is None and self._has_features()):
            self.root_problem = ("the root zarr.json is missing" if raw is None else
                                 "the root zarr.json is damaged")
            if strict:
                raise StoreError(f"{self.path}: {self.root_problem}; run `extract verify "
                                 f"--fix --store {self.path}`") from None
            return
        if fmt is None:
            raise StoreError(f"{self.path} is a Zarr group but not a feature store (no "
                             "'affect_store' attribute); use another folder")
        if fmt == 1:
            raise StoreError(f"{self.path} is a format-1 store (one array per video); convert "
                             f"it with `extract migrate --store {self.path} --out NEW.zarr`")
        if fmt != STORE_FORMAT:
            raise StoreError(f"{self.path} has store format {fmt}; this version reads format "
                             f"{STORE_FORMAT}: upgrade affect-feature-store")

    def _has_features(self) -> bool:
        """Whether the folder holds format-2 features (their index's copy of the attributes),
        whatever its root document says."""
        return any(self.files.exists(f"{name}/{INDEX}/{FEATURE_COPY}")
                   for name in self.files.listdir("") if not name.startswith(("_", ".")))

    def _create(self) -> None:
        for _ in range(20):  # another process may be creating the same store right now
            held = ([e for e in os.listdir(self.path) if not e.startswith(f"{META}.")]
                    if self.files.local and os.path.isdir(self.path) else [])
            if not held or self.files.exists(META):
                break
            time.sleep(0.1)
        else:
            raise StoreError(f"{self.path} exists and is not a feature store (it holds "
                             f"{len(held)} entries and no zarr.json); give a new or empty "
                             "folder")
        if self.files.exists(META):  # made by another process meanwhile
            self._open(strict=True)
            return
        try:
            self.files.makedirs("")
            self.files.write(META, group_doc({"affect_store": STORE_FORMAT}))
        except PermissionError:
            raise StoreError(f"cannot create a feature store at {self.path}: permission "
                             "denied") from None

    def _read_meta(self, rel: str) -> bytes | None:
        try:
            return self.files.read(f"{rel}/{META}" if rel else META)
        except PermissionError:
            raise StoreError(f"cannot read {self.path}: permission denied") from None

    @property
    def is_local(self) -> bool:
        return self.files.local

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Commit what is staged and seal this object's packs."""
        errors = []
        for name, writer in list(self._writers.items()):
            try:
                writer.close()
            except Exception as exc:  # keep closing the others
                errors.append(exc)
            self._writers.pop(name, None)
            self._stale.add(name)
        self._reader.close()
        if errors:
            raise errors[0]

    # ------------------------------------------------------------- features
    def features(self) -> list[str]:
        """Feature names in the store."""
        out = []
        for name in self.files.listdir(""):
            if name.startswith("_") or name.startswith(".") or name == META:
                continue
            if self.files.exists(f"{name}/{META}"):
                out.append(name)
        return sorted(out)

    def has_feature(self, name: str) -> bool:
        if name in self._known:
            return True
        found = not name.startswith("_") and self.files.exists(f"{name}/{META}")
        if found:
            self._known.add(name)
        return found

    def feature_attrs(self, name: str) -> dict[str, Any]:
        """The feature group's attributes (config, fingerprint, versions, provenance, …)."""
        raw = self._read_meta(name)
        if raw is None:
            raise StoreError(f"feature {name!r} is not in {self.path}; it has: "
                             f"{', '.join(self.features()) or '(none)'}")
        try:
            return dict(json.loads(raw)["attributes"])
        except (ValueError, KeyError, TypeError):
            raise StoreError(f"the metadata of feature {name!r} in {self.path} is damaged; run "
                             f"`extract verify --fix --store {self.path}`") from None

    def feature_info(self, name: str) -> FeatureInfo:
        a = self.feature_attrs(name)
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
        self._writable()
        fp = fingerprint({"extractor": extractor, "config": dict(config), "dim": int(dim),
                          "dtype": dtype})
        with self._lock():
            if self.has_feature(name) and "fingerprint" in self.feature_attrs(name):
                info = self.feature_info(name)
                if info.fingerprint != fp:
                    raise ConfigMismatchError(_mismatch(name, self.path, info, fp, extractor,
                                                        config))
                return info
            attrs = {"modality": modality, "dim": int(dim), "extractor": extractor,
                     "config": plain(dict(config)), "fingerprint": fp, "dtype": dtype,
                     "versions": package_versions(), "created": now(),
                     "provenance": plain(dict(provenance or {})), "layout": "packs"}
            self.files.makedirs(f"{name}/{INDEX}")
            self.files.write(f"{name}/{PACKS}/{META}", group_doc({}))
            self.files.write(f"{name}/{INDEX}/{META}", group_doc({}))
            self.files.write(f"{name}/{INDEX}/{FEATURE_COPY}", json.dumps(attrs).encode())
            self.files.write(f"{name}/{META}", group_doc(attrs))  # last: the feature exists
            return self.feature_info(name)

    def _writable(self) -> None:
        if self.mode != "a":
            raise StoreError(f"{self.path} is open read-only")

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise feature creation and removal between processes on a local store."""
        if not self.is_local:
            yield
            return
        import fcntl

        self.ensure_group(LOCKS_GROUP)
        with open(Path(self.path) / LOCKS_GROUP / "store.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def ensure_group(self, name: str) -> None:
        """A plain (empty) Zarr group at ``name``, for the store's own folders."""
        if not self.files.exists(f"{name}/{META}"):
            self.files.makedirs(name)
            self.files.write(f"{name}/{META}", group_doc({}))

    def append_provenance(self, name: str, key: str, entry: Mapping[str, Any]) -> None:
        """Append ``entry`` to the list ``provenance[key]`` of feature ``name``."""
        with self._lock():
            attrs = self.feature_attrs(name)
            prov = dict(attrs.get("provenance", {}))
            prov[key] = [*prov.get(key, []), plain(dict(entry))]
            attrs["provenance"] = prov
            self.files.write(f"{name}/{INDEX}/{FEATURE_COPY}", json.dumps(attrs).encode())
            self.files.write(f"{name}/{META}", group_doc(attrs))

    def remove_feature(self, name: str) -> None:
        """Delete a feature and all its rows (under the store lock)."""
        self._writable()
        if not self.has_feature(name):
            raise StoreError(f"feature {name!r} is not in {self.path}")
        with self._lock():
            writer = self._writers.pop(name, None)
            if writer is not None:
                writer.abandon()
            self.files.remove_tree(name)
            self._known.discard(name)
        self._indexes.pop(name, None)
        self._infos.pop(name, None)
        self._reader.close()

    # ---------------------------------------------------------------- index
    def index(self, feature: str, refresh: bool = False) -> FeatureIndex:
        """The feature's index (loaded once; ``refresh`` reads what other writers added)."""
        idx = self._indexes.get(feature)
        if idx is None:
            idx = self._indexes[feature] = FeatureIndex(self.files, feature)
            idx.refresh()
        elif refresh or feature in self._stale:
            idx.refresh()
        self._stale.discard(feature)
        return idx

    def refresh(self) -> None:
        """See what other writers committed since this store was opened."""
        for idx in self._indexes.values():
            idx.refresh()

    def _entry(self, feature: str, video: str) -> Entry | None:
        idx = self.index(feature)
        entry = idx.live.get(video)
        if entry is None:
            entry = self.index(feature, refresh=True).live.get(video)
        return entry

    def layout(self, feature: str, pack: str) -> PackLayout:
        """A pack's layout: from its journal header, else from its group attributes."""
        idx = self.index(feature)
        layout = idx.layouts.get(pack)
        if layout is None:
            raw = self._read_meta(pack_dir(feature, pack))
            try:
                layout = PackLayout.from_dict(json.loads(raw or b"")["attributes"]["layout"])
            except (ValueError, KeyError, TypeError):
                raise StoreError(f"pack {pack} of feature {feature!r} has no readable layout; "
                                 f"run `extract verify --store {self.path}`") from None
            idx.layouts[pack] = layout
        return layout

    # --------------------------------------------------------------- videos
    def videos(self, feature: str, complete_only: bool = True) -> list[str]:
        """Video ids of ``feature``: the complete ones, plus (``complete_only=False``) those
        marked damaged by ``extract verify --fix`` and not yet redone."""
        if not self.has_feature(feature):
            raise StoreError(f"feature {feature!r} is not in {self.path}; it has: "
                             f"{', '.join(self.features()) or '(none)'}")
        idx = self.index(feature, refresh=True)
        ids = set(idx.live) if complete_only else set(idx.live) | set(idx.damaged)
        return sorted(ids)

    def is_complete(self, feature: str, video: str) -> bool:
        """True when the video's rows are committed."""
        if not self.has_feature(feature):
            return False
        return self._entry(feature, video) is not None

    def complete_set(self, feature: str) -> set[str]:
        """Ids of the complete videos of ``feature`` (empty when the feature is absent)."""
        if not self.has_feature(feature):
            return set()
        return set(self.index(feature, refresh=True).live)

    def entry(self, feature: str, video: str) -> Entry:
        """Where a complete video's rows are (pack, first row, rows, checksums, attributes)."""
        entry = self._entry(feature, video) if self.has_feature(feature) else None
        if entry is None:
            raise StoreError(f"video {video!r} of feature {feature!r} is not in {self.path}")
        return entry

    def video_attrs(self, feature: str, video: str) -> dict[str, Any]:
        """A complete video's attributes (frames, valid frames, time, rate, source, …) from
        the index alone, without reading its rows."""
        entry = self.entry(feature, video)
        return self._attrs(feature, entry, self.layout(feature, entry.pack))

    # ---------------------------------------------------------------- write
    def write_video(self, feature: str, video: str, data: np.ndarray, timestamps: np.ndarray,
                    mask: np.ndarray | None = None, *, source: Mapping[str, Any] | None = None,
                    extra_attrs: Mapping[str, Any] | None = None, commit: bool = True) -> None:
        """Write one video's (T, D) rows; with ``commit`` (default) it is complete on return,
        else at the next :meth:`commit` / :meth:`close`. A complete earlier copy is replaced.

        Rows of ``data`` where ``mask`` is False are kept as given (zeros by convention) and
        never filled here.
        """
        self._writable()
        info = self._info_for_write(feature)
        data = np.asarray(data)
        timestamps = np.asarray(timestamps, dtype=np.float64)
        mask = np.ones(len(data), bool) if mask is None else np.asarray(mask, dtype=bool)
        check_rows(feature, video, data, timestamps, mask, info.dim)
        with np.errstate(over="ignore", invalid="ignore"):
            stored = data.astype(info.dtype, copy=False)
        if np.dtype(info.dtype).kind == "f" and data.size and stored.dtype != data.dtype:
            bad = ~np.isfinite(stored[mask]) & np.isfinite(np.asarray(data)[mask])
            if bad.any():
                raise StoreError(f"{feature}/{video}: values do not fit the stored dtype "
                                 f"{info.dtype}; store the feature as float32")
        regular = regular_time(timestamps)
        rate = (round(1.0 / regular["frame_shift"], 6) if regular and regular["frame_shift"] > 0
                else row_rate(timestamps))
        attrs = plain({"num_frames": int(len(data)), "valid_frames": int(mask.sum()),
                       "time": regular, "rate": rate, "source": dict(source or {}),
                       "written": now(), **dict(extra_attrs or {})})
        writer = self._writer(feature, info)
        idx = self._indexes.get(feature) or self.index(feature)  # no re-read per write
        replaces = {e.eid: e for e in [*idx.alive(video), *writer.own_entries(video)]}
        try:
            writer.append(video, stored, timestamps, mask, attrs, list(replaces.values()))
            if commit:
                writer.commit()
        except BaseException:
            writer.abandon()  # its uncommitted videos are lost; the next write starts a new pack
            self._writers.pop(feature, None)
            self._stale.add(feature)
            raise
        if commit:
            self.index(feature, refresh=True)  # own commits are seen at once

    def commit(self) -> int:
        """Make every staged video complete; returns how many were committed."""
        n = 0
        for feature, writer in self._writers.items():
            n += writer.commit()
            self.index(feature, refresh=True)
        return n

    def _writer(self, feature: str, info: FeatureInfo) -> PackWriter:
        writer = self._writers.get(feature)
        if writer is None:
            who = {"host": socket.gethostname(), "pid": os.getpid(), "created": now(),
                   "fingerprint": info.fingerprint}
            writer = self._writers[feature] = PackWriter(
                self.files, feature, info.dim, info.dtype, who, pack_bytes=self.pack_bytes,
                chunk_bytes=self.chunk_bytes)
        return writer

    def _info_for_write(self, feature: str) -> FeatureInfo:
        """The feature's info, read once per store object (dim, dtype and fingerprint of a
        feature never change: ensure_feature refuses another config under its name)."""
        if feature not in self._infos:
            self._infos[feature] = self.feature_info(feature)
        return self._infos[feature]

    def remove_video(self, feature: str, video: str, why: str = "removed") -> bool:
        """Make a video not complete (its rows stay in the pack until compaction); ``why``
        other than "removed" lists it as damaged. Returns False when it was not complete."""
        return bool(self.remove_videos(feature, [video], why))

    def remove_videos(self, feature: str, videos: Iterable[str], why: str = "removed") -> int:
        """:meth:`remove_video` for many videos in one journal write; returns how many."""
        self._writable()
        idx = self.index(feature, refresh=True)
        t = time.time()
        gone = [v for v in dict.fromkeys(videos) if v in idx.live]
        lines = [del_line(v, e.eid, t, why) for v in gone for e in idx.alive(v)]  # older too
        if lines:
            self._admin_write(feature, b"".join(lines))
        return len(gone)

    def _admin_write(self, feature: str, lines: bytes) -> None:
        self.files.makedirs(f"{feature}/{INDEX}")
        if self.is_local:
            self.files.append(f"{feature}/{INDEX}/{self._admin}.jsonl", lines, sync=True)
        else:
            self._admin_seq += 1
            self.files.write(f"{feature}/{INDEX}/{self._admin}.{self._admin_seq:06d}.jsonl",
                             lines)
        self._stale.add(feature)

    # ----------------------------------------------------------------- read
    def read_video(self, feature: str, video: str, *, dtype: Any = None) -> FeatureArray:
        """One complete video's rows, timestamps and mask."""
        entry = self._entry(feature, video) if self.has_feature(feature) else None
        if entry is None:
            if not self.has_feature(feature):
                raise StoreError(f"feature {feature!r} is not in {self.path}; it has: "
                                 f"{', '.join(self.features()) or '(none)'}")
            idx = self.index(feature)
            why = idx.damaged.get(video)
            raise StoreError(f"video {video!r} of feature {feature!r} is not complete in "
                             f"{self.path}" + (f" ({why}); re-run the extraction" if why else ""))
        return self._read_entry(feature, entry, dtype)

    def _read_entry(self, feature: str, entry: Entry, dtype: Any = None) -> FeatureArray:
        layout = self.layout(feature, entry.pack)
        data = self._reader.read(feature, entry, layout, "data")
        if dtype is not None:
            data = data.astype(dtype, copy=False)
        t = self._reader.read(feature, entry, layout, "time")
        m = self._reader.read(feature, entry, layout, "mask")
        return FeatureArray(feature, entry.video, data, t, m, self._attrs(feature, entry, layout))

    def _attrs(self, feature: str, entry: Entry, layout: PackLayout) -> dict[str, Any]:
        """A video's attributes as readers see them."""
        try:
            own = entry.attrs
        except ValueError:
            raise StoreError(f"the index entry of {feature}/{entry.video} has damaged "
                             f"attributes; run `extract verify --store {self.path}`") from None
        writer = self.index(feature).writers.get(entry.pack, {})
        return {"video": entry.video, **own, "dim": layout.dim,
                "fingerprint": writer.get("fingerprint"), "complete": True}

    def read_videos(self, feature: str, videos: Iterable[str] | None = None, *,
                    dtype: Any = None) -> list[FeatureArray]:
        """Many complete videos in one call (all of them by default), in the order given.

        Reads in storage order (pack, row), so a whole pack is read front to back once.
        """
        idx = self.index(feature, refresh=True) if self.has_feature(feature) else None
        if idx is None:
            raise StoreError(f"feature {feature!r} is not in {self.path}")
        wanted = sorted(idx.live) if videos is None else list(videos)
        missing = [v for v in wanted if v not in idx.live]
        if missing:
            raise StoreError(f"{len(missing)} videos of feature {feature!r} are not complete in "
                             f"{self.path}: {', '.join(missing[:5])}"
                             + (" …" if len(missing) > 5 else ""))
        entries = [idx.live[v] for v in wanted]
        got: dict[str, FeatureArray] = {}
        with self._reader.bulk():
            for pack, span in _spans(entries, lambda p: self.layout(feature, p)):
                layout = self.layout(feature, pack)
                lo, hi = span[0].start, max(e.start + e.rows for e in span)
                data, t, m = (self._reader.read_span(feature, pack, layout, name, lo, hi)
                              for name in ("data", "time", "mask"))
                if dtype is not None:
                    data = data.astype(dtype, copy=False)
                for e in span:  # views into the span's arrays: no copy per video
                    a, b = e.start - lo, e.start - lo + e.rows
                    got[e.eid] = FeatureArray(feature, e.video, data[a:b], t[a:b], m[a:b],
                                              self._attrs(feature, e, layout))
        return [got[e.eid] for e in entries]

    def iter_videos(self, feature: str) -> Iterator[FeatureArray]:
        yield from self.read_videos(feature)

    # -------------------------------------------------------------- overview
    def table(self) -> list[dict[str, Any]]:
        """One row per (feature, video): frames, dim, rate, extractor, weights, complete."""
        rows = []
        for feat in self.features():
            try:
                info = self.feature_info(feat)
            except StoreError as exc:
                log.warning("%s", exc)
                continue
            weights = info.config.get("weights")
            idx = self.index(feat, refresh=True)
            base = {"feature": feat, "modality": info.modality, "dim": info.dim,
                    "extractor": info.extractor, "weights": weights}
            for vid in sorted(set(idx.live) | set(idx.damaged)):
                e = idx.live.get(vid)
                try:
                    a = e.attrs if e is not None else {}
                except ValueError:  # damaged attributes: verify reports them
                    a = {}
                rows.append({**base, "video": vid, "frames": a.get("num_frames"),
                             "rate": a.get("rate"), "valid": a.get("valid_frames"),
                             "complete": e is not None})
        return rows

    def verify(self, fix: bool = False, *, features: Iterable[str] | None = None,
               progress: bool = False) -> VerifyReport:
        """Check every complete video against its checksum, and every file the index needs;
        ``fix`` marks damaged videos not complete (the next run redoes them) and rewrites
        damaged metadata from the copies kept in the index."""
        from extract.store.verify import verify_store

        return verify_store(self, fix=fix, features=features, progress=progress)

    # ----------------------------------------------------------- run records
    def run_dir(self, run_id: str) -> Path:
        """A local folder inside the store for one run's records (config, failures, summary)."""
        if not self.is_local:
            raise StoreError("run records need a local store path")
        self.ensure_group(RUNS_GROUP)
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


#: A bulk read reads rows between two wanted videos when the gap is under this many bytes,
#: and cuts spans at this many bytes.
_GAP_BYTES = 1 << 20
_SPAN_BYTES = 256 << 20


def _spans(entries: list[Entry], layout_of: Any) -> Iterator[tuple[str, list[Entry]]]:
    """Entries grouped by pack and cut into runs that are read with one request each."""
    by_pack: dict[str, list[Entry]] = {}
    for e in entries:
        by_pack.setdefault(e.pack, []).append(e)
    for pack, group in sorted(by_pack.items()):
        layout = layout_of(pack)
        row_bytes = max(1, layout.array("data").row_bytes)
        steps = {layout.array(a).chunk_rows for a in ("data", "time", "mask")}
        group.sort(key=lambda e: e.start)
        span: list[Entry] = []
        end = 0
        for e in group:
            if span and ((e.start - end) * row_bytes > _GAP_BYTES
                         or (e.start + e.rows - span[0].start) * row_bytes > _SPAN_BYTES
                         or _gap_crosses_chunk(end, e.start, steps)):
                yield pack, span
                span = []
            span.append(e)
            end = max(end, e.start + e.rows) if len(span) > 1 else e.start + e.rows
        if span:
            yield pack, span


def _gap_crosses_chunk(end: int, start: int, steps: set[int]) -> bool:
    """Whether rows ``end … start`` (a gap between two wanted videos) reach a chunk that
    neither video uses: a bulk read must not depend on files no wanted video needs."""
    if start <= end:
        return False
    for step in steps:
        used = {(end - 1) // step, start // step}  # the chunks the two videos read anyway
        if any(i not in used for i in range(end // step, (start - 1) // step + 1)):
            return True
    return False


def _mismatch(name: str, path: str, info: FeatureInfo, fp: str, extractor: str,
              config: Mapping[str, Any]) -> str:
    """One message naming what differs between the stored config and the asked one."""
    old = {"extractor": info.extractor, **info.config}
    new = {"extractor": extractor, **plain(dict(config))}
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    diff = "; ".join(f"{k}: stored {json.dumps(old.get(k), default=str)} vs asked "
                     f"{json.dumps(new.get(k), default=str)}" for k in keys[:6])
    return (f"feature {name!r} in {path} was written with another config ({info.fingerprint} "
            f"vs {fp}): {diff or 'dim or dtype differ'}. Write it under another feature name "
            "or into another store.")


def open_store(path: str | Path, mode: str = "r") -> FeatureStore:
    """Open (mode "r") or open-or-create (mode "a") a feature store."""
    return FeatureStore(path, mode)
