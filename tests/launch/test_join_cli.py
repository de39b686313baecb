"""`ddla join` refuses what cannot work before it starts anything: one line and its fix."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ddla.cli import app

runner = CliRunner()


def _error(*args: str, code: int) -> list[str]:
    result = runner.invoke(app, ["join", *args])
    output = result.output
    assert result.exit_code == code, output
    assert "Traceback" not in output
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert any(ln.startswith("help:") for ln in lines), output
    return [ln for ln in lines if ln.startswith("error:")]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--rendezvous", "localhost:29400", "--nodes", "2"], "resolves to 127.0.0.1 (loopback)"),
        (["--rendezvous", "10.0.0.1", "--nodes", "2"], "is not HOST:PORT"),
        (["--rendezvous", "127.0.0.1:29400", "--nodes", "0"], "both must be at least 1"),
        (
            ["--rendezvous", "127.0.0.1:29400", "--nodes", "2", "--set", "agents=3"],
            "agents=3 in the config, but --nodes 2 x --agents-per-node 1 start 2",
        ),
        (
            ["--rendezvous", "127.0.0.1:29400", "--nodes", "2", "--ifname", "nosuchif0"],
            "--ifname nosuchif0: no such network interface",
        ),
    ],
)
def test_join_refuses_with_one_line(args: list[str], needle: str) -> None:
    errors = _error(*args, code=2)
    assert len(errors) == 1 and needle in errors[0], errors


def test_join_refuses_a_taken_port_on_the_host(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        errors = _error(
            "--rendezvous", f"127.0.0.1:{port}", "--nodes", "2", "--host",
            "--out", str(tmp_path / "run"), code=4,
        )  # fmt: skip
    assert errors == [f"error: port {port} on 127.0.0.1 is already in use (another run or "
                      "program is listening there)"]  # fmt: skip
    assert not (tmp_path / "run").exists()  # refused before the run directory was touched
