"""Run plots (matplotlib, Agg backend): learning curves, per-target bars, confusion matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fuse.outputs.rundir import EpochLog


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curves(log_csv: Path, out: Path) -> None:
    """Train loss and validation score per epoch, the best epoch marked."""
    rows = EpochLog.read(log_csv)
    if not rows:
        return
    plt = _pyplot()
    epoch = [int(r["epoch"]) for r in rows]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epoch, [float(r["train_loss"]) for r in rows], marker=".")
    ax_loss.set(title="train loss", xlabel="epoch")
    ax_val.plot(epoch, [float(r["val_score"]) for r in rows], marker=".", color="tab:green")
    best = [e for e, r in zip(epoch, rows, strict=True) if r["best"] == "1"]
    if best:
        ax_val.axvline(best[-1], color="grey", linestyle=":", label=f"best (epoch {best[-1]})")
        ax_val.legend()
    ax_val.set(title="validation score", xlabel="epoch")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def per_target_bars(scores: dict[str, float], out: Path) -> None:
    """One bar per ``"<metric>/<target>"`` entry (per class F1, per emotion Pearson, …)."""
    items = [(k.split("/", 1), v) for k, v in scores.items() if "/" in k and not
             k.startswith("raw/")]
    if not items:
        return
    plt = _pyplot()
    names = [name for (_, name), _ in items]
    values = [0.0 if np.isnan(v) else v for _, v in items]
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(items) + 2), 3.5))
    ax.bar(names, values, color="tab:blue")
    ax.axhline(scores.get("score", np.nan), color="grey", linestyle=":", label="score")
    ax.set(ylabel=items[0][0][0], title="validation, per target")
    ax.tick_params(axis="x", rotation=45)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def confusion_plot(pred: np.ndarray, true: np.ndarray, classes: list[str], out: Path) -> None:
    """Row-normalised confusion matrix (rows: true class)."""
    from fuse.tasks.metrics import confusion_matrix

    plt = _pyplot()
    cm = confusion_matrix(pred, true, len(classes)).astype(float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1 + 0.7 * len(classes), 1 + 0.6 * len(classes)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title="validation confusion")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
