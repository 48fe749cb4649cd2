"""Store format 2: packs + index, checksums, verify / --fix, rm, migrate, zarr compatibility,
object-store URLs, concurrent writers and interrupted writers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from extract.errors import StoreError
from extract.store import FeatureStore, open_store

CFG = {"weights": None, "layer": 3}
REPO = Path(__file__).resolve().parents[1]


def make(path: Path | str, dim: int = 6, **kw) -> FeatureStore:
    store = FeatureStore(path, "a", **kw)
    store.ensure_feature("feat", modality="visual", dim=dim, extractor="test", config=CFG)
    return store


def clips(n: int, dim: int = 6, seed: int = 0) -> dict[str, tuple]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        t = int(rng.integers(0, 40))
        data = rng.standard_normal((t, dim)).astype(np.float16)
        mask = rng.random(t) > 0.2
        data[~mask] = 0
        out[f"spk{i % 3}/clip {i:03d}"] = (data, np.arange(t) / 25 + 0.1, mask)
    return out


def write_all(store: FeatureStore, items: dict[str, tuple], commit: bool = True) -> None:
    for vid, (d, t, m) in items.items():
        store.write_video("feat", vid, d, t, m, source={"path": vid}, commit=commit)


def check_equal(store: FeatureStore, items: dict[str, tuple]) -> None:
    assert sorted(store.videos("feat")) == sorted(items)
    for fa in store.read_videos("feat", list(items)):
        d, t, m = items[fa.video]
        np.testing.assert_array_equal(fa.data, d)
        np.testing.assert_array_equal(fa.timestamps, t)
        np.testing.assert_array_equal(fa.mask, m)
        assert fa.attrs["source"] == {"path": fa.video} and fa.attrs["complete"]


def verify_cli(path: Path | str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "extract", "verify", "--store", str(path),
                           *args], capture_output=True, text=True, cwd=REPO)


# ----------------------------------------------------------------- layout
def test_many_clips_few_files_many_packs_and_chunks(tmp_path: Path) -> None:
    items = clips(300)
    # Small packs and chunks: several packs, videos across chunk boundaries.
    with make(tmp_path / "s.zarr", pack_bytes=20_000, chunk_bytes=700) as store:
        write_all(store, items)
    store = open_store(tmp_path / "s.zarr")
    check_equal(store, items)
    idx = store.index("feat")
    assert len({e.pack for e in idx.live.values()}) > 3  # several packs
    single = store.read_video("feat", "spk1/clip 004")
    np.testing.assert_array_equal(single.data, items["spk1/clip 004"][0])
    files = sum(len(f) for _, _, f in os.walk(tmp_path / "s.zarr"))
    with make(tmp_path / "big.zarr") as big:  # the default sizes: one pack, one chunk each
        write_all(big, items)
    assert sum(len(f) for _, _, f in os.walk(tmp_path / "big.zarr")) < 20 < files
    assert store.verify().ok


def test_pack_arrays_are_standard_zarr(tmp_path: Path) -> None:
    import zarr

    items = clips(40)
    with make(tmp_path / "s.zarr", chunk_bytes=500) as store:
        write_all(store, items)
    store = open_store(tmp_path / "s.zarr")
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    for vid, (d, t, m) in items.items():
        e = store.entry("feat", vid)
        base = f"feat/packs/{e.pack}"
        arr = group[f"{base}/data"]
        assert arr.metadata.dimension_names == ("row", "dim")
        np.testing.assert_array_equal(arr[e.start:e.start + e.rows], d)
        np.testing.assert_array_equal(group[f"{base}/time"][e.start:e.start + e.rows], t)
        np.testing.assert_array_equal(group[f"{base}/mask"][e.start:e.start + e.rows], m)
    sealed = group[f"feat/packs/{e.pack}/data"].shape[0]
    assert sealed == max(x.start + x.rows for x in store.index("feat").live.values())


def test_rewrite_replaces_and_old_rows_are_dropped(tmp_path: Path) -> None:
    store = make(tmp_path / "s.zarr", dim=3)
    store.write_video("feat", "v", np.ones((4, 3)), np.arange(4.0))
    store.write_video("feat", "v", np.full((2, 3), 5.0), np.arange(2.0))
    other = open_store(tmp_path / "s.zarr")
    fa = other.read_video("feat", "v")
    assert fa.data.tolist() == [[5.0] * 3] * 2
    idx = other.index("feat")
    assert len(idx.by_video["v"]) == 2 and len(idx.killed) == 1 and other.verify().ok


def test_dtype_range_refused(tmp_path: Path) -> None:
    store = make(tmp_path / "s.zarr", dim=2)
    with pytest.raises(StoreError, match="float32"):
        store.write_video("feat", "v", np.array([[1e6, 0.0]]), np.zeros(1))
    assert not store.is_complete("feat", "v")


def test_rate_from_median_step(tmp_path: Path) -> None:
    store = make(tmp_path / "s.zarr", dim=2)
    t = np.r_[np.arange(10) * 0.01, 0.095]  # openSMILE: the last window is shorter
    store.write_video("feat", "v", np.zeros((11, 2)), t)
    row = next(r for r in store.table() if r["video"] == "v")
    assert row["rate"] == pytest.approx(100.0)
    assert store.read_video("feat", "v").attrs["time"] is None


# --------------------------------------------------------- interruptions
def test_uncommitted_rows_are_not_complete(tmp_path: Path) -> None:
    items = clips(10)
    store = make(tmp_path / "s.zarr")
    first = dict(list(items.items())[:5])
    write_all(store, first)
    rest = dict(list(items.items())[5:])
    write_all(store, rest, commit=False)  # written, never committed: a killed writer
    other = open_store(tmp_path / "s.zarr")
    assert other.complete_set("feat") == set(first)
    for vid in rest:
        assert not other.is_complete("feat", vid)
        with pytest.raises(StoreError, match="not complete"):
            other.read_video("feat", vid)
    store._writers.clear()  # drop them without commit (what SIGKILL does)
    again = FeatureStore(tmp_path / "s.zarr", "a")
    write_all(again, rest)
    again.close()
    check_equal(open_store(tmp_path / "s.zarr"), items)
    assert open_store(tmp_path / "s.zarr").verify().ok


def test_torn_journal_line_is_ignored(tmp_path: Path) -> None:
    items = clips(4)
    with make(tmp_path / "s.zarr") as store:
        write_all(store, items)
    journal = next((tmp_path / "s.zarr" / "feat" / "_index").glob("p*.jsonl"))
    with journal.open("ab") as fh:
        fh.write(b'{"op":"put","v":"ghost","p":"x","s":0,')  # killed mid-line
    store = open_store(tmp_path / "s.zarr")
    check_equal(store, items)
    assert store.verify().ok


_KILL_SCRIPT = """
import sys, numpy as np
from extract.store import FeatureStore
s = FeatureStore(sys.argv[1], "a")
s.ensure_feature("feat", modality="visual", dim=6, extractor="test",
                 config={"weights": None, "layer": 3})
