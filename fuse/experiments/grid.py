"""Ablation grids: feature combinations × encoders × hyper-parameters × seeds (× folds).

A grid file (YAML) holds a base run config and the axes::

    base: va_lstm                 # a preset or config file, and/or a mapping of overrides
    overrides: {labels: {path: labels.csv, format: csv}, data: {stores: [features.zarr]}}
    visual: [[mae], [mae, ires100]]          # explicit combinations ...
    audio_from: {features: [hubert, egemaps], min: 0, max: 1}   # ... or all subsets
    encoders: [lstm, transformer]
    seeds: [0, 1, 2]
    params: {train.lr: [1.0e-4, 3.0e-4]}
    folds: 5                      # k folds, or loso (one per group); grouped by labels.group_by
    fold_holdout: test            # test: each fold held out as test, val from the others
    #                               (nested, the default); val: papers 002 / 004
    official_val_fold: true       # fold_holdout val: the last fold is the official val split
    ensemble_top: 3               # then ensemble the best run of the 3 best cells

Instead of the product of ``visual`` × ``audio`` × ``encoders`` × ``params``, ``cells`` lists
the cells one by one (each a mapping of ``visual``, ``audio``, ``encoder``, ``params``), e.g.
``[{audio: [egemaps_func], encoder: svm}, {audio: [egemaps], encoder: lstm}]``; seeds and folds
apply to every cell.

Every (cell, seed, fold) is one job (:mod:`fuse.experiments.jobs`): finished jobs are skipped on
a re-run, a failing one is recorded and the grid goes on. :mod:`fuse.experiments.results` ranks
the cells (folds and seeds of a cell together) and pools each cell's held-out predictions over
its folds (:mod:`fuse.experiments.pooled`).
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
from fuse.labels.splits import LOSO


@dataclass
class GridSpec:
    """The axes of a grid (see the module docstring)."""

    base: dict[str, Any] = field(default_factory=dict)  # merged run config layers
    visual: list[list[str]] = field(default_factory=lambda: [[]])  # visual combinations
    audio: list[list[str]] = field(default_factory=lambda: [[]])  # audio combinations
    encoders: list[str] = field(default_factory=list)  # [] = the base config's encoder
    seeds: list[int] = field(default_factory=lambda: [0])
    params: dict[str, list[Any]] = field(default_factory=dict)  # "section.key" → values
    cells: list[dict[str, Any]] = field(default_factory=list)  # explicit cells (instead of
    #                                    the product of visual, audio, encoders and params)
    folds: int | str = 0  # k-fold cross-validation, or loso (0 = the labels' own splits)
    fold_holdout: str = "test"  # test: nested (held-out fold = test); val: papers 002 / 004
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
             "seeds", "params", "cells", "folds", "fold_holdout", "official_val_fold", "metric",
             "ensemble_top"}
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
                    cells=[dict(c) if isinstance(c, dict) else {"bad": c}
                           for c in raw.get("cells") or []],
                    folds=_folds(raw.get("folds", 0)),
                    fold_holdout=str(raw.get("fold_holdout") or (
                        "val" if raw.get("official_val_fold") else "test")),
                    official_val_fold=bool(raw.get("official_val_fold", False)),
                    metric=str(raw.get("metric", "score")),
                    ensemble_top=int(raw.get("ensemble_top", 0)))
    problems += check_grid(spec)
    if problems:
        raise ConfigError(problems)
    return spec


CELL_KEYS = ("visual", "audio", "encoder", "params")


def _folds(value: Any) -> int | str:
    """``folds``: a number, or loso (kept as given when it is neither; check_grid says so)."""
    if isinstance(value, str) and value.strip().lower() == LOSO:
        return LOSO
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value)


def check_grid(spec: GridSpec) -> list[str]:
    problems = []
    if spec.cells:
        for i, cell in enumerate(spec.cells):
            if bad := sorted(set(cell) - set(CELL_KEYS)):
                problems.append(f"cells[{i}]: unknown keys {bad}; known: {list(CELL_KEYS)}")
            elif not (cell.get("visual") or cell.get("audio")):
                problems.append(f"cells[{i}]: no feature (give visual and/or audio)")
        if spec.encoders or spec.params or spec.visual != [[]] or spec.audio != [[]]:
            problems.append("give cells, or the axes visual / audio / encoders / params; not "
                            "both")
    elif not any(v + a for v in spec.visual for a in spec.audio):
        problems.append("the grid has no feature combination (give visual and/or audio)")
    loso = spec.folds == LOSO
    if not loso and (not isinstance(spec.folds, int) or spec.folds == 1 or spec.folds < 0):
        problems.append(f"folds must be 0, at least 2, or loso; got {spec.folds!r}")
    if spec.fold_holdout not in ("test", "val"):
        problems.append(f"fold_holdout must be test or val, got {spec.fold_holdout!r}")
    if spec.ensemble_top and spec.folds:
        problems.append("ensemble_top needs the labels' own val split (not folds)")
    if spec.official_val_fold and (loso or not isinstance(spec.folds, int) or spec.folds < 2):
        problems.append("official_val_fold needs folds >= 2")
    if spec.official_val_fold and spec.fold_holdout != "val":
        problems.append("official_val_fold makes the labels' val split a validation fold: "
                        "fold_holdout must be val")
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


def cells(spec: GridSpec) -> list[dict[str, Any]]:
    """The grid's cells in a stable order: ``spec.cells``, or the product of the axes."""
    if spec.cells:
        return [{"visual": list(c.get("visual") or []), "audio": list(c.get("audio") or []),
                 "encoder": c.get("encoder"), "params": dict(c.get("params") or {})}
                for c in spec.cells]
    keys = sorted(spec.params)
    return [{"visual": v, "audio": a, "encoder": e, "params": dict(zip(keys, vals, strict=True))}
            for v, a, e, vals in itertools.product(
                spec.visual, spec.audio, spec.encoders or [None],
                itertools.product(*(spec.params[k] for k in keys)))
            if v or a]


