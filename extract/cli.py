"""The ``extract`` command: each subcommand makes one library call and prints the result.

Heavy modules (numpy, zarr, torch, PyAV) are imported inside the commands, so ``extract --help``
answers at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="extract",
    help="Stage 1 of the affect feature store: decode videos, frame folders and audio files, "
         "find faces, run feature extractors, and write per-video (T, D) arrays into a Zarr "
         "feature store.\n\nExample: extract run --feature egemaps,fbank --input videos/ "
         "--store features.zarr",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)



def _store_arg(value: str | None) -> str | None:
    """``--store``: a folder or an fsspec URL (``s3://``, ``gs://``, ``file://``, ``memory://``),
    checked before the command runs (``s3:/x`` with a lost slash is refused, not a folder)."""
    if value is None:
        return None
    from extract.errors import ConfigError
    from extract.locations import store_location

    try:
        return store_location(value)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


StoreOpt = Annotated[str, typer.Option("--store", "-s", callback=_store_arg, help="Feature "
                                       "store: a .zarr folder, or an fsspec URL such as "
                                       "s3://bucket/features.zarr (claims off; run records "
                                       "in ./extract_runs/).")]
CatalogOpt = Annotated[Path | None, typer.Option("--catalog", help="Feature catalog "
                                                 "(default: $EXTRACT_FEATURES, ./features.yaml, "
                                                 "or the one beside the package).")]


_DEBUG = {"on": False}  # --debug: tracebacks instead of one-line errors

@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """One red line instead of a traceback (``--debug`` shows the traceback): the package's own
    errors exit 2, OS errors (disk full, permissions) and anything unexpected exit 1."""
    from extract.errors import ExtractError, os_error_line, unexpected_line

    try:
        yield
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except ExtractError as exc:
        if _DEBUG["on"]:
            raise
        _err().print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        if _DEBUG["on"]:
            raise
        _err().print(f"[red]error:[/red] {escape(os_error_line(exc))}", highlight=False,
                     soft_wrap=True)
        raise typer.Exit(1) from None
    except Exception as exc:
        if _DEBUG["on"]:
            raise
        _err().print(f"[red]error:[/red] {escape(unexpected_line(exc))}", highlight=False,
                     soft_wrap=True)
        raise typer.Exit(1) from None


def escape(text: str) -> str:
    """Text shown as is by rich (square brackets are markup otherwise)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _out() -> Any:
    from rich.console import Console

    # Piped output (files, CI logs) gets wide tables instead of 80 wrapped columns.
    return Console() if sys.stdout.isatty() else Console(width=200)


def _err() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _table(title: str, columns: list[str]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, no_wrap=i < len(columns) - 1)  # only the last column wraps
    return table


@app.callback()
def _main(verbose: Annotated[int, typer.Option("--verbose", "-v", count=True,
                                               help="More log output (-v info, -vv debug).")] = 0,
          debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of an "
                                              "error instead of one line.")] = False,
          ) -> None:
    _DEBUG["on"] = debug
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)


# ----------------------------------------------------------------------- list
@app.command("list")
def list_cmd(catalog: CatalogOpt = None) -> None:
    """List the catalog's features: available (implemented, packages present) and the weights
    each will load, with whether they are on this machine (and how to get them if not).

    Example: extract list --catalog features.yaml
    """
    from extract.overview import catalog_rows

    with _errors():
        rows = catalog_rows(catalog)
    table = _table("features", ["name", "modality", "dim", "rate", "extractor", "available",
                                "weights (what it loads)", "weights here"])
    missing = []
    for r in rows:
        extras = "".join(f" +{k}:{d}" for k, d in r["extras"].items())
        avail = "[green]yes[/green]" if r["available"] else f"[red]no[/red]: {r['reason']}"
        here = "[green]yes[/green]" if r["weights_found"] else "[yellow]no[/yellow]"
        if r["available"] and not r["weights_found"]:
            missing.append(f"  {r['name']}: {r['reason']}")
        table.add_row(r["name"], r["modality"], f"{r['dim']}{extras}", str(r["rate"]),
                      r["extractor"], avail, str(r["weights"]), here if r["available"] else "")
    _out().print(table)
    if missing:
        _out().print("Weights not on this machine (give a local path with --weights NAME=PATH, "
                     "features.yaml, or $EXTRACT_WEIGHTS_DIR):\n" + "\n".join(missing))


