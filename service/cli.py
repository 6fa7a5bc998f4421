"""The ``results-receiver`` command line.

serve, migrate, tokens (create/list/revoke), secret generate, keys (generate/rotate),
privacy apply, send-test, replay, purge, submit, dev upstream. Errors a user can fix are
printed as one clear line and exit with status 2; nothing prints a secret except ``secret
generate``, ``keys generate`` and ``tokens create``, whose whole purpose is to show one once.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import asyncpg
import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from service import db_errors, signatures
from service.config import DEFAULT_DATABASE_URL, PREFIX, ConfigError, Settings, redact_url
from service.logging import configure_logging
from service.privacy import keys as privacy_keys

log = structlog.get_logger("service.cli")

EXAMPLES = {"video": "video_finished.json", "image": "image_batch_finished.json",
            "failed": "video_failed.json"}


class UsageError(Exception):
    """A problem the user can fix; printed without a traceback."""


def _settings() -> Settings:
    return Settings.from_env()


# --- serve / migrate -------------------------------------------------------------------------

def ensure_schema(settings: Settings) -> None:
    """SQLite: bring the schema to head. PostgreSQL: refuse to go on unless it is at head.

    SQLite is migrated by a child ``results-receiver migrate``, so that this process (``serve``
    with one worker is the worker) never loads Alembic; at head, nothing is started."""
    from service.migrations import head_revision

    current = asyncio.run(_current_revision(settings))
    if current == head_revision():
        return
    if settings.dialect == "sqlite":
        _migrate_in_child()
        return
    raise UsageError(
        f"the database schema is at {current or 'nothing'}, not {head_revision()}: "
        "run `results-receiver migrate` first")


def _migrate_in_child() -> None:
    """``results-receiver migrate`` in a child process with this environment; its errors go
    to stderr as they would from the command itself."""
    done = subprocess.run([sys.executable, "-m", "service", "migrate"],
                          stdout=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        raise UsageError("the database could not be migrated (the reason is above)")
    log.info("schema.migrated")


async def _current_revision(settings: Settings) -> str | None:
    from service.db import Database
    from service.migrations import current_revision

    database = Database.from_settings(settings)
    try:
        async with database.read() as conn:
            return await current_revision(conn)
    finally:
        await database.dispose()


def ensure_secret(settings: Settings) -> Settings:
    """Create the data folder's secret file when no secret is configured (mode 0600)."""
    if settings.webhook_secrets or settings.allow_unsigned:
        return settings
    path = settings.secret_file
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(new_webhook_secret() + "\n")
    log.warning("webhook.secret_created", path=str(path))
    print(
        f"No {PREFIX}WEBHOOK_SECRETS set: created a webhook secret in {path} (mode 0600).\n"
        f"Register it upstream as webhook.secret:  cat {path}",
        file=sys.stderr,
    )
    return settings.with_secret_file()


def ensure_encryption_key(settings: Settings) -> Settings:
    """Create the data folder's key file when the policy encrypts and no key is configured."""
    if settings.encryption_keys is not None or not settings.biometric_policy.needs_key:
        return settings
    path = settings.key_file
    in_use = _key_ids_in_use(settings)
    if in_use:
        # A new key would open none of it: the keys are missing here (another replica's
        # folder, a lost file), and every sealed read would be a 409.
        listed = ", ".join(f"{key_id} ({count} data keys)" for key_id, count in in_use.items())
        raise UsageError(
            f"no {PREFIX}ENCRYPTION_KEYS is set and {path} does not exist, but the database "
            f"holds data encrypted under: {listed}. Set {PREFIX}ENCRYPTION_KEYS to those keys "
            "(the other replicas' setting, or the key file of the first start) instead of "
            "letting serve create a new key that cannot read it")
    try:
        created = privacy_keys.create_key_file(path)
    except OSError as exc:
        raise UsageError(
            f"cannot create the encryption key file {path}: {exc.strerror}; set "
            f"{PREFIX}ENCRYPTION_KEYS (`results-receiver keys generate` makes a key)") from None
    if created:
        log.warning("privacy.key_created", path=str(path))
        print(
            f"No {PREFIX}ENCRYPTION_KEYS set: created an encryption key in {path} (mode 0600).\n"
            "Back it up and keep it private: without it, encrypted biometric data and raw "
            "deliveries cannot be read.",
            file=sys.stderr,
        )
    return settings.with_key_file()


