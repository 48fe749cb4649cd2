"""Synthetic stores and label files with planted signal, for tests, benches and demos.

Each builder writes a Zarr store through the public store API and the matching label files
in a dataset's own layout, and returns their paths. Everything is seeded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from extract.store import open_store
from fuse.labels.affwild2 import EXPR_CLASSES
from fuse.labels.hume import EMOTIONS

VIDEO_FPS = 30.0  # visual rows: one per video frame
AUDIO_HZ = 50.0  # audio rows


@dataclass
class SyntheticSet:
    store: Path  # the feature store
    labels: Path  # label file or folder
    partition: Path | None = None  # split CSV, when the layout has one


def ar1(n: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    """A unit-variance AR(1) series (correlation time ~ 1 / (1 - phi) steps)."""
    x = np.zeros(n)
    noise = rng.standard_normal(n) * np.sqrt(1 - phi**2)
    x[0] = rng.standard_normal()
    for i in range(1, n):
        x[i] = phi * x[i - 1] + noise[i]
    return x


def projection(sources: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """(sources, dim) random unit rows: how latent signals show in a feature."""
    proj = rng.standard_normal((sources, dim))
    return proj / np.linalg.norm(proj, axis=1, keepdims=True)


def embed(signal: np.ndarray, proj: np.ndarray, noise: float,
          rng: np.random.Generator) -> np.ndarray:
    """(T,) or (T, S) signals → (T, dim) features through ``proj``, plus noise."""
    s = signal[:, None] if signal.ndim == 1 else signal
    return s @ proj + noise * rng.standard_normal((len(s), proj.shape[1]))


def leaky(x: np.ndarray, alpha: float, order: int = 1) -> np.ndarray:
    """``order`` cascaded leaky integrators y += alpha (x - y): a low-pass whose response
    lags the input by about ``order (1 - alpha) / alpha`` steps."""
    from scipy.signal import lfilter

    for _ in range(order):
        x = lfilter([alpha], [1.0, alpha - 1.0], x)
    return x


def va_set(root: Path, *, videos: int = 24, seconds: float = 20.0, seed: int = 0,
           invalid_face: float = 0.05, invalid_label: float = 0.03, vis_dim: int = 8,
           aud_dim: int = 6) -> SyntheticSet:
    """Valence follows visual feature ``vis`` (30 fps) with a lag: three cascaded leaky
    integrators (alpha 0.2, about 12 frames = 0.4 s behind); arousal follows audio feature
    ``aud`` (50 Hz) integrated over about a second (alpha 0.04 per audio row).

    Labels: Aff-Wild2 VA files in ``Train_Set`` / ``Validation_Set`` (a quarter for val).
    Some visual rows are invalid (no face) and some label lines are -5.
    """
    rng = np.random.default_rng(seed)
    store = open_store(root / "va.zarr", "a")
    store.ensure_feature("vis", modality="visual", dim=vis_dim, extractor="synthetic",
                         config={"kind": "va-visual", "seed": seed})
    store.ensure_feature("aud", modality="audio", dim=aud_dim, extractor="synthetic",
                         config={"kind": "va-audio", "seed": seed})
    labels = root / "va_labels"
    p_vis, p_aud = projection(1, vis_dim, rng), projection(1, aud_dim, rng)
    n_val = max(1, videos // 4)
    for k in range(videos):
        vid = f"video{k:03d}"
        n = int(seconds * VIDEO_FPS)
        t_vis = np.arange(n) / VIDEO_FPS
        a = ar1(n, 0.7, rng)
        vis = embed(a, p_vis, 0.1, rng)
        face = rng.random(n) >= invalid_face
        vis[~face] = 0
        store.write_video("vis", vid, vis.astype(np.float16), t_vis, face)

        m = int(seconds * AUDIO_HZ)
        t_aud = (np.arange(m) + 0.5) / AUDIO_HZ
        b = ar1(m, 0.8, rng)
        store.write_video("aud", vid, embed(b, p_aud, 0.1, rng).astype(np.float16), t_aud)

        valence = leaky(a, 0.2, order=3)
        past = leaky(b, 0.04)  # at each audio row: the input's recent second
        idx = np.clip(np.searchsorted(t_aud, t_vis, side="right") - 1, 0, m - 1)
        arousal = past[idx]
        valence, arousal = np.tanh(valence / valence.std()), np.tanh(arousal / arousal.std())
        va = np.stack([valence, arousal], axis=1)
        va[rng.random(n) < invalid_label] = -5
        folder = labels / ("Validation_Set" if k < n_val else "Train_Set")
        _write_affwild2(folder / f"{vid}.txt", "valence,arousal", va, "%.4f")
    return SyntheticSet(root / "va.zarr", labels)


def expr_set(root: Path, *, videos: int = 16, seconds: float = 12.0, seed: int = 0,
             invalid_label: float = 0.05) -> SyntheticSet:
    """Eight expressions in runs of 0.5–2 s; the visual feature is the class prototype plus
    noise, the audio feature is noise. Aff-Wild2 EXPR files, a quarter for val."""
    rng = np.random.default_rng(seed)
    store = open_store(root / "expr.zarr", "a")
    store.ensure_feature("face", modality="visual", dim=16, extractor="synthetic",
                         config={"kind": "expr-visual", "seed": seed})
    store.ensure_feature("voice", modality="audio", dim=4, extractor="synthetic",
                         config={"kind": "expr-audio", "seed": seed})
    protos = 1.5 * rng.standard_normal((len(EXPR_CLASSES), 16))
    labels = root / "expr_labels"
    n_val = max(1, videos // 4)
    for k in range(videos):
        vid = f"clip{k:03d}"
        n = int(seconds * VIDEO_FPS)
        cls = np.zeros(n, int)
        i = 0
        while i < n:
            run = int(rng.integers(15, 60))
            cls[i : i + run] = rng.integers(len(EXPR_CLASSES))
            i += run
        face = protos[cls] + rng.standard_normal((n, 16))
        store.write_video("face", vid, face.astype(np.float16), np.arange(n) / VIDEO_FPS)
        m = int(seconds * AUDIO_HZ)
        store.write_video("voice", vid, rng.standard_normal((m, 4)).astype(np.float16),
                          np.arange(m) / AUDIO_HZ)
        lab = cls.astype(float)[:, None]
        lab[rng.random(n) < invalid_label] = -1
        folder = labels / ("Validation_Set" if k < n_val else "Train_Set")
        _write_affwild2(folder / f"{vid}.txt", ",".join(EXPR_CLASSES), lab, "%d")
    return SyntheticSet(root / "expr.zarr", labels)


def eri_set(root: Path, *, videos: int = 120, seconds: float = 4.0, seed: int = 0,
            noise: float = 1.0) -> SyntheticSet:
    """Seven intensities per video in [0, 1]; each visual row is a random linear image of
    them plus per-frame noise, each audio row a weaker one. Hume-Reaction CSV + partition
    (60 % train, 20 % val, 20 % test without labels in the labels CSV)."""
    rng = np.random.default_rng(seed)
    store = open_store(root / "eri.zarr", "a")
    store.ensure_feature("vit", modality="visual", dim=24, extractor="synthetic",
                         config={"kind": "eri-visual", "seed": seed})
    store.ensure_feature("spec", modality="audio", dim=12, extractor="synthetic",
                         config={"kind": "eri-audio", "seed": seed})
    w_vis = rng.standard_normal((7, 24))
    w_aud = 0.3 * rng.standard_normal((7, 12))
    rows, parts = [], []
    for k in range(videos):
        vid = f"{k:05d}"
        y = rng.random(7)
        n, m = int(seconds * VIDEO_FPS), int(seconds * AUDIO_HZ)
        vis = y @ w_vis + noise * rng.standard_normal((n, 24))
        aud = y @ w_aud + noise * rng.standard_normal((m, 12))
        store.write_video("vit", vid, vis.astype(np.float16), np.arange(n) / VIDEO_FPS)
        store.write_video("spec", vid, aud.astype(np.float16), np.arange(m) / AUDIO_HZ)
        split = "Train" if k < 0.6 * videos else "Val" if k < 0.8 * videos else "Test"
        parts.append(f"[{vid}],{split}")
        if split != "Test":
            rows.append(f"[{vid}]," + ",".join(f"{v:.4f}" for v in y))
    (root / "eri_labels.csv").write_text("File_ID," + ",".join(EMOTIONS) + "\n"
                                         + "\n".join(rows) + "\n")
    (root / "eri_partition.csv").write_text("File_ID,Split\n" + "\n".join(parts) + "\n")
    return SyntheticSet(root / "eri.zarr", root / "eri_labels.csv", root / "eri_partition.csv")


def _write_affwild2(path: Path, header: str, values: np.ndarray, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, values, fmt=fmt, delimiter=",", header=header, comments="")