# ------------------------------------------------------------------------ run
@app.command("run")
def run_cmd(
    feature: Annotated[list[str], typer.Option("--feature", "-f", help="Feature name(s) from "
                                               "the catalog; repeat or comma-separate. All run "
                                               "in one pass per video.")],
    input: Annotated[Path, typer.Option("--input", "-i", help="Folder of inputs (videos, "
                                        "frame folders, audio files) or one file.")],
    store: StoreOpt,
    gpus: Annotated[int, typer.Option(help="Use N GPUs: one worker process per GPU.")] = 0,
    workers: Annotated[int, typer.Option(help="CPU worker processes (when --gpus is 0); 0 "
                                         "runs in this process (debugging).")] = 1,
    cpu_workers: Annotated[int | None, typer.Option(
        "--cpu-workers", help="Processes that decode frames and find + align faces for the "
        "workers, handing crops over in shared memory (shared among the --gpus / --workers "
        "workers; long videos are split across them). Default: with --gpus N the cores the N "
        "GPU workers leave; on CPU-only runs 0 (each --workers process decodes and finds "
        "faces itself; give N to move that into N extra processes).")] = None,
    face_device: Annotated[str, typer.Option(
        "--face-device", help="Where faces are detected: cpu | cuda (an ONNX detector, scrfd "
        "or retinaface with model_path=, on the worker's GPU; needs onnxruntime-gpu). cuda "
        "enters visual features' fingerprints (the crops differ by float rounding); cpu "
        "does not.")] = "cpu",
    batch_size: Annotated[list[str] | None, typer.Option(
        "--batch-size", help="B: frames per decode batch (default 32, also each backbone's "
        "batch); NAME=B: feature NAME's own batch (face crops per forward, gathered across "
        "frame batches; windows or chunks per forward for audio). Repeatable.")] = None,
    precision: Annotated[str | None, typer.Option(
        help="Backbone precision: fp32 | bf16 | fp16 (default: bf16 with --gpus, fp32 on the "
        "CPU). Recorded in each feature's config and fingerprint; fp32 reproduces the "
        "papers' extractors.")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the K longest unfinished inputs.")
                     ] = None,
    sample: Annotated[str, typer.Option(help="Frame sampling: all | fps:F | count:N.")] = "all",
    image_fps: Annotated[float, typer.Option("--image-fps", help="Frame rate of image-folder "
                                             "inputs (time = index / fps).")] = 30.0,
    videos: Annotated[Path | None, typer.Option("--videos", help="Folder of the raw videos of "
                                                "frame folders (X_left / X_right → X, any "
                                                "extension): each folder gets its video's "
                                                "frame times and one row per video frame "
                                                "(frames without an image: zero rows, mask "
                                                "False).")] = None,
    fps_table: Annotated[Path | None, typer.Option("--fps-table", help="CSV video,fps: a frame "
                                                   "rate per frame folder (instead of "
                                                   "--image-fps).")] = None,
    weights: Annotated[list[str] | None, typer.Option("--weights", help="NAME=PATH: weights "
                                                      "for a feature (repeatable).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="NAME.options.KEY=VALUE "
                                                   "override (repeatable).")] = None,
    catalog: CatalogOpt = None,
    detector: Annotated[str | None, typer.Option(help="Face detector for video inputs, "
                                                 "NAME[:KEY=VALUE,...] (default: "
                                                 "mediapipe_facemesh; names and options: "
                                                 "docs/faces.md). Part of every visual "
                                                 "feature's fingerprint.")] = None,
    detector_option: Annotated[list[str] | None, typer.Option(
        "--detector-option", help="KEY=VALUE option of the face detector, e.g. model=short "
                                  "(repeatable).")] = None,
    plugin: Annotated[list[str] | None, typer.Option("--plugin", help="Python module to "
                                                     "import first (registers extra "
                                                     "extractors/detectors).")] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Name of this run's record "
                                               "folder (default: time stamp).")] = None,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr.")] = True,
    claims: Annotated[bool, typer.Option(help="Claim each video in the store first, so several "
                                         "runs (machines, GPUs) can share one store.")] = True,
    backend: Annotated[str, typer.Option(help="local: worker processes here; ray: one Ray "
                                         "actor per worker, fed video by video (needs the "
                                         "'ray' extra).")
                       ] = "local",
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Ray cluster "
                                                    "address HOST:PORT or ray://HOST:10001 "
                                                    "(default: $RAY_ADDRESS, else a local "
                                                    "instance).")] = None,
    ray_timeout: Annotated[float, typer.Option("--ray-timeout", help="Seconds to reach the "
                                               "Ray cluster and to check its nodes.")] = 30.0,
    strict: Annotated[bool, typer.Option("--strict", help="Count a feature that does not "
                                         "apply to an input (visual on a file without video, "
                                         "audio on one without sound) as failed.")] = False,
) -> None:
    """Extract features for every input not yet complete in the store; resumable.

    Inputs: video and audio files, and frame folders (at least 2 numbered images such as
    00001.jpg); other files are ignored and listed. Every feature is checked (options,
    weights loaded, one test input) before the store changes: a bad value exits 2 with one
    message. Finished videos are skipped on a re-run; a broken input is recorded in the run's
    failures.jsonl and the run goes on; a feature that does not apply (no video / no audio
    stream) is "not applicable", not failed. A full disk stops the run with its summary. Exit
    code: 0 when everything applicable is done, 1 when something failed, 2 for bad options.

    Example: extract run --feature egemaps,fbank --input data/demo --store demo.zarr --workers 2
    """
    from extract.faces.settings import join_detector
    from extract.runner import (
        RunOptions,
        parse_batch_sizes,
        parse_sets,
        parse_weights,
        run,
        split_names,
    )

    with _errors():
        batch, batch_sizes = parse_batch_sizes(batch_size)
        detector = join_detector(detector, detector_option or [])
        options = RunOptions(
            features=split_names(feature), input=input, store=str(store), gpus=gpus,
            workers=workers, cpu_workers=cpu_workers, face_device=face_device,
            batch_size=batch, batch_sizes=batch_sizes, precision=precision,
            limit=limit, sample=sample, image_fps=image_fps, videos=videos,
            fps_table=fps_table, weights=parse_weights(weights or []),
            sets=parse_sets(set_ or []), catalog=catalog, detector=detector,
            plugins=split_names(plugin or []), run_id=run_id, progress=progress,
            claims=claims, backend=backend, ray_address=ray_address, strict=strict,
            ray_timeout=ray_timeout)
        try:
            summary = run(options)
        except KeyboardInterrupt:
            _err().print("[yellow]interrupted[/yellow]: finished videos are kept; re-run to go on")
            raise typer.Exit(130) from None
        print_summary(summary)
    raise typer.Exit(summary.exit_code)


