"""Security for ddla agents: join authentication, sealed payloads, secure aggregation, access
policy and the audit log. One concept per module; see README "Security and data sharing".

Example:
    >>> from ddla.security import SecurityConfig
    >>> SecurityConfig().enabled
    False
"""

from ddla.security.audit import AuditLog, AuditReport, audit_key, verify
from ddla.security.config import SecurityConfig
from ddla.security.envelope import Envelope
from ddla.security.identity import Session, handshake
from ddla.security.policy import AccessPolicy, Decision, PolicyEnforcer
from ddla.security.secagg import SecureAggregator
from ddla.security.secret import fingerprint, generate_secret, load_secret, write_secret

__all__ = [
    "AccessPolicy",
    "AuditLog",
    "AuditReport",
    "Decision",
    "Envelope",
    "PolicyEnforcer",
    "SecureAggregator",
    "SecurityConfig",
    "Session",
    "audit_key",
    "fingerprint",
    "generate_secret",
    "handshake",
    "load_secret",
    "verify",
    "write_secret",
]
