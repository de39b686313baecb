import os

import pytest

from ddla.errors import AuthenticationError
from ddla.security.secret import fingerprint, generate_secret, load_secret, write_secret


def test_keygen_writes_32_bytes_owner_only(tmp_path):
    path = write_secret(tmp_path / "run.key")
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert len(load_secret(path, env={})) == 32
    assert load_secret(path, env={}) != generate_secret()


def test_keygen_refuses_to_overwrite(tmp_path):
    path = write_secret(tmp_path / "run.key")
    old = load_secret(path, env={})
    with pytest.raises(AuthenticationError, match="already exists"):
        write_secret(path)
    write_secret(path, overwrite=True)
    assert load_secret(path, env={}) != old


def test_env_sources(tmp_path):
    path = write_secret(tmp_path / "run.key")
    secret = load_secret(path, env={})
    assert load_secret(env={"DDLA_SECRET_FILE": str(path)}) == secret
    assert load_secret(env={"DDLA_SECRET": secret.hex()}) == secret


def test_missing_secret_is_a_clear_error():
    with pytest.raises(AuthenticationError, match="no run secret") as err:
        load_secret(env={})
    assert "ddla keygen" in err.value.help


def test_missing_file_and_malformed_secret(tmp_path):
    with pytest.raises(AuthenticationError, match="does not exist"):
        load_secret(tmp_path / "nope.key", env={})
    bad = tmp_path / "bad.key"
    bad.write_text("not hex at all")
    with pytest.raises(AuthenticationError, match="malformed"):
        load_secret(bad, env={})
    with pytest.raises(AuthenticationError, match="malformed"):
        load_secret(env={"DDLA_SECRET": "abcd"})


def test_fingerprint_is_short_and_stable():
    assert fingerprint(b"x" * 32) == fingerprint(b"x" * 32) != fingerprint(b"y" * 32)
    assert len(fingerprint(b"x" * 32)) == 8
