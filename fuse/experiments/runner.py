"""Run a grid end to end: expand, run the jobs (local processes or Ray), rank, plot, report."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fuse.experiments.grid import GridSpec, expand, grid_job, resolve_folds
from fuse.experiments.jobs import JobResult, run_jobs
from fuse.experiments.results import write_results

log = logging.getLogger(__name__)


@dataclass
class GridOutcome:
    """A finished (or partly failed) grid."""

    out: Path
    results: list[JobResult]
    files: dict[str, Path] = field(default_factory=dict)
    ranking: Any = None  # pandas DataFrame, best cell first
    metric: str = "score"
    ensemble: Any = None  # EnsembleResult of the top cells (spec.ensemble_top), or None
    tables: dict[str, Any] = field(default_factory=dict)  # results.write_results' extras: by,
    #                               notes, held_out, pooled ((cell..., seed) → Pooled), folds

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def pool_errors(self) -> dict[str, str]:
        """Cells (and seeds) whose folds could not be pooled: name → why."""
        return dict(self.tables.get("pool_errors") or {})

    @property
    def ok(self) -> bool:
        """Every job finished and, with folds, every cell's folds were pooled."""
        return not self.failed and not self.pool_errors

    @property
    def best_run(self) -> Path | None:
        """The run folder of the best cell's best seed/fold."""
        runs = self.top_runs(1)
        return runs[0] if runs else None

    def top_runs(self, k: int) -> list[Path]:
        """The best seed's run folder of each of the ``k`` best cells, best first."""
        if self.ranking is None or self.ranking.empty:
            return []
        best: dict[tuple, tuple[float, Path]] = {}
        for r in self.results:
            if r.status == "failed" or not r.result:
                continue
            meta = r.result["meta"]
            cell = ("+".join(meta["visual"]) or "-", "+".join(meta["audio"]) or "-",
                    meta["encoder"], json.dumps(meta["params"], sort_keys=True))
            by = self.tables.get("by", "val")
            score = r.result["metrics"].get(by, {}).get(self.metric, float("-inf"))
            if cell not in best or score > best[cell][0]:
                best[cell] = (score, Path(r.result["run"]))
        cells = self.ranking[["visual", "audio", "encoder", "params"]].head(k)
        return [best[c][1] for c in map(tuple, cells.itertuples(index=False)) if c in best]


def run_grid(spec: GridSpec, out: str | Path, *, workers: int = 1, gpus: int = 0,
             backend: str = "local", ray_address: str | None = None,
             progress: bool = True, ray_timeout: float = 30.0) -> GridOutcome:
    """Run every unfinished cell of ``spec`` into ``out/jobs/<cell>``; rank into ``out``.

    With ``backend="ray"`` the cluster is checked first (reachable within ``ray_timeout``
    seconds, enough GPUs, every path absolute and visible from each worker node)."""
    import yaml

    if backend == "ray":
        from fuse.experiments.cluster import prepare_ray

        spec, out = prepare_ray(spec, out, workers=workers, gpus=gpus, address=ray_address,
                                timeout=ray_timeout)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "grid.yaml").write_text(yaml.safe_dump(dataclasses.asdict(spec), sort_keys=False))
    jobs = expand(spec, out, resolve_folds(spec))
    log.info("grid: %d jobs into %s", len(jobs), out)
    results = run_jobs(grid_job, jobs, backend=backend, workers=workers, gpus=gpus,
                       ray_address=ray_address, progress=progress)
    files, rank_df, tables = write_results(results, out, spec.metric)
    outcome = GridOutcome(out, results, files, rank_df, spec.metric, tables=tables)
    if spec.ensemble_top >= 2:
        outcome.ensemble = ensemble_top(outcome, spec.ensemble_top)
    return outcome


def ensemble_top(outcome: GridOutcome, k: int) -> Any:
    """Ensemble the best run of each of the ``k`` best cells on the validation split (and
    the test split when the runs predicted one) into ``out/ensemble``."""
    from fuse.experiments.ensemble import ensemble

    runs = outcome.top_runs(k)
    if len(runs) < 2:
        log.warning("ensemble_top: fewer than 2 finished cells; no ensemble")
        return None
    splits = [s for s in ("val", "test") if (runs[0] / "predictions" / f"{s}_outputs.npz")
              .is_file()]
    try:
        return ensemble(runs, outcome.out / "ensemble", splits)
    except Exception as exc:  # e.g. cells that kept different videos: reported, grid stands
        log.error("ensemble of the top %d cells failed: %s", k, exc)
        return None


def score_meaning(outcome: GridOutcome) -> str:
    """What the ranking's score is, read off a finished run (e.g. "UAR over 4 classes")."""
    for r in outcome.results:
        if r.status != "failed" and r.result:
            metrics = r.result["metrics"]
            if "score_metric" in metrics:
                return metrics["score_metric"]
            keys = [k for k in metrics.get("val", {}) if "/" in k and not k.startswith("raw/")]
            kinds = sorted({k.split("/")[0] for k in keys})
            if kinds:
                return f"mean {'/'.join(kinds)} of {len(keys) // len(kinds)} targets"
    return outcome.metric


def _ms(mean: Any, std: Any) -> str:
    if mean is None or mean != mean:
        return "-"
    return f"{mean:.4f}" + ("" if std is None or std != std else f" ± {std:.4f}")


