"""Unit tests of ``service.config.Settings.from_env``: always explicit dicts, never os.environ."""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path

import pytest

from service.cli import new_webhook_secret
from service.config import ConfigError, Settings

SECRET = "s3cret-Value-42-long-enough"


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    """A valid minimal environment whose data folder is ``tmp_path``."""
    return {"RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path}/results.db",
            "RECEIVER_WEBHOOK_SECRETS": SECRET}


def config_error(environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ)
    return caught.value


def message_of(error: ConfigError) -> str:
    return str(error) + "\n" + "\n".join(error.problems)


# --- defaults ------------------------------------------------------------------------------


def test_defaults_apply_when_the_environment_is_empty(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default ./data holds no secret file here
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a TTY
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite:///./data/results.db"
    assert settings.max_body_bytes == 26214400
    assert settings.signature_tolerance_seconds == 300
    assert settings.log_level == "info"
    assert settings.log_format == "json"
    assert settings.allow_unsigned is False
    assert settings.forwarded_allow_ips == "127.0.0.1"
    assert settings.root_path == ""
    assert settings.webhook_secrets == ()


def test_default_database_is_the_sqlite_file_under_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings.dialect == "sqlite"
    assert settings.data_dir == (tmp_path / "data").resolve()


def test_unrelated_environment_variables_are_ignored(sqlite_env: dict[str, str]) -> None:
    settings = Settings.from_env({**sqlite_env, "DATABASE_URL": "mysql://x/y",
                                  "RECEIVER_UNKNOWN": "whatever"})
    assert settings.dialect == "sqlite"


def test_log_format_console_is_honoured(sqlite_env: dict[str, str]) -> None:
    settings = Settings.from_env({**sqlite_env, "RECEIVER_LOG_FORMAT": "console"})
    assert settings.log_format == "console"


def test_log_format_json_is_honoured(sqlite_env: dict[str, str]) -> None:
    settings = Settings.from_env({**sqlite_env, "RECEIVER_LOG_FORMAT": "JSON"})
    assert settings.log_format == "json"


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error", "WARNING"])
def test_known_log_levels_are_accepted(sqlite_env: dict[str, str], level: str) -> None:
    settings = Settings.from_env({**sqlite_env, "RECEIVER_LOG_LEVEL": level})
    assert settings.log_level == level.lower()


def test_forwarded_allow_ips_is_taken_from_the_environment(sqlite_env: dict[str, str]) -> None:
    settings = Settings.from_env({**sqlite_env, "RECEIVER_FORWARDED_ALLOW_IPS": "*"})
    assert settings.forwarded_allow_ips == "*"


def test_signature_tolerance_is_taken_from_the_environment(sqlite_env: dict[str, str]) -> None:
    settings = Settings.from_env({**sqlite_env,
                                  "RECEIVER_SIGNATURE_TOLERANCE_SECONDS": "60"})
    assert settings.signature_tolerance_seconds == 60


# --- database URL --------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["postgresql://u:p@db.example:5432/results",
                                 "postgres://u:p@db.example:5432/results"])
def test_postgresql_url_maps_to_the_asyncpg_driver(sqlite_env: dict[str, str], url: str) -> None:
    settings = Settings.from_env({**sqlite_env, "RECEIVER_DATABASE_URL": url})
    assert settings.dialect == "postgresql"
    async_url = settings.async_database_url
    assert async_url.drivername == "postgresql+asyncpg"
    assert (async_url.username, async_url.password) == ("u", "p")
    assert (async_url.host, async_url.port, async_url.database) == ("db.example", 5432, "results")


def test_sqlite_url_maps_to_the_aiosqlite_driver(sqlite_env: dict[str, str],
                                                 tmp_path: Path) -> None:
    settings = Settings.from_env(sqlite_env)
    assert settings.dialect == "sqlite"
    assert settings.async_database_url.drivername == "sqlite+aiosqlite"
    assert settings.async_database_url.database == f"{tmp_path}/results.db"


