"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NIPYPE_NO_ET", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data" / "ljubljana").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to the real Ljubljana BIDS subset in ``../shared/data``; skips when absent."""
    if not (SHARED_DATA / "dataset_description.json").is_file():
        pytest.skip(
            f"real data not available at {SHARED_DATA} (only present in the project's CI "
            "and dev machines; a fresh clone has it not)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """Repository root."""
    return REPO
