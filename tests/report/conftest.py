"""Report test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.rundir_factory import write_run_dir


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return write_run_dir(tmp_path / "run")
