"""Decoding one input into a stream of events, and the prefetch thread that runs it ahead.

Per task the stream is ``begin``, zero or more ``frames``, then ``audio`` (when audio features
are asked for), with ``error`` events for what failed, and ``end``. The worker's compute loop
consumes the stream while this thread already decodes the next batch or the next video. With a
CPU pool (``--cpu-workers``, :mod:`extract.runner.feed`) the same stream is made by other
processes, and ``faces`` events (frames decoded, faces found and aligned) replace ``frames``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from extract.errors import MediaError, NoAudioStreamError, NoVideoStreamError
from extract.media.sampling import Sampling
from extract.runner.plan import NotApplicable, Task
from extract.runner.records import Failure

log = logging.getLogger(__name__)


@dataclass
class Event:
    """One step of a task's decode stream."""

    kind: str  # begin | frames | faces | audio | error | na | skip | restart | end
    task: Task
    payload: Any = None  # begin: claim | frames: FrameBatch | faces: FaceFrames (frames
    #                      decoded and faces found by a CPU worker, see runner.feed) |
    #                      audio: Audio | error: Failure |
    #                      na: NotApplicable (no video / no audio stream) |
    #                      skip: "done" / "busy" (another run finished or holds the video) |
    #                      restart: why the video's rows so far are dropped (it is decoded
    #                      again from its first frame)
    release: Callable[[], None] | None = None  # called once the event is handled (frees the
    #                      shared memory its payload points into)

    def done(self) -> None:
        """The consumer is finished with this event (its payload's buffers may be reused)."""
        if self.release is not None:
            release, self.release = self.release, None
            release()


@dataclass(frozen=True)
class DecodeSettings:
    """How a worker decodes (the same for every task)."""

    sampling: Sampling
    batch_size: int
    image_fps: float
    modality: dict[str, str]  # feature → "visual" | "audio"
    outputs: dict[str, tuple[str, ...]] = field(default_factory=dict)  # feature → stored names
    audio_rates: dict[str, int | None] = field(default_factory=dict)  # audio feature → the
    #                      sample rate it reads (None: the file's own; absent: 16 kHz)
    image_clock: Any = None  # extract.media.clock.ImageClockSettings (None: index / image_fps)


def video_frames(path: Path, s: DecodeSettings) -> Iterator[Any]:
    from extract.media.video import iter_frames

    return iter_frames(path, s.sampling, s.batch_size)


def image_frames(path: Path, s: DecodeSettings) -> Iterator[Any]:
    """A frame folder on its video's clock (``--videos``), an ``--fps-table`` rate, or
    ``--image-fps``; raises (the folder fails) when its clock cannot be found."""
    from extract.media.clock import ImageClockSettings, folder_clock
    from extract.media.images import iter_image_frames

    clock = folder_clock(path.name, s.image_clock or ImageClockSettings(s.image_fps))
    return iter_image_frames(path, s.image_fps, s.sampling, s.batch_size, clock=clock)


#: Input kind → frame source.
FRAME_SOURCES: dict[str, Callable[[Path, DecodeSettings], Iterator[Any]]] = {
    "video": video_frames,
    "images": image_frames,
}


def open_check(task: Task) -> None:
    """Open the container once up front, so a file that cannot be opened fails at "open"."""
    import av

    if task.item.kind == "images":
        if not task.item.path.is_dir():
            raise MediaError(f"{task.item.path}: frame folder is gone")
        return
    try:
        with av.open(str(task.item.path)) as c:
            if not (c.streams.video or c.streams.audio):
                raise MediaError(f"{task.item.path}: no video or audio stream")
    except MediaError:
        raise
    except Exception as exc:  # PyAV raises a family of FFmpeg errors
        raise MediaError(f"{task.item.path}: cannot open ({type(exc).__name__}: {exc})") from exc


def check_audio_complete(path: Path, audio: Any) -> None:
    """Raise when the audio stops well short of the duration its stream declares (truncated)."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        if s.duration is None or s.time_base is None:
            return
        declared = float(s.duration * s.time_base)
    got = audio.duration
    if declared > 0 and got < 0.8 * declared and declared - got > 1.0:
        raise MediaError(f"{path}: truncated: audio stops at {got:.2f} s but the stream "
                         f"declares {declared:.2f} s")


def claim_task(task: Task, s: DecodeSettings, claims: Any) -> tuple[Task, Any, str]:
    """Claim the task's features in the store: (task with only the features still to do, the
    claim or None, status "claimed" | "done" | "busy")."""
    outputs = [o for f in task.features for o in s.outputs.get(f, (f,))]
    vc = claims.claim_video(task.video_id, outputs)
    if vc.status != "claimed":
        return task, None, vc.status
    pending = set(vc.pending)
    todo = tuple(f for f in task.features if pending & set(s.outputs.get(f, (f,))))
    return replace(task, features=todo), vc, vc.status


def start_task(task: Task, s: DecodeSettings, claims: Any = None
               ) -> tuple[Task, list[Event], bool]:
    """Claim ``task`` (with ``claims``) and open its input once: (the task with only the
    features still to do, the events so far, whether decoding goes on). When it does not, the
    events are complete (``begin``, ``skip`` or ``error``, ``end``)."""
    claim = None
    if claims is not None:
        try:
            task, claim, status = claim_task(task, s, claims)
        except Exception as exc:
            return task, [Event("begin", task),
                          Event("error", task, Failure.of(task.video_id, list(task.features),
                                                          "claim", exc, str(task.item.path))),
                          Event("end", task)], False
        if status != "claimed":
            return task, [Event("begin", task), Event("skip", task, status),
                          Event("end", task)], False
    events = [Event("begin", task, claim)]
    try:
        open_check(task)
    except Exception as exc:
        events += [Event("error", task, Failure.of(task.video_id, list(task.features), "open",
                                                   exc, str(task.item.path))),
                   Event("end", task)]
        return task, events, False
    return task, events, True


def features_of(task: Task, s: DecodeSettings, modality: str) -> list[str]:
    """The task's features of one modality."""
    return [f for f in task.features if s.modality[f] == modality]