done = s.complete_set("feat")  # a re-run skips what is complete
rng = np.random.default_rng(0)
for i in range(2000):
    d = rng.standard_normal((32, 6)).astype(np.float16)
    if f"clip{i:04d}" in done:
        continue
    s.write_video("feat", f"clip{i:04d}", d, np.arange(32) / 25.0, commit=(i % 7 == 0))
    if i == len(done) + 150 or i == 1999:
        print("go", flush=True)
s.close()
"""


def test_sigkill_then_rewrite_equals_uninterrupted(tmp_path: Path) -> None:
    script = tmp_path / "w.py"
    script.write_text(_KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    full = tmp_path / "full.zarr"
    subprocess.run([sys.executable, str(script), str(full)], check=True, env=env)
    part = tmp_path / "part.zarr"
    for _ in range(3):  # kill three times at different points, then finish
        proc = subprocess.Popen([sys.executable, str(script), str(part)], env=env,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "go"
        proc.kill()
        proc.wait()
    store = FeatureStore(part, "a")
    done = store.complete_set("feat")
    assert done and len(done) < 2000
    rng = np.random.default_rng(0)
    for i in range(2000):  # a re-run redoes exactly the missing ones
        d = rng.standard_normal((32, 6)).astype(np.float16)
        if f"clip{i:04d}" not in done:
            store.write_video("feat", f"clip{i:04d}", d, np.arange(32) / 25.0, commit=False)
    store.close()
    a, b = open_store(full), open_store(part)
    assert a.complete_set("feat") == b.complete_set("feat") == {f"clip{i:04d}" for i in range(2000)}
    for x, y in zip(a.read_videos("feat"), b.read_videos("feat"), strict=True):
        assert x.video == y.video
        np.testing.assert_array_equal(x.data, y.data)
        np.testing.assert_array_equal(x.timestamps, y.timestamps)
    idx = b.index("feat")
    assert all(len(idx.by_video[v]) == 1 for v in idx.live)  # every clip complete once
    assert b.verify().ok


# ------------------------------------------------------------- integrity
def _damaged_store(tmp_path: Path) -> tuple[Path, dict[str, tuple], FeatureStore]:
    items = clips(60)
    path = tmp_path / "s.zarr"
    with make(path, chunk_bytes=400) as store:
        write_all(store, items)
    return path, items, open_store(path)


def test_verify_finds_deleted_and_zeroed_chunks_and_fix_then_rewrite_repairs(
        tmp_path: Path) -> None:
    path, items, store = _damaged_store(tmp_path)
    assert verify_cli(path).returncode == 0
    e1 = store.entry("feat", "spk0/clip 003")
    e2 = store.entry("feat", "spk2/clip 050")
    layout = store.layout("feat", e1.pack)
    data = path / "feat" / "packs" / e1.pack / "data" / "c"
    (data / str(e1.start // layout.chunk_rows) / "0").unlink()
    zero = data / str(e2.start // layout.chunk_rows) / "0"
    zero.write_bytes(bytes(zero.stat().st_size))
    with pytest.raises(StoreError, match="missing"):
        open_store(path).read_video("feat", "spk0/clip 003")  # never zeros
    out = verify_cli(path)
    assert out.returncode == 1 and "Traceback" not in out.stderr + out.stdout
    assert "missing file" in out.stdout and "checksum mismatch in data" in out.stdout
    assert "spk0/clip 003" in out.stdout and "spk2/clip 050" in out.stdout
    fixed = verify_cli(path, "--fix")
    assert fixed.returncode == 0 and "marked not complete" in fixed.stdout, fixed.stdout
    after = open_store(path)
    gone = set(items) - after.complete_set("feat")
    assert {"spk0/clip 003", "spk2/clip 050"} <= gone
    assert sorted(after.videos("feat", complete_only=False)) == sorted(items)
    assert verify_cli(path).returncode == 0  # the damaged ones are no longer complete
    with FeatureStore(path, "a") as again:  # what `extract run` does: redo the missing ones
        write_all(again, {v: items[v] for v in gone})
    check_equal(open_store(path), items)
    assert verify_cli(path).returncode == 0


@pytest.mark.parametrize("target", ["root", "feature", "pack", "array", "journal"])
def test_junk_metadata_is_reported_and_fixed(tmp_path: Path, target: str) -> None:
    path, items, store = _damaged_store(tmp_path)
    pack = store.entry("feat", "spk0/clip 003").pack
    files = {"root": path / "zarr.json", "feature": path / "feat" / "zarr.json",
             "pack": path / "feat" / "packs" / pack / "zarr.json",
             "array": path / "feat" / "packs" / pack / "mask" / "zarr.json",
             "journal": path / "feat" / "_index" / f"{pack}.jsonl"}
    f = files[target]
    if target == "journal":
        lines = f.read_bytes().split(b"\n")
        lines[3] = b"{junk"
        f.write_bytes(b"\n".join(lines))
    else:
        f.write_text("{ not json")
    out = verify_cli(path)
    assert out.returncode == 1 and "Traceback" not in out.stderr + out.stdout, out.stderr
    assert "problem" in out.stdout
    fixed = verify_cli(path, "--fix")
    assert fixed.returncode == 0 and "fixed" in fixed.stdout, fixed.stdout + fixed.stderr
    assert verify_cli(path).returncode == 0
    after = open_store(path)
    lost = set(items) - after.complete_set("feat")
    assert len(lost) <= (1 if target == "journal" else 0)
    with FeatureStore(path, "a") as again:
        write_all(again, {v: items[v] for v in lost})
    check_equal(open_store(path), items)
    import zarr

    zarr.open_group(str(path), mode="r")["feat/packs"][f"{pack}/mask"][:1]  # zarr reads it


def test_not_a_store_and_format_1_refused(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    with pytest.raises(StoreError, match="not a feature store"):
        FeatureStore(tmp_path / "photos", "a")
    assert sorted(os.listdir(tmp_path / "photos")) == ["a.jpg"]  # untouched
    old = tmp_path / "old.zarr"
    old.mkdir()
    (old / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                               "attributes": {"affect_store": 1}}))
    with pytest.raises(StoreError, match="extract migrate"):
        open_store(old)


# ---------------------------------------------------------------- rm / migrate
def test_rm_videos_and_feature(tmp_path: Path) -> None:
    path, items, _ = _damaged_store(tmp_path)
    cmd = [sys.executable, "-m", "extract", "rm", "--store", str(path), "feat"]
    dry = subprocess.run([*cmd, "spk0/clip 003"], capture_output=True, text=True, cwd=REPO)
    assert dry.returncode == 1 and "--yes" in dry.stdout
    assert open_store(path).is_complete("feat", "spk0/clip 003")
    done = subprocess.run([*cmd, "spk0/clip 003", "spk1/clip 004", "--yes"], capture_output=True,
                          text=True, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    left = open_store(path).complete_set("feat")
    assert left == set(items) - {"spk0/clip 003", "spk1/clip 004"}
    assert open_store(path).videos("feat", complete_only=False) == sorted(left)  # not damaged
    bad = subprocess.run([*cmd, "nope", "--yes"], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "nope" in bad.stderr and "Traceback" not in bad.stderr
    whole = subprocess.run([*cmd, "--yes"], capture_output=True, text=True, cwd=REPO)
    assert whole.returncode == 0 and open_store(path).features() == []


def _v1_store(path: Path, items: dict[str, tuple]) -> None:
    """A format-1 store as the previous version wrote it (one array per video)."""
    import zarr

    from extract.ids import video_key
    from extract.store import fingerprint

    root = zarr.open_group(str(path), mode="a")
    root.attrs["affect_store"] = 1
    fp = fingerprint({"extractor": "test", "config": CFG, "dim": 6, "dtype": "float16"})
    g = root.require_group("feat")
    g.attrs.update({"modality": "visual", "dim": 6, "extractor": "test", "config": CFG,
                    "fingerprint": fp, "dtype": "float16", "provenance": {"x": 1}})
    for vid, (d, t, m) in items.items():
        key = video_key(vid)
        arr = g.create_array(key, data=d, chunks=(max(1, len(d)), 6))
        g.require_group("_time").create_array(key, data=t, chunks=(max(1, len(t)),))
        g.require_group("_mask").create_array(key, data=m, chunks=(max(1, len(m)),))
        arr.attrs.update({"video": vid, "num_frames": len(d), "source": {"path": vid},
                          "run_id": "r1", "complete": True})
    g.create_array(video_key("half"), shape=(3, 6), dtype="float16", chunks=(3, 6))


def test_migrate_format_1(tmp_path: Path) -> None:
    items = {k: v for k, v in clips(12).items() if len(v[0])}
    _v1_store(tmp_path / "old.zarr", items)
    out = subprocess.run([sys.executable, "-m", "extract", "migrate", "--store",
                          str(tmp_path / "old.zarr"), "--out", str(tmp_path / "new.zarr")],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 incomplete" in out.stdout
    new = open_store(tmp_path / "new.zarr")
    check_equal(new, items)
    info = new.feature_info("feat")
    assert info.provenance == {"x": 1} and new.read_video("feat", next(iter(items))).attrs[
        "run_id"] == "r1"


# -------------------------------------------------------------- concurrency
_WRITER = """
import sys, numpy as np
from extract.store import FeatureStore
s = FeatureStore(sys.argv[1], "a")
s.ensure_feature("feat", modality="visual", dim=6, extractor="test",
                 config={"weights": None, "layer": 3})
