"""The store at corpus scale, against one ``.npy`` file per clip, measured side by side.

    python bench/store_scale.py                                   # 1k, 20k, 100k clips + 200k items
    python bench/store_scale.py --sizes 1000,20000 --items 0 --run-sizes 1000
    python bench/store_scale.py --quick                           # a smoke test (~1 minute)

For each size N it makes N clips of ``--frames`` x ``--dim`` float16 (one ``.npy`` each, timed
as the ``np.save`` baseline) and then measures, printing one table row per size:

- ``extract import --format npy`` of those files (a subprocess, as a user runs it), then the
  same command again over the finished store: the **resume check** (it skips every clip), as a
  share of the original import (goal <= 2%);
- **files per clip** in the store (format 1 had 6 files and 6 folders per clip);
- **write**: ``FeatureStore.write_video`` of the same in-memory arrays (committed every 256, as
  ``extract import`` does) ÷ ``np.save`` of them, alternated, median of ``--repeats``;
- **read all**: ``FeatureStore.read_videos`` of every clip ÷ ``np.load`` of every per-clip
  file (results kept in memory both ways, as a loader does) and ÷ one ``np.load`` of the same
  rows saved as one contiguous array (the memory-bandwidth bound), warm page cache, median;
- **verify**: ``extract verify`` seconds per GB (checksums of every clip).

``--items`` adds the single-frame case (AffectNet-size image sets: one row per item).
``--run-sizes`` adds ``extract run -f fbank`` over generated 0.2 s wav files (a cheap feature,
so the store and the runner's per-clip overhead dominate): run time, resume check, files per
clip. Ratios > 1 mean the store is faster. Results are also written as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from extract.store import FeatureStore  # noqa: E402


def cli(*args: str) -> float:
    """Seconds of one ``python -m extract ...`` (output discarded; fails loudly)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "extract", *args], cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"extract {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return time.perf_counter() - t0


def count_files(path: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(path))


