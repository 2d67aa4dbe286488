"""Shared fixtures: where the shared assets live, and a clear failure when they are missing.

The repository never holds media, weights or golden vectors; they sit in ``../shared`` beside the
checkout (or wherever ``HOOVIK_SHARED`` points). A missing asset fails the test with the path it
looked for rather than skipping it, because a skipped test proves nothing in CI.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _shared_root() -> Path:
    env = os.environ.get("HOOVIK_SHARED")
    return Path(env) if env else REPO.parent / "shared"


def require_shared(*parts: str) -> Path:
    """Return a path under the shared folder, failing loudly (not skipping) when it is absent."""
    path = _shared_root().joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"shared asset missing: {path}\n"
            "Tests read media, the MediaPipe asset and golden vectors from ../shared beside the checkout "
            "(or $HOOVIK_SHARED). Place the shared folder there and run again."
        )
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return require_shared()


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return require_shared("reference", "golden")


@pytest.fixture(scope="session")
def face_asset() -> Path:
    return require_shared("models", "face_landmarker.task")


@pytest.fixture(scope="session")
def media_dir() -> Path:
    return require_shared("media")
