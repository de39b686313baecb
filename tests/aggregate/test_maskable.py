"""Secure aggregation refuses what it cannot mask, at config time, in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ddla.aggregate import Aggregator, Protection, refuse_unmaskable
from ddla.compress import build_compressor
from ddla.config import RunConfig
from ddla.errors import ConfigError

SECURE = ["security.enabled=true", "security.secure_aggregation=true"]
ACCEPTED = ["none", "fp16", "bf16", "int8", "int4", "int8:64", "int4:32"]
REFUSED = {
    "topk:0.01": "indices",
    "powersgd:4": "multiplied",
    "topk:0.1+int8": "chain",
    "fp16+int8": "chain",
}


@pytest.mark.parametrize("spec", ACCEPTED)
@pytest.mark.parametrize("strategy", ["allreduce", "local_sgd", "diloco", "streaming_diloco"])
def test_accepted_combinations_build(strategy, spec):
    cfg = RunConfig.load(None, [*SECURE, f"sync.strategy={strategy}", f"sync.compress={spec}"])
    assert cfg.security.secure_aggregation and cfg.sync.compress == spec


@pytest.mark.parametrize(("spec", "why"), REFUSED.items())
@pytest.mark.parametrize("strategy", ["allreduce", "diloco"])
def test_refused_combinations_fail_at_config(strategy, spec, why):
    with pytest.raises(ConfigError, match=why) as info:
        RunConfig.load(None, [*SECURE, f"sync.strategy={strategy}", f"sync.compress={spec}"])
    assert f"cannot mask sync.compress={spec}" in str(info.value)
    assert "\n" not in str(info.value)
    assert "int8" in info.value.help


@pytest.mark.parametrize("spec", REFUSED)
def test_without_secure_aggregation_they_run(spec):
    RunConfig.load(None, [f"sync.compress={spec}"])


def test_aggregator_refuses_too():
    """A library user who builds an Aggregator by hand cannot get around the config check."""

    class _Masking:  # only its presence matters: refusal happens before any use
        pass

    with pytest.raises(ConfigError, match="cannot mask"):
        Aggregator(
            object(),  # type: ignore[arg-type]
            compressor=build_compressor("topk:0.01"),
            protection=Protection(masking=_Masking()),  # type: ignore[arg-type]
        )
    refuse_unmaskable("int4")


def test_cli_refuses_before_any_agent_starts(tmp_path):
    key = tmp_path / "run.key"
    out = tmp_path / "out"
    ddla = [sys.executable, "-m", "ddla.cli"]
    subprocess.run([*ddla, "keygen", "--out", str(key)], check=True, capture_output=True)
    proc = subprocess.run(
        [*ddla, "run", "--agents", "2", "--dataset", "digits", "--steps", "5", "--out", str(out),
         "--strategy", "diloco", "--set", "sync.compress=topk:0.01",
         "--set", f"security.secret_file={key}", *[a for s in SECURE for a in ("--set", s)]],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "cannot mask sync.compress=topk:0.01" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "logs").exists()  # no agent ever started
