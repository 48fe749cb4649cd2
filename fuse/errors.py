"""The fusion trainer's error hierarchy; every message names the bad value."""

from __future__ import annotations

from extract.errors import ExtractError


class FuseError(ExtractError):
    """Base class of the errors ``fuse`` raises on purpose."""


class ConfigError(FuseError, ValueError):
    """One or more problems with a run's config, labels or feature coverage.

    ``problems`` holds every problem found, so one run of ``fuse validate`` reports them all.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s):\n{lines}")


class LabelError(FuseError, ValueError):
    """A label file does not have the expected layout; names the file and line."""


class DataError(FuseError):
    """Features cannot be loaded or aligned as asked (missing videos, empty grids)."""


class RunError(FuseError):
    """A run folder lacks what ``eval`` / ``predict`` / ``--resume`` need."""


class FeatureMismatchError(FuseError):
    """A store's feature differs (config or width) from the one a run was trained on."""