def _key_ids_in_use(settings: Settings) -> dict[str, int]:
    """Master key ids that the database's data keys are wrapped under, with their counts
    (none when there is no database yet, or no schema)."""

    from service.db import UNAVAILABLE_ERRORS, Database
    from service.privacy.startup import check_keys

    if settings.dialect == "sqlite":
        database_file = make_url(settings.database_url).database
        if not database_file or not Path(database_file).is_file():
            return {}

    async def read() -> dict[str, int]:
        database = Database.from_settings(settings)
        try:
            return dict(await check_keys(database, None))
        finally:
            await database.dispose()

    try:
        return asyncio.run(read())
    except UNAVAILABLE_ERRORS:
        return {}


def prepare_metrics_folder() -> None:
    """Several workers share metrics through files (prometheus-client multiprocess mode): an
    empty folder, named in the environment before the workers start."""
    from service.metrics import MULTIPROC_ENV

    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        for stale in Path(directory).glob("*.db"):
            stale.unlink()
    else:
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="results-receiver-metrics-")


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.server import uvicorn_options

    if args.forwarded_allow_ips is not None:
        os.environ[PREFIX + "FORWARDED_ALLOW_IPS"] = args.forwarded_allow_ips
    if args.root_path is not None:
        os.environ[PREFIX + "ROOT_PATH"] = args.root_path
    settings = _settings()
    configure_logging(settings.log_format, settings.log_level)
    ensure_schema(settings)
    settings = ensure_secret(settings)
    settings.require_secret_or_unsigned()
    settings = ensure_encryption_key(settings)
    settings.require_encryption_key()
    if args.workers > 1:
        prepare_metrics_folder()
    log.info("service.serving", host=args.host, port=args.port, workers=args.workers,
             database=redact_url(settings.database_url), secrets_source=settings.secrets_source,
             keys_source=settings.keys_source, privacy=settings.biometric_policy.describe())
    face_process = None
    if settings.face_index and settings.face_process:
        from service.faces.supervisor import FaceProcess, sockets_fit

        if sockets_fit(settings):
            face_process = FaceProcess()
            face_process.start()
        else:  # the workers keep the index themselves, as with RECEIVER_FACE_PROCESS=false
            log.warning("faces.process_unavailable", reason="the data folder's path is too "
                        "long for a Unix socket; each worker keeps its own face index")
            os.environ[PREFIX + "FACE_PROCESS"] = "false"
    try:
        uvicorn.run("service.app:app_from_env", factory=True, **uvicorn_options(
            host=args.host, port=args.port, workers=args.workers,
            forwarded_allow_ips=settings.forwarded_allow_ips, root_path=settings.root_path,
            graceful_timeout=args.graceful_timeout, keep_alive=args.keep_alive))
    finally:
        if face_process is not None:
            face_process.stop()
    return 0


def cmd_migrate(_args: argparse.Namespace) -> int:
    from service.migrations import head_revision, upgrade

    settings = _settings()
    configure_logging(settings.log_format, settings.log_level)
    upgrade(settings.database_url)
    print(f"database {redact_url(settings.database_url)} is at revision {head_revision()}")
    return 0


# --- tokens ----------------------------------------------------------------------------------

def cmd_tokens(args: argparse.Namespace) -> int:
    settings = _settings()
    configure_logging(settings.log_format, "warning")
    ensure_schema(settings)
    return asyncio.run(_tokens(settings, args))


