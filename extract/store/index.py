"""The index of one feature: which video's rows sit where, from append-only journals.

Each journal is written by one writer only: ``_index/<pack>.jsonl`` by the pack's writer
(local stores; on object stores one object ``<pack>.<seq>.jsonl`` per commit), and
``_index/admin-<id>.jsonl`` by one ``extract rm`` / ``extract verify --fix`` process. A line is
a JSON array, for a put followed by a tab and the video's attributes as a JSON object (kept
unparsed until asked for, so loading the index of a million videos stays fast):

- ``["pack", pack, layout, writer]``: a pack's header (its journal's first line);
- ``["put", video, pack, seq, first row, rows, crc data, crc time, crc mask, write time]``
  ``\\t`` ``{attributes}``: a committed video (``seq`` numbers the pack's puts; an entry's id
  is ``<pack>:<seq>``);
- ``["del", video, entry id, time, reason]``: kills one put (``extract rm``, ``verify --fix``,
  or a writer replacing a video).

A line counts only when it ends with a newline (a torn last line is a killed writer's). For each
video the newest put that no ``del`` names is live.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from extract.store.common import gc_paused
from extract.store.fs import Files
from extract.store.layout import INDEX, PackLayout

log = logging.getLogger(__name__)

JOURNAL_SUFFIX = ".jsonl"


@dataclass(slots=True)
class Entry:
    """One committed video: where its rows are, their checksums and its attributes."""

    video: str
    pack: str
    seq: int  # the pack's n-th put (unique in the pack, even for empty videos)
    start: int
    rows: int
    crc: tuple[int, int, int]
    t: float
    raw_attrs: bytes = b"{}"
    _attrs: dict[str, Any] | None = None

    @property
    def eid(self) -> str:
        return f"{self.pack}:{self.seq}"

    @property
    def attrs(self) -> dict[str, Any]:
        """Per-video attributes (parsed on first use; ValueError when damaged)."""
        if self._attrs is None:
            attrs = json.loads(self.raw_attrs)
            if not isinstance(attrs, dict):
                raise ValueError("attributes are not a JSON object")
            self._attrs = attrs
        return self._attrs

    def line(self) -> bytes:
        head = _dump(["put", self.video, self.pack, self.seq, self.start, self.rows, *self.crc,
                      self.t])
        return head + b"\t" + self.raw_attrs + b"\n"


def put_line(entry: Entry) -> bytes:
    return entry.line()


def encode_attrs(attrs: dict[str, Any]) -> bytes:
    return _dump(attrs)


def del_line(video: str, eid: str, t: float, why: str) -> bytes:
    return _dump(["del", video, eid, t, why]) + b"\n"


def header_line(pack: str, layout: PackLayout, writer: dict[str, Any]) -> bytes:
    return _dump(["pack", pack, layout.to_dict(), writer]) + b"\n"


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str).encode()


@dataclass
class Problem:
    """Something wrong with the index itself (a junk line), for ``verify``."""

    journal: str
    line: int
    what: str


@dataclass
class FeatureIndex:
    """The merged journals of one feature; :meth:`refresh` reads only what is new."""

    files: Files
    feature: str
    offsets: dict[str, int] = field(default_factory=dict)  # journal → bytes consumed
    puts: dict[str, Entry] = field(default_factory=dict)  # entry id → entry
    killed: dict[str, str] = field(default_factory=dict)  # entry id → why
    by_video: dict[str, list[str]] = field(default_factory=dict)  # video → its entry ids
    live: dict[str, Entry] = field(default_factory=dict)  # video → its live entry
    damaged: dict[str, str] = field(default_factory=dict)  # video → why (no live entry)
    layouts: dict[str, PackLayout] = field(default_factory=dict)  # pack → layout
    writers: dict[str, dict[str, Any]] = field(default_factory=dict)  # pack → its writer
    problems: list[Problem] = field(default_factory=list)
    _lines: dict[str, int] = field(default_factory=dict)  # journal → lines consumed

    @property
    def folder(self) -> str:
        return f"{self.feature}/{INDEX}"

    def refresh(self) -> None:
        """Read the journals' new complete lines and apply them."""
        sizes = self.files.sizes(self.folder)
        with gc_paused():
            self._read_new(sizes)

    def _read_new(self, sizes: dict[str, int]) -> None:
        for name in sorted(sizes):
            if not name.endswith(JOURNAL_SUFFIX) or sizes[name] <= self.offsets.get(name, 0):
                continue
            raw = self.files.read_from(f"{self.folder}/{name}", self.offsets.get(name, 0))
            end = raw.rfind(b"\n") + 1  # a torn last line waits (or stays ignored)
            if end:
                self._apply(name, raw[:end])
                self.offsets[name] = self.offsets.get(name, 0) + end

    def _apply(self, journal: str, raw: bytes) -> None:
        lines = raw.split(b"\n")[:-1]
        first = self._lines.get(journal, 0)
        self._lines[journal] = first + len(lines)
        parts = [line.partition(b"\t") for line in lines]
        try:  # one parse for the whole block (fast); line by line only when something is junk
            heads = json.loads(b"[" + b",".join([p[0] for p in parts]) + b"]")
            if len(heads) != len(parts) or not all(isinstance(h, list) for h in heads):
                raise ValueError("a junk line parsed as several values")
        except ValueError:
            heads = []
            for i, p in enumerate(parts):
                try:
                    heads.append(json.loads(p[0]))
                except ValueError:
                    heads.append(None)
                    self.problems.append(Problem(journal, first + i + 1, "not valid JSON"))
        for i, (head, part) in enumerate(zip(heads, parts, strict=True)):
            if head is None:
                continue
            try:
                self._record(head, part[2])
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                self.problems.append(Problem(journal, first + i + 1,
                                             f"not an index record ({exc})"))

    def _record(self, rec: list[Any], tail: bytes) -> None:
        op = rec[0]
        if op == "put":
            _, video, pack, seq, start, rows, c0, c1, c2, t = rec
            if (type(start) is not int or type(rows) is not int or type(seq) is not int
                    or rows < 0 or start < 0 or not isinstance(video, str)
                    or not isinstance(pack, str) or not tail):
                raise ValueError("bad video, rows or attributes")
            e = Entry(video, pack, seq, start, rows, (c0, c1, c2), float(t), tail)
            eid = e.eid
            if eid in self.puts:  # the same line read twice (a journal object consolidated)
                return
            self.puts[eid] = e
            ids = self.by_video.get(video)
            if ids is None and eid not in self.killed:  # the common case: a first, live put
                self.by_video[video] = [eid]
                self.live[video] = e
                return
            self.by_video.setdefault(video, []).append(eid)
            self._settle(video)
        elif op == "del":
            _, video, eid, _t, why = rec
            self.killed[str(eid)] = str(why)
            self._settle(str(video))
        elif op == "pack":
            _, pack, layout, writer = rec
            self.layouts[str(pack)] = PackLayout.from_dict(layout)
            self.writers[str(pack)] = dict(writer)
        else:
            raise ValueError(f"unknown op {op!r}")

    def alive(self, video: str) -> list[Entry]:
        """Every entry of ``video`` that no ``del`` names (the live one and any older)."""
        return [self.puts[e] for e in self.by_video.get(video, ()) if e not in self.killed]

    def _settle(self, video: str) -> None:
        """Recompute the live entry of ``video``."""
        alive = [self.puts[e] for e in self.by_video.get(video, ()) if e not in self.killed]
        self.damaged.pop(video, None)
        if alive:
            self.live[video] = max(alive, key=lambda e: (e.t, e.pack, e.seq))
            return
        self.live.pop(video, None)
        reasons = [self.killed[e] for e in self.by_video.get(video, ()) if e in self.killed]
        if reasons and reasons[-1] not in ("removed", "replaced"):
            self.damaged[video] = reasons[-1]