@pytest.mark.parametrize("url", [
    "mysql://x/y",
    "not a url",
    "sqlite://",
    "sqlite:///",
    "sqlite:///:memory:",
    "postgresql://u:p@h/",
    "postgresql://u:p@h",
    "postgresql+psycopg2://u:p@h/db",
])
def test_bad_database_url_is_an_error_naming_receiver_database_url(
        sqlite_env: dict[str, str], url: str) -> None:
    error = config_error({**sqlite_env, "RECEIVER_DATABASE_URL": url})
    assert len(error.problems) == 1
    assert "RECEIVER_DATABASE_URL" in error.problems[0]


@pytest.mark.parametrize("url", [
    "postgresql://u:hunter2@h/",
    "postgresql://u:hunter2@h",
    "mysql://u:hunter2@h/db",
    "postgresql://u:hunter2@h:badport/db",
    "postgresql//u:hunter2@h/db",
    "sqlite://u:hunter2@h",
])
def test_bad_database_url_error_never_contains_the_password(
        sqlite_env: dict[str, str], url: str) -> None:
    error = config_error({**sqlite_env, "RECEIVER_DATABASE_URL": url})
    assert "RECEIVER_DATABASE_URL" in message_of(error)
    assert "hunter2" not in message_of(error)


# --- webhook secrets -----------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["", " ", "  \t ", "\n"])
def test_empty_or_whitespace_webhook_secrets_is_an_error_naming_the_variable(
        sqlite_env: dict[str, str], raw: str) -> None:
    error = config_error({**sqlite_env, "RECEIVER_WEBHOOK_SECRETS": raw})
    assert len(error.problems) == 1
    assert "RECEIVER_WEBHOOK_SECRETS" in error.problems[0]


@pytest.mark.parametrize("raw", ["a,,b", "a,", ",a", "a, ,b"])
def test_stray_comma_in_webhook_secrets_is_an_error_naming_the_variable(
        sqlite_env: dict[str, str], raw: str) -> None:
    error = config_error({**sqlite_env, "RECEIVER_WEBHOOK_SECRETS": raw})
    assert len(error.problems) == 1
    assert "RECEIVER_WEBHOOK_SECRETS" in error.problems[0]


@pytest.mark.parametrize("raw", ["whsec_!!!not-base64", "whsec_abc", "whsec_", "ok,whsec_@@@@"])
def test_whsec_secret_without_valid_base64_is_an_error(
        sqlite_env: dict[str, str], raw: str) -> None:
    error = config_error({**sqlite_env, "RECEIVER_WEBHOOK_SECRETS": raw})
    assert "RECEIVER_WEBHOOK_SECRETS" in message_of(error)


def test_whsec_secret_with_valid_base64_is_accepted(sqlite_env: dict[str, str]) -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    settings = Settings.from_env({**sqlite_env, "RECEIVER_WEBHOOK_SECRETS": secret})
    assert settings.webhook_secrets == (secret,)


def test_comma_separated_secrets_are_split_and_stripped(sqlite_env: dict[str, str]) -> None:
    raw = " old-secret-2023-q4 , new-secret-2024-q1\t"
    settings = Settings.from_env({**sqlite_env, "RECEIVER_WEBHOOK_SECRETS": raw})
    assert settings.webhook_secrets == ("old-secret-2023-q4", "new-secret-2024-q1")


@pytest.mark.parametrize(("raw", "problem"), [
    ("abcde", "secret #1 is 5 bytes long; use at least 16"),
    (f"{SECRET},fifteen-bytes!!", "secret #2 is 15 bytes long; use at least 16"),
    ("whsec_" + base64.b64encode(b"fifteen-bytes!!").decode(),
     "secret #1 is a whsec_ key of 15 bytes; use at least 16"),
])
def test_a_webhook_secret_under_16_bytes_is_refused_naming_the_variable(
        sqlite_env: dict[str, str], raw: str, problem: str) -> None:
    error = config_error({**sqlite_env, "RECEIVER_WEBHOOK_SECRETS": raw})
    assert error.problems[0].startswith(f"RECEIVER_WEBHOOK_SECRETS: {problem}"), error.problems
    assert "fifteen" not in message_of(error)


def test_a_webhook_secret_of_16_bytes_and_a_whsec_key_of_16_bytes_are_accepted(
        sqlite_env: dict[str, str]) -> None:
    whsec = "whsec_" + base64.b64encode(b"sixteen-bytes!!!").decode()
    raw = f"sixteen-bytes!!!,{whsec}"
    settings = Settings.from_env({**sqlite_env, "RECEIVER_WEBHOOK_SECRETS": raw})
    assert settings.webhook_secrets == ("sixteen-bytes!!!", whsec)


