"""Read-only overviews behind ``extract list / ls / inspect``: plain rows, no printing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np


def catalog_rows(catalog: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per catalog feature: name, modality, dim, rate, extractor, weights, availability."""
    from extract.catalog import load_catalog
    from extract.extractors.base import availability

    rows = []
    for name, spec in load_catalog(catalog).items():
        avail = availability(spec)
        rows.append({"name": name, "modality": spec.modality, "dim": spec.dim,
                     "rate": spec.rate, "extractor": spec.extractor,
                     "weights": spec.weights or "-", "extras": dict(spec.extras),
                     "available": avail.available, "reason": avail.reason,
                     "weights_found": avail.weights_found, "uses": avail.weights})
    return rows


def store_rows(path: str | Path) -> list[dict[str, Any]]:
    """One row per stored feature: counts of complete / incomplete videos, dim, fingerprint."""
    from extract.store import FeatureStore

    store = FeatureStore(path)
    rows = []
    for feat in store.features():
        info = store.feature_info(feat)
        complete = store.complete_set(feat)
        total = store.videos(feat, complete_only=False)
        rows.append({"feature": feat, "modality": info.modality, "dim": info.dim,
                     "dtype": info.dtype, "extractor": info.extractor,
                     "weights": info.config.get("weights"), "videos": len(complete),
                     "incomplete": len(total) - len(complete), "fingerprint": info.fingerprint})
    return rows


def inspect_feature(path: str | Path, feature: str) -> dict[str, Any]:
    """A feature's attributes and a per-video overview (frames, valid share, rate); ``labels``
    (its column names, when they have names), ``faces`` (how each input kind's face crops are
    made) and ``sampling`` are lifted out of its config."""
    from extract.io.exporter import feature_labels
    from extract.store import FeatureStore

    store = FeatureStore(path)
    info = store.feature_info(feature)
    attrs = store.feature_attrs(feature)
    rows = [r for r in store.table() if r["feature"] == feature]
    frames = [r["frames"] or 0 for r in rows if r["complete"]]
    return {"feature": feature, "modality": info.modality, "dim": info.dim, "dtype": info.dtype,
            "extractor": info.extractor, "fingerprint": info.fingerprint,
            "labels": feature_labels(info), "faces": info.config.get("faces"),
            "sampling": info.config.get("sampling"), "config": info.config,
            "versions": attrs.get("versions", {}), "created": attrs.get("created"),
            "provenance": info.provenance,
            "videos": sum(r["complete"] for r in rows),
            "incomplete": [r["video"] for r in rows if not r["complete"]],
            "frames_total": int(sum(frames)),
            "frames_min": int(min(frames)) if frames else 0,
            "frames_max": int(max(frames)) if frames else 0,
            "rates": dict(Counter(r["rate"] for r in rows if r["complete"]))}


def inspect_video(path: str | Path, feature: str, video: str) -> dict[str, Any]:
    """One video's array: shape, time span and spacing, mask statistics, value range, attrs."""
    from extract.store import FeatureStore

    fa = FeatureStore(path).read_video(feature, video)
    t, m, x = fa.timestamps, fa.mask, fa.data
    steps = np.diff(t) if len(t) > 1 else np.zeros(0)
    valid = x[m].astype(np.float32) if m.any() else np.zeros((0, x.shape[1]), np.float32)
    return {
        "feature": feature, "video": video, "shape": tuple(x.shape), "dtype": str(x.dtype),
        "time_first": float(t[0]) if len(t) else None,
        "time_last": float(t[-1]) if len(t) else None,
        "step_median": float(np.median(steps)) if len(steps) else None,
        "step_min": float(steps.min()) if len(steps) else None,
        "step_max": float(steps.max()) if len(steps) else None,
        "valid": int(m.sum()), "invalid": int((~m).sum()),
        "longest_gap": _longest_run(~m),
        "value_min": float(valid.min()) if valid.size else None,
        "value_max": float(valid.max()) if valid.size else None,
        "value_mean": float(valid.mean()) if valid.size else None,
        "attrs": fa.attrs,
    }


def _longest_run(flags: np.ndarray) -> int:
    """Length of the longest run of True in ``flags``."""
    best = run = 0
    for f in flags:
        run = run + 1 if f else 0
        best = max(best, run)
    return best
