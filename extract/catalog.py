"""``features.yaml``: the named features, validated as a whole, with command-line overrides."""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from extract.errors import ConfigError

MODALITIES = ("visual", "audio")
RATE_WORDS = ("frames", "clip")  # one row per sampled video frame; one row per clip
CATALOG_ENV = "EXTRACT_FEATURES"
WEIGHTS_DIR_ENV = "EXTRACT_WEIGHTS_DIR"


@dataclass
class FeatureSpec:
    """One named feature as ``features.yaml`` declares it (after overrides)."""

    name: str
    modality: str  # "visual" | "audio"
    extractor: str  # registered extractor name
    dim: int  # D of the stored (T, D) arrays
    weights: str | None = None  # HF id, local path, "package:<name>", or None
    input: dict[str, Any] = field(default_factory=dict)  # face_size | sample_rate/window/hop
    rate: str | float = "frames"  # "frames", "clip" (one row per clip) or rows per second
    options: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, int] = field(default_factory=dict)  # extra outputs → dims
    paper: str = ""

    @property
    def face_size(self) -> int | None:
        size = self.input.get("face_size")
        return int(size) if size else None

    @property
    def sample_rate(self) -> int:
        return int(self.input.get("sample_rate", 16000))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_catalog_path() -> Path:
    """``$EXTRACT_FEATURES``, else ``./features.yaml``, else the one beside the package."""
    if os.environ.get(CATALOG_ENV):
        return Path(os.environ[CATALOG_ENV])
    cwd = Path.cwd() / "features.yaml"
    if cwd.is_file():
        return cwd
    return Path(__file__).resolve().parents[1] / "features.yaml"


def load_catalog(path: str | Path | None = None) -> dict[str, FeatureSpec]:
    """Read and validate a catalog; every problem is reported at once."""
    path = Path(path) if path else default_catalog_path()
    if not path.is_file():
        raise ConfigError(f"feature catalog {path} not found (set ${CATALOG_ENV} or pass "
                          "--catalog)")
    raw = read_yaml(path) or {}
    entries = raw.get("features") if isinstance(raw, dict) else None
    if not isinstance(entries, dict):
        raise ConfigError(f"{path}: expected a top-level 'features:' mapping")
    specs, problems = {}, []
    for name, entry in entries.items():
        try:
            specs[name] = parse_spec(name, entry)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(f"{path} has {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))
    return specs


def yaml_problem(path: str | Path, exc: Exception) -> str:
    """One line for a YAML file that does not parse: ``FILE:LINE:COLUMN: what is wrong``."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    text = f"{context}, {problem}" if context else problem
    return f"{where}: invalid YAML: {' '.join(str(text).split())}"


def read_yaml(path: str | Path) -> Any:
    """A YAML file's content (safe loader); a file that does not parse or is not text raises
    :class:`ConfigError` naming the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_problem(path, exc)) from None


def parse_spec(name: str, entry: Any) -> FeatureSpec:
    """Validate one catalog entry."""
    if not isinstance(entry, dict):
        raise ConfigError(f"feature {name!r}: expected a mapping, got {type(entry).__name__}")
    missing = [k for k in ("modality", "extractor", "dim") if k not in entry]
    if missing:
        raise ConfigError(f"feature {name!r}: missing {', '.join(missing)}")
    known = set(FeatureSpec.__dataclass_fields__) - {"name"}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ConfigError(f"feature {name!r}: unknown keys {unknown}; known: {sorted(known)}")
    if entry["modality"] not in MODALITIES:
        raise ConfigError(f"feature {name!r}: modality {entry['modality']!r} is not one of "
                          f"{MODALITIES}")
    if not _positive_int(entry["dim"]):
        raise ConfigError(f"feature {name!r}: dim must be a positive integer, got {entry['dim']!r}")
    for key in ("input", "options", "extras"):
        if not isinstance(entry.get(key, {}), dict):
            raise ConfigError(f"feature {name!r}: {key} must be a mapping, got "
                              f"{entry[key]!r}")
    bad_extras = {k: d for k, d in entry.get("extras", {}).items() if not _positive_int(d)}
    if bad_extras:
        raise ConfigError(f"feature {name!r}: extras dims must be positive integers, got "
                          f"{bad_extras}")
    size = entry.get("input", {}).get("face_size")
    if size is not None and not _positive_int(size):
        raise ConfigError(f"feature {name!r}: input.face_size must be a positive integer, got "
                          f"{size!r}")
    rate = entry.get("rate", "frames")
    if rate not in RATE_WORDS and not (isinstance(rate, int | float) and rate > 0):
        raise ConfigError(f"feature {name!r}: rate must be 'frames', 'clip' or a positive "
                          f"number, got {rate!r}")
    spec = FeatureSpec(name=name, **copy.deepcopy(entry))
    if spec.modality == "visual" and not spec.face_size:
        raise ConfigError(f"feature {name!r}: a visual feature needs input.face_size")
    return spec


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def parse_value(text: str) -> Any:
    """A command-line value: YAML scalars (numbers, booleans, null, lists) or the plain string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(spec: FeatureSpec, weights: str | None = None,
                    sets: dict[str, str] | None = None) -> FeatureSpec:
    """A copy of ``spec`` with ``weights`` and ``key=value`` overrides (``options.layer=6``)."""
    out = copy.deepcopy(spec)
    if weights is not None:
        out.weights = weights
    for key, value in (sets or {}).items():
        head, _, rest = key.partition(".")
        if head not in ("options", "input", "extras") and rest:
            raise ConfigError(f"cannot set {key!r} on feature {spec.name!r}: use options.<k>, "
                              "input.<k>, extras.<k>, weights, dim")
        if rest:
            getattr(out, head)[rest] = parse_value(value)
        elif head in ("weights", "dim", "rate", "extractor"):
            setattr(out, head, parse_value(value))
        else:
            raise ConfigError(f"cannot set {key!r} on feature {spec.name!r}")
    return parse_spec(out.name, {k: v for k, v in out.to_dict().items() if k != "name"})


def resolve_local_weights(weights: str | None) -> Path | None:
    """A local checkpoint path for ``weights`` when one exists (cwd, $EXTRACT_WEIGHTS_DIR)."""
    if not weights or weights.startswith("package:"):
        return None
    candidates = [Path(weights).expanduser()]
    if os.environ.get(WEIGHTS_DIR_ENV):
        candidates.append(Path(os.environ[WEIGHTS_DIR_ENV]) / weights)
    return next((p for p in candidates if p.exists()), None)
