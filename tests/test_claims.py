"""Claims: concurrent writers on one store never hold the same key at once; dead holders are
taken over (at once on the same host, after the ttl elsewhere); renewal keeps a claim."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from extract.claims import CLAIMS_GROUP, ClaimBook, claim_key
from extract.errors import ClaimLostError
from extract.store import FeatureStore

REPO = Path(__file__).resolve().parents[1]
FEATURES = ("face", "voice")


def make_store(path: Path) -> str:
    fs = FeatureStore(path, "a")
    for feat in FEATURES:
        fs.ensure_feature(feat, modality="visual", dim=2, extractor="test", config={})
    return str(path)


def _enter(guard: Path, key: str) -> None:
    """Mark ``key`` as being written; fails if another worker is writing it right now."""
    fd = os.open(guard / key.replace("/", "~"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.close(fd)


def _leave(guard: Path, key: str) -> None:
    os.unlink(guard / key.replace("/", "~"))


def run_worker(store: str, run_id: str, videos: list[str], guard: str, log: str,
               start: threading.Barrier) -> None:
    """What the runner does per video (see extract.claims), writing tiny arrays."""
    fs = FeatureStore(store, "a")
    guard_dir = Path(guard)
    start.wait()
    with ClaimBook(store, run_id, ttl=5) as book:
        for video in videos:
            vc = book.claim_video(video, FEATURES)
            if vc.status != "claimed":
                continue
            with vc:
                _enter(guard_dir, video)
                time.sleep(0.002)
                for feat in vc.pending:
                    vc.check()
                    fs.write_video(feat, video, np.ones((3, 2)), np.arange(3) / 25)
                with open(log, "a") as fh:
                    fh.write(f"{video} {run_id}\n")
                _leave(guard_dir, video)


def test_threads_never_hold_a_key_twice(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    keys = [f"face/v{i:02d}" for i in range(40)]
    lock = threading.Lock()
    holding: set[str] = set()
    done: Counter[str] = Counter()
    overlaps: list[str] = []

    def worker(n: int) -> None:
        book = ClaimBook(store, f"run{n}", ttl=10)
        while True:
            with lock:
                left = [k for k in keys if not done[k]]
            if not left:
                break
            for key in left[n % 3 :] + left[: n % 3]:
                claim = book.try_claim(key)
                if claim is None:
                    continue
                with claim:
                    with lock:
                        if done[key]:
                            continue
                        if key in holding:
                            overlaps.append(key)
                        holding.add(key)
                    time.sleep(0.0005)
                    with lock:
                        holding.discard(key)
                        done[key] += 1
        book.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not overlaps
    assert all(done[k] == 1 for k in keys)
    assert sorted(os.listdir(Path(store) / CLAIMS_GROUP)) == ["zarr.json"]  # all released


def test_processes_race_on_one_store(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    guard = tmp_path / "guard"
    guard.mkdir()
    log = tmp_path / "log.txt"
    videos = [f"clip{i:02d}" for i in range(24)]
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(3)
    procs = [ctx.Process(target=run_worker, args=(store, f"gpu{n}", videos, str(guard),
                                                  str(log), start)) for n in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    written = Counter(line.split()[0] for line in log.read_text().splitlines())
    assert written == Counter({v: 1 for v in videos})  # each video computed exactly once
    fs = FeatureStore(store)
    assert all(fs.complete_set(f) == set(videos) for f in FEATURES)
    assert len({line.split()[1] for line in log.read_text().splitlines()}) >= 2


def test_complete_video_is_skipped_without_claiming(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    fs = FeatureStore(store, "a")
    for feat in FEATURES:
        fs.write_video(feat, "done", np.ones((2, 2)), np.arange(2.0))
    fs.write_video("face", "half", np.ones((2, 2)), np.arange(2.0))
    with ClaimBook(store, "r") as book:
        vc = book.claim_video("done", FEATURES)
        assert (vc.status, vc.claim) == ("done", None)
        assert not list((Path(store) / CLAIMS_GROUP).glob("*.claim"))
        vc = book.claim_video("half", FEATURES)
        assert vc.status == "claimed" and vc.pending == ("voice",)
        assert vc.claim.keys == [claim_key("voice", "half")]
        other = ClaimBook(store, "other", heartbeat=False)
        assert other.claim_video("half", FEATURES).status == "busy"
        vc.release()
        assert other.claim_video("half", FEATURES).status == "claimed"
        other.close()


def test_claim_all_or_nothing(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    a, b = ClaimBook(store, "a"), ClaimBook(store, "b")
    held = a.try_claim("face/x")
    assert b.try_claim_all(["voice/x", "face/x"]) is None
    assert b.try_claim("voice/x") is not None  # what b took for the miss was given back
    assert [r.key for r in a.active()] == ["face/x", "voice/x"]
    held.release()
    a.close()
    b.close()
    assert a.active() == []


CHILD = """
import sys, time
sys.path.insert(0, {repo!r})
from extract.claims import ClaimBook
book = ClaimBook({store!r}, "victim", ttl={ttl}, host={host!r})
assert book.try_claim("face/v") is not None
print("ready", flush=True)
time.sleep(120)
"""


def _claim_in_child(store: str, ttl: float, host: str | None) -> subprocess.Popen:
    code = CHILD.format(repo=str(REPO), store=store, ttl=ttl, host=host)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)  # reaped: no zombie left holding the pid


def test_killed_holder_on_this_host_is_taken_over_at_once(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    proc = _claim_in_child(store, ttl=600, host=None)
    book = ClaimBook(store, "survivor")
    try:
        assert book.try_claim("face/v") is None  # alive: busy
        _kill(proc)
        claim = book.try_claim("face/v")  # its pid is gone: no need to wait 600 s
        assert claim is not None
        claim.check()
        assert [r.run_id for r in book.active()] == ["survivor"]
    finally:
        if proc.poll() is None:
            _kill(proc)
        book.close()


def test_killed_holder_elsewhere_is_taken_over_after_expiry(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    proc = _claim_in_child(store, ttl=1.0, host="another-machine")
    book = ClaimBook(store, "survivor")
    try:
        _kill(proc)
        assert book.try_claim("face/v") is None  # another host: only the lease tells
        time.sleep(1.3)
        assert book.try_claim("face/v") is not None
    finally:
        if proc.poll() is None:
            _kill(proc)
        book.close()


def test_renew_keeps_a_claim_alive_past_its_ttl(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    rival = ClaimBook(store, "rival", ttl=0.5, host="elsewhere")
    kept_book = ClaimBook(store, "kept", ttl=0.5, host="elsewhere")  # heartbeat on
    lapsed_book = ClaimBook(store, "lapsed", ttl=0.5, heartbeat=False)
    kept = kept_book.try_claim("face/a")
    lapsed = lapsed_book.try_claim("face/b")
    manual = lapsed_book.try_claim("face/c")
    for _ in range(6):
        time.sleep(0.25)
        manual.renew()  # renewing by hand works too
    assert rival.try_claim("face/a") is None
    assert rival.try_claim("face/c") is None
    kept.check()
    manual.check()
    taken = rival.try_claim("face/b")  # never renewed: expired, taken over
    assert taken is not None
    with pytest.raises(ClaimLostError):
        lapsed.check()
    assert lapsed.renew() is False and lapsed.lost
    lapsed.release()  # does not remove the rival's claim
    taken.check()
    assert {r.key: r.run_id for r in rival.active()}["face/b"] == "rival"
    for b in (rival, kept_book, lapsed_book):
        b.close()


def test_only_one_taker_wins_a_stale_claim(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    for round_ in range(15):
        key = f"face/v{round_}"
        dead = ClaimBook(store, "dead", ttl=0.05, heartbeat=False, host="gone")
        assert dead.try_claim(key) is not None
        time.sleep(0.08)
        barrier = threading.Barrier(6)
        books = [ClaimBook(store, f"t{n}", ttl=30, heartbeat=False) for n in range(6)]
        wins: list = []

        def take(book: ClaimBook, key: str, barrier: threading.Barrier, wins: list) -> None:
            barrier.wait()
            claim = book.try_claim(key)
            if claim is not None:
                wins.append(claim)

        threads = [threading.Thread(target=take, args=(b, key, barrier, wins)) for b in books]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert len(wins) == 1
        wins[0].check()
        for b in (dead, *books):
            b.close()
    leftovers = [p.name for p in (Path(store) / CLAIMS_GROUP).iterdir()
                 if ".retire-" in p.name or p.name.startswith(".tmp-")]
    assert leftovers == []


def test_clear_stale_and_records(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    dead = ClaimBook(store, "dead", ttl=0.05, heartbeat=False, host="gone")
    dead.try_claim("face/x")
    live = ClaimBook(store, "live", ttl=30)
    live.try_claim("voice/x")
    time.sleep(0.1)
    states = {rec.key: stale for rec, stale in live.records()}
    assert states == {"face/x": True, "voice/x": False}
    assert live.clear_stale() == 1
    assert [r.key for r in live.active()] == ["voice/x"]
    live.close()
    assert FeatureStore(store).features() == list(FEATURES)  # zarr ignores _claims


def test_claims_command_lists_and_clears(tmp_path, capsys):
    from extract.io.cli_commands import claims_cmd

    store = make_store(tmp_path / "s.zarr")
    dead = ClaimBook(store, "dead", ttl=0.05, heartbeat=False, host="gone")
    dead.try_claim("face/x")
    time.sleep(0.1)
    assert claims_cmd(store) == 0
    assert "face/x\trun dead" in capsys.readouterr().out
    assert claims_cmd(store, clear_stale=True) == 0
    out = capsys.readouterr().out
    assert "removed 1 stale claim(s)" in out and "no claims" in out
    dead.close()
