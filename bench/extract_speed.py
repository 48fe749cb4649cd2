"""End-to-end extraction speed against the backbone's pure forward speed (goal: ratio >= 0.8).

One visual backbone (ViT, extractor ``vit``) and one audio backbone (wav2vec 2.0, extractor
``hf_speech``), randomly initialised from a config and saved as users have them
(``save_pretrained`` folders), measured side by side in one run:

* end to end: :func:`extract.runner.run` on synthetic inputs, the runner's real path. Visual:
  a folder of aligned face crops (JPEG) → decode + ``AlignedInput`` + batching + extractor +
  store write. Audio: a 16 kHz wav file → decode + extractor (chunked) + store write. The
  run's fixed costs (worker start, model load, store creation) are taken out by also running a
  tiny input: steady fps = (frames - tiny frames) / (wall - tiny wall). Raw fps (frames / wall
  of the big run) is printed too.
* pure forward: the same extractor's model on the same batches, made beforehand as tensors on
  the device (visual: the preprocessed crop batches of ``--batch-size``; audio: the chunk
  batches ``hf_speech`` builds), timed alone.

Each repeat runs tiny e2e, big e2e and the forward pass back to back, so machine load hits
all alike; medians over ``--repeats``. Frames are video frames (visual) or 20 ms rows (audio).

    python bench/extract_speed.py                         # CPU, small configs (< 3 min)
    python bench/extract_speed.py --device cuda --size base
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SR = 16000
SIZES: dict[str, dict[str, Any]] = {
    "small": {
        "vit": dict(hidden_size=192, num_hidden_layers=6, num_attention_heads=3,
                    intermediate_size=768, image_size=112, patch_size=16),
        "w2v": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                    intermediate_size=1024, conv_dim=(128,) * 7, num_conv_pos_embeddings=64,
                    num_conv_pos_embedding_groups=16),
    },
    # ViTConfig() and Wav2Vec2Config() defaults are ViT-B/16 (224 px) and wav2vec2-base
    "base": {"vit": {}, "w2v": {}},
}
DEFAULTS = {"cpu": {"frames": 192, "audio_s": 60.0}, "cuda": {"frames": 4096, "audio_s": 1800.0}}


# --------------------------------------------------------------------------- setup


def save_models(root: Path, size: str) -> dict[str, Any]:
    """Random-init ViT and wav2vec2 folders (config + weights + preprocessor config)."""
    import torch
    import transformers

    torch.manual_seed(0)
    vit = transformers.ViTModel(transformers.ViTConfig(**SIZES[size]["vit"]),
                                add_pooling_layer=False)
    vit.save_pretrained(root / "vit")
    (root / "vit" / "preprocessor_config.json").write_text(json.dumps(
        {"do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
         "do_rescale": True, "rescale_factor": 1 / 255}))
    w2v = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**SIZES[size]["w2v"]))
    w2v.save_pretrained(root / "w2v")
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(root / "w2v")
    return {"vit": vit.config, "w2v": w2v.config}


def write_catalog(root: Path, configs: dict[str, Any]) -> Path:
    import yaml

    vit, w2v = configs["vit"], configs["w2v"]
    features = {
        "bench_vit": {"modality": "visual", "extractor": "vit", "dim": vit.hidden_size,
                      "weights": str(root / "vit"), "input": {"face_size": vit.image_size},
                      "rate": "frames", "options": {"pool": "cls"}},
        "bench_w2v": {"modality": "audio", "extractor": "hf_speech", "dim": w2v.hidden_size,
                      "weights": str(root / "w2v"),
                      "input": {"sample_rate": SR, "window": 0.025, "hop": 0.02}, "rate": 50,
                      "options": {"layer": "last", "chunk_s": 20.0, "overlap_s": 1.0}},
    }
    path = root / "features.yaml"
    path.write_text(yaml.safe_dump({"features": features}, sort_keys=False))
    return path


def write_frames(folder: Path, count: int, side: int, seed: int = 0) -> Path:
    """``count`` JPEG 'aligned crops' (smooth random blobs that drift from frame to frame)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.uniform(0, 255, (side * 2, side * 2, 3)).astype(np.uint8),
                            (0, 0), side / 16)
    for i in range(count):
        dx, dy = int(side / 2 * (1 + np.sin(i / 9))), int(side / 2 * (1 + np.cos(i / 13)))
        cv2.imwrite(str(folder / f"{i + 1:05d}.jpg"), base[dy:dy + side, dx:dx + side],
                    [cv2.IMWRITE_JPEG_QUALITY, 90])
    return folder.parent


