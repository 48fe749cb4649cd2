"""GPU throughput in one command, with a CPU part that runs anywhere (issue 12).

    python bench/gpu.py                 # everything this machine can run (< 5 min on one H100)
    python bench/gpu.py --quick         # smaller inputs (about half the time)
    python bench/gpu.py --cpu-only      # only the CPU pool part (what a CPU-only machine runs)

With a CUDA GPU it measures, in one run:

* **backbones**: faces/s of IResNet-100 (112 px), ViT-B/16, DenseNet-121 and ViT-MAE-B (224 px)
  at batch 64 / 256 / 512 in bf16 (autocast, as ``extract run --precision bf16``) and fp32:
  random weights of the real sizes, built from the project's model code and transformers
  configs (no downloads), the forward alone on tensors already on the GPU, as the extractors
  call it;
* **speech**: wav2vec2-base and -large on 20 s chunks (``hf_speech``'s default), batch 8: the
  real-time factor (compute seconds per second of audio) and how many times real time;
* **e2e**: ``extract run --gpus 1`` (a subprocess, the real CLI) with face detection
  (MediaPipe face mesh, the default) over generated 720p talking-face clips, IResNet-100 with
  random weights saved as an insightface checkpoint, with 1, 4 and all CPU workers
  (``--cpu-workers``): faces/s with the run's fixed costs taken out (a one-clip run is
  subtracted), divided by the forward alone on the same number of crops in the same batches
  (``extractor.extract`` on uint8 crops: preprocessing, copy to the GPU and back included).

On every machine (the whole run on a CPU-only one) it measures the **CPU pool**: frames/s of
decode + face detection + alignment of the same kind of 720p clips through the pool the runner
uses (:mod:`extract.runner.feed`, crops handed over in shared memory and released at once),
with 1 and 2 CPU workers (and 4 and all where there are more cores), and the ratio to one.

Every section is timed and caught: a section that fails or would not fit in the time left
(``--budget-s``, default 285) is reported as such and the others still run; results are
printed as they come and written to the JSON file (``--json``) after every section; a watchdog
ends the process, printing what it has, if the budget is overrun by a minute.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FPS = 25
SIZE_720P = (1280, 720)


class Budget:
    """The time left before ``--budget-s`` runs out."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


# ----------------------------------------------------------------------------- media
def talking_face_frames(n: int, seed: int, size: tuple[int, int] = SIZE_720P) -> np.ndarray:
    """``n`` frames of a talking cartoon face (the demo set's), scaled into a 720p frame."""
    import cv2

    from extract import demo_media as dm

    rng = np.random.default_rng(seed)
    p = dm.clip_params(seed % 8, 8, seed, rng)
    times = np.arange(n) / FPS
    valence = dm.trajectory(p.valence, times, rng)
    arousal = dm.trajectory(p.arousal, times, rng)
    mouth = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * times)
    small = dm.render_frames(p, valence, arousal, mouth, rng)  # (n, 240, 320, 3)
    width, height = size
    scale = height / small.shape[1]
    face_w = int(round(small.shape[2] * scale))
    frames = np.empty((n, height, width, 3), np.uint8)
    backdrop = np.linspace(40, 160, width, dtype=np.float32)[None, :, None]
    frames[:] = np.clip(backdrop + rng.normal(0, 2, (height, 1, 3)), 0, 255).astype(np.uint8)
    left = (width - face_w) // 2 + (seed % 5 - 2) * 40
    for i in range(n):
        frames[i, :, left:left + face_w] = cv2.resize(small[i], (face_w, height),
                                                      interpolation=cv2.INTER_LINEAR)
    return frames


def write_clip(path: Path, n: int, seed: int) -> Path:
    """A 720p H.264 clip (x264 defaults: key frame every 250 frames, B-frames; preset
    veryfast so that making it is quick)."""
    import av

    from extract.demo_media import encode_frames

    frames = talking_face_frames(n, seed)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = SIZE_720P[0], SIZE_720P[1], "yuv420p"
        vs.codec_context.options = {"preset": "veryfast", "crf": "23"}
        encode_frames(c, vs, frames, FPS)
    return path


def write_clips(folder: Path, count: int, seconds: float, seed: int = 0) -> Path:
    """``count`` clips of ``seconds`` each, made in parallel processes."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * FPS))
    workers = max(1, min(count, (os.cpu_count() or 1)))
    # spawn: this process may hold a CUDA context, which forked children must not inherit
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(write_clip, [folder / f"clip{seed + i:02d}.mp4" for i in range(count)],
                      [n] * count, [seed + i for i in range(count)]))
    return folder


# ------------------------------------------------------------------------- CPU pool
def cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU seconds of processes (Linux /proc; None elsewhere)."""
    total = 0.0
    try:
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return total


