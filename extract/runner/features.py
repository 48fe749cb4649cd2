"""Resolve a run's features (catalog + overrides), refuse what cannot run, prepare the store."""

from __future__ import annotations

import importlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from extract.catalog import FeatureSpec, apply_overrides, load_catalog
from extract.errors import ConfigError, ConfigMismatchError, ExtractError
from extract.faces.settings import FaceSettings
from extract.runner.options import RunOptions
from extract.store import FeatureStore

log = logging.getLogger(__name__)


@dataclass
class RunFeature:
    """One requested feature: its resolved spec, config, and the store outputs it writes."""

    spec: FeatureSpec
    config: dict[str, Any]  # resolved_config() + faces/sampling: the fingerprinted config
    outputs: dict[str, int]  # stored feature name → dim ("<name>" and "<name>.<extra>")
    availability: str  # what it will load, in words
    dtype: str = "float16"  # stored dtype (an extractor may ask for more: ``store_dtype``)
    labels: dict[str, list[str]] = field(default_factory=dict)  # output → its column names

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def modality(self) -> str:
        return self.spec.modality

    def output_config(self, output: str) -> dict[str, Any]:
        """The config stored with one output: extras add which output they are; outputs whose
        columns have names (class names, AU names, openSMILE descriptors) add ``labels``."""
        config = dict(self.config)
        if output != self.name:
            config["output"] = output[len(self.name) + 1:]
        if output in self.labels:
            config["labels"] = list(self.labels[output])
        return config


def import_plugins(modules: list[str]) -> None:
    """Import modules that register extra extractors or detectors."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"plugin module {module!r} cannot be imported: {exc}") from exc


def _raise(problems: list[str]) -> None:
    """One ConfigError naming every problem (a single problem stays on one line)."""
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
    faces = face_settings(options, problems)
    features = []
    for spec in resolve_specs(options, problems):
        avail = availability(spec)
        if not avail.ready:
            problems.append(f"feature {spec.name!r} is unavailable: {avail.reason}")
            continue
        try:
            extractor = create(spec, precision=options.resolved_precision)
            config = {**extractor.resolved_config(), **frame_config(spec, options, faces)}
            features.append(RunFeature(spec, config, extractor.outputs(), avail.weights,
                                       getattr(extractor, "store_dtype", "float16"),
                                       extractor.output_labels()))
        except ExtractError as exc:
            problems.append(str(exc))
    _raise(problems)
    return features


def face_settings(options: RunOptions, problems: list[str]) -> FaceSettings | None:
    """The run's face pipeline from ``--detector NAME[:KEY=VALUE,...]``, its option names and
    values checked (problems appended; None when the detector choice is refused)."""
    try:
        settings = FaceSettings.from_spec(options.detector)
    except ConfigError as exc:
        problems.append(str(exc))
        return None
    problem = settings.detector.check()
    if problem:
        problems.append(problem)
    return settings


def frame_config(spec: FeatureSpec, options: RunOptions,
                 faces: FaceSettings | None) -> dict[str, Any]:
    """What beyond the extractor shapes a feature's rows, for its fingerprint: for visual
    features the face pipeline of every input kind (``faces``) and the frame sampling; for
    audio features with windows centred on video frames (``rate: frames``) the sampling."""
    out: dict[str, Any] = {}
    if spec.modality == "visual" or spec.rate == "frames":
        try:
            frames = str(options.sampling)
        except ConfigError:  # already reported by options.problems()
            frames = options.sample
        out["sampling"] = {"frames": frames, "image_fps": float(options.image_fps)}
    if spec.modality == "visual" and faces is not None and spec.face_size:
        from extract.runner.faces import faces_config

        out["faces"] = faces_config(faces, spec.face_size, options.face_device)
    return json.loads(json.dumps(out))


def check_store(store: FeatureStore, features: list[RunFeature]) -> None:
    """Refuse (all at once, one line per feature naming what differs) features whose name
    already holds another config in the store; nothing is written then."""
    problems = []
    present = set(store.features())
    for feat in features:
        for output, dim in feat.outputs.items():
            if output not in present:
                continue
            try:
                store.ensure_feature(output, modality=feat.modality, dim=dim,
                                     extractor=feat.spec.extractor,
                                     config=feat.output_config(output), dtype=feat.dtype)
            except ConfigMismatchError as exc:
                problems.append(mismatch_line(store, feat, output, dim, exc))
                break  # one line per feature: its extras differ the same way
    if problems:
        raise ConfigMismatchError("\n".join(problems))


_ABSENT = object()


def _show(value: Any, width: int = 60) -> str:
    if value is _ABSENT:
        return "not recorded"
    text = json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def _leaves(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) for every differing leaf; a key missing on one side is one
    difference however much lies below it."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
            if a is _ABSENT or b is _ABSENT:
                out.append((f"{prefix}{key}", a, b))
            else:
                out += _leaves(a, b, f"{prefix}{key}.")
        return out
    return [] if old == new else [(prefix[:-1], old, new)]


def config_differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``"key: stored there, wanted now"`` per differing leaf, the face detector's first."""
    found = sorted(_leaves(stored, wanted), key=lambda d: ("detector" not in d[0], d[0]))
    return [f"{key} is {_show(a)} there, {_show(b)} now" for key, a, b in found]


def mismatch_line(store: FeatureStore, feat: RunFeature, output: str, dim: int,
                  exc: ConfigMismatchError) -> str:
    """One line: which feature, what differs (the first few leaves), what to do."""
    info = store.feature_info(output)
    stored = {"extractor": info.extractor, "dim": info.dim, "dtype": info.dtype, **info.config}
    wanted = {"extractor": feat.spec.extractor, "dim": dim, "dtype": feat.dtype,
              **json.loads(json.dumps(feat.output_config(output), default=str))}
    diffs = config_differences(stored, wanted)
    if not diffs:
        return str(exc)
    more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
    return (f"feature {output!r} in {store.path} was made another way: "
            f"{'; '.join(diffs[:3])}{more}. Nothing was changed; write it under another feature "
            "name (a copy of its features.yaml entry, see docs/faces.md) or into another store"
            f"{_same_detector_hint(info.config, wanted)}")


def _same_detector_hint(stored: dict[str, Any], wanted: dict[str, Any]) -> str:
    """", or add to it with --detector X" when the stored face detector differs from this run's."""
    from extract.faces.settings import DetectorChoice

    had = (stored.get("faces") or {}).get("video") or {}
    now = (wanted.get("faces") or {}).get("video") or {}
    if not had.get("detector") or (had.get("detector"), had.get("detector_options")) == (
            now.get("detector"), now.get("detector_options")):
        return ""
    try:
        default = DetectorChoice.resolve(had["detector"], {}).options
    except ExtractError:  # the detector it was made with needs options or is not registered
        default = {}
    given = {k: v for k, v in (had.get("detector_options") or {}).items()
             if default.get(k, _ABSENT) != v}
    try:
        spec = DetectorChoice.resolve(had["detector"], given).spec()
    except ExtractError:
        spec = had["detector"]
    return f", or add to it with the detector it was made with: --detector {spec}"


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
