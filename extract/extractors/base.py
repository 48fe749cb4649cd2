"""The extractor interface: a config (the feature spec) plus a small class with one batch method.

Decoding, face finding, batching, writing, resuming and progress belong to the runner; an
extractor only turns a batch of face crops (visual) or one waveform (audio) into rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from extract.catalog import FeatureSpec, resolve_local_weights
from extract.errors import ConfigError, UnavailableError
from extract.registry import Registry

EXTRACTORS: Registry[type[Extractor]] = Registry("extractor")

#: ``--precision`` values: the dtype a backbone's autocast computes in (fp32: no autocast).
PRECISIONS = ("fp32", "bf16", "fp16")


def default_precision(gpus: int) -> str:
    """bf16 when the run uses GPUs, fp32 on the CPU (the papers' extractors ran fp32)."""
    return "bf16" if gpus > 0 else "fp32"


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ConfigError naming them."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {' | '.join(PRECISIONS)}; got "
                          f"{precision!r}")
    return precision


def to_device(x: Any, device: str) -> Any:
    """Move a CPU tensor to ``device``: on CUDA through pinned host memory with a non-blocking
    copy (the copy overlaps with work already queued); elsewhere a plain ``.to``."""
    if str(device).startswith("cuda"):
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


@dataclass(frozen=True)
class Availability:
    """Whether a feature can run here, and which weights it would use."""

    available: bool  # implemented, its packages importable, its options valid
    reason: str  # why not, or why its weights are not here (empty when ready)
    weights: str  # what it will load, in words
    weights_found: bool = True  # the weights are on this machine (or none are needed)

    @property
    def ready(self) -> bool:
        """It can run here now."""
        return self.available and self.weights_found


@dataclass
class AudioRows:
    """An audio extractor's output for one waveform."""

    values: dict[str, np.ndarray]  # output name ("" = the feature itself) → (T, d)
    times: np.ndarray  # (T,) row centre times in seconds, relative to the waveform start
    mask: np.ndarray | None = None  # (T,) bool; None = all valid


#: Options that change how fast, never which numbers: left out of the fingerprinted config.
EXECUTION_OPTIONS = frozenset({"batch_size"})

CHECKPOINT_SUFFIXES = frozenset({".pth", ".pt", ".bin", ".ckpt", ".safetensors", ".onnx", ".h5",
                                 ".hdf5", ".pkl"})


def looks_like_hub_id(weights: str) -> bool:
    """``org/name`` with no checkpoint suffix and no path prefix: a Hugging Face id."""
    return (weights.count("/") == 1 and not weights.startswith((".", "/", "~"))
            and Path(weights).suffix.lower() not in CHECKPOINT_SUFFIXES)


