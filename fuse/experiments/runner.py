"""Run a grid end to end: expand, run the jobs (local processes or Ray), rank, plot, report."""

from __future__ import annotations

import dataclasses
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

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def best_run(self) -> Path | None:
        """The run folder of the best cell's best seed/fold."""
        if self.ranking is None or self.ranking.empty:
            return None
        top = self.ranking.iloc[0]
        best = None
        for r in self.results:
            if r.status == "failed" or not r.result:
                continue
            meta = r.result["meta"]
            same = ("+".join(meta["visual"]) or "-", "+".join(meta["audio"]) or "-",
                    meta["encoder"]) == (top.visual, top.audio, top.encoder)
            score = r.result["metrics"].get("val", {}).get(self.metric, float("-inf"))
            if same and (best is None or score > best[0]):
                best = (score, Path(r.result["run"]))
        return best[1] if best else None


def run_grid(spec: GridSpec, out: str | Path, *, workers: int = 1, gpus: int = 0,
             backend: str = "local", ray_address: str | None = None,
             progress: bool = True) -> GridOutcome:
    """Run every unfinished cell of ``spec`` into ``out/jobs/<cell>``; rank into ``out``."""
    import yaml

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "grid.yaml").write_text(yaml.safe_dump(dataclasses.asdict(spec), sort_keys=False))
    jobs = expand(spec, out)
    log.info("grid: %d jobs into %s", len(jobs), out)
    results = run_jobs(grid_job, jobs, backend=backend, workers=workers, gpus=gpus,
                       ray_address=ray_address, progress=progress)
    files, rank_df = write_results(results, out, spec.metric)
    return GridOutcome(out, results, files, rank_df, spec.metric)


def print_ranking(outcome: GridOutcome, console: Any, top: int = 10) -> None:
    """The ranked cells as a rich table, then where the files are."""
    from rich.table import Table

    df = outcome.ranking
    table = Table(title=f"grid ranking (val {outcome.metric}, mean ± std over seeds/folds)")
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