def expand(spec: GridSpec, out: str | Path, fold_names: list[str] | None = None) -> list[Job]:
    """One job per (cell, seed, fold), in a stable order; each job's folder is named after it.

    ``fold_names`` names the folds (loso: the held-out groups); default "0" … "k-1"."""
    out = Path(out)
    if spec.folds and fold_names is None:
        if spec.folds == LOSO:
            raise ValueError("folds: loso needs the fold names (the groups); see resolve_folds")
        fold_names = [str(i) for i in range(int(spec.folds))]
    folds = list(enumerate(fold_names)) if spec.folds else [(None, None)]
    jobs = []
    for cell, seed, (fold, fold_name) in itertools.product(cells(spec), spec.seeds, folds):
        visual, audio, params = cell["visual"], cell["audio"], cell["params"]
        config = deep_merge(spec.base, {"data": {"visual": visual, "audio": audio},
                                        "train": {"seed": seed}})
        if cell["encoder"]:
            config = _set(config, "model.encoder.name", cell["encoder"])
        for key, value in params.items():
            config = _set(config, key, value)
        if fold is not None:
            config = deep_merge(config, {"labels": {
                "folds": spec.folds, "fold": fold, "fold_holdout": spec.fold_holdout,
                "make_splits": not spec.official_val_fold,
                "official_val_fold": spec.official_val_fold}})
        meta = {"visual": visual, "audio": audio, "encoder": cell["encoder"] or
                config.get("model", {}).get("encoder", {}).get("name", "lstm"),
                "params": params, "seed": seed, "fold": fold, "fold_name": fold_name,
                "fold_holdout": spec.fold_holdout if fold is not None else None}
        parts = [f"v-{_slug(visual)}", f"a-{_slug(audio)}", f"enc-{_slug(meta['encoder'])}"]
        parts += [f"{k.split('.')[-1]}-{_slug(v)}" for k, v in params.items()]
        parts += [f"seed-{seed}"] + ([f"fold-{fold}"] if fold is not None else [])
        name = "__".join(parts)
        jobs.append(Job(name, {"config": config, "meta": meta, "metric": spec.metric},
                        out / "jobs" / name))
    return jobs


def resolve_folds(spec: GridSpec) -> list[str] | None:
    """The fold names of a grid with folds: the groups for loso (read from the base config's
    labels), "0" … "k-1" for k folds; None without folds."""
    if not spec.folds:
        return None
    if spec.folds != LOSO:
        return [str(i) for i in range(int(spec.folds))]
    from fuse.config import build_config
    from fuse.errors import ConfigError
    from fuse.labels.base import LABEL_FORMATS, get_adapter
    from fuse.labels.splits import fold_names

    cfg, problems = build_config(deep_merge(spec.base, {"labels": {"folds": LOSO}}))
    if problems or cfg.labels.format not in LABEL_FORMATS:
        raise ConfigError(problems or [f"labels.format: {cfg.labels.format!r} is not a label "
                                       "format; folds: loso needs the labels to find the "
                                       "groups"])
    adapter = get_adapter(cfg.labels.format)
    if found := adapter.check(cfg.labels):
        raise ConfigError(found)
    names = fold_names(adapter.load(cfg.labels), cfg.labels)
    if len(names) < 2:
        raise ConfigError(f"folds: loso found {len(names)} group(s) (labels.group_by="
                          f"{cfg.labels.group_by!r}); leaving one out needs two or more")
    return names


_CACHE = None  # this worker process's staged videos, shared by the jobs it runs


def grid_job(payload: dict[str, Any], out: Path) -> dict[str, Any]:
    """Train one cell (resuming its own last checkpoint if a killed grid left one); jobs in one
    worker process share its stage cache, so features are read and aligned once."""
    from fuse.api import train
    from fuse.data.cache import StageCache

    global _CACHE
    if _CACHE is None:
        _CACHE = StageCache()
    run_dir = out / "run"
    config = deep_merge(payload["config"], {"output": {"dir": str(run_dir)}})
    result = train(config, resume=(run_dir / "last.pt").is_file(), cache=_CACHE)
    return {"meta": payload["meta"], "metrics": result.metrics, "best_epoch": result.best_epoch,
            "run": str(result.out_dir)}
