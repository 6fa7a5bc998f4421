"""Master keys: parsing ``key_id:base64`` lists, the keyring, the key file and ``keys generate``."""

from __future__ import annotations

import base64
import os
import re
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service import cli
from service.config import Settings
from service.privacy.keys import (
    KEY_FILE_NAME,
    Keyring,
    MasterKey,
    UnknownKeyId,
    create_key_file,
    generate_key_line,
    parse_keys,
    read_key_file,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))


def line(key_id: str, secret: bytes) -> str:
    return f"{key_id}:{base64.b64encode(secret).decode()}"


# --- parsing -------------------------------------------------------------------------------


def test_a_key_list_parses_in_order_with_the_first_key_current() -> None:
    keyring = parse_keys(f" {line('new', KEY_A)} , {line('old.2025_q4-x', KEY_B)}\n")
    assert keyring.key_ids == ("new", "old.2025_q4-x")
    assert keyring.current == MasterKey("new", KEY_A)
    assert keyring.get("old.2025_q4-x").secret == KEY_B
    assert keyring.get("new").secret == KEY_A
    assert len(keyring) == 2


@pytest.mark.parametrize(("raw", "problem"), [
    ("", "is set but empty"),
    ("  \n", "is set but empty"),
    (f"{line('a', KEY_A)},", "key #2 is empty"),
    (f"{line('a', KEY_A)},,{line('b', KEY_B)}", "key #2 is empty"),
    (base64.b64encode(KEY_A).decode(), "key #1 is not key_id:base64"),
    (f"{line('a', KEY_A)},{line('a', KEY_B)}", "key #2 repeats the key id 'a' of key #1"),
    (line("bad id", KEY_A), "key #1 has a key id that is not 1-32 characters"),
    (line("kéy", KEY_A), "key #1 has a key id that is not 1-32 characters"),
    (line("k/1", KEY_A), "key #1 has a key id that is not 1-32 characters"),
    (line("k" * 33, KEY_A), "key #1 has a key id that is not 1-32 characters"),
    (":" + base64.b64encode(KEY_A).decode(), "key #1 has a key id that is not 1-32 characters"),
    ("a:not*base64!", "key #1 ('a') is not standard base64"),
    ("a:" + base64.urlsafe_b64encode(b"\xfb" * 32).decode(), "key #1 ('a') is not standard base64"),
    (f"{line('a', KEY_A)},{line('b', KEY_B[:31])}",
     "key #2 ('b') is 31 bytes after base64 decoding; it must be exactly 32"),
    (line("a", KEY_A + b"!"), "key #1 ('a') is 33 bytes after base64 decoding"),
    ("a:", "key #1 ('a') is 0 bytes after base64 decoding"),
])
def test_a_bad_key_list_is_refused_with_a_message_naming_the_position(
        raw: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_keys(raw)


@pytest.mark.parametrize("raw", [
    f"{line('a', KEY_A)},{line('b', KEY_B[:31])}",
    f"{line('a', KEY_A)},{line('a', KEY_B)}",
    f"{line('a', KEY_A)},,",
    base64.b64encode(KEY_B).decode() + ":" + base64.b64encode(KEY_A).decode(),
])
def test_a_parse_error_never_shows_key_material(raw: str) -> None:
    with pytest.raises(ValueError, match="key #") as caught:
        parse_keys(raw)
    message = str(caught.value)
    for secret in (KEY_A, KEY_B, KEY_B[:31]):
        assert base64.b64encode(secret).decode()[:20] not in message


def test_an_unknown_key_id_raises_unknown_key_id_naming_it() -> None:
    keyring = parse_keys(line("k1", KEY_A))
    with pytest.raises(UnknownKeyId) as caught:
        keyring.get("k20250101-dead")
    assert caught.value.key_id == "k20250101-dead"
    assert "k20250101-dead" in str(caught.value)


def test_a_keyring_refuses_duplicate_ids_and_emptiness() -> None:
    with pytest.raises(ValueError, match="appears twice"):
        Keyring((MasterKey("a", KEY_A), MasterKey("a", KEY_B)))
    with pytest.raises(ValueError, match="at least one key"):
        Keyring(())


def test_a_master_key_refuses_a_secret_that_is_not_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        MasterKey("a", KEY_A[:16])


def test_reprs_of_keys_and_keyrings_show_ids_and_never_key_bytes() -> None:
    keyring = parse_keys(f"{line('k1', KEY_A)},{line('k2', KEY_B)}")
    for text in (repr(keyring), str(keyring), repr(keyring.current), str(keyring.get("k2"))):
        assert "k1" in text or "k2" in text
        for secret in (KEY_A, KEY_B):
            assert repr(secret)[2:20] not in text
            assert base64.b64encode(secret).decode()[:20] not in text
            assert secret.hex()[:20] not in text


# --- generate ------------------------------------------------------------------------------


def test_generate_key_line_parses_back_to_one_32_byte_key_named_by_the_date() -> None:
    generated = generate_key_line(datetime(2026, 11, 29, 23, 59, tzinfo=UTC))
    keyring = parse_keys(generated)
    assert len(keyring) == 1
    assert re.fullmatch(r"k20261129-[0-9a-f]{4}", keyring.current.key_id)
    assert len(keyring.current.secret) == 32
    assert generate_key_line() != generate_key_line()


def test_keys_generate_prints_one_key_line_and_nothing_else(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["keys", "generate"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    keyring = parse_keys(out)
    assert len(keyring.current.secret) == 32
    today = datetime.now(UTC).strftime("%Y%m%d")
    assert keyring.current.key_id.startswith(f"k{today}-")


# --- key file ------------------------------------------------------------------------------


def test_create_key_file_writes_one_key_with_mode_0600_and_never_overwrites(
        tmp_path: Path) -> None:
    path = tmp_path / "data" / KEY_FILE_NAME
    assert read_key_file(path) is None
    assert create_key_file(path) is True
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    first = path.read_bytes()
    keyring = read_key_file(path)
    assert keyring is not None
    assert len(keyring.current.secret) == 32
    assert create_key_file(path) is False
    assert path.read_bytes() == first
    assert sorted(p.name for p in path.parent.iterdir()) == [KEY_FILE_NAME]


def test_serve_creates_the_key_file_once_and_reuses_it_on_the_next_start(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    environ = {"RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path}/results.db"}
    first = cli.ensure_encryption_key(Settings.from_env(environ))
    path = tmp_path / KEY_FILE_NAME
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert first.keys_source == str(path)
    assert first.encryption_keys is not None
    message = capsys.readouterr().err
    assert str(path) in message
    secret = base64.b64encode(first.encryption_keys.current.secret).decode()
    assert secret not in message
    content = path.read_bytes()

    again = Settings.from_env(environ)
    assert again.encryption_keys == first.encryption_keys
    second = cli.ensure_encryption_key(again)
    assert second.encryption_keys == first.encryption_keys
    assert path.read_bytes() == content
    assert capsys.readouterr().err == ""


def test_serve_creates_no_key_file_when_nothing_is_encrypted(tmp_path: Path) -> None:
    environ = {"RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path}/results.db",
               "RECEIVER_STORE_THUMBNAILS": "store", "RECEIVER_STORE_EMBEDDINGS": "drop"}
    settings = cli.ensure_encryption_key(Settings.from_env(environ))
    assert settings.encryption_keys is None
    assert not (tmp_path / KEY_FILE_NAME).exists()
    settings.require_encryption_key()


def test_serve_creates_no_key_file_when_keys_are_configured(tmp_path: Path) -> None:
    environ = {"RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path}/results.db",
               "RECEIVER_ENCRYPTION_KEYS": line("k1", KEY_A)}
    settings = cli.ensure_encryption_key(Settings.from_env(environ))
    assert settings.encryption_keys is not None
    assert settings.encryption_keys.key_ids == ("k1",)
    assert settings.keys_source == "environment"
    assert not (tmp_path / KEY_FILE_NAME).exists()


@pytest.mark.slow
def test_the_serve_command_creates_the_key_file_says_where_and_never_logs_the_key(
        tmp_path: Path) -> None:
    from tests.support.server import serve

    path = tmp_path / "data" / KEY_FILE_NAME
    with serve(cwd=tmp_path) as server:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        content = path.read_text(encoding="utf-8")
        logs = "\n".join(server.log_lines())
    keyring = parse_keys(content)
    assert str(path) in logs
    assert "privacy.key_created" in logs
    assert base64.b64encode(keyring.current.secret).decode() not in logs
    with serve(cwd=tmp_path) as server:
        logs = "\n".join(server.log_lines())
    assert path.read_text(encoding="utf-8") == content
    assert "privacy.key_created" not in logs


def test_serve_explains_a_key_file_it_cannot_create(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "data"
    not_a_folder.write_text("a file where the data folder should be", encoding="utf-8")
    settings = Settings(database_url=f"sqlite:///{not_a_folder}/results.db")
    with pytest.raises(cli.UsageError, match="RECEIVER_ENCRYPTION_KEYS") as caught:
        cli.ensure_encryption_key(settings)
    assert str(not_a_folder / KEY_FILE_NAME) in str(caught.value)
