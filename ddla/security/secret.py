"""The run secret: 32 random bytes every agent of one run must hold before anything flows.

One format: the 32 bytes as **64 hexadecimal characters on one line** (a trailing newline is
fine), which is what ``ddla keygen --out run.key`` writes (file mode 0600). Anything else (raw
bytes, base64, another length) is refused in one line. Like ssh with private keys, a secret
file that its group or others can read is refused: ``chmod 600`` it. Agents read it from
``security.secret_file``, the ``DDLA_SECRET_FILE`` environment variable, or ``DDLA_SECRET``
(the hex itself, for schedulers that inject secrets as variables). The secret never travels:
agents prove they hold it with HMAC challenge-responses (:mod:`ddla.security.identity`).

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "run.key")
    >>> _ = write_secret(path)
    >>> len(load_secret(path, env={}))
    32
    >>> oct(os.stat(path).st_mode & 0o777)
    '0o600'
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from ddla.errors import AuthenticationError

log = logging.getLogger(__name__)

SECRET_BYTES = 32
ENV_SECRET = "DDLA_SECRET"
ENV_SECRET_FILE = "DDLA_SECRET_FILE"
_HELP = (
    "create one with `ddla keygen --out run.key` and give every agent the same file via "
    f"--set security.secret_file=run.key or {ENV_SECRET_FILE}=run.key"
)


def generate_secret() -> bytes:
    """Return 32 bytes from the operating system's CSPRNG."""
    return secrets.token_bytes(SECRET_BYTES)


def write_secret(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Create a new secret file readable only by its owner (mode 0600) and return its path.

    The file is created with ``O_EXCL`` and mode 0600 in one system call, so there is no moment
    where it exists with wider permissions; an existing file is kept unless ``overwrite``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise AuthenticationError(
            f"secret file {path} already exists",
            help="pass --force to replace it (agents holding the old secret can no longer join)",
        )
    if overwrite:
        path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(generate_secret().hex() + "\n")
    return path


def _parse(text: str, source: str) -> bytes:
    text = text.strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != SECRET_BYTES:
        raise AuthenticationError(
            f"run secret from {source} is malformed: expected one line of {2 * SECRET_BYTES} "
            f"hex characters ({SECRET_BYTES} bytes)",
            help=_HELP,
        )
    return raw


def _read_file(path: Path, source: str) -> bytes:
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise AuthenticationError(
            f"secret file {path} ({source}) does not exist", help=_HELP
        ) from None
    except OSError as exc:
        raise AuthenticationError(f"cannot read secret file {path}: {exc}", help=_HELP) from exc
    if os.name == "posix" and mode & 0o077:
        # As ssh does with private keys: a secret others can read is no longer a secret.
        raise AuthenticationError(
            f"secret file {path} is readable by group or others (mode {mode & 0o777:04o})",
            help=f"chmod 600 {path} (ddla keygen writes it that way)",
        )
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise AuthenticationError(
            f"secret file {path} is not a ddla secret: it holds binary data, expected one "
            f"line of {2 * SECRET_BYTES} hex characters",
            help=_HELP,
        ) from None
    return _parse(text, f"{source} {path}")


def load_secret(
    path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> bytes:
    """Load the run secret: an explicit file, else ``DDLA_SECRET``, else ``DDLA_SECRET_FILE``.

    Raises :class:`~ddla.errors.AuthenticationError` with a hint when none is given or the one
    given is unreadable or malformed (an agent without the secret must not start).
    """
    env = os.environ if env is None else env
    if path:
        return _read_file(Path(path), "security.secret_file")
    if env.get(ENV_SECRET):
        return _parse(env[ENV_SECRET], f"${ENV_SECRET}")
    if env.get(ENV_SECRET_FILE):
        return _read_file(Path(env[ENV_SECRET_FILE]), f"${ENV_SECRET_FILE}")
    raise AuthenticationError(
        f"no run secret: security is on but neither security.secret_file, ${ENV_SECRET} "
        f"nor ${ENV_SECRET_FILE} is set",
        help=_HELP,
    )


def fingerprint(secret: bytes) -> str:
    """A short, non-reversible name for a secret, safe to print in logs (8 hex characters)."""
    return hashlib.sha256(b"ddla/fingerprint/v1|" + secret).hexdigest()[:8]
