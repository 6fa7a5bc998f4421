"""``results-receiver keys rotate``: every data key re-wrapped under the current master key.

Envelope encryption makes a rotation cheap: only the wrap of each data key changes (one small
row per job); the sealed values and bodies stay as they are, under the same data keys. Keys
are taken in batches, one transaction each, in id order; a batch selects only keys not yet
under the current master key, so an interrupted run simply continues where it stopped and a
second run finds nothing to do.

A data key under a master key that is not configured cannot be unwrapped: it is left as it is,
counted, and reported at the end (:class:`KeysNotRotated`), after everything else is rotated.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa

from service import models
from service.db import Database
from service.privacy import audit
from service.privacy.envelope import KeyMismatch, unwrap_data_key, wrap_data_key
from service.privacy.keys import Keyring

BATCH_SIZE = 500

Progress = Callable[[int, int], None]
"""Called after each batch with (data keys re-wrapped so far, data keys to do at the start)."""

_data_keys = models.data_keys


@dataclass
class Rotation:
    """What a run did: ``rewrapped`` data keys now under ``to``; those it could not unwrap,
    by master key id (``missing``: not configured; ``mismatched``: configured, but it does not
    open them)."""

    to: str
    rewrapped: int = 0
    missing: Counter[str] = field(default_factory=Counter)
    mismatched: Counter[str] = field(default_factory=Counter)


class KeysNotRotated(Exception):
    """Some data keys could not be unwrapped; the message names the master key ids and counts
    (never a key)."""

    def __init__(self, rotation: Rotation) -> None:
        problems = [
            f"{count} data key(s) are wrapped under encryption key {key_id!r}, which is not "
            "configured: add it to RECEIVER_ENCRYPTION_KEYS (after the current key) and run "
            "`keys rotate` again"
            for key_id, count in sorted(rotation.missing.items())
        ] + [
            f"{count} data key(s) under encryption key {key_id!r} do not verify with the key "
            f"configured as {key_id!r} (another key, or damaged rows)"
            for key_id, count in sorted(rotation.mismatched.items())
        ]
        super().__init__("; ".join(problems))
        self.rotation = rotation


async def rotate(database: Database, keyring: Keyring, *, batch_size: int = BATCH_SIZE,
                 progress: Progress | None = None) -> Rotation:
    """Re-wrap every data key not under ``keyring.current``; one ``key_rotation`` audit record
    for the run when any key was re-wrapped. Raises :class:`KeysNotRotated` at the end when
    some could not be."""
    current = keyring.current.key_id
    rotation = Rotation(to=current)
    async with database.read() as conn:
        total: int = (await conn.execute(
            sa.select(sa.func.count()).select_from(_data_keys)
            .where(_data_keys.c.key_id != current))).scalar_one()
    after = ""
    try:
        while True:
            batch = Rotation(to=current)
            async with database.write() as conn:
                last = await conn.run_sync(_rotate_batch, keyring, after, batch_size, batch)
            if last is None:
                break
            # Counted once the batch is committed.
            rotation.rewrapped += batch.rewrapped
            rotation.missing.update(batch.missing)
            rotation.mismatched.update(batch.mismatched)
            after = last
            if progress is not None:
                progress(rotation.rewrapped, total)
    finally:
        if rotation.rewrapped:
            async with database.write() as conn:
                await conn.run_sync(audit.record, audit.AuditEntry(
                    "key_rotation", audit.CLI, counts={"rewrapped": rotation.rewrapped},
                    details={"to": current}))
    if rotation.missing or rotation.mismatched:
        raise KeysNotRotated(rotation)
    return rotation


def _rotate_batch(conn: sa.Connection, keyring: Keyring, after: str, batch_size: int,
                  rotation: Rotation) -> str | None:
    """Re-wrap the next ``batch_size`` keys after id ``after`` (counted in ``rotation``); the
    last id seen, or None when there are no more."""
    current = keyring.current.key_id
    rows = conn.execute(
        sa.select(_data_keys.c.id, _data_keys.c.key_id, _data_keys.c.wrapped)
        .where(_data_keys.c.key_id != current, _data_keys.c.id > after)
        .order_by(_data_keys.c.id).limit(batch_size).with_for_update()).all()
    if not rows:
        return None
    for row in rows:
        if row.key_id not in keyring:
            rotation.missing[row.key_id] += 1
            continue
        key_ref = row.id.encode("ascii")
        try:
            data_key = unwrap_data_key(keyring, row.key_id, row.wrapped, key_ref=key_ref)
        except KeyMismatch:
            rotation.mismatched[row.key_id] += 1
            continue
        key_id, wrapped = wrap_data_key(keyring, data_key, key_ref=key_ref)
        conn.execute(sa.update(_data_keys)
                     .where(_data_keys.c.id == row.id, _data_keys.c.key_id == row.key_id)
                     .values(key_id=key_id, wrapped=wrapped))
        rotation.rewrapped += 1
    last: str = rows[-1].id
    return last