def write_wav(path: Path, seconds: float, seed: int = 0) -> Path:
    """A voiced-ish 16 kHz int16 wav (harmonics with a wobbling pitch, noise, an envelope);
    returns the folder it is in (the runner's input)."""
    from scipy.io import wavfile

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(140 + 30 * np.sin(2 * np.pi * 0.7 * t)) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    wav = 0.2 * (0.5 + 0.5 * np.sin(2 * np.pi * 1.3 * t) ** 2) * voiced
    wav += 0.02 * rng.standard_normal(len(t))
    wavfile.write(path, SR, (np.clip(wav, -1, 1) * 32767).astype(np.int16))
    return path.parent


# --------------------------------------------------------------------------- timing


def e2e(feature: str, root: Path, catalog: Path, store: Path, device: str,
        batch_size: int) -> tuple[float, int, float]:
    """One runner pass: (wall seconds, frames or rows, extractor seconds)."""
    from extract.runner import RunOptions, run

    opts = RunOptions(features=[feature], input=root, store=str(store), catalog=catalog,
                      gpus=1 if device == "cuda" else 0, workers=0, batch_size=batch_size,
                      progress=False)
    t0 = time.perf_counter()
    summary = run(opts)
    wall = time.perf_counter() - t0
    if summary.failed or summary.done == 0:
        raise RuntimeError(f"bench run of {feature} failed: {summary.to_dict()['failures']}")
    stats = summary.features[feature]
    return wall, stats.rows, stats.seconds


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def visual_batches(ex: Any, folder: Path, batch_size: int) -> tuple[list[Any], int]:
    """The runner's batches of one frame folder as preprocessed tensors on the device."""
    from extract.faces.pipeline import AlignedInput
    from extract.media.images import iter_image_frames

    align = AlignedInput(sizes=(ex.spec.face_size,))
    out, n = [], 0
    for batch in iter_image_frames(folder, 30.0, batch_size=batch_size):
        crops = align(batch.frames).crops[ex.spec.face_size]
        out.append(ex.preprocess(crops).to(ex.device))
        n += len(crops)
    return out, n


def audio_batches(ex: Any, wav_paths: list[Path]) -> tuple[list[Any], int]:
    """The chunk batches hf_speech makes for the files, as tensors on the device."""
    import torch

    from extract.media.audio import read_audio

    batches, total = [], 0
    for path in wav_paths:
        wav = read_audio(path).wav
        n_frames = ex.geometry.n_frames(len(wav))
        x = ex.prepare(wav)
        batches += [torch.from_numpy(xs).to(ex.device)
                    for xs, _ in ex.batches(x, ex.plan(n_frames))]
        total += n_frames
    return batches, total


