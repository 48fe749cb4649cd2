"""The index of one feature: which video's rows sit where, from append-only journals.

Each journal is written by one writer only: ``_index/<pack>.jsonl`` by the pack's writer
(local stores; on object stores one object ``<pack>.<seq>.jsonl`` per commit), and
``_index/admin-<id>.jsonl`` by one ``extract rm`` / ``extract verify --fix`` process. Lines:

- ``{"op": "pack", "pack", "layout", "writer"}``: a pack's header (its first line);
- ``{"op": "put", "v": video, "p": pack, "s": first row, "n": rows, "crc": [data, time, mask],
  "t": commit time, "a": per-video attributes}``: a committed video;
- ``{"op": "del", "v": video, "e": entry id, "t": time, "why": reason}``: kills one put.

A line counts only when it ends with a newline (a torn last line is a killed writer's). For each
video the newest put that no ``del`` names is live.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from extract.store.fs import Files
from extract.store.layout import INDEX, PackLayout

log = logging.getLogger(__name__)

JOURNAL_SUFFIX = ".jsonl"


@dataclass
class Entry:
    """One committed video: where its rows are, their checksums and its attributes."""

    video: str
    pack: str
    start: int
    rows: int
    crc: tuple[int, int, int]
    t: float
    attrs: dict[str, Any]

    @property
    def eid(self) -> str:
        return f"{self.pack}:{self.start}"

    def line(self) -> dict[str, Any]:
        return {"op": "put", "v": self.video, "p": self.pack, "s": self.start, "n": self.rows,
                "crc": list(self.crc), "t": self.t, "a": self.attrs}


def put_line(entry: Entry) -> bytes:
    return _dump(entry.line())


def del_line(video: str, eid: str, t: float, why: str) -> bytes:
    return _dump({"op": "del", "v": video, "e": eid, "t": t, "why": why})


def header_line(pack: str, layout: PackLayout, writer: dict[str, Any]) -> bytes:
    return _dump({"op": "pack", "pack": pack, "layout": layout.to_dict(), "writer": writer})


def _dump(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str)
            + "\n").encode()


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
    problems: list[Problem] = field(default_factory=list)
    _lines: dict[str, int] = field(default_factory=dict)  # journal → lines consumed

    @property
    def folder(self) -> str:
        return f"{self.feature}/{INDEX}"

    def refresh(self) -> None:
        """Read the journals' new complete lines and apply them."""
        sizes = self.files.sizes(self.folder)
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
        try:  # one parse for the whole block (fast); line by line only when something is junk
            records = json.loads(b"[" + b",".join(lines) + b"]")
        except ValueError:
            records = []
            for i, line in enumerate(lines):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    self.problems.append(Problem(journal, first + i + 1, "not valid JSON"))
        for i, rec in enumerate(records):
            try:
                self._record(rec)
            except (KeyError, TypeError, ValueError) as exc:
                self.problems.append(Problem(journal, first + i + 1,
                                             f"not an index record ({exc})"))

    def _record(self, rec: dict[str, Any]) -> None:
        op = rec["op"]
        if op == "put":
            e = Entry(str(rec["v"]), str(rec["p"]), int(rec["s"]), int(rec["n"]),
                      tuple(int(c) for c in rec["crc"]), float(rec["t"]), dict(rec["a"]))
            if len(e.crc) != 3 or e.rows < 0 or e.start < 0:
                raise ValueError("bad rows or checksums")
            self.puts[e.eid] = e
            self.by_video.setdefault(e.video, []).append(e.eid)
            self._settle(e.video)
        elif op == "del":
            self.killed[str(rec["e"])] = str(rec.get("why", "removed"))
            self._settle(str(rec["v"]))
        elif op == "pack":
            self.layouts[str(rec["pack"])] = PackLayout.from_dict(rec["layout"])
        else:
            raise ValueError(f"unknown op {op!r}")

    def _settle(self, video: str) -> None:
        """Recompute the live entry of ``video``."""
        alive = [self.puts[e] for e in self.by_video.get(video, ()) if e not in self.killed]
        self.damaged.pop(video, None)
        if alive:
            self.live[video] = max(alive, key=lambda e: (e.t, e.eid))
            return
        self.live.pop(video, None)
        reasons = [self.killed[e] for e in self.by_video.get(video, ()) if e in self.killed]
        if reasons and reasons[-1] != "removed":
            self.damaged[video] = reasons[-1]