def pool_rate(clips: list[Path], warm: Path, workers: int, batch: int,
              detector: str | None, timeout: float, face_device: str = "cpu"
              ) -> dict[str, float]:
    """Frames/s of decode + faces through the CPU pool (consumer: release at once)."""
    from extract.ids import MediaItem
    from extract.media.sampling import Sampling
    from extract.runner.decode import DecodeSettings
    from extract.runner.feed import PoolConfig, PooledPrefetcher
    from extract.runner.plan import Task

    frames = DecodeSettings(Sampling(), batch, 30.0, {"face": "visual"})
    cfg = PoolConfig(workers, (112,), detector, face_device, (), 0)
    tasks: queue.Queue[Task | None] = queue.Queue()
    pool = PooledPrefetcher(cfg, frames)

    def task(path: Path) -> Task:
        return Task(MediaItem(path.stem, path, "video", path.stat().st_size), ("face",))

    tasks.put(task(warm))  # start-up (process spawn, detector load) is not timed
    counted = found = 0
    t0 = t_end = 0.0
    cpu0 = cpu1 = None
    deadline = time.monotonic() + timeout
    try:
        pool.start(tasks.get, frames)
        pids = [h.process.pid for h in pool.handles]
        for event in pool.events():
            if time.monotonic() > deadline:
                raise TimeoutError(f"CPU pool with {workers} workers: over {timeout:.0f} s")
            if event.kind == "end" and event.task.video_id == warm.stem:
                t0, cpu0 = time.perf_counter(), cpu_seconds(pids)
                for path in clips:
                    tasks.put(task(path))
                tasks.put(None)
            elif event.kind == "faces" and t0:
                counted += event.payload.count
                found += int(np.asarray(event.payload.face_valid).sum())
                t_end, cpu1 = time.perf_counter(), cpu_seconds(pids)
            elif event.kind == "error":
                raise RuntimeError(f"{event.task.video_id}: {event.payload.message}")
            event.done()
    finally:
        pool.close()
    wall = t_end - t0
    busy = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    return {"frames": counted, "faces": found, "seconds": wall,
            "frames_per_s": counted / wall if wall > 0 else 0.0,
            "cpu_seconds": busy, "cpu_ms_per_frame": 1e3 * busy / counted if busy else None,
            "load_average": os.getloadavg()[0]}


def section_cpu_pool(args: argparse.Namespace, work: Path, budget: Budget,
                     report: Callable[[str], None]) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    counts = sorted({1, 2, *((4, cores) if cores > 2 else ())})
    count, seconds = (2, 1.0) if args.smoke else (2, 4.0) if args.quick else (4, 5.0)
    folder = write_clips(work / "pool_clips", count, seconds, seed=10)
    warm = write_clips(work / "pool_warm", 1, 1.0, seed=30) / "clip30.mp4"
    clips = sorted(folder.glob("*.mp4"))
    rates: dict[int, list[float]] = {n: [] for n in counts}
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        for n in counts:
            if budget.left() < 20:
                report(f"  cpu pool: time budget spent after {len(runs)} runs")
                break
            r = pool_rate(clips, warm, n, args.batch, args.detector, min(300, budget.left()),
                          "cuda:0" if args.face_device == "cuda" else "cpu")
            rates[n].append(r["frames_per_s"])
            runs.append({"cpu_workers": n, "repeat": repeat, **r})
            cpu = (f", {r['cpu_ms_per_frame']:.1f} CPU ms/frame" if r["cpu_ms_per_frame"]
                   else "")
            report(f"  cpu pool, {n:2d} CPU workers: {r['frames_per_s']:7.1f} frames/s "
                   f"({r['frames']} frames, {r['faces']} faces, {r['seconds']:.1f} s{cpu}, "
                   f"load average {r['load_average']:.1f})")
    med = {n: statistics.median(v) for n, v in rates.items() if v}
    base = med.get(1)
    table = [{"cpu_workers": n, "frames_per_s": v, "ratio_to_one": v / base if base else None}
             for n, v in med.items()]
    return {"clips": len(clips), "frames_per_clip": int(seconds * FPS), "size": SIZE_720P,
            "detector": args.detector or "mediapipe_facemesh (default)", "batch": args.batch,
            "repeats": args.repeats, "cores": cores, "table": table, "runs": runs}