def _sha256_path(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update((f.relative_to(path).as_posix() if path.is_dir() else f.name).encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


_HASH_CACHE: dict[tuple[str, int, float], str] = {}


def weights_sha256(path: Path) -> str:
    """sha256 of a checkpoint file or folder (cached by path, size and mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = _sha256_path(path)
    return _HASH_CACHE[key]


def hub_snapshot(repo_id: str) -> Path | None:
    """The local Hugging Face cache folder of ``repo_id`` when it has been downloaded."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, or huggingface_hub missing: both mean "not here"
        return None


class Extractor(ABC):
    """Base of all extractors. Subclasses set ``name`` and ``modality`` and register.

    ``precision`` (set by :func:`create`) is the dtype of :meth:`autocast`; extractors whose
    numbers it does not touch (``honours_precision`` False: openSMILE, fbank) always compute
    and record fp32.
    """

    name: ClassVar[str]
    modality: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()  # importable modules it needs
    needs_weights: ClassVar[bool] = True
    honours_precision: ClassVar[bool] = False  # a torch backbone that runs under autocast
    batched: ClassVar[bool] = False  # takes options.batch_size (--batch-size NAME=B)
    precision: str = "fp32"  # requested precision (see effective_precision)

    def __init__(self, spec: FeatureSpec, device: str = "cpu") -> None:
        self.validate(spec)  # an unusable spec fails here, before any model is built
        self.spec = spec
        self.device = device

    # ------------------------------------------------------------ availability
    @classmethod
    def check(cls, spec: FeatureSpec) -> Availability:
        """Can ``spec`` run here? Checks modules, then the spec (:meth:`validate`), then
        weights."""
        missing = [m for m in cls.requires if importlib.util.find_spec(m) is None]
        if missing:
            return Availability(False, f"missing packages: {', '.join(missing)}",
                                str(spec.weights))
        try:
            cls.validate(spec)
        except ConfigError as exc:
            return Availability(False, str(exc), str(spec.weights))
        return cls.check_weights(spec)

    @classmethod
    def validate(cls, spec: FeatureSpec) -> None:
        """Raise :class:`ConfigError` listing every problem with ``spec`` (options, extras);
        an optional hook, the base accepts every spec."""
        return None

    @classmethod
    def check_weights(cls, spec: FeatureSpec) -> Availability:
        """Default weight check: a local path, or a Hugging Face id in the local cache."""
        if not cls.needs_weights:
            return Availability(True, "", "none needed")
        if not spec.weights:
            return Availability(True, "no weights configured (set weights: in features.yaml "
                                "or --weights NAME=PATH)", "-", weights_found=False)
        local = resolve_local_weights(spec.weights)
        if local is not None:
            return Availability(True, "", str(local))
        if looks_like_hub_id(spec.weights):
            if hub_snapshot(spec.weights) is not None:
                return Availability(True, "", f"{spec.weights} (hub cache)")
            return Availability(True, f"{spec.weights} is not in the Hugging Face cache and "
                                "cannot be downloaded here; download it where there is internet "
                                "or pass --weights NAME=PATH", spec.weights, weights_found=False)
        return Availability(True, f"checkpoint {spec.weights} not found (looked in the working "
                            "folder and $EXTRACT_WEIGHTS_DIR)", spec.weights, weights_found=False)

    def weights_path(self) -> Path:
        """The local file or folder to load, or an error saying why there is none."""
        local = resolve_local_weights(self.spec.weights)
        if local is not None:
            return local
        if self.spec.weights and looks_like_hub_id(self.spec.weights):
            snap = hub_snapshot(self.spec.weights)
            if snap is not None:
                return snap
        raise UnavailableError(self.check(self.spec).reason or
                               f"weights {self.spec.weights!r} not found")

    # ------------------------------------------------------------ provenance
    def resolved_config(self) -> dict[str, Any]:
        """Everything that shapes the numbers; its hash is the feature's fingerprint."""
        options = {k: v for k, v in self.spec.options.items() if k not in EXECUTION_OPTIONS}
        cfg: dict[str, Any] = {
            "extractor": self.name, "weights": self.spec.weights, "input": self.spec.input,
            "rate": self.spec.rate, "options": options, "extras": self.spec.extras,
            "precision": self.effective_precision,
        }
        if self.needs_weights and self.spec.weights:
            with contextlib.suppress(UnavailableError):
                cfg["weights_sha256"] = weights_sha256(self.weights_path())
        return json.loads(json.dumps(cfg, default=str))

    def outputs(self) -> dict[str, int]:
        """Stored feature name → dim: the feature itself plus ``<name>.<extra>`` siblings."""
        out = {self.spec.name: self.spec.dim}
        out.update({f"{self.spec.name}.{k}": int(d) for k, d in self.spec.extras.items()})
        return out

    def output_labels(self) -> dict[str, list[str]]:
        """Stored output name → the names of its columns, in order, for outputs whose columns
        have names (class or AU names, openSMILE descriptors); recorded as ``labels`` in the
        output's config. None by default."""
        return {}

    # ---------------------------------------------------------------- compute
    def load(self) -> None:  # noqa: B027 (optional hook)
        """Build the model and load weights (once per worker, after the process starts)."""

    @property
    def effective_precision(self) -> str:
        """The precision the numbers are computed in: ``precision`` for extractors that honour
        it, else fp32."""
        return self.precision if self.honours_precision else "fp32"

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """inference_mode, plus autocast to bf16 / fp16 when that is the effective precision
        (on any device; fp32 runs without autocast)."""
        import torch

        with torch.inference_mode():
            precision = self.effective_precision
            if precision == "fp32":
                yield
                return
            dtype = torch.bfloat16 if precision == "bf16" else torch.float16
            with torch.autocast(torch.device(self.device).type, dtype=dtype):
                yield


class VisualExtractor(Extractor):
    """Turns a batch of aligned face crops into rows."""

    modality = "visual"

    @abstractmethod
    def extract(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """(N, S, S, 3) uint8 RGB crops at ``spec.face_size`` → {"": (N, D), extra: (N, d)}."""


class AudioExtractor(Extractor):
    """Turns one mono waveform (16 kHz unless :attr:`input_rate` says otherwise) into rows at
    the feature's native rate."""

    modality = "audio"

    @property
    def input_rate(self) -> int | None:
        """The sample rate the runner decodes this feature's audio at; None = the file's own."""
        return self.spec.sample_rate

    def extract_at(self, wav: np.ndarray, sample_rate: int,
                   centers: np.ndarray | None = None) -> AudioRows:
        """:meth:`extract` for a waveform decoded at ``sample_rate`` (the runner's entry)."""
        if self.input_rate is not None and sample_rate != self.input_rate:
            raise ValueError(f"feature {self.spec.name!r} needs audio at {self.input_rate} Hz; "
                             f"got {sample_rate} Hz")
        return self.extract(wav, centers)

    @staticmethod
    def require_native_16k(spec: FeatureSpec, what: str) -> None:
        """For frame-based features: 16 kHz input (what the runner decodes) and their own rate
        (not windows centred on video frames); raises :class:`ConfigError` otherwise."""
        problems = []
        if spec.sample_rate != 16000:
            problems.append(f"input.sample_rate is {spec.sample_rate}, but audio is decoded at "
                            "16000 Hz")
        if spec.rate == "frames":
            problems.append(f"{what} are computed at their native rate; rate: frames (windows "
                            "centred on video frames) is not supported")
        if problems:
            raise ConfigError(f"feature {spec.name!r}: " + "; ".join(problems))

    @abstractmethod
    def extract(self, wav: np.ndarray, centers: np.ndarray | None = None) -> AudioRows:
        """float32 (S,) waveform → rows; ``centers`` (seconds) asks for windows centred there."""


def create(spec: FeatureSpec, device: str = "cpu", precision: str = "fp32") -> Extractor:
    """Instantiate the extractor for ``spec`` (not yet loaded) computing in ``precision``."""
    import extract.extractors  # noqa: F401  (fills the registry)

    extractor = EXTRACTORS.get(spec.extractor)(spec, device)
    extractor.precision = check_precision(precision)
    return extractor


def availability(spec: FeatureSpec) -> Availability:
    """Availability of ``spec``, including "extractor not implemented"."""
    import extract.extractors  # noqa: F401

    if spec.extractor not in EXTRACTORS:
        return Availability(False, f"extractor {spec.extractor!r} is not implemented",
                            str(spec.weights))
    return EXTRACTORS.get(spec.extractor).check(spec)
