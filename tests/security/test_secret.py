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
    bad.chmod(0o600)
    with pytest.raises(AuthenticationError, match="malformed"):
        load_secret(bad, env={})
    with pytest.raises(AuthenticationError, match="malformed"):
        load_secret(env={"DDLA_SECRET": "abcd"})


def test_fingerprint_is_short_and_stable():
    assert fingerprint(b"x" * 32) == fingerprint(b"x" * 32) != fingerprint(b"y" * 32)
    assert len(fingerprint(b"x" * 32)) == 8


def test_a_raw_bytes_secret_is_refused_in_one_line(tmp_path):
    # Issue 10 item 9: raw bytes gave UnicodeDecodeError from every agent.
    raw = tmp_path / "raw.key"
    raw.write_bytes(b"\x9f" + os.urandom(31))
    raw.chmod(0o600)
    with pytest.raises(AuthenticationError, match="binary data, expected one line of 64 hex") as e:
        load_secret(raw, env={})
    assert "ddla keygen" in e.value.help


def test_keygen_output_is_the_one_documented_format(tmp_path):
    text = write_secret(tmp_path / "run.key").read_text()
    assert len(text) == 65 and text.endswith("\n")
    int(text, 16)  # 64 hex characters


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_group_or_world_readable_secret_is_refused(tmp_path, mode):
    # Issue 10 item 10: a 0644 secret was accepted silently.
    path = write_secret(tmp_path / "run.key")
    path.chmod(mode)
    with pytest.raises(
        AuthenticationError, match=f"readable by group or others \\(mode {mode:04o}"
    ) as e:
        load_secret(path, env={})
    assert e.value.help == f"chmod 600 {path} (ddla keygen writes it that way)"


def test_a_bad_secret_is_refused_before_agents_start(tmp_path):
    import ddla

    path = write_secret(tmp_path / "run.key")
    path.chmod(0o644)
    out = tmp_path / "run"
    with pytest.raises(AuthenticationError, match="readable by group or others"):
        ddla.launch(
            overrides=[
                "agents=2",
                "data.dataset=digits",
                "security.enabled=true",
                f"security.secret_file={path}",
                f"out={out}",
            ]
        )
    assert not out.exists()  # refused in the launcher: no run directory, no agent logs
