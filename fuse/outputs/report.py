"""Rich tables for the command line."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table


def metrics_table(metrics: dict[str, Any], title: str = "metrics") -> Table:
    """One row per metric, one column per split (``score`` first)."""
    splits = [s for s in ("train", "val", "test") if isinstance(metrics.get(s), dict)]
    if not splits and all(isinstance(v, float | int) for v in metrics.values()):
        metrics, splits = {"value": metrics}, ["value"]
    keys = list(dict.fromkeys(k for s in splits for k in metrics[s]))
    keys.sort(key=lambda k: (k != "score", k.startswith("raw/"), k))
    table = Table(title=title)
    table.add_column("metric")
    for s in splits:
        table.add_column(s, justify="right")
    for k in keys:
        table.add_row(escape(k), *(_fmt(metrics[s].get(k)) for s in splits))
    return table


def problems_table(problems: list[str]) -> Table:
    table = Table(title=f"{len(problems)} problem(s)", show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("problem")
    for i, p in enumerate(problems, 1):
        table.add_row(str(i), escape(p))
    return table


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
