"""Resolve a run's features (catalog + overrides), refuse what cannot run, prepare the store."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any

from extract.catalog import FeatureSpec, apply_overrides, load_catalog
from extract.errors import ConfigError, ConfigMismatchError, ExtractError
from extract.runner.options import RunOptions
from extract.store import FeatureStore

log = logging.getLogger(__name__)


@dataclass
class RunFeature:
    """One requested feature: its resolved spec, config, and the store outputs it writes."""

    spec: FeatureSpec
    config: dict[str, Any]  # extractor.resolved_config(): the fingerprinted config
    outputs: dict[str, int]  # stored feature name → dim ("<name>" and "<name>.<extra>")
    availability: str  # what it will load, in words
    dtype: str = "float16"  # stored dtype (an extractor may ask for more: ``store_dtype``)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def modality(self) -> str:
        return self.spec.modality

    def output_config(self, output: str) -> dict[str, Any]:
        """The config stored with one output (extras add which output they are)."""
        if output == self.name:
            return self.config
        return {**self.config, "output": output[len(self.name) + 1:]}


def import_plugins(modules: list[str]) -> None:
    """Import modules that register extra extractors or detectors."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"plugin module {module!r} cannot be imported: {exc}") from exc


def _raise(problems: list[str]) -> None:
    if len(problems) == 1:
        raise ConfigError(f"cannot run: {problems[0]}")
    if problems:
        raise ConfigError("cannot run:\n  - " + "\n  - ".join(problems))


def resolve_specs(options: RunOptions, problems: list[str] | None = None) -> list[FeatureSpec]:
    """The requested specs with ``--weights`` / ``--set`` applied.

    Problems are appended to ``problems`` when given, else raised (all at once).
    """
    raise_now = problems is None
    problems = [] if problems is None else problems
    catalog = load_catalog(options.catalog)
    specs = []
    for name in options.features:
        if name not in catalog:
            problems.append(f"unknown feature {name!r}; known: {', '.join(sorted(catalog))}")
            continue
        try:
            spec = apply_overrides(catalog[name], options.weights.get(name),
                                   options.sets.get(name))
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        if name in options.batch_sizes:
            problem = set_batch_size(spec, options.batch_sizes[name])
            if problem:
                problems.append(problem)
                continue
        specs.append(spec)
    if raise_now:
        _raise(problems)
    return specs


def set_batch_size(spec: FeatureSpec, size: int) -> str | None:
    """Give ``spec`` its own batch size (``options.batch_size``, left out of the fingerprint);
    a problem when its extractor has none."""
    import extract.extractors  # noqa: F401  (fills the registry)
    from extract.extractors.base import EXTRACTORS

    cls = EXTRACTORS.get(spec.extractor) if spec.extractor in EXTRACTORS else None
    if cls is not None and not cls.batched:
        return (f"--batch-size {spec.name}={size}: extractor {spec.extractor!r} computes each "
                "input in one pass and has no batch size")
    spec.options["batch_size"] = size
    return None


def resolve_features(options: RunOptions) -> list[RunFeature]:
    """Validate the options, resolve the specs, check availability (modules, weights) and
    build each extractor's config.

    Raises one :class:`ConfigError` naming every problem: bad options, unknown or unavailable
    features, bad feature options. The precision is resolved here, in the parent (bf16 with
    ``--gpus``, else fp32, unless ``--precision`` says otherwise), so that it enters each
    feature's config and fingerprint before the store changes.
    """
    from extract.extractors.base import availability, create

    problems = options.problems()
    features = []
    for spec in resolve_specs(options, problems):
        avail = availability(spec)
        if not avail.ready:
            problems.append(f"feature {spec.name!r} is unavailable: {avail.reason}")
            continue
        try:
            extractor = create(spec, precision=options.resolved_precision)
            features.append(RunFeature(spec, extractor.resolved_config(), extractor.outputs(),
                                       avail.weights, getattr(extractor, "store_dtype",
                                                              "float16")))
        except ExtractError as exc:
            problems.append(str(exc))
    _raise(problems)
    return features


def check_store(store: FeatureStore, features: list[RunFeature]) -> None:
    """Refuse (all at once) outputs whose name already holds another config in the store."""
    problems = []
    for feat in features:
        for output, dim in feat.outputs.items():
            if not store.has_feature(output):
                continue
            try:
                store.ensure_feature(output, modality=feat.modality, dim=dim,
                                     extractor=feat.spec.extractor,
                                     config=feat.output_config(output), dtype=feat.dtype)
            except ConfigMismatchError as exc:
                problems.append(str(exc))
    if problems:
        raise ConfigMismatchError("\n".join(problems))


def prepare_store(store: FeatureStore, features: list[RunFeature], run_id: str) -> dict[str, str]:
    """Create (or check) every output's group up front; returns output → fingerprint."""
    check_store(store, features)
    fingerprints = {}
    for feat in features:
        for output, dim in feat.outputs.items():
            info = store.ensure_feature(output, modality=feat.modality, dim=dim,
                                        extractor=feat.spec.extractor,
                                        config=feat.output_config(output), dtype=feat.dtype,
                                        provenance={"first_run": run_id})
            fingerprints[output] = info.fingerprint
    return fingerprints