# ------------------------------------------------------------------------- backbones
def random_iresnet100() -> Any:
    """IResNet-100 with random weights that keep activations finite through its 50 blocks
    (He-initialised convolutions, residual branches starting at zero: the values are
    irrelevant to speed, but the runner refuses non-finite rows)."""
    from torch import nn

    from extract.models.iresnet import IBasicBlock, iresnet

    model = iresnet("r100")
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        if isinstance(m, IBasicBlock):
            nn.init.zeros_(m.bn3.weight)
    return model


def build_backbone(name: str) -> tuple[Any, int, Callable[[Any, Any], Any]]:
    """(model, input side, forward as the extractor calls it)."""
    import torch

    if name == "IResNet-100":
        return random_iresnet100(), 112, lambda m, x: m(x)
    if name == "DenseNet-121":
        from extract.models.densenet import densenet121

        return densenet121(), 224, lambda m, x: m.forward_features(x)
    if name == "ViT-B/16":
        from transformers import ViTConfig, ViTModel

        return (ViTModel(ViTConfig(), add_pooling_layer=False), 224,
                lambda m, x: m(pixel_values=x).last_hidden_state)
    if name == "MAE-B":
        from transformers import ViTMAEConfig, ViTMAEModel

        def mae(m: Any, x: Any) -> Any:  # no mask, identity shuffle (extract's vit_mae)
            patches = (x.shape[-1] // 16) ** 2
            noise = torch.arange(patches, device=x.device, dtype=torch.float32)
            return m(pixel_values=x, noise=noise.expand(len(x), -1)).last_hidden_state

        return ViTMAEModel(ViTMAEConfig(mask_ratio=0.0)), 224, mae
    raise ValueError(name)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def free_memory(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def timed(fn: Callable[[], Any], device: str, min_s: float, min_iters: int = 3) -> float:
    """Seconds per call of ``fn`` (synchronised with the GPU), after two warm-up calls."""
    for _ in range(2):
        fn()
    sync(device)
    iters, t0 = 0, time.perf_counter()
    while iters < min_iters or time.perf_counter() - t0 < min_s:
        fn()
        iters += 1
        if iters % 4 == 0:
            sync(device)
    sync(device)
    return (time.perf_counter() - t0) / iters


def autocast(precision: str, device: str) -> Any:
    """bf16 autocast as the extractors use it (``--precision bf16``), or nothing (fp32)."""
    import contextlib

    import torch

    if precision == "bf16":
        return torch.autocast(device.split(":")[0], dtype=torch.bfloat16)
    return contextlib.nullcontext()


def section_backbones(args: argparse.Namespace, work: Path, budget: Budget,
                      report: Callable[[str], None]) -> dict[str, Any]:
    import torch

    rows = []
    device = args.device
    min_s = 0.01 if args.smoke else 0.25 if args.quick else 0.6
    for name in ("IResNet-100", "ViT-B/16", "DenseNet-121", "MAE-B"):
        if budget.left() < 30:
            report(f"  {name}: skipped (time budget)")
            rows.append({"model": name, "skipped": "time budget"})
            continue
        torch.manual_seed(0)
        with torch.device(device):
            model, side, forward = build_backbone(name)
        model.eval()
        for precision in ("bf16", "fp32"):
            for batch in args.batches:
                x = torch.rand(batch, 3, side, side, device=device)
                try:
                    with torch.inference_mode(), autocast(precision, device):
                        per_call = timed(lambda m=model, x=x, f=forward: f(m, x), device, min_s,
                                         1 if args.smoke else 3)
                    rate = batch / per_call
                    rows.append({"model": name, "precision": precision, "batch": batch,
                                 "faces_per_s": rate})
                    report(f"  {name:13s} {precision} batch {batch:3d}: {rate:9.0f} faces/s")
                except torch.cuda.OutOfMemoryError as exc:
                    rows.append({"model": name, "precision": precision, "batch": batch,
                                 "error": f"out of memory: {exc}"[:200]})
                    report(f"  {name:13s} {precision} batch {batch:3d}: out of memory")
                del x
                free_memory(device)
        del model
        free_memory(device)
    return {"rows": rows, "device": device,
            "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32,
                     "cudnn": torch.backends.cudnn.allow_tf32}}


def section_speech(args: argparse.Namespace, work: Path, budget: Budget,
                   report: Callable[[str], None]) -> dict[str, Any]:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    configs = {
        "wav2vec2-base": Wav2Vec2Config(),
        "wav2vec2-large": Wav2Vec2Config(hidden_size=1024, num_hidden_layers=24,
                                         num_attention_heads=16, intermediate_size=4096,
                                         feat_extract_norm="layer", do_stable_layer_norm=True,
                                         conv_bias=True),
    }
    device = args.device
    chunk_s, batch = (1.0, 1) if args.smoke else (20.0, 4 if args.quick else 8)
    rows = []
    for name, config in configs.items():
        if budget.left() < 20:
            rows.append({"model": name, "skipped": "time budget"})
            continue
        torch.manual_seed(0)
        with torch.device(device):
            model = Wav2Vec2Model(config).eval()
        x = torch.randn(batch, int(chunk_s * 16000), device=device)
        for precision in ("bf16", "fp32"):
            with torch.inference_mode(), autocast(precision, device):
                per_call = timed(lambda m=model, x=x: m(x), device,
                                 0.01 if args.smoke else 0.3 if args.quick else 0.8,
                                 1 if args.smoke else 2)
            rtf = per_call / (batch * chunk_s)
            rows.append({"model": name, "precision": precision, "batch": batch,
                         "chunk_s": chunk_s, "rtf": rtf, "times_real_time": 1 / rtf})
            report(f"  {name:14s} {precision}: RTF {rtf:.5f} ({1 / rtf:,.0f}x real time)")
        del model, x
        free_memory(device)
    return {"rows": rows, "device": device}


# ------------------------------------------------------------------------------- e2e
def e2e_catalog(work: Path) -> Path:
    """A catalog with IResNet-100 under random weights saved as an insightface checkpoint."""
    import torch
    import yaml

    torch.manual_seed(0)
    weights = work / "ires100_random.pth"
    torch.save(random_iresnet100().state_dict(), weights)
    path = work / "features.yaml"
    path.write_text(yaml.safe_dump({"features": {"bench_ires100": {
        "modality": "visual", "extractor": "iresnet", "dim": 512, "weights": str(weights),
        "input": {"face_size": 112}, "rate": "frames", "options": {"depth": "r100"}}}}))
    return path


def cli_run(catalog: Path, inputs: Path, store: Path, cpu_workers: int, args: argparse.Namespace,
            timeout: float) -> dict[str, Any]:
    """``extract run --gpus 1`` as a subprocess; wall seconds, frames and faces."""
    run_id = store.stem
    where = ["--workers", "1"] if args.smoke else ["--gpus", "1"]
    cmd = [sys.executable, "-m", "extract", "run", "--catalog", str(catalog), "--feature",
           "bench_ires100", "--input", str(inputs), "--store", str(store), *where,
           "--cpu-workers", str(cpu_workers), "--batch-size", str(args.batch), "--batch-size",
           f"bench_ires100={args.e2e_batch}", "--precision", "bf16", "--no-progress",
           "--run-id", run_id]
    if args.detector:
        cmd += ["--detector", args.detector]
    if args.face_device != "cpu":
        cmd += ["--face-device", args.face_device]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                                     os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        raise TimeoutError(f"extract run --cpu-workers {cpu_workers}: over {timeout:.0f} s") \
            from None
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (err or out).strip().splitlines()[-5:]
        raise RuntimeError(f"extract run --cpu-workers {cpu_workers} exit {proc.returncode}: "
                           + " | ".join(tail))
    summary = json.loads((store / "_runs" / run_id / "summary.json").read_text())
    faces = sum(v[1] for v in summary.get("faces", {}).values())
    return {"wall": wall, "frames": summary["frames"], "faces": faces}


def forward_rate(catalog: Path, faces: int, args: argparse.Namespace) -> float:
    """Faces/s of the extractor alone on ``faces`` uint8 crops in batches of the run's size."""
    from extract.catalog import load_catalog
    from extract.extractors.base import create

    device = "cuda:0" if args.device == "cuda" else args.device
    ex = create(load_catalog(catalog)["bench_ires100"], device, "bf16")
    ex.load()
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (args.e2e_batch, 112, 112, 3), dtype=np.uint8)
    sizes = [args.e2e_batch] * (faces // args.e2e_batch) + ([faces % args.e2e_batch]
                                                            if faces % args.e2e_batch else [])
    with ex.autocast():
        ex.extract(crops)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        for n in sizes:
            ex.extract(crops[:n])
        sync(device)
    seconds = time.perf_counter() - t0
    del ex
    free_memory(device)
    return faces / seconds