def print_summary(summary: Any) -> None:
    """The end-of-run table: videos, frames, time, speed, per feature, and failures."""
    s = summary
    table = _table(f"run {s.run_id}", ["", "done", "skipped", "failed", "not applicable",
                                       "rows", "seconds", "rows/s"])
    table.add_row("[bold]videos[/bold]", str(s.done), str(s.skipped), str(s.failed),
                  str(s.not_applicable), f"{s.frames} frames", f"{s.seconds:.1f}",
                  f"{s.frames_per_s:.1f} frames/s")
    for name, st in s.features.items():
        table.add_row(name, str(st.done), str(st.skipped), str(st.failed),
                      str(st.not_applicable), str(st.rows), f"{st.seconds:.1f}",
                      f"{st.rows_per_s:.0f}")
    console = _out()
    console.print(table)
    if s.faces:
        print_faces(s.faces)
    if s.ignored_count:
        console.print(f"[yellow]not inputs[/yellow]: {escape(s.ignored_text)} (the list: "
                      f"{escape(s.run_dir)}/run.yaml)", highlight=False)
    if s.not_applicable:
        console.print(f"{s.not_applicable} input(s) lack the stream some features need (no "
                      "video or no audio): not applicable, not failed (details: "
                      f"{escape(s.run_dir)}/not_applicable.jsonl; --strict counts them as "
                      "failed)", highlight=False)
    if s.stopped:
        console.print(f"[red]stopped early[/red]: {escape(s.stopped)}; {s.not_started} "
                      "input(s) not started. Free some space and re-run: finished videos are "
                      "kept.", highlight=False)
    if s.records_error:
        console.print(f"[red]run records incomplete[/red]: {escape(s.records_error)}; this "
                      "summary is the only full record of the run", highlight=False)
    if s.deferred:
        console.print(f"{s.deferred} input(s) left for a later run (--limit)")
    if s.busy:
        console.print(f"{s.busy} input(s) held by another run on this store; a later run "
                      "picks up any it leaves unfinished")
    if s.failures:
        console.print(f"[red]{len(s.failures)} failure(s)[/red] (details: "
                      f"{s.run_dir}/failures.jsonl):", highlight=False)
        for f in s.failures[:20]:
            console.print(f"  {f.video} [{','.join(f.features)}] at {f.stage}: {f.error}: "
                          f"{f.message}", highlight=False, markup=False)
        if len(s.failures) > 20:
            console.print(f"  … and {len(s.failures) - 20} more")


