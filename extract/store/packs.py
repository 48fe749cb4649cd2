"""Writing rows into packs and reading them back.

:class:`PackWriter` appends videos to the packs it owns (one open pack at a time) and commits
their index entries after the bytes are flushed. :class:`PackReader` reads any committed rows
by offset: memory-mapped chunk files on a local store, ranged reads on an object store.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import secrets
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from extract.errors import StoreError
from extract.store.fs import Files
from extract.store.index import Entry, del_line, encode_attrs, header_line, put_line
from extract.store.layout import (
    ARRAYS,
    CHUNK_BYTES,
    INDEX,
    META,
    PACK_BYTES,
    ArraySpec,
    PackLayout,
    array_doc,
    group_doc,
    pack_dir,
)

#: ``AFFECT_STORE_FSYNC=0`` skips fsync at commit (faster on slow disks; a power cut may then
#: leave a committed video whose bytes never reached the disk, which ``extract verify`` finds).
FSYNC = os.environ.get("AFFECT_STORE_FSYNC", "1") != "0"


def new_pack_id() -> str:
    """Sortable, unique: ``p<YYYYmmddHHMMSS>-<pid>-<random>``."""
    return f"p{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}-{secrets.token_hex(3)}"


def crc(arr: np.ndarray) -> int:
    """CRC-32 of an array's bytes (little-endian, C order)."""
    arr = np.ascontiguousarray(arr)
    return zlib.crc32(memoryview(arr.reshape(-1)).cast("B")) if arr.size else 0


def row_bytes(arr: np.ndarray, spec: ArraySpec) -> np.ndarray:
    """``arr`` as the stored little-endian, C-ordered dtype."""
    return np.ascontiguousarray(arr, dtype=spec.dtype.newbyteorder("<"))


@dataclass
class _OpenPack:
    pack: str
    layout: PackLayout
    used: int = 0  # rows written (committed or staged)
    committed: int = 0  # rows committed
    puts: int = 0  # entries written (committed or staged): the next entry's seq
    committed_puts: int = 0  # entries committed (a pack of empty videos still has some)
    objects: list[str] = field(default_factory=list)  # journal objects written (object stores)
    fds: dict[str, int] = field(default_factory=dict)  # chunk path → fd (local)
    dirty: set[str] = field(default_factory=set)  # chunk paths written since the last commit
    buffers: dict[str, bytearray] = field(default_factory=dict)  # chunk path → bytes (remote)