def frames_failed(task: Task, s: DecodeSettings, exc: BaseException) -> Event:
    """The event of a frame source that raised: ``na`` for a file without a video stream
    (its audio features still run), else a ``decode`` failure of every feature (a broken
    video stream: the input is not trusted for its audio either)."""
    item, visual = task.item, features_of(task, s, "visual")
    if isinstance(exc, NoVideoStreamError):
        return Event("na", task, NotApplicable(item.video_id, tuple(visual), str(exc),
                                               str(item.path)))
    audio = features_of(task, s, "audio")
    return Event("error", task, Failure.of(item.video_id, visual + audio, "decode", exc,
                                           str(item.path)))


def audio_events(task: Task, s: DecodeSettings) -> list[Event]:
    """The ``audio`` event of the task's audio features (one decode per sample rate asked
    for), or why there is none (``na``: no audio stream; ``error``: stage "audio")."""
    from extract.media.audio import TARGET_RATE, AudioTracks, read_audio

    item, audio = task.item, features_of(task, s, "audio")
    if not audio:
        return []
    try:
        tracks = {}  # one decode per rate asked for: {rate or None (native): Audio}
        for rate in dict.fromkeys(s.audio_rates.get(f, TARGET_RATE) for f in audio):
            tracks[rate] = read_audio(item.path, rate)
            check_audio_complete(item.path, tracks[rate])
        return [Event("audio", task, AudioTracks(tracks))]
    except NoAudioStreamError as exc:  # a silent video: its visual features still ran
        return [Event("na", task, NotApplicable(item.video_id, tuple(audio), str(exc),
                                                str(item.path)))]
    except Exception as exc:
        return [Event("error", task, Failure.of(item.video_id, audio, "audio", exc,
                                                str(item.path)))]


def decode_task(task: Task, s: DecodeSettings, claims: Any = None) -> Iterator[Event]:
    """The event stream of one task. Never raises: failures become ``error`` events.

    With ``claims`` (a :class:`extract.claims.ClaimBook`) the task's features are claimed
    first; a task that another run finished or holds yields ``begin``, ``skip``, ``end``.
    """
    task, events, go_on = start_task(task, s, claims)
    yield from events
    if not go_on:
        return
    if features_of(task, s, "visual"):
        try:
            for batch in FRAME_SOURCES[task.item.kind](task.item.path, s):
                yield Event("frames", task, batch)
        except Exception as exc:
            event = frames_failed(task, s, exc)
            yield event
            if event.kind == "error":
                yield Event("end", task)
                return
    yield from audio_events(task, s)
    yield Event("end", task)


STOP = object()


class Prefetcher:
    """A thread that takes tasks from ``next_task`` and decodes them into a bounded queue.

    ``next_task()`` returns a :class:`Task` or None (no more work). The queue holds at most
    ``depth`` events, so decoding runs a few batches (or one video) ahead of compute.
    """

    def __init__(self, next_task: Callable[[], Task | None], settings: DecodeSettings,
                 depth: int = 3, claims: Any = None) -> None:
        self.next_task = next_task
        self.settings = settings
        self.claims = claims
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.thread = threading.Thread(target=self._run, name="prefetch", daemon=True)

    def start(self) -> Prefetcher:
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            while (task := self.next_task()) is not None:
                for event in decode_task(task, self.settings, self.claims):
                    self.queue.put(event)
        except BaseException as exc:  # noqa: BLE001 — handed to the compute loop, which re-raises
            self.queue.put(exc)
        self.queue.put(STOP)

    def close(self) -> None:
        """Nothing to stop: the thread ends when the task source says there is no more work."""
        return None

    def events(self) -> Iterator[Event]:
        """Events in order until the task source is exhausted."""
        while (ev := self.queue.get()) is not STOP:
            if isinstance(ev, BaseException):
                raise RuntimeError(f"prefetch thread failed: {ev!r}") from ev
            yield ev