def make_arrays(n: int, frames: int, dim: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    block = rng.standard_normal((min(n, 4096) * frames, dim), dtype=np.float32).astype(np.float16)
    rows = len(block) // frames
    return [block[(i % rows) * frames:(i % rows + 1) * frames] + np.float16(i % 7)
            for i in range(n)]


def save_npy(folder: Path, arrays: list[np.ndarray]) -> float:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    for i, a in enumerate(arrays):
        np.save(folder / f"c{i:07d}.npy", a)
    return time.perf_counter() - t0


def write_store(path: Path, arrays: list[np.ndarray], frames: int) -> float:
    shutil.rmtree(path, ignore_errors=True)
    store = FeatureStore(path, "a")
    store.ensure_feature("emb", modality="visual", dim=arrays[0].shape[1], extractor="bench",
                         config={})
    t = np.arange(frames) / 25.0
    t0 = time.perf_counter()
    for i, a in enumerate(arrays):
        store.write_video("emb", f"c{i:07d}", a, t, commit=False)
        if i % 256 == 255:
            store.commit()
    store.close()
    return time.perf_counter() - t0


def read_all(store_path: Path, npy: Path, big: Path, n: int, repeats: int) -> dict[str, float]:
    names = [npy / f"c{i:07d}.npy" for i in range(n)]
    store = FeatureStore(store_path)
    store.complete_set("emb")  # the index is loaded once, as any loader does
    out: dict[str, list[float]] = {"store": [], "npy": [], "big": []}

    def via_store() -> float:
        t0 = time.perf_counter()
        kept = store.read_videos("emb")
        dt = time.perf_counter() - t0
        del kept
        return dt

    def via_npy() -> float:
        t0 = time.perf_counter()
        kept = [np.load(p) for p in names]
        dt = time.perf_counter() - t0
        del kept
        return dt

    def via_big() -> float:
        t0 = time.perf_counter()
        kept = np.load(big)
        dt = time.perf_counter() - t0
        del kept
        return dt

    via_store(), via_npy(), via_big()  # warm the page cache
    for r in range(repeats):
        order = [("store", via_store), ("npy", via_npy), ("big", via_big)]
        for key, fn in order if r % 2 == 0 else order[::-1]:
            out[key].append(fn())
    return {k: statistics.median(v) for k, v in out.items()}


def bench_size(root: Path, n: int, frames: int, dim: int, repeats: int) -> dict[str, float]:
    arrays = make_arrays(n, frames, dim, seed=n)
    npy = root / f"npy_{n}"
    store = root / f"import_{n}.zarr"
    t_save = save_npy(npy, arrays)
    big = root / f"big_{n}.npy"
    np.save(big, np.concatenate(arrays))
    os.sync()
    t_import = cli("import", "--format", "npy", "--name", "emb", "--source", str(npy),
                   "--store", str(store), "--modality", "visual", "--fps", "25")
    t_resume = cli("import", "--format", "npy", "--name", "emb", "--source", str(npy),
                   "--store", str(store), "--modality", "visual", "--fps", "25")
    files = count_files(store)
    w_store, w_npy = [], []
    for r in range(repeats):
        pair = [(w_store, lambda: write_store(root / "w.zarr", arrays, frames)),
                (w_npy, lambda: save_npy(root / "w_npy", arrays))]
        for acc, fn in pair if r % 2 == 0 else pair[::-1]:
            os.sync()
            acc.append(fn())
    shutil.rmtree(root / "w.zarr", ignore_errors=True)
    shutil.rmtree(root / "w_npy", ignore_errors=True)
    os.sync()
    reads = read_all(store, npy, big, n, repeats)
    t0 = time.perf_counter()
    report = FeatureStore(store).verify()
    t_verify = time.perf_counter() - t0
    if not report.ok or report.checked != n:
        raise SystemExit(f"verify failed on {store}: {report.problems[:3]}")
    gb = report.bytes_checked / 1e9
    result = {"clips": n, "frames": frames, "dim": dim, "GB": gb, "np_save_s": t_save,
              "import_s": t_import, "resume_s": t_resume, "resume_share": t_resume / t_import,
              "files": files, "files_per_clip": files / n,
              "write_store_s": statistics.median(w_store),
              "write_npy_s": statistics.median(w_npy),
              "write_ratio": statistics.median(w_npy) / statistics.median(w_store),
              "read_store_s": reads["store"], "read_npy_s": reads["npy"],
              "read_big_s": reads["big"], "read_vs_npy": reads["npy"] / reads["store"],
              "read_vs_contiguous": reads["big"] / reads["store"],
              "verify_s": t_verify, "verify_s_per_GB": t_verify / max(gb, 1e-9)}
    for p in (npy, big, store):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return result


def write_wavs(folder: Path, n: int, seconds: float = 0.2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(int(16000 * seconds)) * 3000).astype(np.int16)
    for i in range(n):
        with wave.open(str(folder / f"c{i:07d}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(np.roll(noise, i).tobytes())


def bench_run(root: Path, n: int, workers: int) -> dict[str, float]:
    media = root / f"wav_{n}"
    store = root / f"run_{n}.zarr"
    write_wavs(media, n)
    os.sync()
    args = ("run", "-f", "fbank", "--input", str(media), "--store", str(store), "--workers",
            str(workers))
    t_run = cli(*args)
    t_resume = cli(*args)
    files = count_files(store) - count_files(store / "_runs")
    ok = FeatureStore(store).verify().ok
    shutil.rmtree(media, ignore_errors=True)
    shutil.rmtree(store, ignore_errors=True)
    return {"clips": n, "run_s": t_run, "resume_s": t_resume, "resume_share": t_resume / t_run,
            "files": files, "files_per_clip": files / n, "verify_ok": ok}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,20000,100000")
    parser.add_argument("--items", type=int, default=200000, help="single-frame items (0: skip)")
    parser.add_argument("--run-sizes", default="1000,20000",
                        help="clips for extract run -f fbank (empty: skip)")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1k and 5k clips, 20k items, a "
                        "1k run")
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: tmp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.items, args.run_sizes = "1000,5000", 20000, "1000"
    root = args.dir or Path(tempfile.mkdtemp(prefix="store_scale_"))
    root.mkdir(parents=True, exist_ok=True)
    results: dict[str, list] = {"clips": [], "run": []}
    print(f"scratch {root}; float16 clips of {args.frames} x {args.dim}; medians of "
          f"{args.repeats}; ratios > 1: the store is faster")
    head = (f"{'clips':>8} {'frames':>6} {'GB':>6} | {'files/clip':>10} | {'import s':>8} "
            f"{'resume':>7} | {'write÷np.save':>13} | {'read÷np.load':>12} "
            f"{'÷contig.':>8} | {'verify s/GB':>11}")
    print(head)
    cases = [(int(s), args.frames) for s in args.sizes.split(",") if s]
    if args.items:
        cases.append((args.items, 1))
    try:
        for n, frames in cases:
            r = bench_size(root, n, frames, args.dim, args.repeats)
            results["clips"].append(r)
            print(f"{n:>8} {frames:>6} {r['GB']:>6.2f} | {r['files_per_clip']:>10.4f} | "
                  f"{r['import_s']:>8.1f} {r['resume_share']:>6.1%} | "
                  f"{r['write_ratio']:>13.2f} | {r['read_vs_npy']:>12.2f} "
                  f"{r['read_vs_contiguous']:>8.2f} | {r['verify_s_per_GB']:>11.2f}",
                  flush=True)
        sizes = [int(s) for s in args.run_sizes.split(",") if s]
        if sizes:
            print(f"\nextract run -f fbank --workers {args.workers} over 0.2 s wav files")
            print(f"{'clips':>8} | {'run s':>7} {'resume s':>8} {'resume':>7} | "
                  f"{'files/clip':>10}")
        for n in sizes:
            r = bench_run(root, n, args.workers)
            results["run"].append(r)
            print(f"{n:>8} | {r['run_s']:>7.1f} {r['resume_s']:>8.2f} {r['resume_share']:>6.1%}"
                  f" | {r['files_per_clip']:>10.4f}", flush=True)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