@pytest.mark.parametrize("raw", [
    f"{SECRET},,other",
    f"{SECRET},",
    f"whsec_{SECRET}!",
    f"{SECRET},whsec_{SECRET}",
])
def test_the_secret_never_appears_in_an_error_message(
        sqlite_env: dict[str, str], raw: str) -> None:
    error = config_error({**sqlite_env, "RECEIVER_WEBHOOK_SECRETS": raw,
                          "RECEIVER_LOG_LEVEL": "loud"})
    assert SECRET not in message_of(error)
    assert "other" not in message_of(error)


def test_the_secret_file_is_read_when_webhook_secrets_is_unset(tmp_path: Path) -> None:
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text("from-the-file-secret\n", encoding="utf-8")
    settings = Settings.from_env({"RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path}/results.db"})
    assert settings.secret_file == secret_file
    assert settings.webhook_secrets == ("from-the-file-secret",)
    assert settings.secrets_source == str(secret_file)


def test_the_secret_file_is_ignored_when_webhook_secrets_is_set(
        sqlite_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "webhook-secret").write_text("from-the-file-secret\n", encoding="utf-8")
    settings = Settings.from_env(sqlite_env)
    assert settings.webhook_secrets == (SECRET,)


def test_no_secret_is_configured_when_neither_variable_nor_file_exists(tmp_path: Path) -> None:
    settings = Settings.from_env({"RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path}/results.db"})
    assert settings.webhook_secrets == ()


def test_a_bad_secret_file_is_an_error_that_does_not_print_its_content(tmp_path: Path) -> None:
    (tmp_path / "webhook-secret").write_text(f"{SECRET},,", encoding="utf-8")
    error = config_error({"RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path}/results.db"})
    assert "webhook-secret" in message_of(error)
    assert SECRET not in message_of(error)


def test_require_secret_or_unsigned_raises_without_secret_or_allow_unsigned(
        tmp_path: Path) -> None:
    settings = Settings.from_env({"RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path}/results.db"})
    with pytest.raises(ConfigError) as caught:
        settings.require_secret_or_unsigned()
    assert "RECEIVER_WEBHOOK_SECRETS" in message_of(caught.value)


def test_require_secret_or_unsigned_passes_with_a_secret(sqlite_env: dict[str, str]) -> None:
    Settings.from_env(sqlite_env).require_secret_or_unsigned()


def test_require_secret_or_unsigned_passes_with_allow_unsigned(tmp_path: Path) -> None:
    settings = Settings.from_env({"RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path}/results.db",
                                  "RECEIVER_ALLOW_UNSIGNED": "true"})
    settings.require_secret_or_unsigned()


# --- log format and level ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["xml", "pretty", "text"])
def test_unknown_log_format_is_an_error_naming_the_variable(
        sqlite_env: dict[str, str], value: str) -> None:
    error = config_error({**sqlite_env, "RECEIVER_LOG_FORMAT": value})
    assert len(error.problems) == 1
    assert "RECEIVER_LOG_FORMAT" in error.problems[0]


@pytest.mark.parametrize("value", ["verbose", "trace", "critical", "5"])
def test_unknown_log_level_is_an_error_naming_the_variable(
        sqlite_env: dict[str, str], value: str) -> None:
    error = config_error({**sqlite_env, "RECEIVER_LOG_LEVEL": value})
    assert len(error.problems) == 1
    assert "RECEIVER_LOG_LEVEL" in error.problems[0]


# --- numbers and booleans ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5", "10MB"])
def test_invalid_max_body_bytes_is_an_error_naming_the_variable(
        sqlite_env: dict[str, str], value: str) -> None:
    error = config_error({**sqlite_env, "RECEIVER_MAX_BODY_BYTES": value})
    assert len(error.problems) == 1
    assert "RECEIVER_MAX_BODY_BYTES" in error.problems[0]


def test_max_body_bytes_with_digit_separators_is_accepted(sqlite_env: dict[str, str]) -> None:
    settings = Settings.from_env({**sqlite_env, "RECEIVER_MAX_BODY_BYTES": "1_000"})
    assert settings.max_body_bytes == 1000


