"""The work of a run: which (feature, video) pairs are not yet complete, longest input first.

A feature applies to an input by kind (visual features need frames, audio features need
sound); pairs that cannot apply are counted as *not applicable*, not as work or failures.
Inputs whose streams turn out to be missing (a video file without sound) are found later, when
the worker opens them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from extract.ids import MediaItem
from extract.runner.features import RunFeature
from extract.store import FeatureStore

#: Which input kinds each modality applies to (audio files get no visual features, frame
#: folders no audio features).
APPLIES_TO: dict[str, frozenset[str]] = {
    "visual": frozenset({"video", "images"}),
    "audio": frozenset({"video", "audio"}),
}

#: Why a modality does not apply to an input kind (for the records).
NOT_APPLICABLE_REASON: dict[tuple[str, str], str] = {
    ("visual", "audio"): "an audio file has no video frames",
    ("audio", "images"): "a frame folder has no sound",
}


@dataclass(frozen=True)
class Task:
    """One input and the requested features it still lacks."""

    item: MediaItem
    features: tuple[str, ...]

    @property
    def video_id(self) -> str:
        return self.item.video_id


@dataclass(frozen=True)
class NotApplicable:
    """Requested features that cannot apply to one input (no video / no audio stream)."""

    video: str
    features: tuple[str, ...]
    reason: str
    path: str = ""


@dataclass
class Plan:
    """Tasks (longest first) plus what was left out and why."""

    tasks: list[Task]
    inputs: int  # inputs that at least one requested feature applies to
    skipped: list[str] = field(default_factory=list)  # complete for every requested feature
    deferred: list[str] = field(default_factory=list)  # left for a later run by --limit
    skipped_pairs: dict[str, int] = field(default_factory=dict)  # feature → complete videos
    not_applicable: list[NotApplicable] = field(default_factory=list)  # by input kind


def input_kinds(features: list[RunFeature]) -> tuple[str, ...]:
    """The input kinds any of ``features`` applies to."""
    kinds = set().union(*(APPLIES_TO[f.modality] for f in features)) if features else set()
    return tuple(k for k in ("video", "images", "audio") if k in kinds)


def make_plan(items: list[MediaItem], features: list[RunFeature], store: FeatureStore | None,
              limit: int | None = None) -> Plan:
    """Tasks for ``items``: a feature is done for a video when all its outputs are complete.

    ``store`` None stands for a store that does not exist yet (nothing is complete).
    """
    complete = {out: store.complete_set(out) if store is not None else set()
                for f in features for out in f.outputs}
    tasks, skipped, inputs, not_applicable = [], [], 0, []
    skipped_pairs = {f.name: 0 for f in features}
    for item in items:
        wanted = [f for f in features if item.kind in APPLIES_TO[f.modality]]
        if not wanted:
            continue
        inputs += 1
        for modality in ("visual", "audio"):
            off = tuple(f.name for f in features
                        if f.modality == modality and f not in wanted)
            if off:
                not_applicable.append(NotApplicable(
                    item.video_id, off, NOT_APPLICABLE_REASON.get((modality, item.kind),
                                                                  f"a {item.kind} input"),
                    str(item.path)))
        todo = []
        for f in wanted:
            if all(item.video_id in complete[out] for out in f.outputs):
                skipped_pairs[f.name] += 1
            else:
                todo.append(f.name)
        if todo:
            tasks.append(Task(item, tuple(todo)))
        else:
            skipped.append(item.video_id)
    tasks.sort(key=lambda t: (-t.item.size, t.video_id))
    deferred = []
    if limit is not None and len(tasks) > limit:
        deferred = [t.video_id for t in tasks[limit:]]
        tasks = tasks[:limit]
    return Plan(tasks, inputs, skipped, deferred, skipped_pairs, not_applicable)
