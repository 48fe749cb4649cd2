"""Ablation grids: feature combinations × encoders × hyper-parameters × seeds (× folds).

A grid file (YAML) holds a base run config and the axes::

    base: va_lstm                 # a preset or config file, and/or a mapping of overrides
    overrides: {labels: {path: labels.csv, format: csv}, data: {stores: [features.zarr]}}
    visual: [[mae], [mae, ires100]]          # explicit combinations ...
    audio_from: {features: [hubert, egemaps], min: 0, max: 1}   # ... or all subsets
    encoders: [lstm, transformer]
    seeds: [0, 1, 2]
    params: {train.lr: [1.0e-4, 3.0e-4]}
    folds: 5                      # k-fold cross-validation grouped by labels.group_by
    official_val_fold: true       # the last fold is the official validation split (002/004)
    ensemble_top: 3               # then ensemble the best run of the 3 best cells

Every cell is one job (:mod:`fuse.experiments.jobs`): finished jobs are skipped on a re-run, a
failing one is recorded and the grid goes on. :mod:`fuse.experiments.results` ranks them.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fuse.config import deep_merge, load_yaml
from fuse.errors import ConfigError
from fuse.experiments.jobs import Job


@dataclass
class GridSpec:
    """The axes of a grid (see the module docstring)."""

    base: dict[str, Any] = field(default_factory=dict)  # merged run config layers
    visual: list[list[str]] = field(default_factory=lambda: [[]])  # visual combinations
    audio: list[list[str]] = field(default_factory=lambda: [[]])  # audio combinations
    encoders: list[str] = field(default_factory=list)  # [] = the base config's encoder
    seeds: list[int] = field(default_factory=lambda: [0])
    params: dict[str, list[Any]] = field(default_factory=dict)  # "section.key" → values
    folds: int = 0  # k-fold cross-validation (0 = the labels' own splits)
    official_val_fold: bool = False  # with folds: the last fold is the official val split
    metric: str = "score"  # the validation metric that ranks the cells
    ensemble_top: int = 0  # ensemble the best run of the k best cells (0 = no ensemble)


def subsets(features: list[str], min_size: int = 1, max_size: int | None = None) -> list[list[str]]:
    """All combinations of ``features`` with ``min_size`` ≤ size ≤ ``max_size``, small first."""
    top = len(features) if max_size is None else min(max_size, len(features))
    return [list(c) for k in range(min_size, top + 1) for c in itertools.combinations(features, k)]


def _combos(raw: dict[str, Any], key: str) -> list[list[str]]:
    if f"{key}_from" in raw:
        spec = raw[f"{key}_from"]
        return subsets(list(spec["features"]), int(spec.get("min", 1)), spec.get("max"))
    combos = raw.get(key, [[]])
    return [[c] if isinstance(c, str) else list(c) for c in combos]


def load_grid(path_or_dict: str | Path | dict[str, Any]) -> GridSpec:
    """Read a grid file (or mapping) into a :class:`GridSpec`; every problem reported at once."""
    import yaml

    raw = (dict(path_or_dict) if isinstance(path_or_dict, dict)
           else yaml.safe_load(Path(path_or_dict).read_text()) or {})
    known = {"base", "overrides", "visual", "visual_from", "audio", "audio_from", "encoders",
             "seeds", "params", "folds", "official_val_fold", "metric", "ensemble_top"}
    problems = [f"unknown grid key {k!r}; known: {sorted(known)}" for k in raw if k not in known]
    base: dict[str, Any] = {}
    for layer in raw.get("base") if isinstance(raw.get("base"), list) else [raw.get("base")]:
        if isinstance(layer, str):
            base = deep_merge(base, load_yaml(layer))
        elif isinstance(layer, dict):
            base = deep_merge(base, layer)
    base = deep_merge(base, raw.get("overrides") or {})
    spec = GridSpec(base=base, visual=_combos(raw, "visual"), audio=_combos(raw, "audio"),
                    encoders=list(raw.get("encoders") or []),
                    seeds=[int(s) for s in raw.get("seeds", [0])],
                    params={k: list(v) for k, v in (raw.get("params") or {}).items()},
                    folds=int(raw.get("folds", 0)),
                    official_val_fold=bool(raw.get("official_val_fold", False)),
                    metric=str(raw.get("metric", "score")),
                    ensemble_top=int(raw.get("ensemble_top", 0)))
    problems += check_grid(spec)
    if problems:
        raise ConfigError(problems)
    return spec


def check_grid(spec: GridSpec) -> list[str]:
    problems = []
    if not any(v + a for v in spec.visual for a in spec.audio):
        problems.append("the grid has no feature combination (give visual and/or audio)")
    if spec.folds == 1 or spec.folds < 0:
        problems.append(f"folds must be 0 or at least 2, got {spec.folds}")
    if spec.ensemble_top and spec.folds:
        problems.append("ensemble_top needs the labels' own val split (not folds)")
    if spec.official_val_fold and spec.folds < 2:
        problems.append("official_val_fold needs folds >= 2")
    for key, values in spec.params.items():
        if "." not in key or not values:
            problems.append(f"params.{key}: use 'section.key: [values...]'")
    return problems


def _set(config: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    keys = dotted.split(".")
    update: dict[str, Any] = {keys[-1]: value}
    for k in reversed(keys[:-1]):
        update = {k: update}
    return deep_merge(config, update)


def _slug(value: Any) -> str:
    text = "+".join(map(str, value)) if isinstance(value, list) else str(value)
    return re.sub(r"[^A-Za-z0-9.+_-]", "_", text) or "none"


def expand(spec: GridSpec, out: str | Path) -> list[Job]:
    """One job per cell, in a stable order; each job's folder is named after its cell."""
    out = Path(out)
    folds = list(range(spec.folds)) if spec.folds else [None]
    encoders = spec.encoders or [None]
    keys = sorted(spec.params)
    jobs = []
    for visual, audio, encoder, values, seed, fold in itertools.product(
            spec.visual, spec.audio, encoders, itertools.product(*(spec.params[k] for k in keys)),
            spec.seeds, folds):
        if not visual and not audio:
            continue
        config = deep_merge(spec.base, {"data": {"visual": visual, "audio": audio},
                                        "train": {"seed": seed}})
        if encoder:
            config = _set(config, "model.encoder.name", encoder)
        params = dict(zip(keys, values, strict=True))
        for key, value in params.items():
            config = _set(config, key, value)
        if fold is not None:
            config = deep_merge(config, {"labels": {
                "folds": spec.folds, "fold": fold, "make_splits": not spec.official_val_fold,
                "official_val_fold": spec.official_val_fold}})
        meta = {"visual": visual, "audio": audio, "encoder": encoder or
                config.get("model", {}).get("encoder", {}).get("name", "lstm"),
                "params": params, "seed": seed, "fold": fold}
        parts = [f"v-{_slug(visual)}", f"a-{_slug(audio)}", f"enc-{_slug(meta['encoder'])}"]
        parts += [f"{k.split('.')[-1]}-{_slug(v)}" for k, v in params.items()]
        parts += [f"seed-{seed}"] + ([f"fold-{fold}"] if fold is not None else [])
        name = "__".join(parts)
        jobs.append(Job(name, {"config": config, "meta": meta, "metric": spec.metric},
                        out / "jobs" / name))
    return jobs


def grid_job(payload: dict[str, Any], out: Path) -> dict[str, Any]:
    """Train one cell (resuming its own last checkpoint if a killed grid left one)."""
    from fuse.api import train

    run_dir = out / "run"
    config = deep_merge(payload["config"], {"output": {"dir": str(run_dir)}})
    result = train(config, resume=(run_dir / "last.pt").is_file())
    return {"meta": payload["meta"], "metrics": result.metrics, "best_epoch": result.best_epoch,
            "run": str(result.out_dir)}