@pytest.mark.parametrize("value", ["abc", "0", "-1"])
def test_invalid_signature_tolerance_is_an_error_naming_the_variable(
        sqlite_env: dict[str, str], value: str) -> None:
    error = config_error({**sqlite_env, "RECEIVER_SIGNATURE_TOLERANCE_SECONDS": value})
    assert "RECEIVER_SIGNATURE_TOLERANCE_SECONDS" in message_of(error)


@pytest.mark.parametrize("value", ["maybe", "2", "enabled", "tru"])
def test_invalid_allow_unsigned_is_an_error_naming_the_variable(
        sqlite_env: dict[str, str], value: str) -> None:
    error = config_error({**sqlite_env, "RECEIVER_ALLOW_UNSIGNED": value})
    assert len(error.problems) == 1
    assert "RECEIVER_ALLOW_UNSIGNED" in error.problems[0]


@pytest.mark.parametrize("value", ["TRUE", "true", "1", "yes", "on"])
def test_truthy_allow_unsigned_values_enable_unsigned_deliveries(
        sqlite_env: dict[str, str], value: str) -> None:
    assert Settings.from_env({**sqlite_env, "RECEIVER_ALLOW_UNSIGNED": value}).allow_unsigned


@pytest.mark.parametrize("value", ["FALSE", "false", "0", "no", "off"])
def test_falsy_allow_unsigned_values_keep_signatures_required(
        sqlite_env: dict[str, str], value: str) -> None:
    settings = Settings.from_env({**sqlite_env, "RECEIVER_ALLOW_UNSIGNED": value})
    assert settings.allow_unsigned is False


# --- root path -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["results", "results/", "/res ults", "/results?x=1"])
def test_root_path_that_is_not_an_absolute_url_path_is_an_error(
        sqlite_env: dict[str, str], value: str) -> None:
    error = config_error({**sqlite_env, "RECEIVER_ROOT_PATH": value})
    assert len(error.problems) == 1
    assert "RECEIVER_ROOT_PATH" in error.problems[0]


def test_root_path_trailing_slash_is_removed(sqlite_env: dict[str, str]) -> None:
    settings = Settings.from_env({**sqlite_env, "RECEIVER_ROOT_PATH": "/results/"})
    assert settings.root_path == "/results"


def test_root_path_without_trailing_slash_is_kept(sqlite_env: dict[str, str]) -> None:
    settings = Settings.from_env({**sqlite_env, "RECEIVER_ROOT_PATH": "/results"})
    assert settings.root_path == "/results"


# --- privacy: field policies, encryption keys, retention -----------------------------------

KEY_BYTES = bytes(range(7, 39))
KEY_LINE = "k1:" + base64.b64encode(KEY_BYTES).decode()


def test_privacy_defaults_encrypt_thumbnails_and_embeddings_and_keep_forever(
        sqlite_env: dict[str, str]) -> None:
    settings = Settings.from_env(sqlite_env)
    policy = settings.biometric_policy
    assert (policy.thumbnails, policy.embeddings, policy.demographics) == (
        "encrypt", "encrypt", "store")
    assert policy.needs_key
    assert policy.describe() == {"thumbnails": "encrypt", "embeddings": "encrypt",
                                 "demographics": "store", "raw_bodies": "encrypt"}
    assert settings.encryption_keys is None
    assert settings.keys_source == "none"
    assert (settings.retain_biometrics_days, settings.retain_jobs_days) == (None, None)


def test_field_policies_are_taken_from_the_environment(sqlite_env: dict[str, str]) -> None:
    settings = Settings.from_env({**sqlite_env, "RECEIVER_STORE_THUMBNAILS": "drop",
                                  "RECEIVER_STORE_EMBEDDINGS": " Store ",
                                  "RECEIVER_STORE_DEMOGRAPHICS": "encrypt"})
    policy = settings.biometric_policy
    assert (policy.thumbnails, policy.embeddings, policy.demographics) == (
        "drop", "store", "encrypt")
    assert policy.needs_key


