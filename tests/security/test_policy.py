import pytest

from ddla.errors import ConfigError
from ddla.security.policy import AccessPolicy, PolicyEnforcer

POLICY = """
default: deny
agents:
  0:
    - peers: [1, 2]
      kinds: [samples]
      classes: [0, 1]
      max_samples: 100
    - peers: "*"
      kinds: [features]
      classes: "*"
      max_samples: 10
  "*":
    - peers: [0]
      kinds: [samples, features]
      max_samples: 5
"""


@pytest.fixture
def policy(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return AccessPolicy.load(path)


def test_allowed_pull_within_quota(policy):
    owner = PolicyEnforcer(policy, owner=0)
    d = owner.decide(requester=1, kind="samples", classes=[0, 1], count=60)
    assert d.allowed and d.granted == 60
    d = owner.decide(requester=1, kind="samples", classes=[1], count=60)
    assert d.allowed and d.granted == 40 and "quota 100" in d.reason
    d = owner.decide(requester=1, kind="samples", classes=[1], count=1)
    assert not d.allowed and "used its quota of 100" in d.reason
    # Quotas are per requester.
    assert owner.decide(requester=2, kind="samples", classes=[0], count=100).granted == 100


def test_forbidden_pulls_are_denied_with_a_reason(policy):
    owner = PolicyEnforcer(policy, owner=0)
    d = owner.decide(requester=3, kind="samples", classes=[0], count=1)
    assert not d.allowed and d.granted == 0
    assert d.reason == "no rule of agent 0 lets agent 3 pull samples of classes [0]"
    assert not owner.decide(requester=1, kind="samples", classes=[0, 7], count=1).allowed
    assert owner.decide(requester=3, kind="features", classes=[7], count=3).granted == 3
    assert not owner.decide(requester=1, kind="weights", classes=[0], count=1).allowed


def test_wildcard_owner_section(policy):
    owner = PolicyEnforcer(policy, owner=4)
    assert owner.decide(requester=0, kind="samples", classes=[9], count=9).granted == 5
    assert not owner.decide(requester=1, kind="samples", classes=[9], count=1).allowed


def test_default_allow():
    owner = PolicyEnforcer(AccessPolicy.from_dict({"default": "allow"}), owner=0)
    assert owner.decide(requester=1, kind="samples", classes=[1], count=7).granted == 7


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"default": "maybe"}, "default"),
        ({"agents": {0: [{"peers": "*", "max_samples": -1}]}}, "max_samples"),
        ({"agents": {0: [{"peers": "*"}]}}, "max_samples"),
        ({"agents": {0: [{"peers": "*", "max_samples": 1, "kinds": ["weights"]}]}}, "kinds"),
        ({"agents": {0: [{"peers": "one", "max_samples": 1}]}}, "peers"),
        ({"agents": {0: [{"peers": "*", "max_samples": 1, "colour": 1}]}}, "unknown key"),
        ({"agents": {"zero": []}}, "owner"),
    ],
)
def test_bad_policies_are_config_errors(raw, match):
    with pytest.raises(ConfigError, match=match):
        AccessPolicy.from_dict(raw)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        AccessPolicy.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("agents: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        AccessPolicy.load(bad)