def print_faces(faces: dict[str, list[int]], show: int = 25) -> None:
    """Share of frames with a face found, per clip (lowest first) and overall."""
    frames = sum(n for n, _ in faces.values())
    found = sum(k for _, k in faces.values())
    table = _table(f"faces found: {found}/{frames} frames "
                   f"({100.0 * found / max(1, frames):.1f}%) in {len(faces)} clips",
                   ["clip", "frames", "with a face", "share"])
    ranked = sorted(faces.items(), key=lambda kv: (kv[1][1] / max(1, kv[1][0]), kv[0]))
    for video, (n, k) in ranked[:show]:
        table.add_row(video, str(n), str(k), f"{100.0 * k / max(1, n):.1f}%")
    if len(ranked) > show:
        table.add_row(f"… {len(ranked) - show} more (summary.json)", "", "", "")
    _out().print(table)


# ------------------------------------------------------------------------- ls
@app.command("ls")
def ls_cmd(store: StoreOpt) -> None:
    """List a store's features: complete / incomplete videos, dim, extractor, fingerprint.

    Example: extract ls --store features.zarr
    """
    from extract.overview import store_rows

    with _errors():
        rows = store_rows(store)
    table = _table(str(store), ["feature", "modality", "dim", "dtype", "videos", "incomplete",
                                "extractor", "weights", "fingerprint"])
    for r in rows:
        table.add_row(r["feature"], r["modality"], str(r["dim"]), r["dtype"], str(r["videos"]),
                      str(r["incomplete"]), r["extractor"], str(r["weights"] or "-"),
                      r["fingerprint"])
    _out().print(table)


# -------------------------------------------------------------------- inspect
@app.command("inspect")
def inspect_cmd(
    store: StoreOpt,
    feature: Annotated[str, typer.Argument(help="Feature name (see extract ls).")],
    video: Annotated[str | None, typer.Argument(help="Video id; omit for the feature.")] = None,
) -> None:
    """Show a feature's attributes, or one video's shape, timestamps, mask and attributes.

    Example: extract inspect --store features.zarr egemaps clip_001
    """
    from extract.overview import inspect_feature, inspect_video

    with _errors():
        info = (inspect_video(store, feature, video) if video
                else inspect_feature(store, feature))
    _out().print_json(json.dumps(info, default=str))


# --------------------------------------------------------------------- verify
@app.command("verify")
def verify_cmd(
    store: StoreOpt,
    feature: Annotated[list[str] | None, typer.Option("--feature", "-f", help="Check only this "
                                                      "feature (repeatable).")] = None,
    fix: Annotated[bool, typer.Option("--fix", help="Mark damaged videos not complete (the "
                                      "next `extract run` redoes them) and rewrite damaged "
                                      "metadata from the index's copies.")] = False,
) -> None:
    """Check every complete video against its checksum, and every file the index needs.

    One line per problem (missing or short chunk files, checksum mismatches, junk metadata or
    index lines); exit code 0 only when nothing is wrong (with --fix: nothing left unfixed).

    Example: extract verify --store features.zarr --fix
    """
    from extract.store.commands import verify_cmd as body

    with _errors():
        code = body(str(store), fix, feature, _out())
    raise typer.Exit(code)


@app.command("rm")
def rm_cmd(
    store: StoreOpt,
    feature: Annotated[str, typer.Argument(help="Feature name (see extract ls).")],
    videos: Annotated[list[str] | None, typer.Argument(help="Video ids; omit to remove the "
                                                       "whole feature.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Really remove (without it, only say "
                                      "what would go).")] = False,
) -> None:
    """Remove a feature, or some of its videos, from a store.

    Example: extract rm --store features.zarr mae clip_001 clip_002 --yes
    """
    from extract.store.commands import rm_cmd as body

    with _errors():
        code = body(str(store), feature, list(videos or []), yes, _out())
    raise typer.Exit(code)


@app.command("migrate")
def migrate_cmd(
    store: StoreOpt,
    out: Annotated[Path, typer.Option("--out", help="New store to create (format 2).")],
) -> None:
    """Convert a format-1 store (one array per video) into a new format-2 store.

    The old store is only read; compare with `extract ls`, then replace it.

    Example: extract migrate --store old.zarr --out features.zarr
    """
    from extract.store.commands import migrate_cmd as body

    with _errors():
        code = body(str(store), str(out), _out())
    raise typer.Exit(code)