def test_a_policy_without_encrypt_needs_no_key_and_stores_raw_bodies(
        sqlite_env: dict[str, str]) -> None:
    settings = Settings.from_env({**sqlite_env, "RECEIVER_STORE_THUMBNAILS": "store",
                                  "RECEIVER_STORE_EMBEDDINGS": "drop"})
    assert not settings.biometric_policy.needs_key
    assert settings.biometric_policy.describe()["raw_bodies"] == "store"
    settings.require_encryption_key()


@pytest.mark.parametrize("name", ["STORE_THUMBNAILS", "STORE_EMBEDDINGS", "STORE_DEMOGRAPHICS"])
def test_an_unknown_field_policy_is_an_error_naming_the_variable_and_the_choices(
        sqlite_env: dict[str, str], name: str) -> None:
    error = config_error({**sqlite_env, f"RECEIVER_{name}": "crypt"})
    assert error.problems == [
        f"RECEIVER_{name}: 'crypt' is not one of encrypt, store, drop"]


def test_encryption_keys_are_parsed_and_never_shown_by_the_settings_repr(
        sqlite_env: dict[str, str]) -> None:
    other = bytes(range(50, 82))
    raw = f"{KEY_LINE},old:{base64.b64encode(other).decode()}"
    settings = Settings.from_env({**sqlite_env, "RECEIVER_ENCRYPTION_KEYS": raw})
    assert settings.encryption_keys is not None
    assert settings.encryption_keys.key_ids == ("k1", "old")
    assert settings.encryption_keys.current.secret == KEY_BYTES
    assert settings.keys_source == "environment"
    text = repr(settings) + str(settings)
    assert "k1" in text
    for secret in (KEY_BYTES, other):
        assert base64.b64encode(secret).decode()[:16] not in text
        assert repr(secret)[2:18] not in text
        assert secret.hex()[:16] not in text


@pytest.mark.parametrize(("raw", "problem"), [
    ("", "is set but empty"),
    (f"{KEY_LINE},k1:{base64.b64encode(bytes(32)).decode()}", "key #2 repeats the key id 'k1'"),
    ("k1:" + base64.b64encode(KEY_BYTES[:31]).decode(), "key #1 ('k1') is 31 bytes"),
    ("k1:%%%", "key #1 ('k1') is not standard base64"),
    ("bad id:" + base64.b64encode(KEY_BYTES).decode(), "key #1 has a key id that is not"),
])
def test_a_bad_encryption_key_list_is_an_error_naming_the_variable_and_position(
        sqlite_env: dict[str, str], raw: str, problem: str) -> None:
    error = config_error({**sqlite_env, "RECEIVER_ENCRYPTION_KEYS": raw})
    assert len(error.problems) == 1
    assert error.problems[0].startswith(f"RECEIVER_ENCRYPTION_KEYS: {problem}"), error.problems
    assert base64.b64encode(KEY_BYTES).decode()[:16] not in message_of(error)


def test_the_key_file_is_read_when_encryption_keys_is_unset(tmp_path: Path) -> None:
    key_file = tmp_path / "encryption-keys"
    key_file.write_text(KEY_LINE + "\n", encoding="utf-8")
    settings = Settings.from_env({"RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path}/results.db"})
    assert settings.key_file == key_file
    assert settings.encryption_keys is not None
    assert settings.encryption_keys.current.secret == KEY_BYTES
    assert settings.keys_source == str(key_file)
    assert base64.b64encode(KEY_BYTES).decode()[:16] not in repr(settings)


def test_the_key_file_is_ignored_when_encryption_keys_is_set(
        sqlite_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "encryption-keys").write_text("file:" + base64.b64encode(bytes(32)).decode(),
                                              encoding="utf-8")
    settings = Settings.from_env({**sqlite_env, "RECEIVER_ENCRYPTION_KEYS": KEY_LINE})
    assert settings.encryption_keys is not None
    assert settings.encryption_keys.key_ids == ("k1",)


def test_a_bad_key_file_is_an_error_naming_the_file_without_its_content(tmp_path: Path) -> None:
    (tmp_path / "encryption-keys").write_text(
        "k1:" + base64.b64encode(KEY_BYTES[:31]).decode(), encoding="utf-8")
    error = config_error({"RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path}/results.db"})
    assert "encryption-keys" in message_of(error)
    assert "31 bytes" in message_of(error)
    assert base64.b64encode(KEY_BYTES[:31]).decode()[:16] not in message_of(error)