def section_e2e(args: argparse.Namespace, work: Path, budget: Budget,
                report: Callable[[str], None]) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    count, seconds = (2, 1.0) if args.smoke else (4, 6.0) if args.quick else (8, 8.0)
    clips = write_clips(work / "e2e_clips", count, seconds)
    tiny = write_clips(work / "e2e_tiny", 1, 1.0, seed=20)
    catalog = e2e_catalog(work)
    report(f"  {count} clips x {seconds:g} s at 720p, made; IResNet-100 checkpoint saved")
    rows = []
    forward = None
    for n in sorted({1, min(4, cores - 1 or 1), max(1, cores - 1)}):
        if budget.left() < 45:
            rows.append({"cpu_workers": n, "skipped": "time budget"})
            report(f"  --cpu-workers {n}: skipped (time budget)")
            continue
        limit = min(240.0, budget.left() - 10)
        small = cli_run(catalog, tiny, work / f"tiny{n}.zarr", n, args, limit / 3)
        big = cli_run(catalog, clips, work / f"big{n}.zarr", n, args, budget.left() - 10)
        steady = (big["faces"] - small["faces"]) / max(big["wall"] - small["wall"], 1e-9)
        if forward is None:
            forward = forward_rate(catalog, big["faces"], args)
            report(f"  forward alone (bf16, batch {args.e2e_batch}): {forward:,.0f} faces/s "
                   f"on {big['faces']} crops")
        rows.append({"cpu_workers": n, "faces": big["faces"], "frames": big["frames"],
                     "wall": big["wall"], "fixed_wall": small["wall"], "faces_per_s": steady,
                     "ratio_to_forward": steady / forward})
        report(f"  --cpu-workers {n:2d}: {steady:8.1f} faces/s end to end, "
               f"{steady / forward:.3f} of the forward ({big['faces']} faces of "
               f"{big['frames']} frames, {big['wall']:.1f} s, fixed {small['wall']:.1f} s)")
    return {"clips": count, "seconds_per_clip": seconds, "size": SIZE_720P, "feature":
            "IResNet-100 (random weights), bf16", "forward_faces_per_s": forward,
            "rows": rows, "cores": cores}


