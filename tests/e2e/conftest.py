"""Fixtures for end-to-end tests."""

from __future__ import annotations

import os

import pytest
from e2e_helpers import descendants


@pytest.fixture
def no_leftover_processes():
    """Fail the test if it leaves any child process of the test runner alive."""
    yield
    left = descendants(os.getpid())
    assert not left, f"processes left behind: {left}"
