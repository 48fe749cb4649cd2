"""``extract verify``: check every committed video against its checksum and every file the
index needs; with ``fix``, make damaged videos not complete and rewrite damaged metadata.

Problems are one line each (feature, where, what), never a traceback. What ``fix`` does:

- a damaged video (missing or short chunk file, checksum or shape mismatch, non-finite values):
  a ``del`` entry in the index, so the next ``extract run`` redoes it;
- a junk root / feature / pack ``zarr.json``: rewritten from what the index keeps (the feature's
  ``_index/feature.json`` copy, the pack's layout in its journal header);
- junk lines in a sealed pack's journal: the journal is rewritten without them.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from extract.errors import StoreError
from extract.store.common import VerifyReport
from extract.store.index import Entry, FeatureIndex, del_line
from extract.store.layout import (
    ARRAYS,
    FEATURE_COPY,
    INDEX,
    META,
    PACKS,
    STORE_FORMAT,
    PackLayout,
    array_doc,
    check_array_doc,
    group_doc,
    pack_dir,
    parse_doc,
)
from extract.store.packs import crc

if TYPE_CHECKING:
    from extract.store.core import FeatureStore

log = logging.getLogger(__name__)


def verify_store(store: FeatureStore, fix: bool = False, features: Iterable[str] | None = None,
                 progress: bool = False) -> VerifyReport:
    report = VerifyReport()
    if fix:
        store._writable()
    _check_root(store, report, fix)
    names = list(features) if features is not None else _feature_folders(store)
    for name in names:
        _Feature(store, name, report, fix, progress).run()
    return report


def _feature_folders(store: FeatureStore) -> list[str]:
    """Every feature, including one whose ``zarr.json`` is gone but whose index keeps a copy of
    its attributes (so its videos are not silently left out)."""
    found = set(store.features())
    for name in store.files.listdir(""):
        if not name.startswith(("_", ".")) and store.files.exists(f"{name}/{INDEX}/{FEATURE_COPY}"):
            found.add(name)
    return sorted(found)


def writer_alive(writer: dict) -> bool:
    """Whether the process that wrote a pack may still run (another host: assume so)."""
    import socket

    from extract.claims import pid_alive

    if writer.get("host") != socket.gethostname() or not isinstance(writer.get("pid"), int):
        return True
    return pid_alive(int(writer["pid"]))


def _check_root(store: FeatureStore, report: VerifyReport, fix: bool) -> None:
    try:
        doc = parse_doc(store.files.read(META), "root zarr.json")
        if doc.get("attributes", {}).get("affect_store") != STORE_FORMAT:
            raise ValueError("root zarr.json: not a format-2 feature store")
    except ValueError as exc:
        report.problems.append(("-", "zarr.json", str(exc)))
        if fix:
            store.files.write(META, group_doc({"affect_store": STORE_FORMAT}))
            report.fixed.append(("-", "zarr.json", "rewritten"))


class _Feature:
    """The checks of one feature."""

    def __init__(self, store: FeatureStore, name: str, report: VerifyReport, fix: bool,
                 progress: bool) -> None:
        self.store, self.name, self.report, self.fix = store, name, report, fix
        self.files = store.files
        self.progress = progress
        self.damaged: dict[str, tuple[Entry, str]] = {}  # video → (entry, why)

    def problem(self, where: str, what: str) -> None:
        self.report.problems.append((self.name, where, what))

    def fixed(self, where: str, action: str) -> None:
        self.report.fixed.append((self.name, where, action))

    def run(self) -> None:
        attrs = self._feature_meta()
        idx = FeatureIndex(self.files, self.name)
        idx.refresh()
        self._journals(idx)
        self.report.incomplete += [(self.name, v) for v in sorted(idx.damaged)]
        by_pack: dict[str, list[Entry]] = defaultdict(list)
        for e in idx.live.values():
            by_pack[e.pack].append(e)
        ends: dict[str, int] = defaultdict(int)  # pack → rows its entries use (any entry)
        for e in idx.puts.values():
            ends[e.pack] = max(ends[e.pack], e.start + e.rows)
        self._unindexed(set(ends))
        for pack in sorted(ends):
            layout = self._pack_meta(pack, idx, by_pack.get(pack, []), ends[pack])
            if pack not in by_pack:
                continue
            entries = sorted(by_pack[pack], key=lambda e: e.start)
            if layout is None:
                for e in entries:
                    self._damage(e, f"pack {pack} has no readable layout")
                continue
            self._videos(pack, layout, entries, attrs.get("fingerprint") if attrs else None)
        if self.fix and self.damaged:
            self._kill()

    # ------------------------------------------------------------ metadata
    def _feature_meta(self) -> dict | None:
        """The feature's attributes; a junk zarr.json is restored from the index's copy."""
        raw_copy = self.files.read(f"{self.name}/{INDEX}/{FEATURE_COPY}")
        try:
            copy = json.loads(raw_copy) if raw_copy is not None else None
        except ValueError:
            copy = None
        try:
            attrs = parse_doc(self.files.read(f"{self.name}/{META}"),
                              f"{self.name}/zarr.json").get("attributes", {})
            if "fingerprint" not in attrs:
                raise ValueError(f"{self.name}/zarr.json: no fingerprint")
        except ValueError as exc:
            self.problem("zarr.json", str(exc))
            if copy is None:
                self.problem("zarr.json", "no readable copy in _index/feature.json either: "
                                          f"remove the feature (`extract rm {self.name}`)")
                return None
            if self.fix:
                self.files.write(f"{self.name}/{META}", group_doc(copy))
                self.fixed("zarr.json", "rewritten from _index/feature.json")
            return copy
        if copy is None or copy.get("fingerprint") != attrs.get("fingerprint"):
            self.problem(f"{INDEX}/{FEATURE_COPY}", "missing or differs from zarr.json")
            if self.fix:
                self.files.write(f"{self.name}/{INDEX}/{FEATURE_COPY}", json.dumps(attrs).encode())
                self.fixed(f"{INDEX}/{FEATURE_COPY}", "rewritten from zarr.json")
        return attrs

    def _journals(self, idx: FeatureIndex) -> None:
        junk = defaultdict(list)
        for p in idx.problems:
            self.problem(f"{INDEX}/{p.journal}:{p.line}", p.what)
            junk[p.journal].append(p.line)
        if not self.fix:
            return
        for journal, lines in junk.items():
            pack = journal.split(".")[0]
            meta = self.files.read(f"{pack_dir(self.name, pack)}/{META}")
            sealed = meta is not None and b'"sealed"' in meta
            done = sealed or not writer_alive(idx.writers.get(pack, {}))
            if not (done or journal.startswith("admin-")):
                self.problem(f"{INDEX}/{journal}", "its writer still runs: run `extract verify "
                                                   "--fix` again when it has finished")
                continue  # a writer may still append to it
            raw = self.files.read(f"{self.name}/{INDEX}/{journal}") or b""
            keep = [line for i, line in enumerate(raw.split(b"\n")[:-1], 1) if i not in lines]
            self.files.write(f"{self.name}/{INDEX}/{journal}", b"".join(k + b"\n" for k in keep))
            for line in lines:
                self.fixed(f"{INDEX}/{journal}:{line}", "journal rewritten without this line")

    def _unindexed(self, indexed: set[str]) -> None:
        """Packs no index entry points at. A sealed one lost its journal (its videos are no
        longer in the store: a problem); an unsealed one whose writer is gone died before its
        first commit (only space: ``fix`` removes it); a live writer's is left alone."""
        for pack in self.files.listdir(f"{self.name}/{PACKS}"):
            if pack == META or pack in indexed:
                continue
            base = pack_dir(self.name, pack)
            try:
                attrs = json.loads(self.files.read(f"{base}/{META}") or b"{}").get(
                    "attributes", {})
            except (ValueError, AttributeError):
                attrs = {}
            where = f"{PACKS}/{pack}"
            if attrs.get("sealed"):
                self.problem(where, f"{attrs['sealed']} committed rows but no index journal: "
                                    "the videos in it are no longer in the store")
                if self.fix:
                    self.files.remove_tree(base)
                    self.fixed(where, "removed (`extract run` redoes the videos it held)")
            elif self.fix and not writer_alive(attrs.get("writer", {})):
                self.files.remove_tree(base)
                log.info("%s/%s: removed a pack whose writer died before its first commit",
                         self.name, where)

    def _pack_meta(self, pack: str, idx: FeatureIndex, entries: list[Entry],
                   rows: int) -> PackLayout | None:
        """Check the pack's documents against its layout; rewrite junk ones with ``fix``."""
        base = pack_dir(self.name, pack)
        layout = idx.layouts.get(pack)
        group_ok = True
        try:
            doc = parse_doc(self.files.read(f"{base}/{META}"), f"{base}/zarr.json")
            if layout is None:
                layout = PackLayout.from_dict(doc["attributes"]["layout"])
        except (ValueError, KeyError, TypeError) as exc:
            group_ok = False
            self.problem(f"{PACKS}/{pack}/zarr.json", str(exc).split(": ", 1)[-1])
        if layout is None:
            return None
        if not group_ok and self.fix:
            self.files.write(f"{base}/{META}", group_doc({"layout": layout.to_dict(),
                                                          "sealed": rows, "repaired": True}))
            self.fixed(f"{PACKS}/{pack}/zarr.json", "rewritten from the journal's layout")
        for name in ARRAYS:
            spec = layout.array(name)
            where = f"{PACKS}/{pack}/{name}/zarr.json"
            try:
                have = check_array_doc(parse_doc(self.files.read(f"{base}/{name}/{META}"),
                                                 where), spec, where)
                if have < rows:
                    raise ValueError(f"{where}: {have} rows, the index uses {rows}")
            except ValueError as exc:
                self.problem(where, str(exc).split(": ", 1)[-1])
                if self.fix:
                    self.files.write(f"{base}/{name}/{META}",
                                     array_doc(spec, max(rows, 1) if entries else rows))
                    self.fixed(where, "rewritten from the journal's layout")
        return layout

    # -------------------------------------------------------------- videos
    def _videos(self, pack: str, layout: PackLayout, entries: list[Entry],
                fp: str | None) -> None:
        bad_files = self._chunk_files(pack, layout, entries)
        if self.fix:
            for short in sorted(bad_files):
                self.fixed(f"{PACKS}/{pack}/{short}", "the videos with rows in it are marked "
                                                      "not complete")
        for e in entries:
            self.report.checked += 1
            hit = sorted(p for p in bad_files if _uses(e, layout, p))
            if hit:
                self._damage(e, f"rows in a missing or short file ({hit[0]})")
                continue
            why = self._check(e, layout, fp)
            if why:
                self._damage(e, why)

    def _chunk_files(self, pack: str, layout: PackLayout, entries: list[Entry]) -> set[str]:
        """Chunk files the entries need that are missing or shorter than a chunk."""
        bad = set()
        for name in ARRAYS:
            spec = layout.array(name)
            folder = f"{pack_dir(self.name, pack)}/{name}"
            sizes = {}
            for sub in self.files.listdir(f"{folder}/c"):
                inner = f"c/{sub}"
                if spec.width:
                    for k, v in self.files.sizes(f"{folder}/{inner}").items():
                        sizes[f"{inner}/{k}"] = v
                else:
                    sizes[inner] = self.files.size(f"{folder}/{inner}") or 0
            used = set()
            for e in entries:
                if e.rows:
                    used.update(range(e.start // spec.chunk_rows,
                                      (e.start + e.rows - 1) // spec.chunk_rows + 1))
            for index in sorted(used):
                key = spec.chunk_key(index)
                size = sizes.get(key)
                rel = f"{PACKS}/{pack}/{name}/{key}"
                if size is None:
                    self.problem(rel, "missing file")
                    bad.add(f"{name}/{key}")
                elif size < spec.chunk_bytes:
                    self.problem(rel, f"wrong size: {size} bytes, expected {spec.chunk_bytes}")
                    bad.add(f"{name}/{key}")
        return bad

    def _check(self, e: Entry, layout: PackLayout, fp: str | None) -> str:
        try:
            fa = self.store._read_entry(self.name, e)
        except StoreError as exc:
            return str(exc).split(";")[0]
        got = (crc(np.ascontiguousarray(fa.data)), crc(fa.timestamps), crc(fa.mask))
        self.report.bytes_checked += fa.data.nbytes + fa.timestamps.nbytes + fa.mask.nbytes
        names = [n for n, a, b in zip(ARRAYS, got, e.crc, strict=True) if a != b]
        if names:
            return f"checksum mismatch in {', '.join(names)}"
        if e.attrs.get("num_frames") not in (None, e.rows):
            return f"{e.rows} rows but attrs say {e.attrs.get('num_frames')}"
        if len(fa.timestamps) and (not np.all(np.isfinite(fa.timestamps))
                                   or np.any(np.diff(fa.timestamps) < 0)):
            return "timestamps are not finite and non-decreasing"
        if fa.data.dtype.kind == "f" and not np.all(np.isfinite(fa.data[fa.mask])):
            return "non-finite values in valid rows"
        if int(fa.mask.sum()) != e.attrs.get("valid_frames", int(fa.mask.sum())):
            return "mask count differs from attrs"
        if fp is not None and fa.attrs.get("fingerprint") not in (None, fp):
            return f"fingerprint {fa.attrs.get('fingerprint')} differs from the feature's {fp}"
        return ""

    def _damage(self, e: Entry, why: str) -> None:
        self.problem(e.video, why)
        self.damaged[e.video] = (e, why)

    def _kill(self) -> None:
        t = time.time()
        lines = b"".join(del_line(v, e.eid, t, f"damaged: {why}")
                         for v, (e, why) in sorted(self.damaged.items()))
        self.store._admin_write(self.name, lines)
        for v in sorted(self.damaged):
            self.fixed(v, "marked not complete: the next `extract run` redoes it")


def _uses(e: Entry, layout: PackLayout, bad: str) -> bool:
    """Whether entry ``e`` has rows in chunk ``bad`` (``<array>/c/<i>[/0]``)."""
    name, _, rest = bad.partition("/c/")
    spec = layout.array(name)
    index = int(rest.split("/")[0])
    return e.start < (index + 1) * spec.chunk_rows and e.start + e.rows > index * spec.chunk_rows
