import pytest

from ddla.config import RunConfig
from ddla.errors import ConfigError
from ddla.security.config import SecurityConfig


def test_defaults_are_off_and_valid():
    cfg = RunConfig.load(None, [])
    assert cfg.security.enabled is False and cfg.data.share == "none"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["data.share=shared:0.05"], "needs security.enabled=true"),
        (["security.secure_aggregation=true"], "needs security.enabled=true"),
        (["data.pull_every=5"], "needs security.enabled=true"),
        (["data.pull_count=0"], "pull_count"),
        (["data.share=shared:1.5"], "data.share"),
        (["data.share=everything"], "data.share"),
        (["security.on_auth_failure=exclude", "security.enabled=true"], "not supported"),
        (["security.on_auth_failure=shrug"], "not supported"),
        (["security.timeout_s=0"], "timeout_s"),
        (["security.frac_bits=60"], "frac_bits"),
        (["security.policy=/nonexistent/policy.yaml"], "does not exist"),
    ],
)
def test_bad_security_settings(overrides, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig.load(None, overrides)


def test_valid_security_settings(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("agents: {0: [{peers: '*', max_samples: 5}]}\n")
    cfg = RunConfig.load(
        None,
        [
            "security.enabled=true",
            "security.secure_aggregation=true",
            f"security.policy={policy}",
            "data.share=shared:0.05",
        ],
    )
    assert cfg.security == SecurityConfig(enabled=True, secure_aggregation=True, policy=str(policy))


def test_fresh_run_sets_the_previous_audit_log_aside(tmp_path):
    from ddla.runfiles import prepare_run_dir
    from ddla.security.audit import AuditLog, verify

    AuditLog.for_run(tmp_path, agent=0).append("join", members=[0])
    prepare_run_dir(tmp_path, fresh=False)
    assert verify(tmp_path).ok  # a resumed run keeps appending to its own log
    prepare_run_dir(tmp_path, fresh=True)
    assert not (tmp_path / "audit").exists()
    [kept] = tmp_path.glob("audit.*")
    assert (kept / "agent0.jsonl").read_text().count("\n") == 1
    AuditLog.for_run(tmp_path, agent=0).append("join", members=[0])
    prepare_run_dir(tmp_path, fresh=True)
    assert len(list(tmp_path.glob("audit.*"))) == 2
