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
    from ddla.runfiles import plan_fresh_out, start_fresh_run
    from ddla.security.audit import AuditLog, verify

    out = tmp_path / "run"
    start_fresh_run(plan_fresh_out(out, force=False, scratch=False), "agents: 1\n")
    AuditLog.for_run(out, agent=0).append("join", members=[0])
    assert verify(out).ok  # a resumed run keeps appending to its own log
    # A new run over it (the failed run had no checkpoint): the evidence is kept aside.
    start_fresh_run(plan_fresh_out(out, force=False, scratch=False), "agents: 1\n")
    assert not (out / "audit").exists()
    [kept] = tmp_path.glob("run.previous-*")
    assert (kept / "audit" / "agent0.jsonl").read_text().count("\n") == 1
    AuditLog.for_run(out, agent=0).append("join", members=[0])
    start_fresh_run(plan_fresh_out(out, force=False, scratch=False), "agents: 1\n")
    assert len(list(tmp_path.glob("run.previous-*"))) == 2


def test_data_share_needs_an_access_policy(tmp_path):
    # Issue 10 item 16: pulls without a policy were refused, shares ran with none at all.
    with pytest.raises(ConfigError, match=r"data\.share=shared:0\.05 needs security\.policy"):
        RunConfig.load(None, ["security.enabled=true", "data.share=shared:0.05"])
