"""Confusion matrices as files: ``<name>.csv`` (counts; rows true class, columns predicted)
and ``<name>.png`` (row-normalised, with the counts), for a run's val / test split and for a
grid's pooled predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fuse.tasks.metrics import confusion_matrix

FOLDER = "confusion"  # inside a run folder


def write_confusion(root: Path, split: str, decided: list[np.ndarray],
                    targets: list[tuple[np.ndarray, np.ndarray]], classes: list[str], *,
                    plot: bool = True) -> list[Path]:
    """A run's ``confusion/<split>.csv`` (and ``.png``) from decided classes per video (N, 1)
    and labels ``(y, valid)`` per video."""
    pred = np.concatenate([d[:, 0] for d in decided]).astype(int)
    y = np.concatenate([t[0][:, 0] for t in targets]).astype(int)
    ok = np.concatenate([t[1][:, 0] for t in targets])
    return confusion_files(root / FOLDER, split, pred[ok], y[ok], classes,
                           f"{split} confusion", plot=plot)


def confusion_files(folder: Path, name: str, pred: np.ndarray, true: np.ndarray,
                    classes: list[str], title: str, *, plot: bool = True) -> list[Path]:
    """``<folder>/<name>.csv`` and, with ``plot``, ``<folder>/<name>.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    cm = confusion_matrix(pred, true, len(classes))
    path = folder / f"{name}.csv"
    path.write_text(to_csv(cm, classes))
    files = [path]
    if plot:
        files.append(plot_confusion(cm, classes, folder / f"{name}.png", title))
    return files


def to_csv(cm: np.ndarray, classes: list[str]) -> str:
    """``true \\ predicted,<class>...`` then one row of counts per true class."""
    lines = [",".join(["true \\ predicted", *classes])]
    lines += [",".join([c, *map(str, row)]) for c, row in zip(classes, cm.tolist(), strict=True)]
    return "\n".join(lines) + "\n"


def read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """The classes and counts of a file written by :func:`to_csv`."""
    rows = [line.split(",") for line in path.read_text().splitlines() if line]
    return rows[0][1:], np.array([[int(v) for v in r[1:]] for r in rows[1:]], np.int64)


def as_text(cm: np.ndarray, classes: list[str]) -> str:
    """An aligned plain-text table of counts (rows true, columns predicted)."""
    width = max(6, *(len(c) for c in classes)) + 1
    head = "true \\ pred".ljust(width + 2) + "".join(c.rjust(width) for c in classes)
    rows = [c.ljust(width + 2) + "".join(str(v).rjust(width) for v in row)
            for c, row in zip(classes, cm.tolist(), strict=True)]
    return "\n".join([head, *rows])


def plot_confusion(cm: np.ndarray, classes: list[str], out: Path, title: str) -> Path:
    """Row-normalised colours, counts and row shares written in the cells."""
    from fuse.outputs.plots import _pyplot

    plt = _pyplot()
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.5 + 0.8 * n, 1.2 + 0.7 * n))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{cm[i, j]}\n{norm[i, j]:.2f}", ha="center", va="center",
                    fontsize=7, color="white" if norm[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
