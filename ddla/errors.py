"""The DdlaError hierarchy: every error a user can cause names the problem and a fix.

Each class carries the CLI exit code and the error carries a one-line ``help`` hint, so the
CLI can print ``error: <message>`` and ``help: <hint>`` and exit non-zero without a traceback.

Example:
    >>> from ddla.errors import ConfigError
    >>> err = ConfigError("unknown strategy 'foo'", help="choose one of: allreduce")
    >>> err.exit_code, str(err), err.help
    (2, "unknown strategy 'foo'", 'choose one of: allreduce')
"""

from __future__ import annotations


class DdlaError(Exception):
    """Base class: a problem ddla can explain in one line."""

    exit_code: int = 1

    def __init__(self, message: str, *, help: str | None = None) -> None:
        super().__init__(message)
        self.help = help

    def __reduce__(self):  # keep ``help`` when the error crosses a process boundary
        return (_rebuild, (type(self), str(self), self.help))


def _rebuild(cls: type[DdlaError], message: str, help: str | None) -> DdlaError:
    return cls(message, help=help)


class ConfigError(DdlaError):
    """A run configuration value is missing, unknown or out of range."""

    exit_code = 2


class DataError(DdlaError):
    """A dataset is missing, malformed or inconsistent."""

    exit_code = 3


class CommError(DdlaError):
    """Communication between agents failed."""

    exit_code = 4


class CommTimeoutError(CommError):
    """A blocking communication call did not finish within its timeout."""


class PeerFailedError(CommError):
    """A peer agent died or left the run."""


class CheckpointError(DdlaError):
    """A checkpoint is missing, corrupt or does not match the run."""

    exit_code = 5


class SecurityError(DdlaError):
    """Authentication, integrity or access control refused something."""

    exit_code = 6


class AuthenticationError(SecurityError):
    """An agent could not prove it holds the run secret."""


class TamperedPayloadError(SecurityError):
    """A sealed payload failed authentication (tampered, replayed or wrong key)."""


class AccessDeniedError(SecurityError):
    """The access policy forbids a request."""


class AgentFailedError(DdlaError):
    """One or more agents exited with an error."""

    exit_code = 7
