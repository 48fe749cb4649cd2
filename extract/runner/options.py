"""The options of one ``extract run``, validated as a whole before any heavy work."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from extract.errors import ConfigError
from extract.media.clock import ImageClockSettings, read_fps_table
from extract.media.sampling import Sampling

PLUGINS_ENV = "EXTRACT_PLUGINS"
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")


@dataclass
class RunOptions:
    """What to extract, from where, into which store, and how to spread the work."""

    features: list[str]  # catalog feature names, computed together (one decode per video)
    input: Path  # a folder of inputs (videos, frame folders, audio files) or one file
    store: str  # feature store path (created when absent)
    gpus: int = 0  # N > 0: N worker processes, worker i on cuda:i
    workers: int = 1  # CPU worker processes when gpus == 0; 0 runs in this process
    cpu_workers: int | None = None  # processes that decode and find faces for the workers
    #                      (None: the cores the GPU workers leave with --gpus, else 0: each
    #                      worker decodes and finds faces itself); see resolved_cpu_workers
    face_device: str = "cpu"  # cpu | cuda: where faces are detected (cuda: ONNX detectors)
    span_frames: tuple[int, int] = (128, 256)  # the CPU pool cuts inputs into spans of this
    #                      many sampled frames (min, max; extract.runner.spans.SpanLimits)
    batch_size: int = 32  # frames per decode / face-detection batch (and backbone batch default)
    batch_sizes: dict[str, int] = field(default_factory=dict)  # feature → crops / windows per
    #                      forward (--batch-size NAME=B; sets the feature's options.batch_size)
    precision: str | None = None  # fp32 | bf16 | fp16; None: bf16 with --gpus, else fp32
    limit: int | None = None  # only the K longest inputs that still have work
    sample: str = "all"  # frame sampling: all | fps:F | count:N
    image_fps: float = 30.0  # frame rate of image-folder inputs (time = index / fps)
    videos: Path | None = None  # raw videos that time frame folders (X_left / X_right → X)
    fps_table: Path | None = None  # CSV video,fps: a frame rate per frame folder
    weights: dict[str, str] = field(default_factory=dict)  # feature → weights override
    sets: dict[str, dict[str, str]] = field(default_factory=dict)  # feature → {"options.k": "v"}
    catalog: Path | None = None  # features.yaml (default: see extract.catalog)
    detector: str | None = None  # face detector name (default: extract.faces.DEFAULT_DETECTOR)
    plugins: list[str] = field(default_factory=list)  # modules to import (extra registrations)
    run_id: str | None = None  # default: time stamp + random suffix
    progress: bool = True  # tqdm bar on stderr
    claims: bool = True  # claim (feature, video) pairs so several runs can share a local store
    backend: str = "local"  # local (processes here) | ray (video shards as Ray tasks)
    ray_address: str | None = None  # Ray cluster address (default: $RAY_ADDRESS, else local)
    strict: bool = False  # a feature that does not apply (no video / audio stream) is a failure
    ray_timeout: float = 30.0  # seconds to reach the Ray cluster and to check its nodes

    def __post_init__(self) -> None:
        self.input = Path(self.input)
        self.store = str(self.store)
        if self.store.startswith("file://"):  # a local folder (claims and records need one)
            self.store = self.store[len("file://"):]
        self.catalog = Path(self.catalog) if self.catalog else None
        self.videos = Path(self.videos) if self.videos else None
        self.fps_table = Path(self.fps_table) if self.fps_table else None
        env = [m for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
        self.plugins = list(dict.fromkeys([*self.plugins, *(m.strip() for m in env)]))

    def absolute(self) -> RunOptions:
        """A copy with every local path made absolute (store URLs unchanged): run records and
        each video's source attributes then name files that can be found from anywhere, and
        Ray tasks on other nodes read the same paths."""
        from extract.locations import absolute

        def path(p: Path | None) -> Path | None:
            return Path(absolute(p)) if p is not None else None

        return replace(self, input=path(self.input), store=absolute(self.store),
                       catalog=path(self.catalog), videos=path(self.videos),
                       fps_table=path(self.fps_table))

    @property
    def sampling(self) -> Sampling:
        return Sampling.parse(self.sample)

    @property
    def resolved_precision(self) -> str:
        """``precision``, else the default: bf16 when GPUs are used, fp32 on the CPU."""
        from extract.extractors.base import default_precision

        return self.precision or default_precision(self.gpus)

    @property
    def image_clock(self) -> ImageClockSettings:
        """How frame folders are timed (checked by :meth:`problems` first)."""
        table = read_fps_table(self.fps_table) if self.fps_table else {}
        return ImageClockSettings(float(self.image_fps),
                                  str(self.videos) if self.videos else None,
                                  tuple(sorted(table.items())))

    @property
    def resolved_cpu_workers(self) -> int:
        """``cpu_workers``, else the default: with ``--gpus N`` the cores not used by the N GPU
        workers (``os.cpu_count() - N``), on CPU-only runs 0 (the ``--workers`` processes
        decode and find faces themselves, sharing the cores with their backbones)."""
        if self.cpu_workers is not None:
            return self.cpu_workers
        if self.gpus > 0:
            return max(0, (os.cpu_count() or 1) - self.gpus)
        return 0

    @property
    def num_workers(self) -> int:
        """Worker count: one per GPU, else ``workers`` (0 = in-process)."""
        return self.gpus if self.gpus > 0 else self.workers

    def validate(self) -> None:
        """Raise one :class:`ConfigError` listing every problem."""
        problems = self.problems()
        if problems:
            raise ConfigError("cannot run:\n  - " + "\n  - ".join(problems))

    def problems(self) -> list[str]:
        """Every problem with these options (empty when they can run)."""
        problems = []
        if not self.features:
            problems.append("no feature given (--feature NAME[,NAME])")
        for name, value, low in (("gpus", self.gpus, 0), ("workers", self.workers, 0),
                                 ("batch-size", self.batch_size, 1)):
            if not isinstance(value, int) or value < low:
                problems.append(f"--{name} must be an integer >= {low}, got {value!r}")
        if self.cpu_workers is not None and (not isinstance(self.cpu_workers, int)
                                             or isinstance(self.cpu_workers, bool)
                                             or self.cpu_workers < 0):
            problems.append(f"--cpu-workers must be an integer >= 0, got {self.cpu_workers!r}")
        from extract.runner.faces import face_device_problem

        problem = face_device_problem(self.detector, self.face_device)
        if problem:
            problems.append(problem)
        low, high = (tuple(self.span_frames) + (0, 0))[:2]
        if not (isinstance(low, int) and isinstance(high, int) and 1 <= low <= high):
            problems.append(f"span_frames must be (min, max) with 1 <= min <= max, got "
                            f"{self.span_frames!r}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            problems.append(f"--limit must be a positive integer, got {self.limit!r}")
        from extract.extractors.base import PRECISIONS

        if self.precision is not None and self.precision not in PRECISIONS:
            problems.append(f"--precision must be one of {' | '.join(PRECISIONS)}, got "
                            f"{self.precision!r}")
        bad = {k: v for k, v in self.batch_sizes.items()
               if not isinstance(v, int) or isinstance(v, bool) or v < 1}
        if bad:
            problems.append(f"--batch-size NAME=B needs a positive integer B, got {bad}")
        if self.run_id is not None and not RUN_ID.fullmatch(str(self.run_id)):
            problems.append(f"--run-id {self.run_id!r}: use 1-100 letters, digits, '_', '.', "
                            "'-' (it names a folder), starting with a letter or digit")
        if self.backend not in ("local", "ray"):
            problems.append(f"--backend must be 'local' or 'ray', got {self.backend!r}")
        if self.ray_address and self.backend != "ray":
            problems.append(f"--ray-address {self.ray_address} is used only with --backend ray")
        if not self.ray_timeout > 0:
            problems.append(f"--ray-timeout must be positive, got {self.ray_timeout!r}")
        if self.store.startswith("memory://") and (self.backend == "ray" or self.num_workers):
            problems.append(f"--store {self.store} lives inside one process, where worker "
                            "processes cannot see it: use --workers 0, or a folder or an "
                            "object-store URL")
        if not self.image_fps > 0:
            problems.append(f"--image-fps must be positive, got {self.image_fps!r}")
        problems += self._clock_problems()
        try:
            Sampling.parse(self.sample)
        except ConfigError as exc:
            problems.append(str(exc))
        if not self.input.exists():
            problems.append(f"input {self.input} does not exist")
        for what, mapping in (("--weights", self.weights), ("--set", self.sets),
                              ("--batch-size", self.batch_sizes)):
            stray = sorted(set(mapping) - set(self.features))
            if stray:
                problems.append(f"{what} names feature(s) {stray} that are not in this run "
                                f"({', '.join(self.features)})")
        return problems

    def _clock_problems(self) -> list[str]:
        """``--videos`` and ``--fps-table``: one source of frame times, and readable."""
        problems = []
        if self.videos and self.fps_table:
            problems.append("--videos and --fps-table both time frame folders; give one "
                            "(--videos: each folder's own raw video)")
        if self.videos and not self.videos.is_dir():
            problems.append(f"--videos {self.videos} is not a folder")
        if self.fps_table:
            try:
                read_fps_table(self.fps_table)
            except ConfigError as exc:
                problems.append(str(exc))
        return problems

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["precision"] = self.resolved_precision
        out["cpu_workers"] = self.resolved_cpu_workers
        out["input"] = str(self.input)
        out["catalog"] = str(self.catalog) if self.catalog else None
        out["videos"] = str(self.videos) if self.videos else None
        out["fps_table"] = str(self.fps_table) if self.fps_table else None
        return out


def split_names(values: list[str] | str) -> list[str]:
    """``["a,b", "c"]`` → ``["a", "b", "c"]`` (order kept, duplicates dropped)."""
    values = [values] if isinstance(values, str) else values
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return list(dict.fromkeys(names))


def parse_weights(values: list[str]) -> dict[str, str]:
    """``["NAME=PATH", …]`` → ``{NAME: PATH}``."""
    out = {}
    for text in values:
        name, sep, path = text.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"--weights {text!r}: expected NAME=PATH")
        out[name.strip()] = path.strip()
    return out


def parse_batch_sizes(values: list[str] | None, default: int = 32) -> tuple[int, dict[str, int]]:
    """``--batch-size`` values → (the global batch size, {feature: B}).

    ``["64", "ires100=512"]`` → ``(64, {"ires100": 512})``; a bare number is the global size
    (frames per decode batch), ``NAME=B`` a feature's own; the last of each wins.
    """
    size, per = default, {}
    for text in values or []:
        name, sep, value = text.partition("=")
        raw = value if sep else name
        try:
            number = int(raw.strip())
        except ValueError:
            raise ConfigError(f"--batch-size {text!r}: expected B or NAME=B with B a positive "
                              "integer") from None
        if sep:
            if not name.strip():
                raise ConfigError(f"--batch-size {text!r}: expected NAME=B")
            per[name.strip()] = number
        else:
            size = number
    return size, per


def parse_sets(values: list[str]) -> dict[str, dict[str, str]]:
    """``["NAME.options.k=v", …]`` → ``{NAME: {"options.k": "v"}}``."""
    out: dict[str, dict[str, str]] = {}
    for text in values:
        key, sep, value = text.partition("=")
        name, dot, rest = key.strip().partition(".")
        if not sep or not dot or not name or not rest:
            raise ConfigError(f"--set {text!r}: expected NAME.options.KEY=VALUE "
                              "(or NAME.input.KEY=VALUE, NAME.dim=N)")
        out.setdefault(name, {})[rest] = value
    return out
