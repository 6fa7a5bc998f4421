"""What a serving process keeps in memory: ``serve``'s worker, which stores deliveries and hands
faces to the face process, never loads the face index's libraries (numpy, usearch), Alembic, the
upstream's HTTP client (httpx) nor the explorer's templates (Jinja2); they load where they run
(the face process, a first face search, a migration, a configured upstream, a first page)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.server import PROBE_SECRET, run_probe

# serve's steps in one interpreter: the schema, the face process's supervisor (not started),
# the app built by the serve factory, served by uvicorn, and one signed delivery with a face.
_PROBE = """
import asyncio, json, sys, urllib.request
import uvicorn
from service.cli import _settings, ensure_schema
from service.faces.supervisor import FaceProcess, sockets_fit
from service.app import app_from_env
from service.signatures import sign
from importlib import resources

ensure_schema(_settings())
app = app_from_env()

async def main():
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    body = resources.files('service.examples').joinpath('video_finished.json').read_bytes()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/webhooks/analysis", data=body,
        headers={"X-Webhook-Signature": sign(sys.argv[1], body)})
    answer = await asyncio.to_thread(urllib.request.urlopen, request, timeout=30)
    server.should_exit = True
    await task
    return answer.status

status = asyncio.run(main())
print(json.dumps({"status": status, "loaded": sorted(
    name for name in ("numpy", "usearch", "alembic", "httpx", "jinja2")
    if name in sys.modules)}))
"""


def test_a_serving_worker_stores_a_face_without_loading_numpy_usearch_alembic_httpx_or_jinja2(
        tmp_path: Path) -> None:
    found = json.loads(run_probe(_PROBE, tmp_path, PROBE_SECRET,
                                 extra={"RECEIVER_FACE_PROCESS": "true"}))
    assert found == {"status": 200, "loaded": []}
