"""Settings read from ``RECEIVER_*`` environment variables, validated once at start.

Every problem is collected and reported together, each naming the variable and what is
wrong with it, so a user fixes a bad configuration in one go.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from service.privacy.keys import KEY_FILE_NAME, Keyring, parse_keys, read_key_file
from service.privacy.policy import BiometricPolicy, FieldPolicy, parse_field_policy

PREFIX = "RECEIVER_"
DEFAULT_DATABASE_URL = "sqlite:///./data/results.db"
DEFAULT_MAX_BODY_BYTES = 26_214_400
SECRET_FILE_NAME = "webhook-secret"  # noqa: S105 (a file name)
# A shorter HMAC key is guessable; for a whsec_ secret this counts the decoded key.
MIN_SECRET_BYTES = 16

LogFormat = Literal["json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]
Dialect = Literal["sqlite", "postgresql"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_SQLITE_SCHEMES = {"sqlite", "sqlite+aiosqlite"}
_POSTGRES_SCHEMES = {"postgresql", "postgres", "postgresql+asyncpg"}
_POLICY_VARIABLES = {"STORE_THUMBNAILS": "thumbnails", "STORE_EMBEDDINGS": "embeddings",
                     "STORE_DEMOGRAPHICS": "demographics"}


@dataclass(frozen=True)
class UpstreamPaths:
    """Where the analysis API's endpoints are, relative to ``RECEIVER_UPSTREAM_URL``: the
    submissions, the job status/result by id (``{job_id}``) and the latency per media unit
    (``{media_type}``: ``video`` or ``image``)."""

    video: str = "/video"
    image: str = "/image"
    video_status: str = "/video/{job_id}"
    image_status: str = "/image/{job_id}"
    latency: str = "/latency?media_type={media_type}"


_PATH_VARIABLES = {  # variable suffix -> (attribute, placeholder it must hold)
    "VIDEO_PATH": ("video", None), "IMAGE_PATH": ("image", None),
    "VIDEO_STATUS_PATH": ("video_status", "{job_id}"),
    "IMAGE_STATUS_PATH": ("image_status", "{job_id}"),
    "LATENCY_PATH": ("latency", "{media_type}"),
}


class ConfigError(Exception):
    """The environment does not describe a valid configuration."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    allow_unsigned: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    signature_tolerance_seconds: int = 300
    log_format: LogFormat = "json"
    log_level: LogLevel = "info"
    root_path: str = ""
    forwarded_allow_ips: str = "127.0.0.1"
    database_pool_size: int = 10
    biometric_policy: BiometricPolicy = field(default_factory=BiometricPolicy)
    # Never printed: a Keyring's repr shows key ids only.
    encryption_keys: Keyring | None = None
    retain_biometrics_days: int | None = None
    retain_jobs_days: int | None = None
    # This process keeps the face index (search) and may lead the people clustering.
    face_index: bool = True
    # serve: the index and the people clustering in one face process beside the workers
    # (service.faces.process) rather than in every worker.
    face_process: bool = True
    # Reconciliation with the analysis API (service.reconcile): off while upstream_url is None.
    upstream_url: str | None = None
    upstream_token: str | None = field(default=None, repr=False)
    public_url: str | None = None
    upstream_paths: UpstreamPaths = field(default_factory=UpstreamPaths)
    upstream_timeout_seconds: float = 30.0
    expected_factor: float = 2.0
    expected_margin_seconds: float = 300.0
    reconcile_interval_seconds: float = 30.0
    reconcile_polls_per_second: float = 5.0
    reconcile_backoff_max_seconds: float = 3600.0
    # Where the secret came from, for messages only; never the secret itself.
    secrets_source: str = field(default="environment", compare=False)
    # Where the encryption keys came from ("environment", the key file's path, or "none").
    keys_source: str = field(default="none", compare=False)

    @property
    def dialect(self) -> Dialect:
        return database_dialect(self.database_url)

    @property
    def async_database_url(self) -> URL:
        return async_url(self.database_url)

    @property
    def reconcile(self) -> bool:
        """Whether expected jobs are polled (``RECEIVER_UPSTREAM_URL`` is set)."""
        return self.upstream_url is not None

    @property
    def webhook_url(self) -> str | None:
        """The ``webhook.url`` to register upstream: the public URL's intake route."""
        if self.public_url is None:
            return None
        return self.public_url + "/webhooks/analysis"

    @property
    def data_dir(self) -> Path:
        """The folder for local state: the SQLite file's folder, else ``./data``."""
        if self.dialect == "sqlite":
            database = make_url(self.database_url).database or ""
            return Path(database).expanduser().resolve().parent
        return Path("data").resolve()

    @property
    def secret_file(self) -> Path:
        return self.data_dir / SECRET_FILE_NAME

    @property
    def key_file(self) -> Path:
        return self.data_dir / KEY_FILE_NAME

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        problems: list[str] = []

        def get(name: str) -> str | None:
            return env.get(PREFIX + name)

        database_url = (get("DATABASE_URL") or DEFAULT_DATABASE_URL).strip()
        try:
            database_dialect(database_url)
        except ValueError as exc:
            problems.append(f"{PREFIX}DATABASE_URL: {exc}")

        secrets: tuple[str, ...] = ()
        raw_secrets = get("WEBHOOK_SECRETS")
        source = "environment"
        if raw_secrets is not None:
            try:
                secrets = parse_secrets(raw_secrets)
            except ValueError as exc:
                problems.append(f"{PREFIX}WEBHOOK_SECRETS: {exc}")

        allow_unsigned = _parse_bool(get("ALLOW_UNSIGNED"), "ALLOW_UNSIGNED", problems)
        max_body = _parse_int(get("MAX_BODY_BYTES"), "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES,
                              minimum=1, problems=problems)
        tolerance = _parse_int(get("SIGNATURE_TOLERANCE_SECONDS"), "SIGNATURE_TOLERANCE_SECONDS",
                               300, minimum=1, problems=problems)
        pool_size = _parse_int(get("DATABASE_POOL_SIZE"), "DATABASE_POOL_SIZE", 10, minimum=1,
                               problems=problems)

        log_format_raw = (get("LOG_FORMAT") or "").strip().lower()
        log_format: LogFormat = "console" if sys.stderr.isatty() else "json"
        if log_format_raw == "json":
            log_format = "json"
        elif log_format_raw == "console":
            log_format = "console"
        elif log_format_raw:
            problems.append(f"{PREFIX}LOG_FORMAT: {log_format_raw!r} is not one of json, console")

        log_level_raw = (get("LOG_LEVEL") or "info").strip().lower()
        log_level: LogLevel = "info"
        if log_level_raw in ("debug", "info", "warning", "error"):
            log_level = log_level_raw  # type: ignore[assignment]
        else:
            problems.append(
                f"{PREFIX}LOG_LEVEL: {log_level_raw!r} is not one of debug, info, warning, error"
            )

        root_path = (get("ROOT_PATH") or "").strip()
        if root_path:
            if not root_path.startswith("/") or any(c in root_path for c in "?#\\ "):
                problems.append(
                    f"{PREFIX}ROOT_PATH: {root_path!r} must be a URL path starting with '/', "
                    "e.g. /results"
                )
            root_path = root_path.rstrip("/")

        forwarded = (get("FORWARDED_ALLOW_IPS") or "127.0.0.1").strip()

        policies: dict[str, FieldPolicy] = {}
        for name, attribute in _POLICY_VARIABLES.items():
            raw_policy = get(name)
            if raw_policy is None or not raw_policy.strip():
                continue
            try:
                policies[attribute] = parse_field_policy(raw_policy)
            except ValueError as exc:
                problems.append(f"{PREFIX}{name}: {exc}")
        policy = BiometricPolicy(**policies)

        keyring: Keyring | None = None
        raw_keys = get("ENCRYPTION_KEYS")
        if raw_keys is not None:
            try:
                keyring = parse_keys(raw_keys)
            except ValueError as exc:
                problems.append(f"{PREFIX}ENCRYPTION_KEYS: {exc}")

        retain_biometrics = _parse_days(get("RETAIN_BIOMETRICS_DAYS"), "RETAIN_BIOMETRICS_DAYS",
                                        problems)
        retain_jobs = _parse_days(get("RETAIN_JOBS_DAYS"), "RETAIN_JOBS_DAYS", problems)
        raw_face_index = get("FACE_INDEX")
        face_index = (True if raw_face_index is None or not raw_face_index.strip()
                      else _parse_bool(raw_face_index, "FACE_INDEX", problems))
        raw_face_process = get("FACE_PROCESS")
        face_process = (True if raw_face_process is None or not raw_face_process.strip()
                        else _parse_bool(raw_face_process, "FACE_PROCESS", problems))

        upstream_url = _parse_url(get("UPSTREAM_URL"), "UPSTREAM_URL", problems)
        public_url = _parse_url(get("PUBLIC_URL"), "PUBLIC_URL", problems)
        upstream_token = (get("UPSTREAM_TOKEN") or "").strip() or None
        if upstream_token is not None and any(c in upstream_token for c in "\r\n"):
            problems.append(f"{PREFIX}UPSTREAM_TOKEN: holds a line break")
        paths = _parse_paths(get, problems)
        timeout = _parse_float(get("UPSTREAM_TIMEOUT_SECONDS"), "UPSTREAM_TIMEOUT_SECONDS",
                               30.0, minimum=0.001, problems=problems)
        factor = _parse_float(get("EXPECTED_FACTOR"), "EXPECTED_FACTOR", 2.0, minimum=0.0,
                              problems=problems)
        margin = _parse_float(get("EXPECTED_MARGIN_SECONDS"), "EXPECTED_MARGIN_SECONDS", 300.0,
                              minimum=0.0, problems=problems)
        interval = _parse_float(get("RECONCILE_INTERVAL_SECONDS"), "RECONCILE_INTERVAL_SECONDS",
                                30.0, minimum=0.01, problems=problems)
        rate = _parse_float(get("RECONCILE_POLLS_PER_SECOND"), "RECONCILE_POLLS_PER_SECOND",
                            5.0, minimum=0.001, problems=problems)
        backoff_max = _parse_float(get("RECONCILE_BACKOFF_MAX_SECONDS"),
                                   "RECONCILE_BACKOFF_MAX_SECONDS", 3600.0, minimum=0.01,
                                   problems=problems)

        if problems:
            raise ConfigError(problems)

        settings = cls(
            database_url=database_url,
            webhook_secrets=secrets,
            allow_unsigned=allow_unsigned,
            max_body_bytes=max_body,
            signature_tolerance_seconds=tolerance,
            log_format=log_format,
            log_level=log_level,
            root_path=root_path,
            forwarded_allow_ips=forwarded,
            database_pool_size=pool_size,
            biometric_policy=policy,
            encryption_keys=keyring,
            retain_biometrics_days=retain_biometrics,
            retain_jobs_days=retain_jobs,
            face_index=face_index,
            face_process=face_process,
            upstream_url=upstream_url,
            upstream_token=upstream_token,
            public_url=public_url,
            upstream_paths=paths,
            upstream_timeout_seconds=timeout,
            expected_factor=factor,
            expected_margin_seconds=margin,
            reconcile_interval_seconds=interval,
            reconcile_polls_per_second=rate,
            reconcile_backoff_max_seconds=backoff_max,
            secrets_source=source,
            keys_source="environment" if keyring is not None else "none",
        )
        if raw_secrets is None:
            settings = settings.with_secret_file()
        if raw_keys is None:
            settings = settings.with_key_file()
        return settings

    def with_secret_file(self) -> Settings:
        """Fall back on the secret file ``serve`` creates when no secret is configured."""
        path = self.secret_file
        if not path.is_file():
            return self
        try:
            secrets = parse_secrets(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError([f"webhook secret file {path}: {exc}"]) from exc
        return replace(self, webhook_secrets=secrets, secrets_source=str(path))

    def with_key_file(self) -> Settings:
        """Fall back on the key file ``serve`` creates when no key is configured."""
        path = self.key_file
        try:
            keyring = read_key_file(path)
        except (OSError, ValueError) as exc:
            raise ConfigError([f"encryption key file {path}: {exc}"]) from exc
        if keyring is None:
            return self
        return replace(self, encryption_keys=keyring, keys_source=str(path))

    def require_encryption_key(self) -> None:
        if self.biometric_policy.needs_key and self.encryption_keys is None:
            raise ConfigError([
                f"no encryption key: the storage policy encrypts biometric data, so set "
                f"{PREFIX}ENCRYPTION_KEYS (`results-receiver keys generate` makes a key), or "
                f"run `results-receiver serve`, which creates {self.key_file}"
            ])

    def require_secret_or_unsigned(self) -> None:
        if not self.webhook_secrets and not self.allow_unsigned:
            raise ConfigError([
                f"no webhook secret: set {PREFIX}WEBHOOK_SECRETS, or {PREFIX}ALLOW_UNSIGNED=true "
                f"to accept unsigned deliveries, or run `results-receiver serve`, which creates "
                f"{self.secret_file}"
            ])


def parse_secrets(raw: str) -> tuple[str, ...]:
    """Split a comma-separated list of secrets; refuse empty, short and bad ``whsec_`` ones."""
    if not raw.strip():
        raise ValueError("is set but empty; give at least one secret or unset it")
    secrets: list[str] = []
    for position, part in enumerate(raw.split(","), start=1):
        secret = part.strip()
        if not secret:
            raise ValueError(f"secret #{position} is empty (check for a stray comma)")
        if secret.startswith("whsec_"):
            try:
                key = base64.b64decode(secret[len("whsec_"):], validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(
                    f"secret #{position} starts with whsec_ but the rest is not base64"
                ) from None
            if not key:
                raise ValueError(f"secret #{position} is an empty whsec_ key")
            if len(key) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"secret #{position} is a whsec_ key of {len(key)} bytes; use at least "
                    f"{MIN_SECRET_BYTES} (`results-receiver secret generate --format whsec` "
                    "makes one)")
        elif len(secret.encode("utf-8")) < MIN_SECRET_BYTES:
            raise ValueError(
                f"secret #{position} is {len(secret.encode('utf-8'))} bytes long; use at least "
                f"{MIN_SECRET_BYTES} (`results-receiver secret generate` makes one)")
        secrets.append(secret)
    return tuple(secrets)


def database_dialect(url: str) -> Dialect:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(
            f"cannot parse {redact_url(url)!r}; expected e.g. sqlite:///./data/results.db "
            "or postgresql://user:pass@host:5432/db"
        ) from None
    scheme = parsed.drivername
    if scheme in _SQLITE_SCHEMES:
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError("an SQLite URL needs a file path, e.g. sqlite:///./data/results.db")
        return "sqlite"
    if scheme in _POSTGRES_SCHEMES:
        if not parsed.database:
            raise ValueError("a PostgreSQL URL needs a database name, e.g. .../results")
        return "postgresql"
    raise ValueError(f"unsupported database {scheme!r}; use sqlite:/// or postgresql://")


def async_url(url: str) -> URL:
    """The same database with the async driver this service uses."""
    parsed = make_url(url)
    if database_dialect(url) == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    return parsed.set(drivername="postgresql+asyncpg")


def redact_url(url: str) -> str:
    """The URL with any password hidden, safe for logs and messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


def _parse_days(raw: str | None, name: str, problems: list[str]) -> int | None:
    """A positive whole number of days; unset or empty means keep forever (None)."""
    if raw is None or not raw.strip():
        return None
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        problems.append(f"{PREFIX}{name}: {raw.strip()!r} is not a positive whole number of "
                        "days; unset it to keep forever")
        return None
    return value


def _parse_url(raw: str | None, name: str, problems: list[str]) -> str | None:
    """An http(s) base URL without query or fragment, its trailing slash removed; unset or
    empty is None."""
    if raw is None or not raw.strip():
        return None
    value = raw.strip()
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a bad port
        valid = (parts.scheme in ("http", "https") and bool(parts.hostname)
                 and not parts.query and not parts.fragment and " " not in value)
    except ValueError:
        valid = False
    if not valid:
        problems.append(f"{PREFIX}{name}: {redact_credentials(value)!r} is not an http(s) URL "
                        "without query, e.g. https://api.example.com")
        return None
    return value.rstrip("/")


def redact_credentials(url: str) -> str:
    """``url`` with any user:password part hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def _parse_paths(get: Callable[[str], str | None], problems: list[str]) -> UpstreamPaths:
    paths: dict[str, str] = {}
    for suffix, (attribute, placeholder) in _PATH_VARIABLES.items():
        raw = get("UPSTREAM_" + suffix)
        if raw is None or not raw.strip():
            continue
        value = raw.strip()
        if not value.startswith("/") or " " in value:
            problems.append(f"{PREFIX}UPSTREAM_{suffix}: {value!r} must be a path starting "
                            "with '/'")
        elif placeholder is not None and placeholder not in value:
            problems.append(f"{PREFIX}UPSTREAM_{suffix}: {value!r} must contain {placeholder}")
        else:
            try:
                value.format(job_id="x", media_type="x")
            except (KeyError, IndexError, ValueError):
                problems.append(f"{PREFIX}UPSTREAM_{suffix}: {value!r} may only use the "
                                "placeholders {job_id} and {media_type}")
                continue
            paths[attribute] = value
    return UpstreamPaths(**paths)


def _parse_float(raw: str | None, name: str, default: float, *, minimum: float,
                 problems: list[str]) -> float:
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw.strip().replace("_", ""))
    except ValueError:
        problems.append(f"{PREFIX}{name}: {raw!r} is not a number")
        return default
    if not math.isfinite(value) or value < minimum:
        problems.append(f"{PREFIX}{name}: {raw.strip()} is not a finite number of at least "
                        f"{minimum:g}")
        return default
    return value


def _parse_bool(raw: str | None, name: str, problems: list[str]) -> bool:
    value = (raw or "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    problems.append(f"{PREFIX}{name}: {raw!r} is not a boolean (true/false)")
    return False


def _parse_int(raw: str | None, name: str, default: int, *, minimum: int,
               problems: list[str]) -> int:
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        problems.append(f"{PREFIX}{name}: {raw!r} is not a whole number")
        return default
    if value < minimum:
        problems.append(f"{PREFIX}{name}: {value} is below the minimum of {minimum}")
        return default
    return value
