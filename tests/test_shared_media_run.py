"""`extract run` over the real GRID and CREMA-D clips (skipped when ../shared/media is absent):
openSMILE, log-mel, the real FER model, and tiny-config DenseNet and wav2vec 2.0 checkpoints."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np

from extract.runner import RunOptions, run
from extract.store import FeatureStore
from extract.tiny import make_tiny_weights

FEATURES = ["egemaps", "fbank", "fer", "densenet", "wav2vec2"]


def test_run_over_shared_media(shared_media: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    for sub in ("grid", "cremad"):  # the media folder is read-only; run over a copy
        shutil.copytree(shared_media / sub, inputs / sub,
                        ignore=shutil.ignore_patterns("*.csv", "*.txt"))
    weights = make_tiny_weights(tmp_path / "weights")
    summary = run(RunOptions(
        features=FEATURES, input=inputs, store=str(tmp_path / "s.zarr"), workers=2,
        progress=False, weights={n: p for n, (p, _) in weights.items()},
        sets={n: {"dim": str(d)} for n, (_, d) in weights.items()}))
    assert summary.exit_code == 0, [f.to_dict() for f in summary.failures]
    assert summary.done == 11 + 6 + 6  # GRID videos, CREMA-D videos, CREMA-D mp3s

    # the face-found share is reported per clip, and the default detector finds them all
    assert len(summary.faces) == 17
    shares = {v: k / n for v, (n, k) in summary.faces.items()}
    assert min(shares.values()) >= 0.99, shares

    store = FeatureStore(tmp_path / "s.zarr")
    manifest = {Path(r["file"]).stem: r for sub in ("grid", "cremad")
                for r in csv.DictReader((shared_media / sub / "manifest.csv").open())}
    for video in store.videos("fer"):
        fer = store.read_video("fer", video)
        assert len(fer.data) == int(manifest[Path(video).name]["decoded_frames"])
        probs = store.read_video("fer.probs", video).data.astype(np.float32)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=0.01)
        assert store.read_video("densenet", video).data.shape[1] == weights["densenet"][1]
    for video in store.videos("wav2vec2"):
        rows = store.read_video("wav2vec2", video)
        assert np.allclose(np.diff(rows.timestamps), 0.02)
    assert store.verify().ok
