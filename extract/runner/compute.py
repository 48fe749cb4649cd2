"""Per-video compute: face step, every feature's extractor, then one write per output.

A :class:`VideoJob` consumes one task's decode events (see :mod:`extract.runner.decode`) and
keeps every feature's rows in memory; :meth:`VideoJob.finish` writes them with
``store.write_video`` (whose completion marker goes last) and reports what was done or failed.
Visual rows of frames without a face are zeros with mask False, never a made-up crop.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from extract.errors import NoVideoStreamError
from extract.extractors.base import AudioRows, Extractor
from extract.runner.decode import Event
from extract.runner.faces import FaceSteps
from extract.runner.plan import Task
from extract.runner.records import Failure
from extract.store import FeatureStore

log = logging.getLogger(__name__)


@dataclass
class VideoResult:
    """What one task produced (sent from a worker to the parent)."""

    video: str
    done: list[str] = field(default_factory=list)  # features complete now
    failures: list[Failure] = field(default_factory=list)
    frames: int = 0  # sampled video frames processed
    audio_seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)  # feature → rows written
    seconds: dict[str, float] = field(default_factory=dict)  # feature / "faces" → compute time
    skipped: str | None = None  # "done" / "busy": another run finished / holds the video
    faces: int | None = None  # frames with a face found (None: no face step ran)
    not_applicable: dict[str, str] = field(default_factory=dict)  # feature → why (no stream)


@dataclass
class PendingCrops:
    """Face crops of one frame batch waiting for the backbone, and where their rows go."""

    crops: np.ndarray  # (n, S, S, 3) uint8 crops of the frames with a face
    rows: np.ndarray  # (n,) their row indices inside this frame batch
    targets: dict[str, np.ndarray]  # output → the batch's (T, d) rows, filled in place


@dataclass
class Rows:
    """Accumulated rows of one output."""

    parts: list[np.ndarray] = field(default_factory=list)
    times: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)

    def add(self, data: np.ndarray, times: np.ndarray, mask: np.ndarray) -> None:
        self.parts.append(data)
        self.times.append(np.asarray(times, dtype=np.float64))
        self.masks.append(np.asarray(mask, dtype=bool))

    def arrays(self, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.parts:
            return np.zeros((0, dim), np.float32), np.zeros(0), np.zeros(0, bool)
        return np.concatenate(self.parts), np.concatenate(self.times), np.concatenate(self.masks)


def check_outputs(extractor: Extractor, out: dict[str, np.ndarray], rows: int | None) -> None:
    """Every declared output present with the declared width (and ``rows`` rows if given)."""
    spec = extractor.spec
    for output, dim in extractor.outputs().items():
        key = "" if output == spec.name else output[len(spec.name) + 1:]
        if key not in out:
            raise ValueError(f"extractor {extractor.name!r} returned no {key or 'main'!r} output "
                             f"for feature {spec.name!r}")
        arr = out[key]
        if arr.ndim != 2 or arr.shape[1] != dim or (rows is not None and len(arr) != rows):
            want = f"({rows if rows is not None else 'T'}, {dim})"
            raise ValueError(f"extractor {extractor.name!r} returned shape {arr.shape} for "
                             f"output {output!r}; expected {want}")


def check_range(output: str, data: np.ndarray, mask: np.ndarray, dtype: str) -> None:
    """Refuse values that the stored dtype cannot hold (float16 overflows to inf above 65504)."""
    limit = float(np.finfo(dtype).max) if np.dtype(dtype).kind == "f" else None
    valid = data[mask]
    if valid.size and not np.isfinite(valid).all():
        raise ValueError(f"{output}: the extractor returned non-finite values in valid rows")
    if limit is not None and valid.size and float(np.abs(valid).max()) > limit:
        raise ValueError(f"{output}: values up to {float(np.abs(valid).max()):.4g} do not fit "
                         f"the stored dtype {dtype} (max {limit:.4g}); store the feature "
                         "as float32 (the extractor's store_dtype)")


class WorkerContext:
    """What a worker holds for its lifetime: loaded extractors, face steps, the store."""

    def __init__(self, extractors: dict[str, Extractor], store: FeatureStore, faces: FaceSteps,
                 run_id: str, sampling: str, image_fps: float, worker: int = 0,
                 claims: Any = None) -> None:
        self.extractors = extractors
        self.worker = worker
        self.claims = claims  # extract.claims.ClaimBook (None: no claims)
        self.store = store
        self.faces = faces
        self.run_id = run_id
        self.sampling = sampling
        self.image_fps = image_fps
        self._dtypes: dict[str, str] = {}

    def dtype_of(self, output: str) -> str:
        """The stored dtype of an output feature (read once)."""
        if output not in self._dtypes:
            self._dtypes[output] = self.store.feature_info(output).dtype
        return self._dtypes[output]

    def source(self, item: Any, modality: str, audio_start: float | None) -> dict[str, Any]:
        """Where one array's rows came from (stored in its attrs)."""
        out: dict[str, Any] = {"path": str(item.path), "kind": item.kind, "run": self.run_id}
        if modality == "audio":
            out["audio_start"] = audio_start
            return out
        out["sampling"] = self.sampling
        if item.kind == "images":
            out.update(faces="aligned input")
        else:
            out["faces"] = f"detector {self.faces.detector_name}"
        return out


