"""Shared fixtures.  Data that is not ours is read from ../shared and skipped when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real DL_info rows, real CT); skips the test when absent."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip("../shared/data is not present on this machine")
    return path