class PackWriter:
    """Appends one feature's videos to packs that only this writer touches."""

    def __init__(self, files: Files, feature: str, dim: int, dtype: str,
                 writer: dict[str, Any], *, pack_bytes: int = PACK_BYTES,
                 chunk_bytes: int = CHUNK_BYTES) -> None:
        self.files = files
        self.feature = feature
        self.dim = dim
        self.dtype = dtype
        self.writer = writer
        self.pack_bytes = pack_bytes
        self.chunk_bytes = chunk_bytes
        self.open: _OpenPack | None = None
        self.staged: list[bytes] = []  # journal lines waiting for the next commit
        self.sealed: list[str] = []
        self.written: dict[str, Entry] = {}  # video → this writer's latest entry of it
        self.replaced: set[str] = set()  # entry ids this writer has killed

    # ------------------------------------------------------------------ write
    def append(self, video: str, data: np.ndarray, times: np.ndarray, mask: np.ndarray,
               attrs: dict[str, Any], replaces: list[Entry]) -> Entry:
        """Write one video's rows into the open pack (a new one when it does not fit) and stage
        its entry, and a ``del`` of every earlier entry of the video (``replaces``); they
        become visible at the next :meth:`commit`."""
        n = len(data)
        if self.open is None or self.open.used + n > self.open.layout.capacity:
            self._start_pack(n)
        pk = self.open
        assert pk is not None
        arrays = {"data": data, "time": times, "mask": mask}
        sums = []
        for name in ARRAYS:
            spec = pk.layout.array(name)
            raw = row_bytes(arrays[name], spec)
            sums.append(crc(raw))
            self._write_rows(pk, spec, pk.used, raw)
        entry = Entry(video, pk.pack, pk.puts, pk.used, n, (sums[0], sums[1], sums[2]),
                      time.time(), encode_attrs(attrs))
        pk.used += n
        pk.puts += 1
        self.staged.append(put_line(entry))
        self.staged += [del_line(video, old.eid, entry.t, "replaced") for old in replaces]
        self.replaced.update(old.eid for old in replaces)
        self.written[video] = entry
        return entry

    def own_entries(self, video: str) -> list[Entry]:
        """This writer's staged or committed entry of ``video`` (a rewrite in one batch)."""
        entry = self.written.get(video)
        return [entry] if entry is not None and entry.eid not in self.replaced else []

    def _start_pack(self, rows: int) -> None:
        if self.open is not None:
            self.commit()
            self._seal(self.open)
        layout = PackLayout.plan(self.dim, self.dtype, rows, pack_bytes=self.pack_bytes,
                                 chunk_bytes=self.chunk_bytes,
                                 side_rows=None if self.files.local else 0)
        pack = new_pack_id()
        base = pack_dir(self.feature, pack)
        try:
            self.files.makedirs(f"{self.feature}/{INDEX}")
            self.files.write(f"{base}/{META}", group_doc({"writer": self.writer,
                                                          "layout": layout.to_dict(),
                                                          "created": _now()}))
            for name in ARRAYS:
                self.files.write(f"{base}/{name}/{META}", array_doc(layout.array(name),
                                                                    layout.capacity))
        except BaseException:  # e.g. disk full: leave no half-made pack behind
            with contextlib.suppress(OSError):
                self.files.remove_tree(base)
            raise
        self.open = _OpenPack(pack, layout)
        self.staged.insert(0, header_line(pack, layout, self.writer))

    def _write_rows(self, pk: _OpenPack, spec: ArraySpec, start: int, raw: np.ndarray) -> None:
        flat = memoryview(raw.reshape(-1)).cast("B") if raw.size else memoryview(b"")
        row = start
        pos = 0
        while pos < len(flat):
            index, within = divmod(row, spec.chunk_rows)
            take = min(spec.chunk_rows - within, (len(flat) - pos) // spec.row_bytes)
            part = flat[pos:pos + take * spec.row_bytes]
            path = f"{pack_dir(self.feature, pk.pack)}/{spec.name}/{spec.chunk_key(index)}"
            self._put(pk, path, within * spec.row_bytes, part, spec.chunk_bytes)
            row += take
            pos += take * spec.row_bytes

    def _put(self, pk: _OpenPack, path: str, offset: int, part: memoryview, size: int) -> None:
        if self.files.local:
            fd = pk.fds.get(path)
            if fd is None:
                full = self.files.path(path)
                os.makedirs(os.path.dirname(full), exist_ok=True)
                fd = os.open(full, os.O_RDWR | os.O_CREAT, 0o644)
                if os.fstat(fd).st_size < size:
                    os.ftruncate(fd, size)  # full size at once (sparse): zarr reads it any time
                pk.fds[path] = fd
            view = part
            at = offset
            while view:
                written = os.pwrite(fd, view, at)
                view, at = view[written:], at + written
        else:
            buf = pk.buffers.get(path)
            if buf is None:
                buf = pk.buffers[path] = bytearray(size)
            buf[offset:offset + len(part)] = part
        pk.dirty.add(path)

    # ----------------------------------------------------------------- commit
    def commit(self) -> int:
        """Flush the rows written since the last commit, then append their entries to the
        journal. Returns how many videos became visible."""
        if not self.staged:
            return 0
        pk = self.open
        if pk is not None:
            self._flush(pk)
        lines = b"".join(self.staged)
        n = sum(1 for line in self.staged if line.startswith(b'["put"'))
        assert pk is not None  # entries are staged into the open pack only
        journal = f"{self.feature}/{INDEX}/{pk.pack}"
        if self.files.local:
            self.files.append(f"{journal}.jsonl", lines, sync=FSYNC)  # all or nothing
        else:
            name = f"{journal}.{len(pk.objects) + 1:06d}.jsonl"
            self.files.write(name, lines)
            pk.objects.append(name)
        self.staged.clear()
        pk.committed = pk.used
        pk.committed_puts = pk.puts
        return n

    def _flush(self, pk: _OpenPack) -> None:
        for path in sorted(pk.dirty):
            if self.files.local:
                if FSYNC:
                    os.fsync(pk.fds[path])
            else:
                self.files.write(path, bytes(pk.buffers[path]))
        if self.files.local:  # keep only the chunks the next rows go to open
            for path in list(pk.fds):
                if not _is_tail(path, pk):
                    os.close(pk.fds.pop(path))
        else:
            for path in list(pk.buffers):
                if not _is_tail(path, pk):
                    del pk.buffers[path]
        pk.dirty.clear()

    def close(self) -> None:
        """Commit, then seal the open pack (its arrays' shape becomes the rows used)."""
        try:
            self.commit()
        finally:
            if self.open is not None:
                self._seal(self.open)
                self.open = None

    def abandon(self) -> None:
        """Drop staged entries and close files without committing (after a failed write)."""
        self.staged.clear()
        if self.open is not None:
            for fd in self.open.fds.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.open = None

    def _seal(self, pk: _OpenPack) -> None:
        for fd in pk.fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        pk.fds.clear()
        pk.buffers.clear()
        base = pack_dir(self.feature, pk.pack)
        if pk.committed_puts == 0:  # nothing was ever committed: the pack is not needed
            self.files.remove_tree(base)
            self.files.remove(f"{self.feature}/{INDEX}/{pk.pack}.jsonl")
            return
        if pk.objects:  # object stores: one journal object per pack from now on
            whole = b"".join(self.files.read(name) or b"" for name in pk.objects)
            self.files.write(f"{self.feature}/{INDEX}/{pk.pack}.jsonl", whole)
            for name in pk.objects:  # a reader that sees both reads each line once
                self.files.remove(name)
            pk.objects.clear()
        rows = max(pk.committed, 1)  # a pack of empty videos: one (unused) row
        for name in ARRAYS:
            self.files.write(f"{base}/{name}/{META}", array_doc(pk.layout.array(name), rows))
        self.files.write(f"{base}/{META}", group_doc({"writer": self.writer,
                                                      "layout": pk.layout.to_dict(),
                                                      "created": _now(), "sealed": pk.committed}))
        self.sealed.append(pk.pack)


def _is_tail(path: str, pk: _OpenPack) -> bool:
    """Whether chunk ``path`` (``…/<array>/c/<i>[/0]``) holds the next row to be written."""
    head, _, rest = path.rpartition("/c/")
    spec = pk.layout.array(head.rsplit("/", 1)[-1])
    return int(rest.split("/")[0]) == pk.used // spec.chunk_rows


class PackReader:
    """Reads committed rows of any pack of one store (memory maps are cached, LRU)."""

    def __init__(self, files: Files, max_maps: int = 256) -> None:
        self.files = files
        self.max_maps = max_maps
        self._maps: OrderedDict[str, tuple[mmap.mmap | None, np.ndarray]] = OrderedDict()
        self._objects: dict[str, bytes] | None = None  # whole chunk objects (remote, bulk)

    @contextlib.contextmanager
    def bulk(self) -> Iterator[None]:
        """Within the block, a remote chunk object is fetched once and sliced for every video
        in it (a bulk read touches each object once instead of once per video)."""
        if self.files.local or self._objects is not None:
            yield
            return
        self._objects = {}
        try:
            yield
        finally:
            self._objects = None

    def read(self, feature: str, entry: Entry, layout: PackLayout, name: str,
             out: np.ndarray | None = None) -> np.ndarray:
        """Rows of one video from array ``name`` (data | time | mask)."""
        spec = layout.array(name)
        shape = (entry.rows, *spec.row_shape())
        if out is None:
            out = np.empty(shape, spec.dtype.newbyteorder("<"))
        if not entry.rows:
            return out
        flat = out.reshape(entry.rows, -1) if spec.width else out.reshape(entry.rows, 1)
        row, done = entry.start, 0
        while done < entry.rows:
            index, within = divmod(row, spec.chunk_rows)
            take = min(spec.chunk_rows - within, entry.rows - done)
            path = f"{pack_dir(feature, entry.pack)}/{spec.name}/{spec.chunk_key(index)}"
            src = self._chunk(path, spec, within, take)
            flat[done:done + take] = src.reshape(take, -1)
            row += take
            done += take
        return out

    def read_span(self, feature: str, pack: str, layout: PackLayout, name: str, start: int,
                  stop: int) -> np.ndarray:
        """Rows ``start … stop`` of one pack array as a new array, read with one system call
        per chunk piece (``preadv`` straight into the array on a local store)."""
        spec = layout.array(name)
        n = stop - start
        out = np.empty((n, *spec.row_shape()), spec.dtype.newbyteorder("<"))
        if not n:
            return out
        flat = memoryview(out.reshape(-1)).cast("B")
        row = start
        while row < stop:
            index, within = divmod(row, spec.chunk_rows)
            take = min(spec.chunk_rows - within, stop - row)
            path = f"{pack_dir(feature, pack)}/{spec.name}/{spec.chunk_key(index)}"
            dest = flat[(row - start) * spec.row_bytes:(row - start + take) * spec.row_bytes]
            if self.files.local:
                self._pread(path, within * spec.row_bytes, dest, spec)
            else:
                dest[:] = memoryview(self._chunk(path, spec, within, take)).cast("B")
            row += take
        return out

    def _open_chunk(self, path: str, spec: ArraySpec) -> tuple[int, str]:
        """An open descriptor of a local chunk file and its full path; StoreError when the
        file is missing or shorter than a chunk."""
        full = self.files.path(path)
        try:
            fd = os.open(full, os.O_RDONLY)
        except FileNotFoundError:
            raise StoreError(f"chunk file {full} is missing (run `extract verify`)") from None
        size = os.fstat(fd).st_size
        if size < spec.chunk_bytes:
            os.close(fd)
            raise StoreError(f"chunk file {full} is truncated: {size} of {spec.chunk_bytes} "
                             "bytes (run `extract verify`)")
        return fd, full

    def _pread(self, path: str, offset: int, dest: memoryview, spec: ArraySpec) -> None:
        fd, full = self._open_chunk(path, spec)
        try:
            got = 0
            while got < len(dest):
                n = os.preadv(fd, [dest[got:]], offset + got)
                if n <= 0:
                    raise StoreError(f"chunk file {full} ended early")
                got += n
        finally:
            os.close(fd)

    def _chunk(self, path: str, spec: ArraySpec, within: int, take: int) -> np.ndarray:
        """Rows ``within … within+take`` of one chunk file (a view of its map, or bytes)."""
        if not self.files.local and self._objects is not None:
            whole = self._objects.get(path)
            if whole is None:
                whole = self.files.read(path)
                if whole is None:
                    raise StoreError(f"chunk file {self.files.path(path)} is missing")
                if len(self._objects) >= 6:  # videos come in storage order: a few suffice
                    self._objects.pop(next(iter(self._objects)))
                self._objects[path] = whole
            part = whole[within * spec.row_bytes:(within + take) * spec.row_bytes]
            if len(part) != take * spec.row_bytes:
                raise StoreError(f"chunk file {self.files.path(path)} is truncated")
            return np.frombuffer(part, spec.dtype.newbyteorder("<"))
        if not self.files.local:
            try:
                raw = self.files.read_range(path, within * spec.row_bytes, take * spec.row_bytes)
            except FileNotFoundError:
                raise StoreError(f"chunk file {self.files.path(path)} is missing") from None
            if len(raw) != take * spec.row_bytes:
                raise StoreError(f"chunk file {self.files.path(path)} is truncated")
            return np.frombuffer(raw, spec.dtype.newbyteorder("<"))
        arr = self._map(path, spec)
        return arr[within * max(1, spec.width):(within + take) * max(1, spec.width)]

    def _map(self, path: str, spec: ArraySpec) -> np.ndarray:
        hit = self._maps.get(path)
        if hit is not None:
            self._maps.move_to_end(path)
            return hit[1]
        fd, _ = self._open_chunk(path, spec)
        try:
            mm = mmap.mmap(fd, spec.chunk_bytes, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        arr = np.frombuffer(mm, spec.dtype.newbyteorder("<"))
        self._maps[path] = (mm, arr)
        while len(self._maps) > self.max_maps:
            self._maps.popitem(last=False)  # the map closes when no array views it any more
        return arr

    def close(self) -> None:
        self._maps.clear()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
