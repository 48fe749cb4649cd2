"""A synthetic speech emotion corpus: speakers × classes × clips, for tests and the docs.

Each clip has eGeMAPS-like features written through the public store API under the names the
real extractors use: ``egemaps`` (25-d rows at 100 Hz over the clip) and ``egemaps_func`` (88-d,
one row per clip at its centre: the LLDs' means and standard deviations, then noise). A clip's
rows are its class prototype (the signal), plus its **speaker's offset** (larger than the class
signal, so normalising per speaker matters), plus the clip's own deviation and per-row noise.
Labels: ``labels.csv`` with ``video,speaker,emotion``; ``grid.yaml`` is a leave-one-speaker-out
grid comparing an SVM on the functionals with an LSTM on the LLDs.

``python -m fuse.synthetic_clips --out DIR`` writes ``DIR/speech.zarr``, ``DIR/labels.csv`` and
``DIR/grid.yaml`` (paths inside are relative to the folder the command runs in).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from extract.store import open_store

LLD_DIM, FUNC_DIM, LLD_HZ = 25, 88, 100.0
CLASSES = ("angry", "happy", "neutral", "sad")


@dataclass
class SpeechSet:
    store: Path  # the feature store
    labels: Path  # labels.csv: video, speaker, emotion
    grid: Path  # a loso grid over it
    speakers: list[str]
    classes: list[str]


def speech_set(root: Path, *, speakers: int = 4, clips_per_class: int = 6, seed: int = 0,
               signal: float = 0.6, speaker_offset: float = 3.0, clip_noise: float = 1.0,
               noise: float = 1.0,
               seconds: tuple[float, float] = (1.2, 2.4),
               classes: tuple[str, ...] = CLASSES) -> SpeechSet:
    """Write the corpus under ``root`` (see the module docstring); everything is seeded."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    store = open_store(root / "speech.zarr", "a")
    store.ensure_feature("egemaps", modality="audio", dim=LLD_DIM, extractor="synthetic",
                         config={"kind": "speech-lld", "seed": seed}, dtype="float32")
    store.ensure_feature("egemaps_func", modality="audio", dim=FUNC_DIM, extractor="synthetic",
                         config={"kind": "speech-functionals", "seed": seed}, dtype="float32")
    protos = signal * rng.standard_normal((len(classes), LLD_DIM))
    lines = ["video,speaker,emotion"]
    names = [f"spk{s:02d}" for s in range(speakers)]
    for spk in names:
        offset = speaker_offset * rng.standard_normal(LLD_DIM)
        for c, emotion in enumerate(classes):
            for k in range(clips_per_class):
                vid = f"{spk}_{emotion}_{k:02d}"
                n = int(rng.uniform(*seconds) * LLD_HZ)
                t = (np.arange(n) + 0.5) / LLD_HZ
                envelope = 0.5 + 0.5 * np.sin(np.pi * t / t[-1])[:, None]  # louder mid-clip
                clip = clip_noise * rng.standard_normal(LLD_DIM)  # this clip's own deviation
                lld = (protos[c] * envelope + offset + clip
                       + noise * rng.standard_normal((n, LLD_DIM))).astype(np.float32)
                store.write_video("egemaps", vid, lld, t)
                func = np.concatenate([lld.mean(0), lld.std(0),
                                       rng.standard_normal(FUNC_DIM - 2 * LLD_DIM)])
                store.write_video("egemaps_func", vid, func[None].astype(np.float32),
                                  np.array([n / LLD_HZ / 2]))
                lines.append(f"{vid},{spk},{emotion}")
    labels = root / "labels.csv"
    labels.write_text("\n".join(lines) + "\n")
    grid = root / "grid.yaml"
    grid.write_text(GRID_YAML.format(store=root / "speech.zarr", labels=labels,
                                     classes=",".join(classes)))
    return SpeechSet(root / "speech.zarr", labels, grid, names, list(classes))


GRID_YAML = """\
# leave one speaker out: each speaker is the test split once; validation is drawn from the
# other speakers (nested), features are z-scored per speaker
overrides:
  data: {{stores: [{store}], normalize: group, grid: "steps:16"}}
  labels: {{path: {labels}, format: csv, group_by: speaker, targets: [emotion],
            classes: [{classes}], val_fraction: 0.34}}
  task: {{name: classification, metric: uar}}
  model: {{fusion_dim: 32, head: [32], dropout: 0.1, pool: mean_std,
           encoder: {{hidden: 32}}}}
  train: {{epochs: 15, batch_size: 8, lr: 0.003, threads: 1, class_weights: balanced,
           keep: best}}
  output: {{plots: false}}
folds: loso
cells:
  - {{audio: [egemaps_func], encoder: svm, params: {{model.classic.c: 0.1}}}}
  - {{audio: [egemaps], encoder: lstm}}
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--speakers", type=int, default=4)
    parser.add_argument("--clips-per-class", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    made = speech_set(args.out, speakers=args.speakers, clips_per_class=args.clips_per_class,
                      seed=args.seed)
    logging.info("wrote %s, %s and %s (%d speakers, classes %s)", made.store, made.labels,
                 made.grid, len(made.speakers), ", ".join(made.classes))


if __name__ == "__main__":
    main()
