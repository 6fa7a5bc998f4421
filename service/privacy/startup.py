"""What the service checks about its keys and policy when it starts (the app's lifespan).

1. Keys: for each master key id that data keys are wrapped under, one sample is unwrapped. A
   configured key that does not open it means the wrong key bytes under a known id: the service
   refuses to start (:class:`WrongEncryptionKey`, naming the key id, never the key) instead of
   answering 409 for every sealed read. Key ids that are not configured only get a warning
   (``privacy.keys_missing``): reads of that data answer 409 ``key_unavailable``.
2. Policy: the biometric policy is compared with the one the service last started with
   (``privacy_state``); a change (or a first start over existing data) is recorded once, as a
   ``policy_changed`` audit record by ``system``, and logged (``privacy.policy_changed``).
   Replicas starting together record one change once: the stored value is replaced by a
   compare-and-set (an ``UPDATE ... WHERE value = <the old value>``, or an insert that does
   nothing on conflict), and only the replica whose statement changed the row writes the record,
   in the same transaction.

A database that cannot be reached (or is not migrated yet) skips these checks with a warning:
the service still starts, and ``/readyz`` says it is not ready.
"""

from __future__ import annotations

from collections import Counter

import sqlalchemy as sa
import structlog

from service import models
from service.db import UNAVAILABLE_ERRORS, Database, describe_error
from service.privacy import audit
from service.privacy.envelope import KeyMismatch, unwrap_data_key
from service.privacy.keys import Keyring
from service.privacy.policy import BiometricPolicy

log = structlog.get_logger("service.privacy")

POLICY = "biometric_policy"
"""``privacy_state.name`` of the biometric policy the service last started with."""

_data_keys = models.data_keys
_state = models.privacy_state


class WrongEncryptionKey(RuntimeError):
    """A configured master key does not open the data keys stored under its id."""

    def __init__(self, key_id: str, count: int) -> None:
        super().__init__(
            f"refusing to start: the encryption key configured as {key_id!r} does not open the "
            f"{count} data key(s) stored under that id; configure the key that encrypted them "
            f"as {key_id!r} in RECEIVER_ENCRYPTION_KEYS (a new key needs a new key id)")
        self.key_id = key_id


async def check_at_start(database: Database, policy: BiometricPolicy,
                         keyring: Keyring | None) -> None:
    """The key check, then the policy record; raises :class:`WrongEncryptionKey`."""
    try:
        await check_keys(database, keyring)
        await record_policy(database, policy)
    except UNAVAILABLE_ERRORS as exc:
        log.warning("privacy.startup_check_skipped", **describe_error(exc))


async def check_keys(database: Database, keyring: Keyring | None) -> Counter[str]:
    """Unwrap one data key per master key id; the data keys under ids not configured."""
    missing: Counter[str] = Counter()
    async with database.read() as conn:
        counts = (await conn.execute(
            sa.select(_data_keys.c.key_id, sa.func.count())
            .group_by(_data_keys.c.key_id).order_by(_data_keys.c.key_id))).all()
        for key_id, count in counts:
            if keyring is None or key_id not in keyring:
                missing[key_id] = count
                continue
            sample = (await conn.execute(
                sa.select(_data_keys.c.id, _data_keys.c.wrapped)
                .where(_data_keys.c.key_id == key_id).limit(1))).one()
            try:
                unwrap_data_key(keyring, key_id, sample.wrapped,
                                key_ref=sample.id.encode("ascii"))
            except KeyMismatch:
                log.error("privacy.key_mismatch", key_id=key_id, data_keys=count)
                raise WrongEncryptionKey(key_id, count) from None
    if missing:
        log.warning("privacy.keys_missing", key_ids=sorted(missing), data_keys=dict(missing))
    return missing


def policy_value(policy: BiometricPolicy) -> str:
    """The policy as stored and audited, e.g. ``thumbnails=encrypt,embeddings=encrypt,...``."""
    return ",".join(f"{name}={rule}" for name, rule in policy.describe().items())


async def record_policy(database: Database, policy: BiometricPolicy) -> bool:
    """Store ``policy`` as the last seen; True when this call recorded a change."""
    new = policy_value(policy)
    async with database.read() as conn:
        seen = (await conn.execute(
            sa.select(_state.c.value).where(_state.c.name == POLICY))).scalar_one_or_none()
    if seen == new:
        return False  # the usual start: no write at all
    async with database.write() as conn:
        old = (await conn.execute(
            sa.select(_state.c.value).where(_state.c.name == POLICY))).scalar_one_or_none()
        if old is None:
            changed = (await conn.execute(sa.text(
                "INSERT INTO privacy_state (name, value) VALUES (:name, :value) "
                "ON CONFLICT (name) DO NOTHING"), {"name": POLICY, "value": new})).rowcount == 1
            # A first start over data that was stored under an unknown policy is a change;
            # a first start over an empty database is not.
            changed = changed and await conn.run_sync(_has_data)
        elif old != new:
            changed = (await conn.execute(
                sa.update(_state).where(_state.c.name == POLICY, _state.c.value == old)
                .values(value=new))).rowcount == 1
        else:
            changed = False
        if changed:
            await conn.run_sync(audit.record, audit.AuditEntry(
                "policy_changed", audit.SYSTEM,
                details={"old": old or "unknown", "new": new}))
    if changed:
        log.info("privacy.policy_changed", old=old or "unknown", new=new)
    return changed


def _has_data(conn: sa.Connection) -> bool:
    return bool(conn.execute(sa.select(
        sa.exists().where(models.jobs.c.id.is_not(None))
        | sa.exists().where(models.delivery_bodies.c.sha256.is_not(None)))).scalar())
