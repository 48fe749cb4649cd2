"""Shared pytest fixtures: paths to the real clips in ../shared/media (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_MEDIA = REPO.parent / "shared" / "media"


@pytest.fixture(scope="session")
def shared_media() -> Path:
    """The folder of real GRID / CREMA-D clips; the test is skipped when it is absent."""
    if not (SHARED_MEDIA / "grid").is_dir():
        pytest.skip("../shared/media is absent")
    return SHARED_MEDIA