async def _tokens(settings: Settings, args: argparse.Namespace) -> int:
    from service import tokens
    from service.db import Database
    from service.models import utcnow

    database = Database.from_settings(settings)
    try:
        if args.tokens_command == "create":
            try:
                async with database.write() as conn:
                    token = await tokens.create(conn, name=args.name, scope=args.scope,
                                                now=utcnow())
            except tokens.TokenNameTaken:
                raise UsageError(f"an active token named {args.name!r} exists; revoke it "
                                 "first or choose another name") from None
            print(token)
            print(f"Created {args.scope} token {args.name!r}. It is shown only this once; "
                  "store it now.", file=sys.stderr)
        elif args.tokens_command == "list":
            async with database.read() as conn:
                listed = await tokens.list_tokens(conn)
            print(f"{'NAME':<24} {'SCOPE':<6} {'CREATED':<26} REVOKED")
            for info in listed:
                revoked = info.revoked_at.isoformat(timespec="seconds") if info.revoked_at else "-"
                print(f"{info.name:<24} {info.scope:<6} "
                      f"{info.created_at.isoformat(timespec='seconds'):<26} {revoked}")
        else:
            async with database.write() as conn:
                revoked_any = await tokens.revoke(conn, name=args.name, now=utcnow())
            if not revoked_any:
                raise UsageError(f"no active token named {args.name!r}")
            print(f"Revoked token {args.name!r}.")
    finally:
        await database.dispose()
    return 0


# --- secret ----------------------------------------------------------------------------------

def new_webhook_secret() -> str:
    """32 random bytes as URL-safe base64 (43 characters), never starting with ``-``: such a
    secret, given as ``send-test --secret S``, would be read as an option."""
    while True:
        secret = secrets.token_urlsafe(32)
        if not secret.startswith("-"):
            return secret


def cmd_secret(args: argparse.Namespace) -> int:
    if args.format == "whsec":
        print("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii"))
    else:
        print(new_webhook_secret())
    return 0


# --- keys ------------------------------------------------------------------------------------

def cmd_keys(args: argparse.Namespace) -> int:
    if args.keys_command == "generate":
        print(privacy_keys.generate_key_line())
        return 0
    if args.keys_command == "rotate":
        return cmd_keys_rotate(args)
    raise UsageError(f"unknown keys action {args.keys_command!r}")


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from service.db import Database
    from service.privacy.rotation import KeysNotRotated, rotate

    settings = _settings()
    configure_logging(settings.log_format, "warning")
    keyring = settings.encryption_keys
    if keyring is None:
        raise UsageError(f"no encryption key is configured: set {PREFIX}ENCRYPTION_KEYS to the "
                         "new key first, followed by the old ones")
    ensure_schema(settings)

    def progress(done: int, total: int) -> None:
        print(f"[{done}/{total}] data keys re-wrapped under {keyring.current.key_id!r}",
              file=sys.stderr)

    async def run() -> int:
        database = Database.from_settings(settings)
        try:
            rotation = await rotate(database, keyring, batch_size=args.batch_size,
                                    progress=progress)
        finally:
            await database.dispose()
        return rotation.rewrapped

    try:
        rewrapped = asyncio.run(run())
    except KeysNotRotated as exc:
        print(f"re-wrapped {exc.rotation.rewrapped} data key(s) under "
              f"{keyring.current.key_id!r}", file=sys.stderr)
        raise UsageError(str(exc)) from None
    print(f"re-wrapped {rewrapped} data key(s) under {keyring.current.key_id!r}"
          if rewrapped else f"every data key is already under {keyring.current.key_id!r}")
    return 0


# --- privacy ---------------------------------------------------------------------------------

def cmd_privacy(args: argparse.Namespace) -> int:
    from service.db import Database
    from service.privacy.apply import DataNotMoved, apply_policy

    settings = _settings()
    configure_logging(settings.log_format, "warning")
    settings.require_encryption_key()
    ensure_schema(settings)

    def progress(phase: str, done: int) -> None:
        print(f"[{phase}] {done} moved", file=sys.stderr)

    async def run() -> str:
        # Plaintext that moves is zeroed in the SQLite file, not left in free pages.
        database = Database.from_settings(settings, secure_delete=True)
        try:
            applied = await apply_policy(database, settings.biometric_policy,
                                         settings.encryption_keys,
                                         batch_size=args.batch_size, progress=progress)
        finally:
            await database.dispose()
        return (f"persons={applied.persons} jobs_keyed={applied.jobs_keyed} "
                f"bodies={applied.bodies}")

    policy = " ".join(f"{k}={v}" for k, v in settings.biometric_policy.describe().items())
    print(f"applying the policy {policy}", file=sys.stderr)
    try:
        print(asyncio.run(run()))
    except DataNotMoved as exc:
        raise UsageError(str(exc)) from None
    return 0


