"""Feature-store I/O against plain ``.npy`` files, measured side by side in one run.

    python bench/store_io.py [--videos 50] [--dims 512,1024] [--repeats 7] [--min-frames 2000]
                             [--max-frames 8000] [--dir /tmp/store_io]

For each width D it writes the same float16 (T, D) arrays (T drawn in [min, max]) once with
``FeatureStore.write_video`` and with ``np.save`` twice: as is, and with an ``fsync`` of each
file (the store makes every committed video durable before it counts). It then reads them all
back with ``FeatureStore.read_video`` and ``np.load`` (data, times and mask both ways). Writes
take turns per repeat (after an ``os.sync``), reads alternate per video, and the median of the
repeats is reported: the machine is noisy. Reads come from the page cache (warm), which
is what a training loop sees after the first epoch. Ratios > 1 mean the store is faster.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from extract.store import FeatureStore  # noqa: E402


def make_data(n: int, dim: int, lo: int, hi: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(rng.integers(lo, hi + 1)), dim), dtype=np.float32)
            .astype(np.float16) for _ in range(n)]


def write_store(path: Path, arrays: list[np.ndarray]) -> float:
    if path.exists():
        shutil.rmtree(path)
    store = FeatureStore(path, "a")
    dim = arrays[0].shape[1]
    store.ensure_feature("f", modality="visual", dim=dim, extractor="bench", config={})
    start = time.perf_counter()
    for i, a in enumerate(arrays):
        store.write_video("f", f"video_{i:03d}", a, np.arange(len(a)) * 0.04)
    return time.perf_counter() - start


def write_npy(path: Path, arrays: list[np.ndarray], durable: bool = False) -> float:
    """``np.save`` of data, times and mask per video; ``durable``: each file fsynced."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)

    def save(file: Path, a: np.ndarray) -> None:
        with file.open("wb") as fh:
            np.save(fh, a)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())

    start = time.perf_counter()
    for i, a in enumerate(arrays):
        save(path / f"video_{i:03d}.npy", a)
        save(path / f"video_{i:03d}.time.npy", np.arange(len(a)) * 0.04)
        save(path / f"video_{i:03d}.mask.npy", np.ones(len(a), bool))
    return time.perf_counter() - start


def read_both(store_path: Path, npy_path: Path, n: int) -> tuple[float, float]:
    """Seconds to read every video both ways, alternating per video (and which goes first)."""
    store = FeatureStore(store_path)

    def via_store(i: int) -> float:
        start = time.perf_counter()
        store.read_video("f", f"video_{i:03d}")
        return time.perf_counter() - start

    def via_npy(i: int) -> float:
        start = time.perf_counter()
        np.load(npy_path / f"video_{i:03d}.npy")
        np.load(npy_path / f"video_{i:03d}.time.npy")
        np.load(npy_path / f"video_{i:03d}.mask.npy")
        return time.perf_counter() - start

    t_store = t_npy = 0.0
    for i in range(n):
        if i % 2:
            t_npy += via_npy(i)
            t_store += via_store(i)
        else:
            t_store += via_store(i)
            t_npy += via_npy(i)
    return t_store, t_npy


def bench(dim: int, args: argparse.Namespace, root: Path) -> dict[str, float]:
    arrays = make_data(args.videos, dim, args.min_frames, args.max_frames)
    nbytes = sum(a.nbytes for a in arrays)
    w_store, w_npy, w_sync, r_store, r_npy = [], [], [], [], []
    for _ in range(args.repeats):
        os.sync()
        w_store.append(write_store(root / f"s{dim}.zarr", arrays))
        os.sync()
        w_sync.append(write_npy(root / f"npy{dim}", arrays, durable=True))
        os.sync()
        w_npy.append(write_npy(root / f"npy{dim}", arrays))
    os.sync()  # let write-back finish before timing reads
    read_both(root / f"s{dim}.zarr", root / f"npy{dim}", args.videos)  # warm the page cache
    for _ in range(args.repeats):
        a, b = read_both(root / f"s{dim}.zarr", root / f"npy{dim}", args.videos)
        r_store.append(a)
        r_npy.append(b)
    med = {k: statistics.median(v) for k, v in
           (("w_store", w_store), ("w_npy", w_npy), ("w_sync", w_sync), ("r_store", r_store),
            ("r_npy", r_npy))}
    gb = nbytes / 1e9
    return {"dim": dim, "GB": gb, "read_store_GBps": gb / med["r_store"],
            "read_npy_GBps": gb / med["r_npy"], "read_ratio": med["r_npy"] / med["r_store"],
            "write_store_GBps": gb / med["w_store"], "write_npy_GBps": gb / med["w_npy"],
            "write_ratio": med["w_npy"] / med["w_store"],
            "write_sync_GBps": gb / med["w_sync"],
            "write_sync_ratio": med["w_sync"] / med["w_store"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=50)
    parser.add_argument("--dims", default="512,1024")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-frames", type=int, default=2000)
    parser.add_argument("--max-frames", type=int, default=8000)
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: tmp)")
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="store_io_"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"{args.videos} videos x {args.min_frames}-{args.max_frames} frames, float16, "
          f"median of {args.repeats}; scratch {root}")
    print(f"{'D':>5} {'GB':>6} | {'read store':>10} {'np.load':>8} {'ratio':>6} | "
          f"{'write store':>11} {'np.save':>8} {'ratio':>6} | {'+fsync':>7} {'ratio':>6}   (GB/s)")
    try:
        for dim in (int(d) for d in args.dims.split(",")):
            r = bench(dim, args, root)
            print(f"{r['dim']:>5} {r['GB']:>6.2f} | {r['read_store_GBps']:>10.2f} "
                  f"{r['read_npy_GBps']:>8.2f} {r['read_ratio']:>6.2f} | "
                  f"{r['write_store_GBps']:>11.2f} {r['write_npy_GBps']:>8.2f} "
                  f"{r['write_ratio']:>6.2f} | {r['write_sync_GBps']:>7.2f} "
                  f"{r['write_sync_ratio']:>6.2f}", flush=True)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
