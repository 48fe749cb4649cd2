"""The runner's face step: frames → one aligned crop per frame and size, plus a validity mask.

Video frames go through detection and alignment (:class:`extract.faces.pipeline.FacePipeline`);
frames of image-folder inputs are already aligned crops and are only resized
(:class:`extract.faces.pipeline.AlignedInput`). Which step an input kind uses is a registry
entry, so another step (a tracker, a cached detection file) plugs in by name. Each step also
describes itself: :func:`faces_config` is what a visual feature's fingerprint records, for
every input kind, whichever kinds a run happens to meet (so one name never holds crops made
two ways without its config saying so).

``--face-device cuda`` runs an ONNX detector (``scrfd``, ``retinaface``) with onnxruntime's CUDA
provider. The device is part of the description only when it is ``cuda``: CUDA kernels give
boxes and landmarks that differ from the CPU's by float rounding, which moves the aligned crops'
pixels, so those crops are not the same numbers and must not share a fingerprint with CPU ones;
the CPU (the default, and the only device of every other detector) adds nothing, so features
made before the option existed keep their fingerprints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from extract.faces.settings import FaceSettings
from extract.registry import Registry


class FaceResult(Protocol):
    """What a face step returns (``extract.faces.pipeline.FaceBatch`` fits)."""

    crops: dict[int, np.ndarray]  # size → (N, S, S, 3) uint8 RGB (zeros where not valid)
    valid: np.ndarray  # (N,) bool


class FaceStep(Protocol):
    def __call__(self, frames: np.ndarray) -> FaceResult: ...

    def reset(self) -> None: ...


class FaceStepKind(Protocol):
    """A registered face step: builds the step and describes it for the fingerprint."""

    def build(self, settings: FaceSettings, sizes: tuple[int, ...]) -> FaceStep: ...

    def describe(self, settings: FaceSettings, size: int) -> dict[str, Any]: ...


FACE_STEPS: Registry[FaceStepKind] = Registry("face step")

#: Input kind → face step name.
STEP_FOR_KIND = {"video": "detect", "images": "aligned"}


@dataclass(frozen=True)
class DetectStep:
    """Detect, keep one face (``select``), align on 5 landmarks, crop at every size."""

    def build(self, settings: FaceSettings, sizes: tuple[int, ...]) -> FaceStep:
        return settings.pipeline(sizes)

    def describe(self, settings: FaceSettings, size: int) -> dict[str, Any]:
        return settings.describe(size)


@dataclass(frozen=True)
class AlignedStep:
    """Already aligned crops: centre square, resized to every size; every frame valid."""

    def build(self, settings: FaceSettings, sizes: tuple[int, ...]) -> FaceStep:
        from extract.faces.pipeline import AlignedInput

        return AlignedInput(sizes=sizes)

    def describe(self, settings: FaceSettings, size: int) -> dict[str, Any]:
        return {"step": "aligned", "detector": None, "crop": "centre square",
                "resize": "area when shrinking, cubic when enlarging", "crop_size": int(size)}


FACE_STEPS.add("detect", DetectStep())
FACE_STEPS.add("aligned", AlignedStep())

#: ``--face-device`` values.
FACE_DEVICES = ("cpu", "cuda")
CUDA_PROVIDER = "CUDAExecutionProvider"


def faces_config(settings: FaceSettings, size: int, device: str = "cpu") -> dict[str, Any]:
    """Input kind → how its ``size`` crops are made (recorded in visual features' configs);
    detection on ``cuda`` is recorded for the kind that detects (see the module doc)."""
    out = {kind: FACE_STEPS.get(step).describe(settings, size)
           for kind, step in STEP_FOR_KIND.items()}
    if device_kind(device) == "cuda":
        for described in out.values():
            if described.get("detector"):
                described["device"] = "cuda"
    return out


def device_kind(device: str | None) -> str:
    """``cuda:1`` → ``cuda``; None → ``cpu``."""
    return (device or "cpu").split(":", 1)[0]


def face_device_problem(detector: str | None, device: str) -> str | None:
    """Why faces cannot be detected on ``device`` with ``detector`` (None when they can): CUDA
    needs an ONNX detector and an onnxruntime build with the CUDA execution provider."""
    from extract.errors import ExtractError
    from extract.faces.detectors import DETECTORS
    from extract.faces.onnx_detectors import OnnxFaceDetector

    if device not in FACE_DEVICES:
        return f"--face-device must be one of {' | '.join(FACE_DEVICES)}, got {device!r}"
    if device == "cpu":
        return None
    try:
        choice = FaceSettings.from_spec(detector).detector
    except ExtractError:
        return None  # reported by the detector check
    onnx = sorted(n for n in DETECTORS if issubclass(DETECTORS.get(n), OnnxFaceDetector))
    if not issubclass(DETECTORS.get(choice.name), OnnxFaceDetector):
        return (f"--face-device cuda needs an ONNX face detector ({', '.join(onnx)} with "
                f"model_path=FILE.onnx); {choice.name!r} runs on the CPU only")
    if choice.options.get("providers"):
        return ("--face-device cuda and the detector option providers= both choose where "
                "detection runs; give one")
    try:
        import onnxruntime as ort
    except ImportError:
        return "--face-device cuda needs onnxruntime-gpu (pip install onnxruntime-gpu)"
    if CUDA_PROVIDER not in ort.get_available_providers():
        return (f"--face-device cuda: this onnxruntime ({ort.__version__}) has no "
                f"{CUDA_PROVIDER} (it has {', '.join(ort.get_available_providers())}); "
                "install onnxruntime-gpu, or use --face-device cpu")
    return None


def providers_for(device: str) -> list[Any]:
    """onnxruntime providers that run on ``device`` only (``cuda:i``: GPU i; no CPU fallback)."""
    if device_kind(device) == "cpu":
        return ["CPUExecutionProvider"]
    index = device.split(":", 1)[1] if ":" in device else "0"
    return [(CUDA_PROVIDER, {"device_id": int(index)})]


def on_device(settings: FaceSettings, device: str) -> FaceSettings:
    """``settings`` whose detector runs on ``device`` (ONNX detectors: their providers; others
    run on the CPU, and only the CPU is allowed for them by :func:`face_device_problem`)."""
    from dataclasses import replace

    from extract.faces.detectors import DETECTORS
    from extract.faces.onnx_detectors import OnnxFaceDetector

    choice = settings.detector
    if not issubclass(DETECTORS.get(choice.name), OnnxFaceDetector) or choice.options.get(
            "providers"):
        return settings
    options = {**choice.options, "providers": providers_for(device)}
    return replace(settings, detector=replace(choice, options=options))


def check_on_device(step: Any, device: str) -> None:
    """Raise when an ONNX detector asked to run on CUDA did not get the CUDA provider
    (onnxruntime falls back to the CPU with only a warning)."""
    detector = getattr(step, "detector", None)
    session = getattr(detector, "session", None)
    if device_kind(device) != "cuda" or session is None:
        return
    got = session.get_providers()
    if not got or got[0] != CUDA_PROVIDER:
        from extract.errors import UnavailableError

        raise UnavailableError(f"face detection on {device}: onnxruntime could not start "
                               f"{CUDA_PROVIDER} (it runs on {', '.join(got)}); check the CUDA "
                               "and cuDNN libraries onnxruntime-gpu needs")


def has_video_state(settings: FaceSettings, kind: str) -> bool:
    """Whether the face step of input ``kind`` keeps state from frame to frame within a video
    (a detector that overrides ``reset``, e.g. a tracker): such a video is never split across
    CPU workers, its frames go through one step in order."""
    from extract.faces.detectors import DETECTORS
    from extract.faces.detectors.base import FaceDetector

    if STEP_FOR_KIND.get(kind) != "detect":
        return False
    return DETECTORS.get(settings.detector.name).reset is not FaceDetector.reset


def detector_problem(detector: str | None) -> str | None:
    """Why the face detector ``NAME[:KEY=VALUE,...]`` cannot run here (None when it can)."""
    from extract.errors import ExtractError
    from extract.faces.detectors import DETECTORS

    try:
        name = FaceSettings.from_spec(detector).detector.name
    except ExtractError as exc:
        return str(exc)
    ok, reason = DETECTORS.get(name).availability()
    return None if ok else f"face detector {name!r} is unavailable: {reason}"


class FaceSteps:
    """One lazily built face step per input kind, shared by every visual feature of a worker.

    ``detector``: ``NAME[:KEY=VALUE,...]`` (None: the default detector), as
    ``extract run --detector`` takes it; ``device``: where detection runs (``cpu``, or
    ``cuda:i`` for ONNX detectors, see :func:`face_device_problem`).
    """

    def __init__(self, sizes: tuple[int, ...], detector: str | None,
                 device: str = "cpu") -> None:
        self.sizes = tuple(sorted(set(sizes)))
        self.settings = FaceSettings.from_spec(detector)
        self.device = device
        self._steps: dict[str, FaceStep] = {}

    @property
    def detector_name(self) -> str:
        """The detector with every option (``NAME:KEY=VALUE,...``), as recorded in each
        video's ``source`` (``... on cuda`` when it runs there)."""
        name = self.settings.detector.spec(every_option=True)
        return name + (" on cuda" if device_kind(self.device) == "cuda" else "")

    def has_video_state(self, kind: str) -> bool:
        """See :func:`has_video_state`."""
        return has_video_state(self.settings, kind)

    def for_kind(self, kind: str) -> FaceStep:
        if kind not in self._steps:
            settings = on_device(self.settings, self.device)
            step = FACE_STEPS.get(STEP_FOR_KIND[kind]).build(settings, self.sizes)
            check_on_device(step, self.device)
            self._steps[kind] = step
        return self._steps[kind]
