"""Rank a grid's finished jobs: per-job table, mean ± spread over seeds and folds, plots."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from fuse.errors import FuseError
from fuse.experiments.jobs import JobResult

log = logging.getLogger(__name__)

CELL = ["visual", "audio", "encoder", "params"]  # what identifies a cell (not seed, not fold)
POOLED_KEYS = ("score", "uar", "accuracy", "f1")  # pooled metrics carried into the ranking


def _combo(names: list[str]) -> str:
    return "+".join(names) if names else "-"


def job_table(results: list[JobResult], metric: str = "score"):
    """One row per finished job: its cell, seed, fold and split metrics."""
    import pandas as pd

    rows = []
    for r in results:
        if r.status == "failed" or not r.result:
            continue
        meta, metrics = r.result["meta"], r.result["metrics"]
        row: dict[str, Any] = {
            "job": r.name, "visual": _combo(meta["visual"]), "audio": _combo(meta["audio"]),
            "encoder": meta["encoder"], "params": json.dumps(meta["params"], sort_keys=True),
            "seed": meta["seed"], "fold": meta["fold"],
            "fold_name": meta.get("fold_name", meta["fold"]),
            "holdout": meta.get("fold_holdout"), "best_epoch": r.result.get("best_epoch"),
            "run": r.result.get("run", ""),
            "grouped_by": metrics.get("splits", {}).get("grouped_by", ""),
        }
        for split in ("val", "test"):
            if metric in metrics.get(split, {}):
                row[split] = float(metrics[split][metric])
        rows.append(row)
    return pd.DataFrame(rows)


def rank_by(table) -> str:
    """The split that ranks the cells: val when the runs have a validation score, else test
    (Train-Val-Mix has no validation split; choosing a cell by test then selects on test)."""
    if "val" in table and table["val"].notna().any():
        return "val"
    return "test" if "test" in table and table["test"].notna().any() else "val"


def ranking(table, by: str | None = None, pooled=None):
    """Cells ranked by the mean of ``by`` (default :func:`rank_by`) over seeds and folds
    (higher is better), with the pooled cross-validation metrics (mean ± std over seeds)."""
    import pandas as pd

    by = by or rank_by(table)
    if table.empty or by not in table:
        return pd.DataFrame()
    cols = [c for c in ("val", "test") if c in table]
    agg = table.groupby(CELL, dropna=False)[cols].agg(["mean", "std", "count"])
    agg.columns = [f"{c}_{s}" for c, s in agg.columns]
    agg = agg.reset_index()
    if pooled is not None and not pooled.empty:
        keys = [f"pooled_{k}" for k in POOLED_KEYS if f"pooled_{k}" in pooled]
        stats = pooled.groupby(CELL, dropna=False)[keys].agg(["mean", "std"])
        stats.columns = [f"{c}_{s}" for c, s in stats.columns]
        first = pooled.groupby(CELL, dropna=False)[["pooled_split", "pooled_folds"]].first()
        agg = agg.merge(stats.reset_index(), on=CELL, how="left").merge(
            first.reset_index(), on=CELL, how="left")
    agg = agg.sort_values(f"{by}_mean", ascending=False, kind="stable")
    agg.insert(0, "rank", np.arange(1, len(agg) + 1))
    return agg.reset_index(drop=True)


def held_out(table) -> str:
    """The split a fold holds out: test (nested folds), val (fold_holdout=val)."""
    if "holdout" in table and (table["holdout"] == "val").any():
        return "val"
    return "test"


def fold_table(table):
    """Cells × folds of the held-out split's metric (test for nested folds), with the mean
    over folds (cross-validation); None without folds."""
    if table.empty or table["fold"].isna().all():
        return None
    split = held_out(table)
    if split not in table:
        return None
    rows = table.dropna(subset=["fold"]).copy()
    order = rows.sort_values("fold").drop_duplicates("fold")["fold_name"].astype(str).tolist()
    rows["fold_name"] = rows["fold_name"].astype(str)
    wide = rows.pivot_table(index=CELL, columns="fold_name", values=split, aggfunc="mean")
    wide = wide[[c for c in order if c in wide.columns]]
    wide.columns = [f"fold{c}" if c.isdigit() else c for c in wide.columns]  # loso: groups
    wide["mean"] = wide.mean(axis=1)
    return wide.reset_index().sort_values("mean", ascending=False)


def pooled_table(table, out: Path, plot: bool = True):
    """Pool each (cell, seed)'s held-out predictions over its folds; write their files under
    ``out/pooled/``; one row per (cell, seed) with ``pooled_<metric>`` columns, the
    :class:`~fuse.experiments.pooled.Pooled` of each (cell, seed), and ``{name: error}`` of
    each (cell, seed) that could not be pooled (the grid fails: its pooled numbers are
    missing)."""
    import pandas as pd

    from fuse.experiments.pooled import FOLDER, pool_runs, write_pooled

    if table.empty or table["fold"].isna().all():
        return pd.DataFrame(), {}, {}
    split = held_out(table)
    rows, found, errors = [], {}, {}
    for key, group in table.dropna(subset=["fold"]).groupby(CELL + ["seed"], dropna=False):
        group = group.sort_values("fold")
        name = group["job"].iloc[0].rsplit("__fold-", 1)[0]
        try:
            pooled, per_row = pool_runs([Path(r) for r in group["run"]], split,
                                        group["fold_name"].astype(str).tolist())
        except Exception as exc:  # the other cells are still pooled; the grid fails
            log.error("cannot pool %s: %s", name, exc)
            errors[name] = f"{type(exc).__name__}: {exc}" if not isinstance(
                exc, FuseError) else str(exc)
            continue
        write_pooled(out / FOLDER / name, pooled, per_row, plot)
        found[key] = pooled
        row = dict(zip(CELL + ["seed"], key, strict=True))
        row |= {f"pooled_{k}": pooled.metrics.get(k, np.nan) for k in POOLED_KEYS
                if k in pooled.metrics}
        row |= {"pooled_split": split, "pooled_folds": pooled.folds,
                "pooled_videos": pooled.videos, "pooled_dir": str(out / FOLDER / name)}
        rows.append(row)
    return pd.DataFrame(rows), found, errors


def to_markdown(df, floatfmt: str = ".4f") -> str:
    """A markdown table without the optional tabulate dependency."""
    cols = list(df.columns)

    def fmt(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return "" if np.isnan(v) else format(v, floatfmt)
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def heatmap(rank_df, out: Path, metric: str, by: str = "val") -> Path | None:
    """The best cell's mean metric by visual combination × audio combination."""
    if rank_df.empty or f"{by}_mean" not in rank_df:
        return None
    from fuse.outputs.plots import _pyplot

    plt = _pyplot()
    best = rank_df.groupby(["visual", "audio"])[f"{by}_mean"].max().unstack("audio")
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * best.shape[1], 1.2 + 0.5 * best.shape[0]))
    values = best.to_numpy(dtype=float)
    im = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(best.shape[1]), best.columns, rotation=30, ha="right")
    ax.set_yticks(range(best.shape[0]), best.index)
    lo, hi = np.nanmin(values), np.nanmax(values)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):  # dark text on the bright (yellow) end of viridis
            light = hi > lo and (v - lo) / (hi - lo) > 0.6
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=8,
                    color="black" if light else "white")
    ax.set_xlabel("audio features")
    ax.set_ylabel("visual features")
    ax.set_title(f"{by} {metric} (mean over seeds, best cell)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    path = out / "heatmap.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def seed_bars(rank_df, out: Path, metric: str, top: int = 12, by: str = "val") -> Path | None:
    """The top cells' mean metric with the spread over seeds (and folds) as error bars."""
    if rank_df.empty or f"{by}_mean" not in rank_df:
        return None
    from fuse.outputs.plots import _pyplot

    plt = _pyplot()
    df = rank_df.head(top).iloc[::-1]
    labels = [f"{v} | {a} | {e}" + ("" if p == "{}" else f" {p}")
              for v, a, e, p in zip(df.visual, df.audio, df.encoder, df.params, strict=True)]
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.35 * len(df)))
    ax.barh(range(len(df)), df[f"{by}_mean"], xerr=df[f"{by}_std"].fillna(0.0), capsize=3,
            color="tab:blue")
    ax.set_yticks(range(len(df)), labels, fontsize=8)
    ax.set_xlabel(f"{by} {metric} (mean ± std over seeds/folds)")
    fig.tight_layout()
    path = out / "seeds.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def ranking_notes(table, by: str, pool_errors: dict[str, str] | None = None) -> list[str]:
    """Lines that say what the ranking's numbers are (written above ranking.md)."""
    notes = []
    if pool_errors:
        notes.append(f"**Pooling FAILED** for {len(pool_errors)} cell/seed(s), which have no "
                     "pooled metrics: " + "; ".join(f"{n}: {e}" for n, e in
                                                    sorted(pool_errors.items())))
    if by == "test":
        notes.append("Ranked by **test**: the runs have no validation split (Train-Val-Mix). "
                     "Choosing a cell by this ranking selects on test data.")
    if not table.empty and table["fold"].notna().any():
        if held_out(table) == "val":
            notes.append("Folds hold out a **validation** fold (fold_holdout: val, papers 002 / "
                         "004): each run's epoch was selected on it, so pooled and per-fold "
                         "numbers are optimistic, not test estimates.")
        else:
            notes.append("Folds hold out a **test** fold (nested): epochs and post-processing "
                         "were selected on a validation split drawn from the other groups; "
                         "the pooled metrics score every fold's labelled test predictions "
                         "together.")
    if "grouped_by" in table and not table.empty:
        groups = sorted({g for g in table["grouped_by"] if g})
        if groups:
            notes.append(f"Splits grouped by {', '.join(groups)}.")
    return notes


