"""Nothing biometric on disk in plaintext under the default policy: the SQLite files (database
and WAL) and a PostgreSQL ``pg_dump`` are scanned for a thumbnail's base64 text and an
embedding's bytes. The same scan under the ``store`` policy finds both (the scan works)."""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from service.config import Settings
from service.privacy.policy import BiometricPolicy
from service.vectors import pack_doubles
from tests.conftest import serve_in_process
from tests.support.biometrics import EMBEDDING, THUMBNAIL
from tests.support.postgres import find_bindir
from tests.test_privacy_policies import deliver, video_with_faces

pytestmark = pytest.mark.anyio

STORE_ALL = BiometricPolicy(thumbnails="store", embeddings="store", demographics="store")


def what_is_on_disk(settings: Settings) -> bytes:
    """The SQLite database and WAL files' bytes, or a plain pg_dump of the database."""
    url = make_url(settings.database_url)
    if settings.dialect == "sqlite":
        path = Path(url.database or "")
        return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    bindir = find_bindir()
    assert bindir is not None
    dump = subprocess.run(
        [str(bindir / "pg_dump"), "--no-owner", "--data-only",
         f"--dbname=postgresql://{url.username}@{url.host}:{url.port}/{url.database}"],
        capture_output=True, check=True, timeout=120)
    return dump.stdout


def traces(disk: bytes) -> list[str]:
    packed = pack_doubles(EMBEDDING)
    needles = {"thumbnail text": THUMBNAIL.encode(), "embedding bytes": packed,
               "embedding bytes as bytea hex": packed.hex().encode(),
               "embedding as JSON": repr(EMBEDDING[0]).encode()}
    return sorted(name for name, needle in needles.items() if needle in disk)


@pytest.mark.parametrize("policy", ["default", "store"])
async def test_the_database_on_disk_holds_no_face_in_plaintext_under_the_default_policy(
        settings: Settings, policy: str) -> None:
    if policy == "store":
        settings = replace(settings, biometric_policy=STORE_ALL)
    async with serve_in_process(settings) as client:
        for _ in range(3):
            await deliver(client, video_with_faces(f"video_{uuid.uuid4().hex[:8]}"))
        found = traces(what_is_on_disk(settings))
    if policy == "default":
        assert found == []
    else:
        assert "thumbnail text" in found
        assert found != ["thumbnail text"]  # the embedding too, packed or as sent