# --- send-test -------------------------------------------------------------------------------

def example_body(name: str) -> bytes:
    """The reference example ``name`` as compact JSON, as the upstream would send it."""
    import msgspec

    raw = resources.files("service.examples").joinpath(EXAMPLES[name]).read_bytes()
    return msgspec.json.encode(msgspec.json.decode(raw))


def build_request(body: bytes, *, secret: str | None, scheme: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": "results-receiver-send-test"}
    if secret is None:
        return headers
    if scheme == "standard":
        message_id = "msg_" + uuid.uuid4().hex
        timestamp = int(time.time())
        headers["webhook-id"] = message_id
        headers["webhook-timestamp"] = str(timestamp)
        headers["webhook-signature"] = signatures.sign_standard(secret, message_id, timestamp,
                                                                body)
    else:
        headers["X-Webhook-Signature"] = signatures.sign(secret, body)
    return headers


def cmd_send_test(args: argparse.Namespace) -> int:
    import httpx
    import msgspec

    if args.payload is not None:
        try:
            body = Path(args.payload).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {args.payload}: {exc.strerror}") from None
    else:
        body = example_body(args.example)
    if args.job_id is not None:
        document = msgspec.json.decode(body)
        document["job_id"] = args.job_id
        body = msgspec.json.encode(document)
    secret = args.secret
    if args.secret_file is not None:
        try:
            secret = Path(args.secret_file).read_text(encoding="utf-8").strip().split(",")[0]
        except OSError as exc:
            raise UsageError(f"cannot read {args.secret_file}: {exc.strerror}") from None
    if secret is None and not args.unsigned:
        raise UsageError("give --secret S (or --secret-file F), or --unsigned")
    headers = build_request(body, secret=None if args.unsigned else secret, scheme=args.scheme)
    try:
        response = httpx.post(args.url, content=body, headers=headers, timeout=args.timeout)
    except httpx.HTTPError as exc:
        print(f"send-test: could not deliver to {args.url}: {exc}", file=sys.stderr)
        return 1
    print(f"HTTP {response.status_code}")
    print(response.text)
    return 0 if response.is_success else 1


# --- replay ----------------------------------------------------------------------------------

def cmd_replay(args: argparse.Namespace) -> int:
    from service.replay import replay

    settings = _settings()
    settings.require_encryption_key()
    configure_logging(settings.log_format, "warning")
    ensure_schema(settings)

    def progress(done: int, total: int, job_id: str | None, outcome: str) -> None:
        print(f"[{done}/{total}] {job_id or '-'}: {outcome}", file=sys.stderr)

    summary = asyncio.run(replay(settings, job_id=args.job, progress=progress))
    print(" ".join(f"{k}={v}" for k, v in sorted(summary.items())) or "nothing to replay")
    return 0


# --- purge -----------------------------------------------------------------------------------

def cmd_purge(args: argparse.Namespace) -> int:
    from service.db import Database
    from service.models import utcnow
    from service.privacy import audit
    from service.privacy.retention import Retention, purge

    settings = _settings()
    configure_logging(settings.log_format, "warning")
    retention = Retention.from_settings(settings)
    if not retention.active:
        raise UsageError(f"no retention is configured: set {PREFIX}RETAIN_JOBS_DAYS and/or "
                         f"{PREFIX}RETAIN_BIOMETRICS_DAYS")
    ensure_schema(settings)

    def progress(message: str) -> None:
        print(message, file=sys.stderr)

    async def run() -> str:
        database = Database.from_settings(settings)
        try:
            report = await purge(database, settings.encryption_keys, retention, now=utcnow(),
                                 token_name=audit.CLI, dry_run=args.dry_run, progress=progress)
        finally:
            await database.dispose()
        return report.summary()

    print(asyncio.run(run()))
    return 0


# --- submit / dev upstream ------------------------------------------------------------------

def cmd_submit(args: argparse.Namespace) -> int:
    from service.reconcile import submit as submitting

    settings = _settings()
    configure_logging(settings.log_format, "warning")
    try:
        if args.images:
            if args.video is not None:
                raise UsageError("give a video file or --images, not both")
            media = submitting.load_images([Path(p) for p in args.images])
        elif args.video is not None:
            media = submitting.load_video(Path(args.video))
        else:
            raise UsageError("give a video file (WebM) or --images a.jpg b.png ...")
        submitting.webhook_of(settings)
        ensure_schema(settings)
        submission = asyncio.run(submitting.submit(
            settings, media, max_processing_time=args.max_processing_time))
    except submitting.SubmitError as exc:
        raise UsageError(str(exc)) from None
    expires = (f", expires at {submission.expires_at:%H:%M:%S} UTC"
               if submission.expires_at else "")
    print(f"submitted {submission.job_id}: expected by {submission.expected_at:%H:%M:%S} UTC"
          f"{expires}", file=sys.stderr)
    print(submission.job_id)
    if not args.wait:
        return 0

    def say(line: str) -> None:
        print(line, file=sys.stderr)

    try:
        summary = asyncio.run(submitting.wait(settings, submission.job_id, say,
                                              give_up_after=args.wait_timeout))
    except submitting.SubmitError as exc:
        raise UsageError(str(exc)) from None
    return 0 if summary["status"] in ("finished", "failed") else 1


def cmd_dev_upstream(args: argparse.Namespace) -> int:
    from service.devtools import upstream

    configure_logging("console" if sys.stderr.isatty() else "json", "info")
    faults = upstream.Faults()
    try:
        faults.update({name: value for name, value in (
            ("drop", args.drop), ("duplicate", args.duplicate), ("corrupt", args.corrupt),
            ("expire", args.expire), ("delay", args.delay), ("reorder", args.reorder),
            ("poll_errors", args.poll_errors), ("poll_throttle", args.poll_throttle),
            ("retry_after", args.retry_after)) if value is not None})
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    options = upstream.Options(
        host=args.host, port=args.port, token=os.environ.get(PREFIX + "UPSTREAM_TOKEN") or None,
        video_latency_ms=args.video_latency_ms, image_latency_ms=args.image_latency_ms,
        webhook_attempts=args.webhook_attempts, webhook_backoff=args.webhook_backoff,
        seed=args.seed, faults=faults)
    print(f"upstream simulator on http://{args.host}:{args.port} (control: /_sim/faults, "
          "/_sim/unreachable, /_sim/stats)", file=sys.stderr, flush=True)
    upstream.run(options)
    return 0


def _fraction(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a fraction from 0 to 1")
    return value


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds (0 or more)")
    return value


def _whole_seconds(raw: str) -> int:
    if not raw.isdigit():
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number of seconds (0 or more)")
    return int(raw)


# --- parser ----------------------------------------------------------------------------------

def _positive(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a positive whole number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="results-receiver",
        description="Receive, store and query the result webhooks of the analysis API.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument("--forwarded-allow-ips", default=None,
                       help=f"proxies trusted for X-Forwarded-* ({PREFIX}FORWARDED_ALLOW_IPS)")
    serve.add_argument("--root-path", default=None,
                       help=f"path prefix behind a proxy, e.g. /results ({PREFIX}ROOT_PATH)")
    serve.add_argument("--graceful-timeout", type=int, default=30,
                       help="seconds to finish in-flight requests on shutdown (default 30)")
    serve.add_argument("--keep-alive", type=int, default=75,
                       help="idle keep-alive seconds; keep above the proxy's (default 75)")
    serve.set_defaults(handler=cmd_serve)

    migrate = commands.add_parser("migrate", help="alembic upgrade head")
    migrate.set_defaults(handler=cmd_migrate)

    tokens = commands.add_parser("tokens", help="manage query-API tokens")
    token_commands = tokens.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    create = token_commands.add_parser("create", help="create a token and print it once")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", choices=["read", "admin"], default="read")
    token_commands.add_parser("list", help="list tokens (never their values)")
    revoke = token_commands.add_parser("revoke", help="revoke the active token with this name")
    revoke.add_argument("name")
    tokens.set_defaults(handler=cmd_tokens)

    secret = commands.add_parser("secret", help="webhook secrets")
    secret_commands = secret.add_subparsers(dest="secret_command", required=True,
                                            metavar="ACTION")
    generate = secret_commands.add_parser("generate", help="print a new random webhook secret")
    generate.add_argument("--format", choices=["plain", "whsec"], default="plain",
                          help="whsec: a Standard Webhooks secret")
    secret.set_defaults(handler=cmd_secret)

    keys = commands.add_parser("keys", help="encryption keys of biometric data")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    keys_commands.add_parser(
        "generate", help="print a new master key as key_id:base64 (for "
                         f"{PREFIX}ENCRYPTION_KEYS)")
    rotate = keys_commands.add_parser(
        "rotate", help="re-wrap every data key under the current (first) master key",
        description="Re-wraps every data key under the current (first) key of "
                    f"{PREFIX}ENCRYPTION_KEYS, in batches, with progress on stderr. Sealed "
                    "values and bodies are not re-encrypted: only the wrap of each data key "
                    "changes (envelope encryption). The old keys must still be configured "
                    "(after the new one); once it finishes, they can be removed. Interrupted, "
                    "run it again: it continues where it stopped, and a run with nothing "
                    "left to do changes nothing.")
    rotate.add_argument("--batch-size", type=_positive, default=500,
                        help="data keys per transaction (default 500)")
    keys.set_defaults(handler=cmd_keys)

    privacy = commands.add_parser("privacy", help="biometric data already stored")
    privacy_commands = privacy.add_subparsers(dest="privacy_command", required=True,
                                              metavar="ACTION")
    apply = privacy_commands.add_parser(
        "apply", help="move stored data under the current biometric policy",
        description="Moves stored persons and raw bodies under the configured policy "
                    f"({PREFIX}STORE_THUMBNAILS, _EMBEDDINGS, _DEMOGRAPHICS): plaintext that "
                    "the policy encrypts is sealed, fields it drops are removed, sealed "
                    "fields it stores are decrypted back (moving back is allowed), bodies are "
                    "compressed, sealed when any field is encrypted and redacted of dropped "
                    "fields. In batches, with progress on stderr; interrupted, run it again: "
                    "it continues where it stopped, and a second run changes nothing.")
    apply.add_argument("--batch-size", type=_positive, default=500,
                       help="jobs (persons) or bodies per transaction (default 500)")
    privacy.set_defaults(handler=cmd_privacy)

    send = commands.add_parser("send-test", help="sign and POST a result like the upstream")
    send.add_argument("url", help="e.g. http://127.0.0.1:8000/webhooks/analysis")
    send.add_argument("--secret", default=None)
    send.add_argument("--secret-file", default=None, help="read the secret from this file")
    send.add_argument("--unsigned", action="store_true", help="send without a signature")
    source = send.add_mutually_exclusive_group()
    source.add_argument("--example", choices=sorted(EXAMPLES), default="video")
    source.add_argument("--payload", default=None, help="a JSON file to send byte for byte")
    send.add_argument("--job-id", default=None, help="override the payload's job_id")
    send.add_argument("--scheme", choices=["hmac", "standard"], default="hmac",
                      help="X-Webhook-Signature (default) or Standard Webhooks headers")
    send.add_argument("--timeout", type=float, default=30.0)
    send.set_defaults(handler=cmd_send_test)

    replay = commands.add_parser("replay", help="re-normalize stored raw deliveries")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--job", default=None, help="one job id")
    which.add_argument("--all", action="store_true", help="every job")
    replay.set_defaults(handler=cmd_replay)

    purge = commands.add_parser(
        "purge", help=f"apply {PREFIX}RETAIN_JOBS_DAYS and {PREFIX}RETAIN_BIOMETRICS_DAYS now")
    purge.add_argument("--dry-run", action="store_true",
                       help="print what would be deleted or erased; change nothing")
    purge.set_defaults(handler=cmd_purge)

    submit = commands.add_parser(
        "submit", help="send a video or images to the analysis API; the job is expected here",
        description="Checks the upstream's limits first (a video: WebM, at most 100 MB and "
                    "60 s; images: sent as raw base64), uploads as its reference describes "
                    f"with webhook.url = {PREFIX}PUBLIC_URL + /webhooks/analysis and the first "
                    f"webhook secret, and records the job as expected (from {PREFIX}"
                    "UPSTREAM_URL, with RECEIVER_UPSTREAM_TOKEN). Prints the job id.")
    submit.add_argument("video", nargs="?", default=None, help="a WebM video file")
    submit.add_argument("--images", nargs="+", default=None, metavar="IMAGE",
                        help="image files, sent as one batch")
    submit.add_argument("--max-processing-time", type=_whole_seconds, default=None,
                        metavar="S", help="Max-Processing-Time in seconds (0: no limit)")
    submit.add_argument("--wait", action="store_true",
                        help="show progress until the result is stored (exit 1 if it expires)")
    submit.add_argument("--wait-timeout", type=_seconds, default=None, metavar="S",
                        help="with --wait: give up after S seconds (exit 1)")
    submit.set_defaults(handler=cmd_submit)

    dev = commands.add_parser("dev", help="development tools")
    dev_commands = dev.add_subparsers(dest="dev_command", required=True, metavar="TOOL")
    simulator = dev_commands.add_parser(
        "upstream", help="run an upstream simulator (the analysis API, with faults)",
        description="A real HTTP server implementing the analysis API's submission, status, "
                    "result and latency endpoints; it sends signed webhooks with retries and "
                    "can drop, delay, duplicate or reorder them, corrupt signatures, answer "
                    "polls with 5xx or 429, expire jobs, and be unreachable for a while "
                    "(these options, or PATCH /_sim/faults and POST /_sim/unreachable at run "
                    f"time). Requires {PREFIX}UPSTREAM_TOKEN as a bearer token when set.")
    simulator.add_argument("--host", default="127.0.0.1")
    simulator.add_argument("--port", type=int, default=8100)
    simulator.add_argument("--video-latency-ms", type=_seconds, default=500.0,
                           help="processing time per second of video (default 500)")
    simulator.add_argument("--image-latency-ms", type=_seconds, default=120.0,
                           help="processing time per image (default 120)")
    simulator.add_argument("--webhook-attempts", type=_positive, default=5,
                           help="deliveries tried per webhook (default 5)")
    simulator.add_argument("--webhook-backoff", type=_seconds, default=0.5,
                           help="seconds before the first retry, doubling (default 0.5)")
    simulator.add_argument("--seed", type=int, default=None)
    for name, kind, text in (
            ("drop", _fraction, "fraction of webhooks never sent"),
            ("duplicate", _fraction, "fraction of webhooks sent twice"),
            ("corrupt", _fraction, "fraction of webhooks with a wrong signature"),
            ("expire", _fraction, "fraction of jobs that never finish"),
            ("delay", _seconds, "seconds added to every webhook"),
            ("reorder", _seconds, "up to this many random seconds more per webhook"),
            ("poll-errors", _fraction, "fraction of polls answered 5xx"),
            ("poll-throttle", _fraction, "fraction of polls answered 429"),
            ("retry-after", _seconds, "the 429s' Retry-After seconds (default 1)")):
        simulator.add_argument(f"--{name}", type=kind, default=None, help=text)
    dev.set_defaults(handler=cmd_dev_upstream)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"configuration error: {problem}", file=sys.stderr)
        return 2
    except (UsageError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (SQLAlchemyError, OSError, asyncpg.PostgresError, sqlite3.Error) as exc:
        database_url = os.environ.get(PREFIX + "DATABASE_URL") or DEFAULT_DATABASE_URL
        reason = db_errors.explain(exc, database_url.strip())
        if reason is not None:
            print(f"error: {reason}", file=sys.stderr)
        elif isinstance(exc, OSError):
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        else:
            print(f"error: the database is unreachable or failed: {type(exc).__name__}: "
                  f"{str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