k = int(sys.argv[2])
for i in range(200):
    s.write_video("feat", f"w{k}-{i}", np.full((5, 6), k, np.float16), np.arange(5.0))
s.close()
"""


def test_concurrent_writers_never_share_a_file(tmp_path: Path) -> None:
    script = tmp_path / "w.py"
    script.write_text(_WRITER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "s.zarr"), str(k)],
                              env=env) for k in range(3)]
    assert all(p.wait() == 0 for p in procs)
    store = open_store(tmp_path / "s.zarr")
    assert len(store.complete_set("feat")) == 600
    packs = {store.entry("feat", v).pack for v in store.complete_set("feat")}
    assert len(packs) == 3
    for fa in store.read_videos("feat"):
        assert (fa.data == int(fa.video[1])).all()
    assert store.verify().ok


# ----------------------------------------------------------------- URLs
def test_memory_url_store(tmp_path: Path) -> None:
    items = clips(30)
    url = "memory://stores/t1.zarr"
    with make(url, chunk_bytes=300) as store:
        write_all(store, dict(list(items.items())[:10]))
        write_all(store, dict(list(items.items())[10:]))
    store = open_store(url)
    check_equal(store, items)
    assert store.verify().ok
    assert store.table() and store.features() == ["feat"]


def test_file_url_is_the_local_path(tmp_path: Path) -> None:
    with make(f"file://{tmp_path}/s.zarr") as store:
        write_all(store, clips(3))
    assert (tmp_path / "s.zarr" / "feat" / "zarr.json").is_file()
    assert len(open_store(tmp_path / "s.zarr").complete_set("feat")) == 3


def test_long_and_non_ascii_ids(tmp_path: Path) -> None:
    """Ids of any length and script: nothing in the store is named after a video, and an
    export shortens file names that would be too long (the id round-trips)."""
    from extract.io import export_feature, import_features

    vid = "说话人/" + "情绪 表达 " * 20 + "clip 01"  # ~250 bytes of UTF-8, spaces
    store = make(tmp_path / "s.zarr", dim=3)
    data = np.arange(12, dtype=np.float16).reshape(4, 3)
    store.write_video("feat", vid, data, np.arange(4) / 25)
    store.close()
    assert open_store(tmp_path / "s.zarr").video_attrs("feat", vid)["num_frames"] == 4
    export_feature(str(tmp_path / "s.zarr"), "feat", "csv", str(tmp_path / "csv"))
    assert all(len(p.name.encode()) <= 255 for p in (tmp_path / "csv").rglob("*"))
    import_features("csv", "back", None, tmp_path / "csv", tmp_path / "t.zarr")
    fa = open_store(tmp_path / "t.zarr").read_video("back", vid)
    np.testing.assert_array_equal(fa.data, data)


# ------------------------------------------------------------- review fixes
def test_empty_videos_have_their_own_entries(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    with make(path, dim=2) as store:
        store.write_video("feat", "empty", np.zeros((0, 2)), np.zeros(0))
        store.write_video("feat", "b", np.ones((3, 2)), np.arange(3.0))
    got = {fa.video: fa.data.shape for fa in open_store(path).read_videos("feat")}
    assert got == {"empty": (0, 2), "b": (3, 2)}
    with FeatureStore(path, "a") as store:
        store.remove_video("feat", "empty")
    assert open_store(path).complete_set("feat") == {"b"}
    only = tmp_path / "only.zarr"  # a pack that holds nothing but empty videos survives close
    with make(only, dim=2) as store:
        store.write_video("feat", "e1", np.zeros((0, 2)), np.zeros(0))
    assert open_store(only).complete_set("feat") == {"e1"} and open_store(only).verify().ok


def test_rm_and_rewrite_kill_every_older_copy(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    with make(path, dim=2) as store:  # written twice in one uncommitted batch
        store.write_video("feat", "v", np.ones((2, 2)), np.arange(2.0), commit=False)
        store.write_video("feat", "v", np.full((2, 2), 5.0), np.arange(2.0), commit=False)
    assert open_store(path).read_video("feat", "v").data[0, 0] == 5
    with FeatureStore(path, "a") as store:
        assert store.remove_video("feat", "v")
    assert not open_store(path).is_complete("feat", "v")  # no older copy comes back


def test_a_junk_line_that_parses_as_values_loses_only_itself(tmp_path: Path) -> None:
    path, items, store = _damaged_store(tmp_path)
    journal = next((path / "feat" / "_index").glob("p*.jsonl"))
    lines = journal.read_bytes().split(b"\n")
    lines[5] = b"0,0"
    journal.write_bytes(b"\n".join(lines))
    assert len(open_store(path).complete_set("feat")) == len(items) - 1
    assert verify_cli(path).returncode == 1
    assert verify_cli(path, "--fix").returncode == 0 and verify_cli(path).returncode == 0


def test_whole_missing_files_are_reported_and_fixed(tmp_path: Path) -> None:
    path, items, store = _damaged_store(tmp_path)
    (path / "feat" / "zarr.json").unlink()  # the feature's own document
    out = verify_cli(path)
    assert out.returncode == 1 and "feat: zarr.json" in out.stdout
    assert verify_cli(path, "--fix").returncode == 0
    check_equal(open_store(path), items)
    (path / "zarr.json").unlink()  # the root document
    assert verify_cli(path).returncode == 1
    assert verify_cli(path, "--fix").returncode == 0
    check_equal(open_store(path), items)
    pack = store.entry("feat", "spk0/clip 003").pack  # a sealed pack's journal
    (path / "feat" / "_index" / f"{pack}.jsonl").unlink()
    out = verify_cli(path)
    assert out.returncode == 1 and "no index journal" in out.stdout
    assert verify_cli(path, "--fix").returncode == 0
    lost = set(items) - open_store(path).complete_set("feat")
    assert lost  # they are no longer in the store, and the re-run redoes them
    with FeatureStore(path, "a") as again:
        write_all(again, {v: items[v] for v in lost})
    check_equal(open_store(path), items)
    assert verify_cli(path).returncode == 0


def test_verify_refuses_a_big_endian_array_document(tmp_path: Path) -> None:
    path, _, store = _damaged_store(tmp_path)
    pack = store.entry("feat", "spk0/clip 003").pack
    doc_path = path / "feat" / "packs" / pack / "time" / "zarr.json"
    doc = json.loads(doc_path.read_text())
    doc["codecs"][0]["configuration"]["endian"] = "big"
    doc_path.write_text(json.dumps(doc))
    assert verify_cli(path).returncode == 1
    assert verify_cli(path, "--fix").returncode == 0 and verify_cli(path).returncode == 0


def test_a_failed_commit_leaves_no_broken_line(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import extract.store.packs as packs

    path = tmp_path / "s.zarr"
    store = make(path, dim=2)
    store.write_video("feat", "a", np.ones((2, 2)), np.arange(2.0))
    real = os.fsync
    calls = {"n": 0}

    def full(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(packs.os, "fsync", full)
    monkeypatch.setattr("extract.store.fs.os.fsync", full)
    with pytest.raises(OSError):
        store.write_video("feat", "b", np.ones((2, 2)), np.arange(2.0))
    monkeypatch.setattr(packs.os, "fsync", real)
    monkeypatch.setattr("extract.store.fs.os.fsync", real)
    store.write_video("feat", "c", np.ones((2, 2)), np.arange(2.0))
    store.close()
    fresh = open_store(path)
    assert fresh.complete_set("feat") == {"a", "c"} and fresh.verify().ok
    assert not fresh.index("feat").problems


def test_object_store_journals_consolidate_and_chunks_stay_small(tmp_path: Path) -> None:
    from extract.store.fs import files_for

    url = "memory://stores/consolidate.zarr"
    with make(url) as store:
        for i in range(5):
            store.write_video("feat", f"v{i}", np.ones((3, 6)), np.arange(3.0))
        layout = store.layout("feat", store.entry("feat", "v0").pack)
    names = files_for(url).listdir("feat/_index")
    assert [n for n in names if n.startswith("p")] == [f"{store.entry('feat', 'v0').pack}.jsonl"]
    assert layout.array("data").chunk_bytes <= 4 << 20
    assert layout.array("time").chunk_bytes <= 4 << 20
    assert open_store(url).complete_set("feat") == {f"v{i}" for i in range(5)}


def test_bulk_read_does_not_need_chunks_only_removed_videos_used(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    rows = {f"v{i}": np.full((4, 6), i, np.float16) for i in range(9)}
    with make(path, chunk_bytes=48) as store:  # 4 rows of 6 float16 per chunk: a chunk each
        for v, d in rows.items():
            store.write_video("feat", v, d, np.arange(4.0))
    with FeatureStore(path, "a") as store:
        store.remove_video("feat", "v4")
        e = store.entry("feat", "v5")
    layout = open_store(path).layout("feat", e.pack)
    index = (e.start - 4) // layout.chunk_rows
    (path / "feat" / "packs" / e.pack / "data" / "c" / str(index) / "0").unlink()  # v4's
    got = open_store(path).read_videos("feat")
    assert [fa.video for fa in got] == [v for v in rows if v != "v4"]


def test_verify_fix_then_extract_run_redoes_exactly_the_damaged_videos(tmp_path: Path) -> None:
    """The done-when path end to end: `extract run`, a deleted chunk and a video's bytes
    zeroed, `extract verify` (exit 1), `--fix`, `extract run` again: only the damaged videos
    are extracted again and every array equals what the first runs wrote."""
    from media_utils import write_audio

    store_path, first, second = tmp_path / "s.zarr", tmp_path / "in1", tmp_path / "in2"
    for i in range(3):
        write_audio(first / f"a{i}.wav", seconds=1.0, rate=16000, channels=1, seed=i)
        write_audio(second / f"b{i}.wav", seconds=1.0, rate=16000, channels=1, seed=10 + i)

    def extract_run(inputs: Path, run_id: str) -> set[str]:
        out = subprocess.run([sys.executable, "-m", "extract", "run", "-f", "fbank", "-i",
                              str(inputs), "--store", str(store_path), "--workers", "0",
                              "--no-progress", "--run-id", run_id],
                             capture_output=True, text=True, cwd=REPO)
        assert out.returncode == 0, out.stdout + out.stderr
        written = store_path / "_runs" / run_id / "written.jsonl"
        lines = written.read_text().splitlines() if written.exists() else []
        return {json.loads(line)["video"] for line in lines}

    assert extract_run(first, "r1") == {"a0", "a1", "a2"}
    assert extract_run(second, "r2") == {"b0", "b1", "b2"}  # a second pack
    store = open_store(store_path)
    before = {fa.video: fa for fa in store.read_videos("fbank")}
    a1, b0 = store.entry("fbank", "a1"), store.entry("fbank", "b0")
    assert a1.pack != b0.pack
    packs = store_path / "fbank" / "packs"
    spec = store.layout("fbank", a1.pack).array("data")
    row_bytes = spec.row_bytes
    assert a1.start + a1.rows <= spec.chunk_rows
    (packs / b0.pack / "data" / spec.chunk_key(0)).unlink()  # every b video lives in it
    chunk = packs / a1.pack / "data" / spec.chunk_key(0)
    raw = bytearray(chunk.read_bytes())
    raw[a1.start * row_bytes:(a1.start + a1.rows) * row_bytes] = bytes(a1.rows * row_bytes)
    chunk.write_bytes(bytes(raw))

    out = verify_cli(store_path)
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr
    named = {line.split(": ")[2] for line in out.stdout.splitlines()
             if line.startswith("problem: fbank: ") and line.count(": ") >= 3}
    assert {"a1", "b0", "b1", "b2"} <= named and not {"a0", "a2"} & named, out.stdout
    assert verify_cli(store_path, "--fix").returncode == 0
    assert open_store(store_path).complete_set("fbank") == {"a0", "a2"}
    redone = extract_run(first, "r3") | extract_run(second, "r4")
    assert redone == {"a1", "b0", "b1", "b2"}
    assert verify_cli(store_path).returncode == 0
    after = {fa.video: fa for fa in open_store(store_path).read_videos("fbank")}
    assert sorted(after) == sorted(before)
    for video, fa in before.items():
        np.testing.assert_array_equal(after[video].data, fa.data)
        np.testing.assert_array_equal(after[video].timestamps, fa.timestamps)
