"""Check every feature before the store changes: build, load (weights included) and run each
extractor once on a tiny synthetic input, in the parent process.

A bad option value that only shows when the extractor computes (``--set
fbank.options.f_max=banana``), weights that do not load, or an extractor whose output does not
have the declared width are all found here, in seconds, and reported together as one
:class:`ConfigError` — before any feature group is created and before any video is decoded.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

import numpy as np

from extract.errors import ConfigError
from extract.runner.features import RunFeature

log = logging.getLogger(__name__)

PROBE_SECONDS = 2.0  # synthetic waveform for audio features
PROBE_CROPS = 2  # synthetic face crops for visual features
AUDIO_RATE = 16000  # what the runner decodes audio to


def probe_input(feature: RunFeature, rate: int = AUDIO_RATE) -> tuple[Any, ...]:
    """The synthetic arguments of one ``extract`` call: crops, or (waveform at ``rate``,
    centres)."""
    rng = np.random.default_rng(0)
    spec = feature.spec
    if spec.modality == "visual":
        size = int(spec.face_size or 64)
        crops = rng.integers(60, 200, (PROBE_CROPS, size, size, 3), dtype=np.uint8)
        return (crops,)
    n = int(PROBE_SECONDS * rate)
    t = np.arange(n) / rate
    wav = (0.1 * np.sin(2 * np.pi * 220.0 * t) + 0.01 * rng.standard_normal(n)).astype(np.float32)
    centers = np.array([0.5, 1.0, 1.5]) if spec.rate == "frames" else None
    return wav, centers


def probe(extractor: Any, feature: RunFeature) -> None:
    """Run ``extractor`` once on a synthetic input and check its outputs' widths."""
    from extract.runner.compute import check_outputs

    rate = getattr(extractor, "input_rate", None) or AUDIO_RATE  # None: the file's own rate
    args = probe_input(feature, rate)
    with extractor.autocast():
        if feature.modality == "visual":
            out = extractor.extract(*args)
        else:
            out = extractor.extract_at(args[0], rate, args[1])
    if feature.modality == "visual":
        values = {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}
        check_outputs(extractor, values, len(args[0]))
    else:
        values = {k: np.asarray(v, dtype=np.float32) for k, v in out.values.items()}
        check_outputs(extractor, values, len(out.times))


def one_line(exc: BaseException) -> str:
    """``Type: first line`` of an exception, without advice to load checkpoints unsafely."""
    from extract.errors import ExtractError

    if isinstance(exc, ExtractError):
        text = str(exc)
        if "weights_only" not in text:
            return " ".join(text.split())[:500]
    from extract.models.checkpoints import load_error_reason

    return load_error_reason(exc)


def load_problem(feature: RunFeature, exc: BaseException) -> str:
    """Why a feature's model did not load, naming its weights. The package's own errors say
    what is wrong with a checkpoint that was read; any other error while loading means the
    file could not be read as a checkpoint at all."""
    from extract.errors import ExtractError

    weights = feature.availability if feature.availability not in ("", "-", "none needed") \
        else ""
    if weights and not isinstance(exc, ExtractError):
        return (f"feature {feature.name!r}: its weights {weights} are not a loadable checkpoint "
                f"({one_line(exc)})")
    where = f" ({weights})" if weights else ""
    return f"feature {feature.name!r} cannot load its model{where}: {one_line(exc)}"


def preflight(features: list[RunFeature], keep: bool = False,
              precision: str = "fp32") -> dict[str, Any]:
    """Build, load and probe every feature's extractor on the CPU; raise one
    :class:`ConfigError` naming each feature that cannot run. Returns the loaded extractors
    when ``keep`` (an in-process worker reuses them, so they compute in the run's
    ``precision``), else frees them."""
    from extract.extractors.base import create

    problems: list[str] = []
    loaded: dict[str, Any] = {}
    t0 = time.perf_counter()
    for feature in features:
        try:
            extractor = create(feature.spec, "cpu", precision)
        except Exception as exc:
            problems.append(f"feature {feature.name!r}: {one_line(exc)}")
            continue
        try:
            extractor.load()
        except Exception as exc:
            problems.append(load_problem(feature, exc))
            continue
        try:
            probe(extractor, feature)
        except Exception as exc:
            settings = {"options": feature.spec.options, "input": feature.spec.input}
            problems.append(f"feature {feature.name!r} fails on a test input with its settings "
                            f"{settings}: {one_line(exc)}")
            continue
        loaded[feature.name] = extractor
    log.info("checked %d feature(s) in %.1f s", len(features), time.perf_counter() - t0)
    if problems:
        loaded.clear()
        gc.collect()
        if len(problems) == 1:
            raise ConfigError(f"cannot run (nothing was written): {problems[0]}")
        raise ConfigError("cannot run (nothing was written):\n  - " + "\n  - ".join(problems))
    if not keep:
        loaded.clear()
        gc.collect()
    return loaded
