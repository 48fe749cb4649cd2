"""``fuse``: train, evaluate and apply fusion models on stored features.

A thin Typer layer: each command builds a config (YAML ← options ← key=value) and makes one
library call from :mod:`fuse.api`. Heavy imports happen inside the commands.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Fusion trainer: features from a store → temporal model → predictions.")
log = logging.getLogger("fuse")



def _stores_arg(value: str | None) -> str | None:
    """``--store``: folders or fsspec URLs (``s3://…``), comma-separated, checked up front
    (``file://`` URLs become folders; ``s3:/x`` with a lost slash is refused)."""
    if value is None:
        return None
    from extract.errors import ConfigError as StoreArgError
    from extract.locations import store_location

    try:
        return ",".join(store_location(p.strip()) for p in value.split(",") if p.strip())
    except StoreArgError as exc:
        raise typer.BadParameter(str(exc)) from None


Store = Annotated[str | None, typer.Option(
    "--store", callback=_stores_arg,
    help="feature store(s), comma-separated: folders or URLs (s3://bucket/f.zarr)")]
Labels = Annotated[str | None, typer.Option("--labels", help="label file or folder")]
LabelFormat = Annotated[str | None, typer.Option(
    "--label-format", help="affwild2-va | affwild2-expr | affwild2-au | hume | csv")]
Partition = Annotated[str | None, typer.Option("--partition", help="split CSV (video, Split)")]
Task = Annotated[str | None, typer.Option("--task", help="va | expr | au | eri | regression | "
                                                         "classification")]
Visual = Annotated[str | None, typer.Option("--visual", help="visual features: a,b or a:mean")]
Audio = Annotated[str | None, typer.Option("--audio", help="audio features: c or c:mean")]
Encoder = Annotated[str | None, typer.Option("--encoder", help="lstm | gru | transformer | "
                                                               "identity | svm | logreg | ridge")]
Out = Annotated[str | None, typer.Option("--out", help="run folder")]
Config = Annotated[list[str] | None, typer.Option(
    "--config", help="YAML file or preset name (repeatable; later wins)")]
DropMissing = Annotated[bool, typer.Option("--drop-missing",
                                           help="drop labelled videos lacking a feature")]
Overrides = Annotated[list[str] | None, typer.Argument(
    help="config overrides key=value, e.g. train.lr=1e-4 model.encoder.layers=2",
    show_default=False)]


_DEBUG = {"on": False}  # --debug: tracebacks instead of one-line errors


@app.callback()
def main_options(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
                 quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
                 debug: Annotated[bool, typer.Option(
                     "--debug", help="show the full traceback of an error instead of one line")
                 ] = False) -> None:
    """Fusion trainer: features from a store → temporal model → predictions."""
    from rich.console import Console
    from rich.logging import RichHandler

    _DEBUG["on"] = debug
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", force=True,
                        handlers=[RichHandler(console=Console(stderr=True), show_path=False)])


@app.command()
def train(store: Store = None, labels: Labels = None, label_format: LabelFormat = None,
          partition: Partition = None, task: Task = None, visual: Visual = None,
          audio: Audio = None, encoder: Encoder = None, out: Out = None, config: Config = None,
          drop_missing: DropMissing = False,
          resume: Annotated[bool, typer.Option("--resume", help="continue from last.pt")] = False,
          overrides: Overrides = None) -> None:
    """Validate, then train a model into --out and print its metrics."""
    from fuse import api
    from fuse.outputs.report import metrics_table

    layers = _layers(config, store, labels, label_format, partition, task, visual, audio,
                     encoder, out, drop_missing, overrides)
    result = _guard(lambda: api.train(layers, resume=resume))
    console = _console()
    console.print(metrics_table(result.metrics, f"{result.out_dir} (best epoch "
                                                f"{result.best_epoch})"))
    if splits := result.metrics.get("splits"):
        console.print(f"score: {result.metrics.get('score_metric', 'score')}; splits grouped by "
                      f"{splits['grouped_by']}")


@app.command()
def validate(store: Store = None, labels: Labels = None, label_format: LabelFormat = None,
             partition: Partition = None, task: Task = None, visual: Visual = None,
             audio: Audio = None, encoder: Encoder = None, out: Out = None,
             config: Config = None, drop_missing: DropMissing = False,
             overrides: Overrides = None) -> None:
    """Check config, labels and store coverage; list every problem; exit 1 if any."""
    from fuse import api
    from fuse.outputs.report import problems_table

    layers = _layers(config, store, labels, label_format, partition, task, visual, audio,
                     encoder, out, drop_missing, overrides)
    result = _guard(lambda: api.check(layers, training=False))
    console = _console()
    if not result.ok:
        console.print(problems_table(result.problems))
        raise typer.Exit(1)
    summary = result.plan.summary()
    console.print(f"[green]ok[/green]: {summary['labels']}; videos {summary['videos']}; "
                  f"dropped {summary['dropped']}; features {summary['features']}; splits "
                  f"grouped by {summary.get('grouped_by', 'video')}")


@app.command("eval")
def evaluate(run: Annotated[Path, typer.Option("--run", help="run folder")],
             split: Annotated[str, typer.Option("--split", help="train | val | test")] = "val",
             ) -> None:
    """Score a run's best model on one split of its labels."""
    from fuse import api
    from fuse.outputs.report import metrics_table

    scores = _guard(lambda: api.evaluate(run, split))
    _console().print(metrics_table({split: scores}, f"{run} on {split}"))


@app.command()
def predict(run: Annotated[Path, typer.Option("--run", help="run folder")],
            store: Annotated[str, typer.Option("--store", callback=_stores_arg,
                                               help="feature store(s), comma-sep.")],
            out: Annotated[Path, typer.Option("--out", help="FILE.csv, or a folder for the "
                                                            "challenge's per-video files")],
            videos: Annotated[str | None, typer.Option("--videos", help="only these ids, "
                                                                        "comma-separated")] = None,
            split: Annotated[str | None, typer.Option(
                "--split", help="only the videos the run's labels / partition put in this "
                                "split (e.g. test)")] = None,
            video_map: Annotated[str | None, typer.Option(
                "--video-map", help="CSV video,feature_video[,applies_to] instead of the "
                                    "run's labels.video_map")] = None,
            groups: Annotated[Path | None, typer.Option(
                "--groups", help="CSV of each video's group (a video column and the run's "
                                 "labels.group_by column, or 'group'); runs with "
                                 "data.normalize=group need it for new videos")] = None,
            ) -> None:
    """Predict every video in the store(s) that has the run's features.

    Per-frame tasks write one line per frame of each source video (frames without a face
    included, filled as in training). Videos left out are named. A store whose features
    differ from the training ones (config or width) is refused (exit 2).
    """
    from fuse import api

    files = _guard(lambda: api.predict(run, _split(store), out,
                                       _split(videos) if videos else None, video_map,
                                       split, groups))
    _console().print(f"wrote {len(files)} file(s) under {out}")


@app.command("check-submission")
def check_submission(
        path: Annotated[Path, typer.Argument(help="submission folder (Aff-Wild2: <video>.txt "
                                                  "files) or CSV (eri)", show_default=False)],
        task: Annotated[str, typer.Option("--task", help="va | expr | au | eri")],
        videos: Annotated[Path | None, typer.Option(
            "--videos", help="raw videos: each file must have one line per frame "
                             "(X_left / X_right count X's frames)")] = None,
        partition: Annotated[Path | None, typer.Option(
            "--partition", help="eri: split CSV; every test id needs exactly one row")] = None,
        expect: Annotated[Path | None, typer.Option(
            "--expect", help="ids that must have a prediction: one per line, a CSV with a "
                             "video / File_ID column, or an annotation folder (its <video>.txt "
                             "files, e.g. Aff-Wild2's Validation_Set)")] = None,
        ) -> None:
    """Check a submission's format: headers, line counts against the videos, value ranges.

    Exit 0 when it is ready to send, 1 with the list of problems.

    Example: fuse check-submission submission/va --task va --videos videos
    """
    from fuse.outputs.submission import check_submission as run_check

    report = _guard(lambda: run_check(path, task, videos=videos, partition=partition,
                                      expect=expect))
    console = _console()
    for problem in report.problems:
        console.print(f"problem: {problem}", highlight=False, markup=False, soft_wrap=True)
    status = "ok" if report.ok else "FAILED"
    console.print(f"{status}: {report.files} file(s), {report.rows} prediction rows, "
                  f"{len(report.problems)} problem(s) ({task})", highlight=False)
    raise typer.Exit(0 if report.ok else 1)


@app.command("ensemble")
def ensemble_runs(
        runs: Annotated[list[Path], typer.Argument(help="run folders (2 or more)",
                                                   show_default=False)],
        out: Annotated[Path, typer.Option("--out", help="ensemble folder")],
        split: Annotated[str, typer.Option("--split", help="val | test | val,test")] = "val",
        combine: Annotated[str, typer.Option("--combine", help="auto | vote | mean | "
                                                               "prob_mean")] = "auto",
        weighted: Annotated[bool, typer.Option("--weighted", help="weight runs by their "
                                                                  "validation score")] = False,
        ) -> None:
    """Combine runs' saved outputs (vote / mean), score them beside each run, write submissions."""
    from fuse.experiments.ensemble import ensemble, ensemble_table

    result = _guard(lambda: ensemble(runs, out, split, combine, weighted))
    _console().print(ensemble_table(result))


@app.command("list")
def list_components() -> None:
    """Registered tasks, encoders, label formats, fill policies, alignments, presets."""
    from rich.table import Table

    import fuse.labels
    import fuse.model.encoders
    import fuse.tasks
    from fuse.config import presets
    from fuse.data.align import ALIGNMENTS
    from fuse.data.fill import FILL_POLICIES
    from fuse.model.heads import POOLS
    from fuse.training.optim import OPTIMIZERS, SCHEDULES

    table = Table(title="fuse components")
    table.add_column("kind")
    table.add_column("names")
    for reg in (fuse.tasks.TASKS, fuse.model.encoders.ENCODERS, fuse.labels.LABEL_FORMATS,
                FILL_POLICIES, ALIGNMENTS, POOLS, OPTIMIZERS, SCHEDULES):
        table.add_row(reg.kind, ", ".join(reg.names()))
    table.add_row("preset config", ", ".join(presets()))
    _console().print(table)


@app.command()
def grid(grid_file: Annotated[Path | None, typer.Option("--grid", help="grid YAML (axes and "
                                                         "base config; see docs/fuse.md)")] = None,
         out: Annotated[Path, typer.Option("--out", help="grid folder (jobs, ranking, plots)")
                        ] = Path("runs/grid"),
         config: Config = None, store: Store = None, labels: Labels = None,
         label_format: LabelFormat = None, partition: Partition = None, task: Task = None,
         visual_sets: Annotated[str | None, typer.Option(
             "--visual-sets", help="visual combinations, ';'-separated: 'mae;mae,ires100'")
             ] = None,
         audio_sets: Annotated[str | None, typer.Option(
             "--audio-sets", help="audio combinations, ';'-separated ('' = none): ';hubert'")
             ] = None,
         encoders: Annotated[str | None, typer.Option("--encoders", help="lstm,transformer")
                             ] = None,
         seeds: Annotated[str | None, typer.Option("--seeds", help="0,1,2")] = None,
         folds: Annotated[str | None, typer.Option(
             "--folds", help="k (k-fold) or loso (leave one group out), grouped by "
                             "labels.group_by; each fold held out as test (nested)")] = None,
         ensemble_top: Annotated[int | None, typer.Option(
             "--ensemble-top", help="then ensemble the best run of the K best cells")] = None,
         workers: Annotated[int, typer.Option(help="parallel CPU jobs")] = 1,
         gpus: Annotated[int, typer.Option(help="parallel jobs, one per GPU")] = 0,
         backend: Annotated[str, typer.Option(help="local | ray")] = "local",
         ray_address: Annotated[str | None, typer.Option(
             "--ray-address", help="Ray cluster address HOST:PORT or ray://HOST:10001 "
             "(default: $RAY_ADDRESS, else a local instance)")] = None,
         ray_timeout: Annotated[float, typer.Option(
             "--ray-timeout", help="seconds to reach the Ray cluster and check its nodes")
             ] = 30.0,
         overrides: Overrides = None) -> None:
    """Run an ablation grid (features x encoders x params x seeds [x folds]), rank the cells.

    A re-run skips finished jobs; a failing job is recorded and the grid goes on; the exit
    code is 1 when a job failed or a cell's folds could not be pooled. Writes
    results.csv, ranking.csv/.md, folds.csv and pooled.csv + pooled/ (folds: every fold's
    held-out predictions scored together, confusion matrices), heatmap.png and seeds.png.

    Example: fuse grid --config va_lstm --store f.zarr --labels l.csv --label-format csv
    --visual-sets 'fer;fer,densenet' --audio-sets ';egemaps' --seeds 0,1 --workers 2
    """
    from fuse.config import deep_merge, read_yaml_file
    from fuse.experiments.grid import load_grid
    from fuse.experiments.runner import print_ranking, run_grid

    raw: Any = _guard(lambda: read_yaml_file(grid_file)) if grid_file else {}
    if not isinstance(raw, dict):
        _fail([f"grid file {grid_file} must hold a mapping, not {type(raw).__name__}"])
    base = _layers(config, store, labels, label_format, partition, task, None, None, None,
                   None, False, overrides)
    raw["overrides"] = deep_merge(raw.get("overrides") or {}, base)
    axes = {"visual": visual_sets, "audio": audio_sets}
    for key, text in axes.items():
        if text is not None:
            raw[key] = [_split(part) or [] for part in text.split(";")]
    if encoders:
        raw["encoders"] = _split(encoders)
    if seeds:
        raw["seeds"] = [int(x) for x in _split(seeds) or []]
    if folds is not None:
        raw["folds"] = int(folds) if folds.strip().isdigit() else folds.strip()
    if ensemble_top is not None:
        raw["ensemble_top"] = ensemble_top
    spec = _guard(lambda: load_grid(raw))
    if ray_address and backend != "ray":
        _fail([f"--ray-address {ray_address} is used only with --backend ray"])
    from fuse.validate import drops_reported, report_grid_drops

    _guard(lambda: report_grid_drops(spec))  # each cell's --drop-missing videos, named once
    with drops_reported():  # so the jobs do not name them again
        outcome = _guard(lambda: run_grid(spec, out, workers=workers, gpus=gpus,
                                          backend=backend, ray_address=ray_address,
                                          ray_timeout=ray_timeout))
    print_ranking(outcome, _console())
    if not outcome.ok:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------- helpers
def _layers(config: list[str] | None, store, labels, label_format, partition, task, visual,
            audio, encoder, out, drop_missing: bool, overrides: list[str] | None) -> dict:
    """YAML files ← command-line options ← key=value overrides, merged into one dict."""
    from fuse.config import deep_merge, load_yaml, parse_overrides
    from fuse.errors import ConfigError

    merged: dict[str, Any] = {}
    problems = []
    for item in config or []:
        try:
            merged = deep_merge(merged, load_yaml(item))
        except ConfigError as exc:
            problems += exc.problems
    options = {
        "data": {"stores": _split(store), "visual": _split(visual), "audio": _split(audio),
                 "drop_missing": drop_missing or None},
        "labels": {"path": labels, "format": label_format, "partition": partition},
        "task": {"name": task}, "model": {"encoder": {"name": encoder}},
        "output": {"dir": out}}
    merged = deep_merge(merged, _prune(options))
    extra, bad = parse_overrides(overrides or [])
    if problems or bad:
        _fail(problems + bad)
    return deep_merge(merged, extra)


def _prune(tree: dict) -> dict:
    """Drop options not given on the command line (None / empty)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            value = _prune(value)
        if value not in (None, [], {}):
            out[key] = value
    return out


def _split(text: str | None) -> list[str] | None:
    return [p.strip() for p in text.split(",") if p.strip()] if text else None


def _guard(call):
    """Run a library call; errors become one message and a non-zero exit (``--debug``: the
    traceback): config problems and a feature that differs from the run's exit 2, the rest 1."""
    from rich.markup import escape

    from extract.errors import ExtractError, os_error_line, unexpected_line
    from fuse.errors import ConfigError, FeatureMismatchError

    try:
        return call()
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except ConfigError as exc:
        if _DEBUG["on"]:
            raise
        _fail(exc.problems)
    except FeatureMismatchError as exc:  # one line naming the feature and both configs
        if _DEBUG["on"]:
            raise
        _console().print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    except ExtractError as exc:  # FuseError, and the store's errors
        if _DEBUG["on"]:
            raise
        _console().print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from None
    except Exception as exc:  # disk full, permissions (OSError); or nobody planned for it
        if _DEBUG["on"]:
            raise
        line = os_error_line(exc) if isinstance(exc, OSError) else unexpected_line(exc)
        _console().print(f"[red]error:[/red] {escape(line)}", soft_wrap=True)
        raise typer.Exit(1) from None


def _fail(problems: list[str]) -> None:
    from fuse.outputs.report import problems_table

    _console().print(problems_table(problems))
    raise typer.Exit(2)


def _console():
    from rich.console import Console

    return Console(stderr=False, width=max(100, Console().width))


def main() -> None:
    """The ``fuse`` console script."""
    app(prog_name="fuse")


if __name__ == "__main__":
    sys.exit(main())
