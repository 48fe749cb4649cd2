"""The options of one ``extract run``, validated as a whole before any heavy work."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from extract.errors import ConfigError
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
    batch_size: int = 32  # frames per face-detection / backbone batch
    limit: int | None = None  # only the K longest inputs that still have work
    sample: str = "all"  # frame sampling: all | fps:F | count:N
    image_fps: float = 30.0  # frame rate of image-folder inputs (time = index / fps)
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

    def __post_init__(self) -> None:
        self.input = Path(self.input)
        self.store = str(self.store)
        self.catalog = Path(self.catalog) if self.catalog else None
        env = [m for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
        self.plugins = list(dict.fromkeys([*self.plugins, *(m.strip() for m in env)]))

    @property
    def sampling(self) -> Sampling:
        return Sampling.parse(self.sample)

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
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            problems.append(f"--limit must be a positive integer, got {self.limit!r}")
        if self.run_id is not None and not RUN_ID.fullmatch(str(self.run_id)):
            problems.append(f"--run-id {self.run_id!r}: use 1-100 letters, digits, '_', '.', "
                            "'-' (it names a folder), starting with a letter or digit")
        if self.backend not in ("local", "ray"):
            problems.append(f"--backend must be 'local' or 'ray', got {self.backend!r}")
        if not self.image_fps > 0:
            problems.append(f"--image-fps must be positive, got {self.image_fps!r}")
        try:
            Sampling.parse(self.sample)
        except ConfigError as exc:
            problems.append(str(exc))
        if not self.input.exists():
            problems.append(f"input {self.input} does not exist")
        for what, mapping in (("--weights", self.weights), ("--set", self.sets)):
            stray = sorted(set(mapping) - set(self.features))
            if stray:
                problems.append(f"{what} names feature(s) {stray} that are not in this run "
                                f"({', '.join(self.features)})")
        return problems

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["input"] = str(self.input)
        out["catalog"] = str(self.catalog) if self.catalog else None
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
