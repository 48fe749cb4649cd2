"""Claims: at most one writer per (feature, video) when several runs share one store.

Two or more ``extract run`` processes started on the same store and inputs (one per GPU)
each walk the whole input list; a video is claimed before it is computed, the others skip
it, and a claim whose holder died is picked up later.

Files, under ``<store>/_claims/`` (a zarr group, so zarr ignores what is inside)::

    <name>.claim               one per claimed key (``<feature>/<video>``); JSON record:
                               key, token, run_id, host, pid, pid_start, started, renewed,
                               expires, ttl (padded to a fixed size, rewritten in place)
    <name>.claim.retire-<id>.<r>   a short-lived marker: its creator may unbind the claim
                               whose token is <id> (release or takeover)
    .tmp-<token>               a takeover's new claim, just before it is renamed into place

Protocol:

- **Claim**: the record is written to a temp file first, which is then hard-linked to
  ``<name>.claim`` (``link`` fails when the name exists, so one creator wins): a claim file
  always holds its record, even when the disk fills up mid-write (a failed write leaves no
  claim at all). Where hard links are not supported, ``open(O_CREAT | O_EXCL)`` + write.
- **Lease**: the record holds ``expires`` (now + ttl); a heartbeat thread rewrites it every
  ttl/3 through the open file descriptor, so a renewal never touches another holder's file.
- **Stale**: expired; or held on this host (hostname and pid namespace) by a pid that no
  longer exists (or was reused: its start time differs). An empty file (left by an older
  version or a creator without hard links that died before writing) is stale a few seconds
  after its mtime; a record being rewritten (unparsable) counts from the mtime plus the ttl.
- **Takeover / release** (race-free): the claim's binding to its name only changes under the
  retire marker of its token, created with O_EXCL, so one taker wins. The taker re-reads the
  claim under the marker (still this token, still stale), then ``os.replace``-s its own new
  record onto the name; a releaser checks the name still points at its own inode, then
  unlinks it. Markers of a dead taker go stale after ttl; the next round number is used then.
- A holder learns it lost its claim (it stalled past its ttl and was taken over) when the
  name no longer points at its inode: :meth:`Claim.check` raises :class:`ClaimLostError`.

The runner's calls, per process::

    book = ClaimBook(store.path, run_id, ttl=120)       # one book per process
    try:
        for item in items:                               # every process walks the same list
            vc = book.claim_video(item.video_id, features)
            if vc.status == "done":                      # complete (perhaps by another run)
                continue
            if vc.status == "busy":                      # another live run holds it: skip
                busy.append(item.video_id)
                continue
            with vc:                                     # releases the claim, error or not
                rows = compute(item, vc.pending)         # only the features still missing
                for feat in vc.pending:
                    vc.check()                           # ClaimLostError: drop this video
                    store.write_video(feat, item.video_id, ...)
    finally:
        book.close()                                     # stops the heartbeat, releases the rest

``claim_video`` checks completeness before claiming and again once claimed, so a video
finished by another run in between is not redone. Videos left ``busy`` at the end were held
by live runs; a re-run takes over those whose holder has died since.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extract.errors import ClaimError, ClaimLostError
from extract.ids import video_id_from_key, video_key

log = logging.getLogger(__name__)

CLAIMS_GROUP = "_claims"
SUFFIX = ".claim"
DEFAULT_TTL = 60.0
_MAX_NAME = 180
EMPTY_GRACE_S = 5.0  # an empty claim file older than this is stale (its creator never wrote)
_MAX_ROUNDS = 16
_HAS_PROC = Path("/proc/self/stat").is_file()


def claim_key(feature: str, video: str) -> str:
    """The claim key of one (feature, video)."""
    return f"{feature}/{video}"


def host_id() -> str:
    """This machine and pid namespace: pids are compared only between equal host ids."""
    try:
        return f"{socket.gethostname()}|{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return socket.gethostname()


def _proc_start(pid: int) -> str | None:
    """Start time of ``pid`` (clock ticks since boot); "" when it is gone or a zombie;
    None when this system has no /proc."""
    if not _HAS_PROC:
        return None
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return "" if fields[0] in ("Z", "X") else fields[19]


def pid_alive(pid: int, start: str | None = None) -> bool:
    """Whether ``pid`` runs on this host (and, when ``start`` is known, is the same process)."""
    now = _proc_start(pid)
    if now is not None:
        return now != "" and (not start or now == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class ClaimRecord:
    """What a claim file says about its holder."""

    key: str
    token: str
    run_id: str
    host: str
    pid: int
    pid_start: str | None
    started: float
    renewed: float
    expires: float
    ttl: float

    def to_bytes(self, size: int = 0) -> bytes:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return text.ljust(size)

    @classmethod
    def parse(cls, raw: bytes) -> ClaimRecord | None:
        """The record, or None for an empty or half-rewritten file."""
        try:
            return cls(**json.loads(raw))
        except (ValueError, TypeError):
            return None

    @property
    def owner(self) -> str:
        return f"run {self.run_id} (pid {self.pid} on {self.host.split('|')[0]})"


def _read(path: Path) -> tuple[ClaimRecord | None, os.stat_result | None]:
    """(record or None, stat) of a claim or marker file; (None, None) when it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None, None
    try:
        st = os.fstat(fd)
        raw = os.pread(fd, max(st.st_size, 1), 0)
    finally:
        os.close(fd)
    return ClaimRecord.parse(raw), st


