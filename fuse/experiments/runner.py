"""Run a grid end to end: expand, run the jobs (local processes or Ray), rank, plot, report."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fuse.experiments.grid import GridSpec, expand, grid_job
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

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

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
            score = r.result["metrics"].get("val", {}).get(self.metric, float("-inf"))
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
    jobs = expand(spec, out)
    log.info("grid: %d jobs into %s", len(jobs), out)
    results = run_jobs(grid_job, jobs, backend=backend, workers=workers, gpus=gpus,
                       ray_address=ray_address, progress=progress)
    files, rank_df = write_results(results, out, spec.metric)
    outcome = GridOutcome(out, results, files, rank_df, spec.metric)
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
    """What the ranking's score is, read off a finished run (e.g. "mean ccc of 2 targets")."""
    for r in outcome.results:
        if r.status != "failed" and r.result:
            keys = [k for k in r.result["metrics"].get("val", {}) if "/" in k
                    and not k.startswith("raw/")]
            kinds = sorted({k.split("/")[0] for k in keys})
            if kinds:
                return f"mean {'/'.join(kinds)} of {len(keys) // len(kinds)} targets"
    return outcome.metric


def print_ranking(outcome: GridOutcome, console: Any, top: int = 10) -> None:
    """The ranked cells as a rich table, then where the files are."""
    from rich.table import Table

    df = outcome.ranking
    table = Table(title=f"grid ranking: val score ({score_meaning(outcome)}), mean ± std over "
                        "seeds/folds")
    for col in ("rank", "visual", "audio", "encoder", "params", "val", "test", "n"):
        table.add_column(col, justify="right" if col in ("rank", "val", "test", "n") else "left")
    if df is not None and not df.empty:
        for row in df.head(top).itertuples(index=False):
            r = row._asdict()

            def ms(split: str, r: dict = r) -> str:
                mean, std = r.get(f"{split}_mean"), r.get(f"{split}_std")
                if mean is None or mean != mean:
                    return "-"
                return f"{mean:.4f}" + ("" if std != std else f" ± {std:.4f}")

            table.add_row(str(r["rank"]), r["visual"], r["audio"], str(r["encoder"]),
                          "" if r["params"] == "{}" else str(r["params"]), ms("val"), ms("test"),
                          str(r.get("val_count", "")))
    console.print(table)
    for result in outcome.failed:
        console.print(f"[red]failed[/red] {result.name}: {result.error}")
    done = sum(r.status == "done" for r in outcome.results)
    skipped = sum(r.status == "skipped" for r in outcome.results)
    console.print(f"jobs: {done} run, {skipped} already finished, {len(outcome.failed)} failed")
    for name, path in outcome.files.items():
        console.print(f"  {name}: {path}")
    if outcome.best_run is not None:
        console.print(f"  best run: {outcome.best_run}")
    if outcome.ensemble is not None:
        from fuse.experiments.ensemble import ensemble_table

        console.print(ensemble_table(outcome.ensemble))
