"""Fixtures shared by every test layer."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real inputs written elsewhere live beside the checkout (CI clones main with shared/ next to it).
SHARED_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """`../shared/fixtures`: Golem WASM components and SDK-compiled DARs."""
    assert SHARED_FIXTURES.is_dir(), f"missing {SHARED_FIXTURES}"
    return SHARED_FIXTURES
