"""Everything that shapes a face crop, as plain values: the detector with its resolved options,
the face selection rule, the alignment and the crop size.

The runner records :meth:`FaceSettings.describe` in every visual feature's config (and so in
its fingerprint), and builds its face pipeline from the same object, so what is recorded is
what ran.

>>> choice = DetectorChoice.parse("mediapipe_facemesh:model=short", ["threshold=0.6"])
>>> choice.options["model"], choice.options["threshold"], choice.options["fallback"]
('short', 0.6, True)
>>> choice.spec()
'mediapipe_facemesh:model=short,threshold=0.6'
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from extract.catalog import parse_value  # YAML scalars and lists, else the text
from extract.errors import ConfigError, ExtractError, RegistryError
from extract.faces.detectors import DEFAULT_DETECTOR, DETECTORS, FaceDetector

#: Name of the alignment template (see :mod:`extract.faces.align`).
TEMPLATE = "arcface_112"


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """``text`` split at ``sep`` outside brackets and quotes (``a=1,b=[2,3]`` → 2 parts)."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def parse_pairs(items: Iterable[str], what: str) -> dict[str, Any]:
    """``["k=v", …]`` → ``{k: parsed v}``; a key given twice with two values is refused."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not key.isidentifier():
            raise ConfigError(f"{what} {item!r}: expected KEY=VALUE")
        value = parse_value(raw.strip())
        if key in out and out[key] != value:
            raise ConfigError(f"{what}: option {key!r} is given twice ({out[key]!r} and "
                              f"{value!r}); give it once")
        out[key] = value
    return out


def _coerce(value: Any, default: Any) -> Any:
    """``value`` in the type of the option's ``default`` where that is lossless (1 → 1.0 for a
    float option, 68 → "68" for a text option), so equal settings fingerprint equally."""
    if default is inspect.Parameter.empty or default is None or value is None:
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        return value
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if isinstance(default, str) and isinstance(value, int):
        return str(value)
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    return value


def _format(value: Any) -> str:
    """A value as command-line text that :func:`parse_value` reads back unchanged."""
    if isinstance(value, str) and "," not in value and parse_value(value) == value:
        return value
    return json.dumps(value)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def detector_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The options of detector ``name`` (its constructor's keyword parameters)."""
    cls = DETECTORS.get(name)
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # drop self
    return {p.name: p for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def join_detector(detector: str | None, options: Iterable[str]) -> str | None:
    """``--detector NAME[:K=V,...]`` plus ``--detector-option K=V`` items as one
    ``NAME:K=V,...`` text (checked by :meth:`DetectorChoice.parse` later)."""
    options = [o.strip() for o in options if o.strip()]
    if not options:
        return detector
    name, _, rest = (detector or "").partition(":")
    return f"{name.strip() or DEFAULT_DETECTOR}:{','.join([*split_top_level(rest), *options])}"


@dataclass(frozen=True)
class DetectorChoice:
    """A registered face detector and every one of its options (defaults filled in)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    given: tuple[str, ...] = ()  # the option names the user set (for :meth:`spec`)

    @classmethod
    def parse(cls, text: str | None, extra: Iterable[str] = ()) -> DetectorChoice:
        """``NAME[:KEY=VALUE,...]`` (None: the default detector) plus ``KEY=VALUE`` items.

        Raises :class:`ConfigError` (one line) for an unknown detector, an unknown or missing
        option, or a key given twice with two values. Values are not checked here: see
        :meth:`check`.
        """
        text = (text or "").strip()
        name, _, rest = text.partition(":")
        name = name.strip() or DEFAULT_DETECTOR
        given = parse_pairs([*split_top_level(rest), *extra], f"--detector {name}")
        return cls.resolve(name, given)

    @classmethod
    def resolve(cls, name: str, given: dict[str, Any]) -> DetectorChoice:
        """The choice of detector ``name`` with options ``given`` plus every default."""
        try:
            params = detector_parameters(name)
        except RegistryError as exc:
            raise ConfigError(f"unknown face detector {name!r}; known: "
                              f"{', '.join(sorted(DETECTORS))}") from exc
        unknown = sorted(set(given) - set(params))
        if unknown:
            raise ConfigError(f"face detector {name!r} has no option "
                              f"{', '.join(map(repr, unknown))}; its options: "
                              f"{', '.join(params) or 'none'}")
        options = {}
        for key, param in params.items():
            if key in given:
                options[key] = _coerce(given[key], param.default)
            elif param.default is inspect.Parameter.empty:
                raise ConfigError(f"face detector {name!r} needs option {key!r} "
                                  f"(--detector-option {key}=VALUE)")
            else:
                options[key] = param.default
        return cls(name, _jsonable(options), tuple(k for k in params if k in given))

    def spec(self, every_option: bool = False) -> str:
        """``NAME[:KEY=VALUE,...]`` with the options the user set (parses back to ``self``), or
        with every option (``every_option``)."""
        keys = self.options if every_option else self.given
        pairs = [f"{k}={_format(self.options[k])}" for k in keys]
        return self.name + (":" + ",".join(pairs) if pairs else "")

    def model_files(self) -> dict[str, str]:
        """Option → sha256 of the file it names, for options ending in ``_path`` that name an
        existing file (a user-supplied model: swapping the file changes the fingerprint)."""
        from pathlib import Path

        from extract.extractors.base import weights_sha256

        return {key: weights_sha256(Path(value)) for key, value in self.options.items()
                if key.endswith("_path") and isinstance(value, str) and Path(value).is_file()}

    def create(self) -> FaceDetector:
        """The detector instance (raises UnavailableError when it cannot run here)."""
        from extract.faces.detectors import create_detector

        return create_detector(self.name, **self.options)

    def check(self) -> str | None:
        """Why these option values are refused (None when they are fine, or when the detector
        cannot run here: that is reported where a video needs it)."""
        ok, _ = DETECTORS.get(self.name).availability()
        if not ok:
            return None
        try:
            detector = self.create()
        except (ExtractError, ValueError, TypeError) as exc:
            return f"face detector {self.name!r}: {exc}"
        detector.close()
        return None


@dataclass(frozen=True)
class FaceSettings:
    """The face pipeline of video inputs: detector, selection, alignment (crop size apart)."""

    detector: DetectorChoice
    select: str = "largest"  # several faces in a frame: the largest box (or the top "score")
    min_score: float | None = None  # drop faces below this score (None: the detector's own)
    margin: float = 0.0  # context around the ArcFace template (see extract.faces.align)
    detect_max_side: int | None = None  # detect on frames downscaled to this longer side

    @classmethod
    def from_spec(cls, text: str | None, extra: Iterable[str] = ()) -> FaceSettings:
        """Settings with the detector ``NAME[:KEY=VALUE,...]`` (:meth:`DetectorChoice.parse`)."""
        return cls(DetectorChoice.parse(text, extra))

    def describe(self, size: int) -> dict[str, Any]:
        """The fingerprinted description of how a ``size`` crop of a video frame is made
        (with the sha256 of model files given as options, e.g. an ONNX ``model_path``)."""
        out = {"step": "detect", "detector": self.detector.name,
               "detector_options": dict(self.detector.options), "select": self.select,
               "min_score": self.min_score, "detect_max_side": self.detect_max_side,
               "alignment": {"template": TEMPLATE, "points": 5, "margin": self.margin},
               "crop_size": int(size)}
        files = self.detector.model_files()
        if files:
            out["detector_files_sha256"] = files
        return out

    def pipeline(self, sizes: Iterable[int]) -> Any:
        """A :class:`~extract.faces.pipeline.FacePipeline` built from exactly these settings."""
        from extract.faces.pipeline import FacePipeline

        return FacePipeline(self.detector.create(), sizes=tuple(sizes), min_score=self.min_score,
                            select=self.select, margin=self.margin,
                            detect_max_side=self.detect_max_side)