def _ident(rec: ClaimRecord | None, st: os.stat_result) -> str:
    """Identity of one claim file: its token, or its inode while it has no record yet."""
    return rec.token if rec is not None else f"i{st.st_ino}"


@dataclass
class _Hold:
    """One key held by this process: the claim file's name and its open descriptor."""

    key: str
    path: Path
    fd: int
    ino: int
    record: ClaimRecord
    size: int


class Claim:
    """Keys held together (one video's pending features); renewed by the book's heartbeat."""

    def __init__(self, book: ClaimBook, holds: Sequence[_Hold]) -> None:
        self._book = book
        self._holds = list(holds)
        self._lock = threading.Lock()
        self.released = False
        self.lost = False

    @property
    def keys(self) -> list[str]:
        return [h.key for h in self._holds]

    @property
    def expires(self) -> float:
        return min(h.record.expires for h in self._holds)

    def renew(self) -> bool:
        """Push the expiry to now + ttl; False (and ``lost``) when a key was taken over."""
        with self._lock:
            if self.released:
                return False
            ok = all([self._book._renew_hold(h) for h in self._holds])
            if not ok and not self.lost:
                self.lost = True
                log.warning("claim on %s was taken over by another run", ", ".join(self.keys))
            return ok

    def check(self) -> None:
        """Raise :class:`ClaimLostError` unless every key is still ours and unexpired."""
        now = time.time()
        with self._lock:
            lost = self.released or self.lost or any(
                h.record.expires < now or not self._book._owns(h) for h in self._holds)
        if lost:
            raise ClaimLostError(f"claim on {', '.join(self.keys)} is no longer held by run "
                                 f"{self._book.run_id} (released, expired or taken over)")

    def release(self) -> None:
        """Give the keys back (a no-op when already released)."""
        with self._lock:
            if self.released:
                return
            self.released = True
            for h in self._holds:
                self._book._release_hold(h)
        self._book._forget(self)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class VideoClaim:
    """Outcome of :meth:`ClaimBook.claim_video`."""

    video: str
    status: str  # "claimed" (compute ``pending``), "done" (nothing to do), "busy" (held)
    pending: tuple[str, ...]  # features still to compute (held when "claimed")
    claim: Claim | None = None

    def check(self) -> None:
        if self.claim is not None:
            self.claim.check()

    def release(self) -> None:
        if self.claim is not None:
            self.claim.release()

    def __enter__(self) -> VideoClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class ClaimBook:
    """This process's claims in one local store (one book per process and run).

    ``ttl``: seconds a claim lives without renewal (a dead holder on another host is taken
    over after at most this long); ``heartbeat``: renew held claims every ttl/3 from a daemon
    thread; ``host``: override the host id (tests).
    """

    def __init__(self, store_path: str | Path, run_id: str | None = None,
                 ttl: float = DEFAULT_TTL, *, heartbeat: bool = True,
                 host: str | None = None) -> None:
        if "://" in str(store_path):
            raise ClaimError(f"claims need a local store path, got {store_path}")
        if not ttl > 0:
            raise ClaimError(f"claim ttl must be positive, got {ttl!r}")
        self.store_path = Path(store_path)
        self.dir = self.store_path / CLAIMS_GROUP
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.ttl = float(ttl)
        self.host = host or host_id()
        self.pid = os.getpid()
        self.pid_start = _proc_start(self.pid) or None
        self._heartbeat = heartbeat
        self._held: dict[int, Claim] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._store: Any = None
        self._ensure_group()

    # ------------------------------------------------------------------ public
    def try_claim(self, key: str) -> Claim | None:
        """Claim ``key`` (``claim_key(feature, video)``); None when a live holder has it."""
        return self.try_claim_all([key])

    def try_claim_all(self, keys: Iterable[str]) -> Claim | None:
        """Claim every key or none (in sorted order; what was taken is given back on a miss)."""
        holds: list[_Hold] = []
        for key in sorted(set(keys)):
            hold = self._acquire(key)
            if hold is None:
                for h in holds:
                    self._release_hold(h)
                return None
            holds.append(hold)
        if not holds:
            raise ClaimError("try_claim_all needs at least one key")
        claim = Claim(self, holds)
        with self._lock:
            self._held[id(claim)] = claim
        self._start_heartbeat()
        return claim

    def claim_video(self, video: str, features: Sequence[str]) -> VideoClaim:
        """Claim the features of ``video`` not yet complete: "done" without claiming when all
        are complete, "busy" when another live run holds one, else "claimed"."""
        pending = self._pending(video, features)
        if not pending:
            return VideoClaim(video, "done", ())
        claim = self.try_claim_all(claim_key(f, video) for f in pending)
        if claim is None:
            return VideoClaim(video, "busy", tuple(pending))
        pending = self._pending(video, pending)  # finished by another run meanwhile?
        if not pending:
            claim.release()
            return VideoClaim(video, "done", ())
        return VideoClaim(video, "claimed", tuple(pending), claim)

    @property
    def held(self) -> list[Claim]:
        """This book's claims not yet released."""
        with self._lock:
            return list(self._held.values())

    def records(self) -> list[tuple[ClaimRecord, bool]]:
        """Every claim file in the store as (record, stale), sorted by key."""
        out = []
        now = time.time()
        for path in sorted(self.dir.glob(f"*{SUFFIX}")):
            rec, st = _read(path)
            if st is None:
                continue
            stale = self._stale(rec, st, now)
            if rec is None:
                rec = ClaimRecord(_key_of(path), "", "?", "?", 0, None, st.st_mtime,
                                  st.st_mtime, st.st_mtime + self.ttl, self.ttl)
            out.append((rec, stale))
        return sorted(out, key=lambda r: r[0].key)

    def active(self) -> list[ClaimRecord]:
        """Claims held by live runs (any process), sorted by key."""
        return [rec for rec, stale in self.records() if not stale]

    def clear_stale(self) -> int:
        """Remove stale claims and leftovers of dead takers; return how many claims went."""
        removed = 0
        for path in sorted(self.dir.glob(f"*{SUFFIX}")):
            rec, st = _read(path)
            if st is not None and self._stale(rec, st, time.time()):
                removed += self._unbind_stale(path, rec, st)
        cutoff = time.time() - 2 * self.ttl
        for path in [*self.dir.glob(".tmp-*"), *self.dir.glob(f"*{SUFFIX}.retire-*")]:
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                continue
        return removed

    def close(self) -> None:
        """Stop the heartbeat and release every claim still held."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for claim in self.held:
            claim.release()

    def __enter__(self) -> ClaimBook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- internals
    def _ensure_group(self) -> None:
        if (self.dir / "zarr.json").is_file():
            return
        from extract.store import FeatureStore

        try:
            FeatureStore(self.store_path, "a").ensure_group(CLAIMS_GROUP)
        except Exception:  # another process created it at the same moment: fine if it exists
            if not (self.dir / "zarr.json").is_file():
                raise

    def _path(self, key: str) -> Path:
        name = video_key(key)
        if len(name) > _MAX_NAME:
            name = "h-" + hashlib.sha256(key.encode()).hexdigest()[:40]
        return self.dir / (name + SUFFIX)

    def _record(self, key: str, token: str) -> ClaimRecord:
        now = time.time()
        return ClaimRecord(key, token, self.run_id, self.host, self.pid, self.pid_start, now,
                           now, now + self.ttl, self.ttl)

    def _stale(self, rec: ClaimRecord | None, st: os.stat_result, now: float) -> bool:
        if rec is None and st.st_size == 0:  # never written: its creator failed or died
            return st.st_mtime + min(EMPTY_GRACE_S, self.ttl) < now
        if rec is None:  # mid-rewrite: counts from the file's mtime
            return st.st_mtime + self.ttl < now
        if rec.expires < now:
            return True
        return rec.host == self.host and not pid_alive(rec.pid, rec.pid_start)

    def _acquire(self, key: str) -> _Hold | None:
        path = self._path(key)
        for _ in range(4):  # the claim may be released or taken over while we look
            hold = self._create(key, path)
            if hold is not None:
                return hold
            rec, st = _read(path)
            if st is None:
                continue  # released meanwhile: try to create again
            if not self._stale(rec, st, time.time()):
                return None
            hold = self._take_over(key, path, rec, st)
            if hold is not None:
                if rec is not None:
                    log.info("took over stale claim on %s from %s", key, rec.owner)
                return hold
        return None

    def _create(self, key: str, path: Path) -> _Hold | None:
        rec = self._record(key, uuid.uuid4().hex)
        size = len(rec.to_bytes()) + 128  # room for longer numbers on renewal
        fd = self._create_file(path, rec.to_bytes(size))
        if fd is None:
            return None
        return _Hold(key, path, fd, os.fstat(fd).st_ino, rec, size)

    def _create_file(self, path: Path, data: bytes) -> int | None:
        """Create ``path`` holding ``data`` (an open read-write descriptor), or None when it
        exists. The data goes to a temp file that is then hard-linked to ``path``, so the
        name never shows an empty or partial file; a write that fails (disk full) leaves
        nothing behind."""
        tmp = self.dir / f".tmp-{uuid.uuid4().hex}"
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        try:
            _write_all(fd, data)
            os.link(tmp, path)
        except FileExistsError:
            os.close(fd)
            return None
        except OSError as exc:
            os.close(fd)
            if exc.errno not in _NO_LINK:
                raise
            return self._create_file_excl(path, data)  # a file system without hard links
        finally:
            tmp.unlink(missing_ok=True)
        return fd

    @staticmethod
    def _create_file_excl(path: Path, data: bytes) -> int | None:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            return None
        try:
            _write_all(fd, data)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)  # an empty claim would block the key for a while
            raise
        return fd

    def _fill(self, key: str, path: Path, fd: int) -> _Hold:
        rec = self._record(key, uuid.uuid4().hex)
        size = len(rec.to_bytes()) + 128  # room for longer numbers on renewal
        try:
            _write_all(fd, rec.to_bytes(size))
        except OSError:
            os.close(fd)
            raise
        return _Hold(key, path, fd, os.fstat(fd).st_ino, rec, size)

    def _take_over(self, key: str, path: Path, rec: ClaimRecord | None,
                   st: os.stat_result) -> _Hold | None:
        ident = _ident(rec, st)
        marker = self._retire_marker(path, ident)
        if marker is None:
            return None  # another taker is at it
        keep_others = False
        try:
            rec2, st2 = _read(path)
            if st2 is None or _ident(rec2, st2) != ident:
                return None  # released or taken over meanwhile
            if not self._stale(rec2, st2, time.time()):
                keep_others = True  # renewed meanwhile: leave it
                return None
            tmp = self.dir / f".tmp-{uuid.uuid4().hex}"
            try:
                hold = self._fill(key, path, os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR,
                                                     0o644))
            except OSError:
                tmp.unlink(missing_ok=True)
                raise
            try:
                os.replace(tmp, path)
            except OSError:
                os.close(hold.fd)
                tmp.unlink(missing_ok=True)
                raise
            return hold
        finally:
            self._clear_markers(path, ident, marker if keep_others else None)

    def _retire_marker(self, path: Path, ident: str) -> Path | None:
        """Create the O_EXCL marker allowing to unbind the claim ``ident``; None when a live
        process holds it. A stale marker (its creator died) moves on to the next round."""
        rnd, tries = 0, 0
        while rnd < _MAX_ROUNDS and tries < 4 * _MAX_ROUNDS:
            tries += 1
            marker = path.with_name(f"{path.name}.retire-{ident}.{rnd}")
            fd = self._create_file(marker, self._record(f"retire {ident}", ident).to_bytes())
            if fd is None:
                mrec, mst = _read(marker)
                if mst is None:
                    continue  # gone meanwhile: try this round again
                if not self._stale(mrec, mst, time.time()):
                    return None
                rnd += 1
                continue
            os.close(fd)
            return marker
        return None

    def _clear_markers(self, path: Path, ident: str, only: Path | None = None) -> None:
        markers = [only] if only else list(self.dir.glob(f"{path.name}.retire-{ident}.*"))
        for m in markers:
            try:
                m.unlink()
            except FileNotFoundError:
                continue

    def _unbind_stale(self, path: Path, rec: ClaimRecord | None, st: os.stat_result) -> int:
        ident = _ident(rec, st)
        marker = self._retire_marker(path, ident)
        if marker is None:
            return 0
        try:
            rec2, st2 = _read(path)
            if st2 is None or _ident(rec2, st2) != ident or not self._stale(rec2, st2,
                                                                             time.time()):
                return 0
            path.unlink()
            return 1
        finally:
            self._clear_markers(path, ident)

    def _owns(self, h: _Hold) -> bool:
        try:
            return os.stat(h.path).st_ino == h.ino
        except FileNotFoundError:
            return False

    def _renew_hold(self, h: _Hold) -> bool:
        if not self._owns(h):
            return False
        now = time.time()
        rec = dataclasses.replace(h.record, renewed=now, expires=now + self.ttl)
        os.pwrite(h.fd, rec.to_bytes(h.size), 0)
        h.record = rec
        return self._owns(h)

    def _release_hold(self, h: _Hold) -> None:
        try:
            if not self._owns(h):
                return  # taken over: nothing of ours to remove
            marker = self._retire_marker(h.path, h.record.token)
            if marker is None:
                return  # a taker is replacing it right now
            try:
                if self._owns(h):
                    h.path.unlink()
            finally:
                self._clear_markers(h.path, h.record.token)
        finally:
            os.close(h.fd)

    def _forget(self, claim: Claim) -> None:
        with self._lock:
            self._held.pop(id(claim), None)

    def _pending(self, video: str, features: Iterable[str]) -> list[str]:
        if self._store is None:
            from extract.store import FeatureStore

            self._store = FeatureStore(self.store_path, "r")
        return [f for f in features if not self._store.is_complete(f, video)]

    def _start_heartbeat(self) -> None:
        if not self._heartbeat or self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._beat, name="claims-heartbeat",
                                                daemon=True)
                self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            for claim in self.held:
                try:
                    claim.renew()
                except OSError as exc:
                    log.warning("cannot renew claim on %s: %s", ", ".join(claim.keys), exc)


_NO_LINK = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK,
                      errno.ENOSYS})


def _write_all(fd: int, data: bytes) -> None:
    """Write ``data`` at offset 0 of ``fd`` (a short write raises, as a full disk does)."""
    written = os.pwrite(fd, data, 0)
    if written != len(data):
        raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")


def _key_of(path: Path) -> str:
    name = path.name[: -len(SUFFIX)]
    return name if name.startswith("h-") else video_id_from_key(name)