# ------------------------------------------------------------------------------ main
SECTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "backbones": section_backbones,
    "speech": section_speech,
    "e2e": section_e2e,
    "cpu_pool": section_cpu_pool,
}


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"host": platform.node(), "python": platform.python_version(),
                            "cores": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.is_available()
        if info["cuda"]:
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception as exc:  # noqa: BLE001
        info["torch_error"] = str(exc)
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--quick", action="store_true", help="smaller inputs (about half the time)")
    ap.add_argument("--cpu-only", action="store_true", help="only the CPU pool part")
    ap.add_argument("--smoke", action="store_true",
                    help="check this script on a CPU: every section, tiny sizes, the GPU parts "
                         "on the CPU (the numbers mean nothing)")
    ap.add_argument("--sections", nargs="+", choices=tuple(SECTIONS), default=None,
                    help="run only these sections")
    ap.add_argument("--budget-s", type=float, default=285.0,
                    help="seconds for the whole run; sections that would not fit are skipped")
    ap.add_argument("--batch", type=int, default=32, help="frames per decode batch")
    ap.add_argument("--e2e-batch", type=int, default=512,
                    help="crops per IResNet-100 forward in the end-to-end run")
    ap.add_argument("--repeats", type=int, default=None,
                    help="repeats of the CPU pool measurement (medians; default 2, 1 quick)")
    ap.add_argument("--detector", default=None, help="face detector (default: the runner's)")
    ap.add_argument("--face-device", default="cpu", choices=("cpu", "cuda"),
                    help="where the end-to-end run detects faces (cuda: an ONNX --detector)")
    ap.add_argument("--json", type=Path, default=Path("bench_gpu.json"),
                    help="where to write the results (default: bench_gpu.json)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the inputs in this folder")
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick or args.smoke else 2)
    args.batches = (2,) if args.smoke else (64, 256, 512)
    if args.smoke:
        args.e2e_batch = min(args.e2e_batch, 8)
    logging.basicConfig(level=logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    budget = Budget(args.budget_s)
    results: dict[str, Any] = {"machine": machine(), "args": {k: str(v) for k, v in
                                                               vars(args).items()},
                               "sections": {}}
    cuda = bool(results["machine"].get("cuda")) and not args.cpu_only
    args.device = "cuda" if cuda else "cpu"
    names = args.sections or (list(SECTIONS) if cuda or args.smoke else ["cpu_pool"])
    if not cuda and not args.smoke:
        names = [n for n in names if n == "cpu_pool"]
        print("no CUDA GPU here (or --cpu-only): running the CPU pool part only", flush=True)
    if args.smoke:
        print("--smoke: every section on this machine's", args.device, "with tiny sizes; the "
              "numbers mean nothing", flush=True)
    print(f"machine: {results['machine']}", flush=True)

    def save() -> None:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")

    def watchdog() -> None:
        time.sleep(max(0.0, budget.left()) + 60)
        print(f"\nwatchdog: over the {args.budget_s:.0f} s budget by a minute; partial results "
              f"in {args.json}", flush=True)
        results["watchdog"] = "stopped by the watchdog"
        save()
        os._exit(3)

    threading.Thread(target=watchdog, daemon=True).start()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    work.mkdir(parents=True, exist_ok=True)
    status = 0
    try:
        for name in names:
            print(f"\n[{name}] ({budget.left():.0f} s left)", flush=True)
            t0 = time.perf_counter()
            try:
                out = SECTIONS[name](args, work, budget,
                                     lambda line: print(line, flush=True))
                out["seconds"] = round(time.perf_counter() - t0, 1)
            except Exception as exc:  # noqa: BLE001 — the other sections still run
                status = 1
                out = {"error": f"{type(exc).__name__}: {exc}",
                       "traceback": traceback.format_exc(limit=5)}
                print(f"  FAILED: {type(exc).__name__}: {exc}", flush=True)
            results["sections"][name] = out
            save()
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print_summary(results)
    save()
    print(f"\nresults: {args.json}")
    return status


def print_summary(results: dict[str, Any]) -> None:
    s = results["sections"]
    if "backbones" in s and "rows" in s["backbones"]:
        print("\nfaces/s, forward alone (random weights, real sizes)")
        table: dict[tuple[str, str], dict[int, str]] = {}
        batches: dict[int, None] = {}
        for r in s["backbones"]["rows"]:
            if "precision" in r:
                cell = f"{r['faces_per_s']:9.0f}" if "faces_per_s" in r else f"{'OOM':>9s}"
                table.setdefault((r["model"], r["precision"]), {})[r["batch"]] = cell
                batches[r["batch"]] = None
        print(f"{'model':14s} {'precision':9s} " + " ".join(f"{f'b{b}':>9s}" for b in batches))
        for (model, precision), cells in table.items():
            print(f"{model:14s} {precision:9s} "
                  + " ".join(cells.get(b, f"{'-':>9s}") for b in batches))
    if "speech" in s and "rows" in s["speech"]:
        print("\nspeech, 20 s chunks: real-time factor (compute s per audio s)")
        for r in s["speech"]["rows"]:
            if "rtf" in r:
                print(f"{r['model']:14s} {r['precision']:5s} RTF {r['rtf']:.5f} "
                      f"({r['times_real_time']:,.0f}x real time)")
    if "e2e" in s and "rows" in s["e2e"]:
        print(f"\nextract run --gpus 1, 720p clips with face detection, IResNet-100 bf16; "
              f"forward alone {s['e2e'].get('forward_faces_per_s') or 0:,.0f} faces/s")
        print(f"{'cpu workers':>11s} {'faces/s':>9s} {'÷ forward':>10s}")
        for r in s["e2e"]["rows"]:
            if "faces_per_s" in r:
                print(f"{r['cpu_workers']:11d} {r['faces_per_s']:9.1f} "
                      f"{r['ratio_to_forward']:10.3f}")
    if "cpu_pool" in s and "table" in s["cpu_pool"]:
        print("\nCPU pool: decode + face detection + alignment, 720p")
        print(f"{'cpu workers':>11s} {'frames/s':>9s} {'× one':>7s}")
        for r in s["cpu_pool"]["table"]:
            ratio = f"{r['ratio_to_one']:7.2f}" if r["ratio_to_one"] else f"{'-':>7s}"
            print(f"{r['cpu_workers']:11d} {r['frames_per_s']:9.1f} {ratio}")
    for name, out in s.items():
        if "error" in out:
            print(f"\n{name}: FAILED: {out['error']}")


if __name__ == "__main__":
    raise SystemExit(main())
