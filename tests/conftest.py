"""Fixtures shared across test folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.profile_run import profiled_run


@pytest.fixture(scope="session")
def profiled_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real profiled 2-agent DiLoCo run (``tests/profile_run.py``), made once per session."""
    return profiled_run(tmp_path_factory.mktemp("profiled") / "run")
