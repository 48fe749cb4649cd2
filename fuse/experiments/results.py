"""Rank a grid's finished jobs: per-job table, mean ± spread over seeds and folds, plots."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from fuse.experiments.jobs import JobResult

log = logging.getLogger(__name__)

CELL = ["visual", "audio", "encoder", "params"]  # what identifies a cell (not seed, not fold)


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
            "seed": meta["seed"], "fold": meta["fold"], "best_epoch": r.result.get("best_epoch"),
        }
        for split in ("val", "test"):
            if metric in metrics.get(split, {}):
                row[split] = float(metrics[split][metric])
        rows.append(row)
    return pd.DataFrame(rows)


def ranking(table, by: str = "val"):
    """Cells ranked by the mean of ``by`` over seeds and folds (higher is better)."""
    import pandas as pd

    if table.empty or by not in table:
        return pd.DataFrame()
    cols = [c for c in ("val", "test") if c in table]
    agg = table.groupby(CELL, dropna=False)[cols].agg(["mean", "std", "count"])
    agg.columns = [f"{c}_{s}" for c, s in agg.columns]
    agg = agg.reset_index().sort_values(f"{by}_mean", ascending=False, kind="stable")
    agg.insert(0, "rank", np.arange(1, len(agg) + 1))
    return agg.reset_index(drop=True)


def fold_table(table):
    """Cells × folds of the validation metric, with the mean over folds (cross-validation)."""
    if table.empty or table["fold"].isna().all():
        return None
    wide = table.pivot_table(index=CELL, columns="fold", values="val", aggfunc="mean")
    wide.columns = [f"fold{int(c)}" for c in wide.columns]
    wide["mean"] = wide.mean(axis=1)
    return wide.reset_index().sort_values("mean", ascending=False)


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


def heatmap(rank_df, out: Path, metric: str) -> Path | None:
    """The best cell's mean metric by visual combination × audio combination."""
    if rank_df.empty:
        return None
    from fuse.outputs.plots import _pyplot

    plt = _pyplot()
    best = rank_df.groupby(["visual", "audio"])["val_mean"].max().unstack("audio")
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
    ax.set_title(f"val {metric} (mean over seeds, best cell)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    path = out / "heatmap.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def seed_bars(rank_df, out: Path, metric: str, top: int = 12) -> Path | None:
    """The top cells' mean metric with the spread over seeds (and folds) as error bars."""
    if rank_df.empty:
        return None
    from fuse.outputs.plots import _pyplot

    plt = _pyplot()
    df = rank_df.head(top).iloc[::-1]
    labels = [f"{v} | {a} | {e}" + ("" if p == "{}" else f" {p}")
              for v, a, e, p in zip(df.visual, df.audio, df.encoder, df.params, strict=True)]
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.35 * len(df)))
    ax.barh(range(len(df)), df["val_mean"], xerr=df["val_std"].fillna(0.0), capsize=3,
            color="tab:blue")
    ax.set_yticks(range(len(df)), labels, fontsize=8)
    ax.set_xlabel(f"val {metric} (mean ± std over seeds/folds)")
    fig.tight_layout()
    path = out / "seeds.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_results(results: list[JobResult], out: Path,
                  metric: str = "score") -> tuple[dict[str, Path], Any]:
    """results.csv (per job), ranking.csv / ranking.md, folds.csv, failures.json and plots;
    returns the files and the ranking (a DataFrame, best cell first)."""
    out.mkdir(parents=True, exist_ok=True)
    table = job_table(results, metric)
    rank_df = ranking(table)
    files = {"results": out / "results.csv", "ranking": out / "ranking.csv",
             "markdown": out / "ranking.md"}
    table.to_csv(files["results"], index=False)
    rank_df.to_csv(files["ranking"], index=False)
    files["markdown"].write_text(to_markdown(rank_df) if not rank_df.empty else "no results\n")
    folds = fold_table(table)
    if folds is not None:
        files["folds"] = out / "folds.csv"
        folds.to_csv(files["folds"], index=False)
    failed = [{"job": r.name, "error": r.error} for r in results if r.status == "failed"]
    files["failures"] = out / "failures.json"
    files["failures"].write_text(json.dumps(failed, indent=2))
    for name, fn in (("heatmap", heatmap), ("seeds", seed_bars)):
        path = fn(rank_df, out, metric)
        if path is not None:
            files[name] = path
    return files, rank_df
