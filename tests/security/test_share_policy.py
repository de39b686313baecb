"""``data.share`` follows the owners' access policy, as pulls do (issue 10, item 16)."""

from __future__ import annotations

import pytest
import torch
from conftest import run_handshakes

from ddla.aggregate.aggregator import Protection
from ddla.errors import AccessDeniedError
from ddla.security.audit import AuditLog
from ddla.security.config import SecurityConfig
from ddla.security.envelope import Envelope
from ddla.security.runtime import AgentSecurity

SECRET = b"p" * 32


def _security(session, policy, tmp_path) -> AgentSecurity:
    audit = AuditLog.for_run(tmp_path, agent=session.rank)
    return AgentSecurity(
        session=session,
        envelope=Envelope(session),
        transport=None,  # the check runs before anything is sent
        protection=Protection(masking=None, audit=audit),
        audit=audit,
        config=SecurityConfig(enabled=True, secret_file="unused", policy=str(policy)),
    )


@pytest.fixture(scope="module")
def session():
    return run_handshakes([SECRET, SECRET, SECRET])[0]


def test_a_policy_granting_every_peer_lets_the_owner_share(session, tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text("agents:\n  '*':\n    - {peers: '*', kinds: [samples], max_samples: 10}\n")
    _security(session, policy, tmp_path)._check_share(torch.tensor([0, 1, 1]))


def test_a_policy_that_denies_one_peer_refuses_the_share_and_audits_it(session, tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text("agents:\n  0:\n    - {peers: [1], kinds: [samples], max_samples: 10}\n")
    sec = _security(session, policy, tmp_path)
    with pytest.raises(AccessDeniedError, match="does not let agent 2 take its 3 shared"):
        sec._check_share(torch.tensor([0, 1, 1]))
    assert '"event": "deny"' in (tmp_path / "audit" / "agent0.jsonl").read_text()


def test_a_quota_below_the_contribution_refuses_it(session, tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text("agents:\n  '*':\n    - {peers: '*', kinds: [samples], max_samples: 2}\n")
    with pytest.raises(AccessDeniedError, match="shared samples"):
        _security(session, policy, tmp_path)._check_share(torch.tensor([0, 1, 1]))