# ----------------------------------------------------- import / export / claims
@app.command("import")
def import_cmd(
    format: Annotated[str, typer.Option("--format", help="Reader: csv, h5 or npy.")],
    name: Annotated[str, typer.Option("--name", help="Feature name to import into.")],
    source: Annotated[Path, typer.Option("--source", help="File or folder to import.")],
    store: StoreOpt,
    modality: Annotated[str | None, typer.Option(help="visual or audio (default: from the "
                                                 "files' metadata).")] = None,
    fps: Annotated[float | None, typer.Option(help="Rows per second when the files carry no "
                                              "times.")] = None,
    fps_table: Annotated[Path | None, typer.Option("--fps-table", help="CSV video,fps: a rate "
                                                   "per video.")] = None,
    frame_shift: Annotated[float | None, typer.Option("--frame-shift", help="Seconds between "
                                                      "rows (instead of --fps).")] = None,
    time_column: Annotated[str | None, typer.Option("--time-column", help="CSV column with "
                                                    "row times.")] = None,
    time_unit: Annotated[str, typer.Option("--time-unit", help="auto, s or ms.")] = "auto",
    frame_origin: Annotated[int, typer.Option("--frame-origin", help="Index of a video's "
                                              "first frame (Aff-Wild2: 1).")] = 0,
    meta_columns: Annotated[int | None, typer.Option("--meta-columns", help="CSV: leading "
                                                     "non-feature columns.")] = None,
    dtype: Annotated[str | None, typer.Option(help="Stored dtype (default float16).")] = None,
    extractor: Annotated[str | None, typer.Option(help="Extractor name to record.")] = None,
    config: Annotated[list[str] | None, typer.Option("--config", help="KEY=VALUE recorded "
                                                     "as the feature's config (repeatable).")
                      ] = None,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="npy: load pickled "
                                               "dicts (trusted files only).")] = False,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Import the good videos and "
                                           "report the rest.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace videos already complete.")] = False,
) -> None:
    """Import features computed elsewhere (MuSe CSVs, ABAW HDF5, npy) as a store feature.

    Every input is checked first; with a bad one nothing is imported (unless --skip-bad).

    Example: extract import --format csv --name vggface --source muse/vggface --fps 4
    --modality visual --store features.zarr
    """
    from extract.io.cli_commands import import_cmd as body

    with _errors():
        code = body(format, name, str(source), str(store), modality=modality, fps=fps,
                    fps_table=str(fps_table) if fps_table else None, frame_shift=frame_shift,
                    time_column=time_column, time_unit=time_unit, frame_origin=frame_origin,
                    meta_columns=meta_columns, dtype=dtype, extractor=extractor, config=config,
                    allow_pickle=allow_pickle, skip_bad=skip_bad, overwrite=overwrite)
    raise typer.Exit(code)


@app.command("export")
def export_cmd(
    store: StoreOpt,
    feature: Annotated[str, typer.Argument(help="Feature name (see extract ls).")],
    out: Annotated[Path, typer.Argument(help="h5: the file to write; csv: a folder.")],
    format: Annotated[str, typer.Option("--format", help="Writer: h5 or csv.")] = "h5",
    video: Annotated[list[str] | None, typer.Option("--video", help="Only these video ids "
                                                    "(repeatable).")] = None,
    frame_origin: Annotated[int, typer.Option("--frame-origin", help="Frame number of row 0 "
                                              "(h5 keys).")] = 0,
) -> None:
    """Export a feature's complete videos (times, masks and metadata included).

    Example: extract export --store features.zarr egemaps egemaps.h5
    """
    from extract.io.cli_commands import export_cmd as body

    with _errors():
        code = body(str(store), feature, str(out), format=format, videos=video,
                    frame_origin=frame_origin)
    raise typer.Exit(code)


@app.command("claims")
def claims_cmd(
    store: StoreOpt,
    clear_stale: Annotated[bool, typer.Option("--clear-stale", help="Remove claims whose "
                                              "holder died.")] = False,
) -> None:
    """List the claims of runs working on a store (live and stale).

    Example: extract claims --store features.zarr --clear-stale
    """
    from extract.io.cli_commands import claims_cmd as body

    with _errors():
        code = body(str(store), clear_stale=clear_stale)
    raise typer.Exit(code)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except BrokenPipeError:  # e.g. `extract ls | head`
        sys.exit(0)


if __name__ == "__main__":
    main()