def test_require_encryption_key_raises_when_the_policy_encrypts_and_no_key_exists(
        tmp_path: Path) -> None:
    settings = Settings.from_env({"RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path}/results.db"})
    with pytest.raises(ConfigError) as caught:
        settings.require_encryption_key()
    assert "RECEIVER_ENCRYPTION_KEYS" in message_of(caught.value)


def test_retention_days_are_taken_from_the_environment(sqlite_env: dict[str, str]) -> None:
    settings = Settings.from_env({**sqlite_env, "RECEIVER_RETAIN_BIOMETRICS_DAYS": "30",
                                  "RECEIVER_RETAIN_JOBS_DAYS": " 365 "})
    assert (settings.retain_biometrics_days, settings.retain_jobs_days) == (30, 365)


@pytest.mark.parametrize("name", ["RETAIN_BIOMETRICS_DAYS", "RETAIN_JOBS_DAYS"])
@pytest.mark.parametrize("value", ["0", "-3", "1.5", "forever", "30d"])
def test_retention_that_is_not_a_positive_whole_number_is_an_error_naming_the_variable(
        sqlite_env: dict[str, str], name: str, value: str) -> None:
    error = config_error({**sqlite_env, f"RECEIVER_{name}": value})
    assert len(error.problems) == 1
    assert error.problems[0].startswith(f"RECEIVER_{name}: {value!r} is not a positive whole")


@pytest.mark.parametrize("name", ["FACE_INDEX", "FACE_PROCESS"])
@pytest.mark.parametrize(("value", "expected"), [(None, True), ("", True), ("true", True),
                                               ("on", True), ("false", False), ("off", False)])
def test_face_index_and_face_process_are_on_unless_set_to_false(
        sqlite_env: dict[str, str], name: str, value: str | None, expected: bool) -> None:
    environ = dict(sqlite_env) if value is None else {**sqlite_env, f"RECEIVER_{name}": value}
    assert getattr(Settings.from_env(environ), name.lower()) is expected


@pytest.mark.parametrize("name", ["FACE_INDEX", "FACE_PROCESS"])
def test_face_switches_that_are_not_booleans_are_errors_naming_the_variable(
        sqlite_env: dict[str, str], name: str) -> None:
    error = config_error({**sqlite_env, f"RECEIVER_{name}": "maybe"})
    assert error.problems == [f"RECEIVER_{name}: 'maybe' is not a boolean (true/false)"]


# --- every problem at once -----------------------------------------------------------------


def test_several_problems_are_reported_together_in_one_config_error() -> None:
    error = config_error({
        "RECEIVER_DATABASE_URL": "mysql://u:hunter2@h/db",
        "RECEIVER_WEBHOOK_SECRETS": f"{SECRET},,",
        "RECEIVER_ALLOW_UNSIGNED": "maybe",
        "RECEIVER_MAX_BODY_BYTES": "abc",
        "RECEIVER_SIGNATURE_TOLERANCE_SECONDS": "-5",
        "RECEIVER_LOG_FORMAT": "xml",
        "RECEIVER_LOG_LEVEL": "verbose",
        "RECEIVER_ROOT_PATH": "results",
    })
    names = ["DATABASE_URL", "WEBHOOK_SECRETS", "ALLOW_UNSIGNED", "MAX_BODY_BYTES",
             "SIGNATURE_TOLERANCE_SECONDS", "LOG_FORMAT", "LOG_LEVEL", "ROOT_PATH"]
    assert len(error.problems) == len(names)
    for name in names:
        assert sum(f"RECEIVER_{name}:" in problem for problem in error.problems) == 1, name
    assert SECRET not in message_of(error)
    assert "hunter2" not in message_of(error)


def test_generated_webhook_secrets_never_start_with_a_dash_so_they_pass_as_cli_arguments(
) -> None:
    """``send-test URL --secret S`` reads a secret starting with ``-`` as an option; one
    URL-safe secret in 64 would start so."""
    drawn = [new_webhook_secret() for _ in range(2000)]
    assert not [secret for secret in drawn if secret.startswith("-")]
    assert len(set(drawn)) == len(drawn)
    assert all(len(secret) == 43 for secret in drawn)