def print_ranking(outcome: GridOutcome, console: Any, top: int = 10) -> None:
    """The ranked cells as a rich table; with folds the pooled cross-validation metrics of
    each cell, the best cell's pooled confusion matrix and the per-fold table; then files."""
    from rich.markup import escape
    from rich.table import Table

    df = outcome.ranking
    by = outcome.tables.get("by", "val")
    title = (("RANKED BY TEST (no validation split): " if by == "test" else "")
             + f"grid ranking: {by} score ({score_meaning(outcome)}), mean ± std over "
             "seeds/folds")
    table = Table(title=title)
    for col in ("rank", *CELL_COLUMNS, "val", "test", "n"):
        table.add_column(col, justify="left" if col in CELL_COLUMNS else "right")
    if df is not None and not df.empty:
        for row in df.head(top).itertuples(index=False):
            r = row._asdict()
            count = r.get(f"{by}_count", r.get("val_count", ""))
            table.add_row(str(r["rank"]), r["visual"], r["audio"], str(r["encoder"]),
                          _params(r["params"]), _ms(r.get("val_mean"), r.get("val_std")),
                          _ms(r.get("test_mean"), r.get("test_std")),
                          str(int(count)) if count == count else "")
    console.print(table)
    _print_pooled(outcome, console, top)
    for note in outcome.tables.get("notes", []):
        console.print(escape(note.replace("**", "")))
    _print_best_pooled(outcome, console)
    folds = outcome.tables.get("folds")
    if folds is not None:
        from fuse.experiments.results import to_markdown

        console.print(f"per-fold {outcome.tables.get('held_out') or 'test'} score "
                      f"({score_meaning(outcome)}):")
        console.print(escape(to_markdown(folds).rstrip()), soft_wrap=True)
    for result in outcome.failed:
        console.print(f"[red]failed[/red] {result.name}: {escape(result.error)}")
    for name, error in sorted(outcome.pool_errors.items()):
        console.print(f"[red]pooling failed[/red] {name}: {escape(error)}")
    done = sum(r.status == "done" for r in outcome.results)
    skipped = sum(r.status == "skipped" for r in outcome.results)
    console.print(f"jobs: {done} run, {skipped} already finished, {len(outcome.failed)} failed"
                  + (f"; {len(outcome.pool_errors)} cell(s) could not be pooled"
                     if outcome.pool_errors else ""))
    for name, path in outcome.files.items():
        console.print(f"  {name}: {path}")
    if outcome.best_run is not None and not outcome.tables.get("pooled"):
        console.print(f"  best run: {outcome.best_run}")
    if outcome.ensemble is not None:
        from fuse.experiments.ensemble import ensemble_table

        console.print(ensemble_table(outcome.ensemble))


def _params(text: str) -> str:
    from rich.markup import escape

    return "" if text == "{}" else escape(text.strip("{}").replace('"', ""))


def _print_pooled(outcome: GridOutcome, console: Any, top: int) -> None:
    """Each cell's metrics on the held-out predictions of all its folds together."""
    from rich.table import Table

    df = outcome.ranking
    if df is None or df.empty or "pooled_score_mean" not in df:
        return
    held = outcome.tables.get("held_out") or "test"
    keys = ["score", *(k for k in ("uar", "accuracy", "f1") if f"pooled_{k}_mean" in df)]
    names = {"score": "score", "uar": "UAR", "accuracy": "accuracy", "f1": "macro F1"}
    table = Table(title=f"pooled {held} predictions of all folds"
                        + (" (selected on: optimistic)" if held == "val" else "")
                        + ", mean ± std over seeds")
    for col in ("rank", *CELL_COLUMNS, *(names[k] for k in keys), "folds"):
        table.add_column(col, justify="left" if col in CELL_COLUMNS else "right")
    for row in df.head(top).itertuples(index=False):
        r = row._asdict()
        folds = r.get("pooled_folds")
        table.add_row(str(r["rank"]), r["visual"], r["audio"], str(r["encoder"]),
                      _params(r["params"]),
                      *(_ms(r.get(f"pooled_{k}_mean"), r.get(f"pooled_{k}_std")) for k in keys),
                      "" if folds != folds or folds is None else str(int(folds)))
    console.print(table)


CELL_COLUMNS = ("visual", "audio", "encoder", "params")


def _print_best_pooled(outcome: GridOutcome, console: Any) -> None:
    """Pooled metrics and confusion matrix of the best cell (each of its seeds)."""
    from rich.markup import escape

    from fuse.outputs.confusion import as_text

    df, found = outcome.ranking, outcome.tables.get("pooled") or {}
    if df is None or df.empty or not found:
        return
    best = tuple(df.iloc[0][list(CELL_COLUMNS)])
    for key, pooled in sorted(found.items(), key=lambda kv: str(kv[0][-1])):
        if tuple(key[:-1]) != best:
            continue
        name = " | ".join(str(v) for v in best if v not in ("-", "{}"))
        metrics = ", ".join(f"{k} {pooled.metrics[k]:.4f}" for k in ("uar", "accuracy", "f1")
                            if k in pooled.metrics) or f"score {pooled.metrics.get('score')}"
        console.print(escape(f"best cell {name}, seed {key[-1]}: pooled over {pooled.folds} "
                             f"folds ({pooled.videos} held-out {pooled.split} videos): "
                             f"{metrics}"))
        if pooled.confusion is not None:
            console.print(escape(as_text(pooled.confusion, pooled.classes)), soft_wrap=True)