def write_results(results: list[JobResult], out: Path, metric: str = "score",
                  plot: bool = True) -> tuple[dict[str, Path], Any, dict[str, Any]]:
    """results.csv (per job), ranking.csv / ranking.md, folds.csv, pooled.csv and pooled/
    (cross-validation), failures.json (failed jobs and pools) and plots. Returns the files, the
    ranking (a DataFrame, best cell first) and what the tables mean: ``by`` (the ranking
    split), ``notes``, ``held_out``, ``pooled`` ((cell..., seed) → Pooled), ``pool_errors``
    (name → why it could not be pooled), ``folds`` (the per-fold table)."""
    out.mkdir(parents=True, exist_ok=True)
    table = job_table(results, metric)
    by = rank_by(table) if not table.empty else "val"
    pooled, found, pool_errors = pooled_table(table, out, plot)
    rank_df = ranking(table, by, pooled)
    notes = ranking_notes(table, by, pool_errors)
    extras = {"by": by, "notes": notes, "pooled": found, "pool_errors": pool_errors,
              "held_out": held_out(table) if not table.empty else None}
    files = {"results": out / "results.csv", "ranking": out / "ranking.csv",
             "markdown": out / "ranking.md"}
    table.to_csv(files["results"], index=False)
    rank_df.to_csv(files["ranking"], index=False)
    head = "".join(f"{n}\n\n" for n in notes)
    files["markdown"].write_text(head + to_markdown(rank_df) if not rank_df.empty
                                 else "no results\n")
    folds = extras["folds"] = fold_table(table)
    if folds is not None:
        files["folds"] = out / "folds.csv"
        folds.to_csv(files["folds"], index=False)
    if not pooled.empty:
        files["pooled"] = out / "pooled.csv"
        pooled.to_csv(files["pooled"], index=False)
    failed = [{"job": r.name, "error": r.error} for r in results if r.status == "failed"]
    failed += [{"pooled": name, "error": error} for name, error in sorted(pool_errors.items())]
    files["failures"] = out / "failures.json"
    files["failures"].write_text(json.dumps(failed, indent=2))
    if plot:
        for name, fn in (("heatmap", heatmap), ("seeds", seed_bars)):
            path = fn(rank_df, out, metric, by=by)
            if path is not None:
                files[name] = path
    return files, rank_df, extras
