"""Frame-folder decoding: Pillow (refuses truncated files) vs OpenCV (accepts them silently).

``python bench/frame_folder_decode.py [--frames 2000] [--size 112] [--repeats 3]`` writes a
folder of aligned-crop JPEGs (the Aff-Wild2 ``cropped_aligned`` size), then times, per image:
``cv2.imread`` (what the loader used before), ``read_image`` (Pillow, with the checks), and the
whole ``iter_image_frames`` path on a video clock with gaps. Prints medians and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from extract.media.clock import FrameClock  # noqa: E402
from extract.media.images import iter_image_frames, read_image  # noqa: E402


def write_folder(folder: Path, n: int, size: int) -> None:
    import cv2

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(1, n + 1):
        if i % 50 in (10, 11, 12):  # faceless frames: no image
            continue
        img = np.stack([200 * yy + 30 * np.sin(i / 7), 150 * xx + 20, 120 + 40 * yy * xx], -1)
        img += rng.normal(0, 4, img.shape)
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), np.clip(img, 0, 255).astype(np.uint8))


def timed(fn, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    import cv2

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_folder(folder, args.frames, args.size)
        files = sorted(folder.glob("*.jpg"))
        cv = timed(lambda: [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in files],
                   args.repeats)
        pil = timed(lambda: [read_image(p) for p in files], args.repeats)
        clock = FrameClock(25.0, np.arange(args.frames) / 25.0)
        path = timed(lambda: sum(len(b.frames) for b in iter_image_frames(folder, clock=clock)),
                     args.repeats)
    n = len(files)
    print(f"{n} JPEGs {args.size}x{args.size} (+{args.frames - n} faceless frames), "
          f"median of {args.repeats}")
    print(f"cv2.imread + cvtColor      {1e3 * cv / n:6.3f} ms/image")
    print(f"read_image (Pillow)        {1e3 * pil / n:6.3f} ms/image   {pil / cv:5.2f}x cv2")
    print(f"iter_image_frames (clock)  {1e3 * path / args.frames:6.3f} ms/frame   "
          f"{path / cv:5.2f}x cv2 (whole folder)")


if __name__ == "__main__":
    main()