def forward_seconds(ex: Any, batches: list[Any], visual: bool) -> float:
    """Wall time of the model alone over ``batches`` (inside the extractor's autocast).

    It runs in a fresh thread, as the runner's in-process worker computes in one: torch's CPU
    thread pool behaves differently in the main thread and in others (OpenMP teams are per
    thread), which would otherwise bias the comparison.
    """
    out: dict[str, Any] = {}

    def work() -> None:
        try:
            sync(ex.device)
            t0 = time.perf_counter()
            with ex.autocast():
                for x in batches:
                    if visual:
                        ex.forward(x)
                    else:
                        ex.model(x)
            sync(ex.device)
            out["seconds"] = time.perf_counter() - t0
        except Exception as exc:  # re-raised in the caller
            out["error"] = exc

    thread = threading.Thread(target=work, name="bench-forward")
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["seconds"]


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--size", choices=tuple(SIZES), default=None,
                    help="model size (default: small on cpu, base on cuda)")
    ap.add_argument("--frames", type=int, default=None, help="visual frames per run")
    ap.add_argument("--audio-s", type=float, default=None, help="seconds of audio per file")
    ap.add_argument("--audio-files", type=int, default=4,
                    help="audio files per run (a run over several files, as in real use, so "
                         "the first file's one-off costs do not dominate)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads for both paths (default: torch's own choice)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    size = args.size or ("small" if args.device == "cpu" else "base")
    frames = args.frames or DEFAULTS[args.device]["frames"]
    audio_s = args.audio_s or DEFAULTS[args.device]["audio_s"]
    logging.basicConfig(level=logging.ERROR)

    import torch
    import transformers

    from extract.catalog import load_catalog
    from extract.extractors.base import create, default_precision

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    device = "cuda" if args.device == "cuda" else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    if device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch sees no GPU")

    with tempfile.TemporaryDirectory(prefix="extract_speed_") as tmp:
        root = Path(tmp)
        t_setup = time.perf_counter()
        configs = save_models(root, size)
        catalog = write_catalog(root, configs)
        side = configs["vit"].image_size
        inputs = {
            "bench_vit": (write_frames(root / "img" / "big" / "clip", frames, side),
                          write_frames(root / "img" / "tiny" / "clip", 2, side)),
            "bench_w2v": ([write_wav(root / "aud" / "big" / f"clip{i}.wav", audio_s, seed=i)
                           for i in range(args.audio_files)][0],
                          write_wav(root / "aud" / "tiny" / "clip.wav", 1.0)),
        }
        specs = load_catalog(catalog)
        # the precision the runner's e2e run uses by default (bf16 with --gpus, else fp32)
        precision = default_precision(1 if device.startswith("cuda") else 0)
        extractors = {name: create(specs[name], device, precision) for name in inputs}
        for ex in extractors.values():
            ex.load()
        pure_inputs = {
            "bench_vit": visual_batches(extractors["bench_vit"], inputs["bench_vit"][0] / "clip",
                                        args.batch_size),
            "bench_w2v": audio_batches(extractors["bench_w2v"],
                                       sorted(inputs["bench_w2v"][0].glob("*.wav"))),
        }
        for name, ex in extractors.items():  # warm-up: imports, allocator, kernels
            e2e(name, inputs[name][1], catalog, root / f"warm_{name}.zarr", device,
                args.batch_size)
            forward_seconds(ex, pure_inputs[name][0][:1], name == "bench_vit")
        setup_s = time.perf_counter() - t_setup

        results: dict[str, dict[str, Any]] = {}
        samples: dict[str, dict[str, list[float]]] = {
            n: {"raw": [], "steady": [], "forward": [], "extractor": [], "fixed": []}
            for n in inputs}
        for r in range(args.repeats):
            for name, ex in extractors.items():
                big, tiny = inputs[name]
                small_wall, small_n, _ = e2e(name, tiny, catalog, root / f"t{r}_{name}.zarr",
                                             device, args.batch_size)
                wall, n, ex_s = e2e(name, big, catalog, root / f"b{r}_{name}.zarr", device,
                                    args.batch_size)
                batches, n_pure = pure_inputs[name]
                if n_pure != n:
                    raise RuntimeError(f"{name}: runner wrote {n} rows, forward batches give "
                                       f"{n_pure}")
                fwd = forward_seconds(ex, batches, name == "bench_vit")
                s = samples[name]
                s["raw"].append(n / wall)
                s["steady"].append((n - small_n) / max(wall - small_wall, 1e-9))
                s["forward"].append(n / fwd)
                s["extractor"].append(n / ex_s)
                s["fixed"].append(small_wall)
        for name, s in samples.items():
            med = {k: statistics.median(v) for k, v in s.items()}
            results[name] = {**med, "ratio": med["steady"] / med["forward"],
                             "raw_ratio": med["raw"] / med["forward"],
                             "frames": pure_inputs[name][1]}

    cfg = configs
    labels = {
        "bench_vit": (f"ViT {size} ({cfg['vit'].num_hidden_layers}L, d{cfg['vit'].hidden_size}, "
                      f"{cfg['vit'].image_size}px), frames"),
        "bench_w2v": (f"wav2vec2 {size} ({cfg['w2v'].num_hidden_layers}L, "
                      f"d{cfg['w2v'].hidden_size}), 20 ms rows"),
    }
    where = (f"torch threads {torch.get_num_threads()}" if device == "cpu"
             else torch.cuda.get_device_name())
    print(f"device {device} ({where}), "
          f"batch {args.batch_size}, {args.repeats} repeats (medians), "
          f"{frames} frames / {args.audio_files} x {audio_s:g} s audio per run, "
          f"setup {setup_s:.0f} s")
    head = (f"{'backbone':44s} {'rows':>6s} {'e2e raw':>9s} {'e2e steady':>11s} "
            f"{'extractor':>10s} {'forward':>9s} {'ratio':>6s} {'fixed s':>8s}")
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        print(f"{labels[name]:44s} {r['frames']:6d} {r['raw']:9.1f} {r['steady']:11.1f} "
              f"{r['extractor']:10.1f} {r['forward']:9.1f} {r['ratio']:6.2f} {r['fixed']:8.2f}")
    print("fps columns: rows per second. ratio = e2e steady / forward (goal >= 0.8); "
          "extractor = rows / the runner's extractor time; fixed = wall of the tiny run.")
    if args.json:
        args.json.write_text(json.dumps({"device": device, "size": size, "frames": frames,
                                         "audio_s": audio_s, "results": results}, indent=2))
    return 0 if all(r["ratio"] >= 0.8 for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