class VideoJob:
    """The compute side of one task."""

    def __init__(self, task: Task, ctx: WorkerContext, claim: Any = None) -> None:
        self.task = task
        self.ctx = ctx
        self.claim = claim  # extract.claims.VideoClaim held for this task (or None)
        self.item = task.item
        self.result = VideoResult(task.video_id)
        self.failed: set[str] = set()
        self.rows: dict[str, Rows] = defaultdict(Rows)  # output → rows
        self.audio_start: float | None = None
        self.visual = [f for f in task.features if ctx.extractors[f].modality == "visual"]
        self.audio = [f for f in task.features if ctx.extractors[f].modality == "audio"]
        self._started_faces = False
        self.frame_times: list[np.ndarray] = []  # sampled video frame times seen so far
        self.pending: dict[str, list[PendingCrops]] = defaultdict(list)  # feature → crops
        #                      waiting for a full batch (the extractor's batch_size)
        self.frame_attrs: dict[str, Any] = {}  # the frame clock's attrs (frame folders)

    def handle(self, event: Event) -> None:
        """Dispatch one decode event (``begin`` and ``end`` are the worker's business)."""
        getattr(self, f"on_{event.kind}")(event.payload)

    def fail(self, features: list[str], stage: str, exc: BaseException) -> None:
        features = [f for f in features if f not in self.failed]
        if not features:
            return
        self.failed.update(features)
        log.warning("%s: %s failed at %s: %s: %s", self.item.video_id, ",".join(features), stage,
                    type(exc).__name__, exc)
        failure = Failure.of(self.item.video_id, features, stage, exc, str(self.item.path))
        failure.worker = self.ctx.worker
        self.result.failures.append(failure)

    def _time(self, key: str, start: float) -> None:
        self.result.seconds[key] = self.result.seconds.get(key, 0.0) + time.perf_counter() - start

    # ---------------------------------------------------------------- events
    def on_na(self, na: Any) -> None:
        """Features that cannot apply to this input (a :class:`NotApplicable`): nothing is
        written for them and they are not failures."""
        self.not_applicable(list(na.features), na.reason)

    def not_applicable(self, features: list[str], reason: str) -> None:
        for name in features:
            if name not in self.failed:
                self.failed.add(name)
                self.result.not_applicable[name] = reason
        log.info("%s: %s not applicable: %s", self.item.video_id, ",".join(features), reason)

    def on_skip(self, status: str) -> None:
        self.result.skipped = status
        self.failed.update(self.task.features)  # nothing to write

    def on_error(self, failure: Failure) -> None:
        new = [f for f in failure.features if f not in self.failed]
        if new:
            self.failed.update(new)
            failure.features = new
            failure.worker = self.ctx.worker
            self.result.failures.append(failure)
            log.warning("%s: %s failed at %s: %s", self.item.video_id, ",".join(new),
                        failure.stage, failure.message)

    def on_frames(self, batch: Any) -> None:
        """Decoded frames (a :class:`~extract.media.video.FrameBatch`): the face step runs
        here, then the backbones get their crops."""
        live = self._frames_seen(len(batch.frames), batch.times, getattr(batch, "source", None))
        if not live:
            return
        t0 = time.perf_counter()
        try:
            step = self.ctx.faces.for_kind(self.item.kind)
            if not self._started_faces:
                step.reset()
                self._started_faces = True
            faces = step(batch.frames)
        except Exception as exc:
            self.fail(live, "faces", exc)
            return
        self._time("faces", t0)
        self._faces_found(live, faces.crops, faces.valid, getattr(batch, "valid", None),
                          batch.times)

    def on_faces(self, found: Any) -> None:
        """Frames whose faces a CPU worker already found and aligned
        (:class:`extract.runner.feed.FaceFrames`): the backbones get their crops."""
        live = self._frames_seen(found.count, found.times, found.source)
        if not live:
            return
        if found.error is not None:
            self.fail(live, "faces", found.error)
            return
        self.result.seconds["faces"] = self.result.seconds.get("faces", 0.0) + found.seconds
        self._faces_found(live, found.crops, found.face_valid, found.valid, found.times)

    def _frames_seen(self, count: int, times: np.ndarray, source: dict | None) -> list[str]:
        """Count a batch of ``count`` frames at ``times``; the visual features still live."""
        self.result.frames += count
        self.frame_times.append(np.asarray(times, dtype=np.float64))
        if source:
            self.frame_attrs = dict(source)
        return [f for f in self.visual if f not in self.failed]

    def _faces_found(self, live: list[str], crops: dict[int, np.ndarray], face_valid: np.ndarray,
                     frame_valid: np.ndarray | None, times: np.ndarray) -> None:
        """Rows of one batch: a face and a readable frame make a valid row."""
        valid = np.asarray(face_valid, dtype=bool)
        if frame_valid is not None:  # frames without a readable image
            valid = valid & np.asarray(frame_valid, dtype=bool)
        self.result.faces = (self.result.faces or 0) + int(valid.sum())
        for name in live:
            extractor = self.ctx.extractors[name]
            t0 = time.perf_counter()
            try:
                self._visual_rows(extractor, crops[extractor.spec.face_size], valid, times)
            except Exception as exc:
                self.fail([name], "extract", exc)
            self._time(name, t0)

    def _visual_rows(self, extractor: Extractor, crops: np.ndarray, valid: np.ndarray,
                     times: np.ndarray) -> None:
        """Add this frame batch's rows (zeros for now) and queue its crops; the backbone runs
        on whole batches of the extractor's ``batch_size`` crops as they fill up (default:
        whatever each frame batch holds)."""
        name = extractor.spec.name
        targets = {}
        for output, dim in extractor.outputs().items():
            targets[output] = np.zeros((len(valid), dim), np.float32)
            self.rows[output].add(targets[output], times, valid)
        if valid.any():
            self.pending[name].append(PendingCrops(np.ascontiguousarray(crops[valid]),
                                                   np.flatnonzero(valid), targets))
        self._flush(extractor)

    def _flush(self, extractor: Extractor, final: bool = False) -> None:
        """Run the backbone on the queued crops (whole batches, or all when ``final``) and fill
        their rows in place."""
        name = extractor.spec.name
        size = getattr(extractor, "batch_size", None) or 1
        queue = self.pending.get(name, [])
        total = sum(len(p.crops) for p in queue)
        take = total if final else total - total % size
        if take == 0:
            return
        chosen, rest, n = [], [], 0
        for part in queue:
            k = min(len(part.crops), take - n)
            if k > 0:
                chosen.append(PendingCrops(part.crops[:k], part.rows[:k], part.targets))
            if k < len(part.crops):
                rest.append(PendingCrops(part.crops[k:], part.rows[k:], part.targets))
            n += max(k, 0)
        self.pending[name] = rest
        crops = np.concatenate([p.crops for p in chosen])
        with extractor.autocast():
            out = extractor.extract(crops)
        out = {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}
        check_outputs(extractor, out, len(crops))
        first = 0
        for part in chosen:
            last = first + len(part.crops)
            for output, target in part.targets.items():
                key = "" if output == name else output[len(name) + 1:]
                target[part.rows] = out[key][first:last]
            first = last

    def flush_visual(self) -> None:
        """Run every feature's queued crops (at the end of the video)."""
        for name in [n for n in self.visual if self.pending.get(n)]:
            if name in self.failed:
                continue
            extractor = self.ctx.extractors[name]
            t0 = time.perf_counter()
            try:
                self._flush(extractor, final=True)
            except Exception as exc:
                self.fail([name], "extract", exc)
            self._time(name, t0)

    def on_audio(self, audio: Any) -> None:
        self.audio_start = float(audio.start)
        self.result.audio_seconds = float(audio.duration)
        for name in self.audio:
            if name in self.failed:
                continue
            extractor = self.ctx.extractors[name]
            t0 = time.perf_counter()
            try:
                centers = self._centers(extractor, audio.start)
                track = audio.at(extractor.input_rate)  # the track decoded at its rate
                with extractor.autocast():
                    rows: AudioRows = extractor.extract_at(track.wav, track.sample_rate, centers)
                values = {k: np.asarray(v, dtype=np.float32) for k, v in rows.values.items()}
                check_outputs(extractor, values, len(rows.times))
                mask = (np.ones(len(rows.times), bool) if rows.mask is None
                        else np.asarray(rows.mask, bool))
                for output in extractor.outputs():
                    key = "" if output == name else output[len(name) + 1:]
                    self.rows[output].add(values[key], np.asarray(rows.times) + audio.start, mask)
            except NoVideoStreamError as exc:  # rate: frames on an input without frames
                self.not_applicable([name], str(exc))
            except Exception as exc:
                self.fail([name], "extract", exc)
            self._time(name, t0)

    def _centers(self, extractor: Extractor, audio_start: float) -> np.ndarray | None:
        """Video frame times (relative to the waveform) for an audio feature with
        ``rate: frames`` (windows centred on frames, as ViPER does); else None (native rate)."""
        if extractor.spec.rate != "frames":
            return None
        if self.frame_times:
            times = np.concatenate(self.frame_times)
        elif self.item.kind == "video":
            from extract.media.sampling import Sampling
            from extract.media.video import frame_times

            everything = frame_times(self.item.path)
            times = everything[Sampling.parse(self.ctx.sampling).select(everything)]
        else:
            raise NoVideoStreamError(f"{self.item.path}: no video frames to centre the windows "
                                     f"of {extractor.spec.name!r} on (rate: frames)")
        return times - audio_start

    # ----------------------------------------------------------------- write
    def finish(self) -> VideoResult:
        """Write every feature that did not fail (then release the claim); the result."""
        try:
            self.flush_visual()
            self._write_all()
        finally:
            if self.claim is not None:
                try:
                    self.claim.release()
                except OSError as exc:  # e.g. disk full: the claim goes stale with this process
                    log.warning("%s: cannot release its claim: %s", self.item.video_id, exc)
        return self.result

    def _write_all(self) -> None:
        store = self.ctx.store
        if self.item.kind == "video" and self.visual and not self.frame_attrs:
            from extract.media.clock import decoded_video_attrs

            times = np.concatenate(self.frame_times) if self.frame_times else np.zeros(0)
            self.frame_attrs = decoded_video_attrs(self.item.path, self.ctx.sampling, times)
        for name in self.task.features:
            if name in self.failed:
                continue
            extractor = self.ctx.extractors[name]
            source = self.ctx.source(self.item, extractor.modality, self.audio_start)
            extra = {"run_id": self.ctx.run_id}
            if extractor.modality == "visual":  # source frame count, fps, which rows are frames
                extra.update(self.frame_attrs)
            try:
                for output, dim in extractor.outputs().items():
                    data, times, mask = self.rows[output].arrays(dim)
                    check_range(output, data, mask, self.ctx.dtype_of(output))
                    if self.claim is not None:
                        self.claim.check()  # ClaimLostError: another run took it over
                    store.write_video(output, self.item.video_id, data, times, mask,
                                      source=source, extra_attrs=extra)
            except Exception as exc:
                self.fail([name], "write", exc)
                continue
            self.result.done.append(name)
            self.result.rows[name] = int(len(times))
