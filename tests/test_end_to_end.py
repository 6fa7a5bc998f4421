"""The real ``results-receiver serve`` process, driven by ``results-receiver send-test``."""

from __future__ import annotations

import json
import os
import stat

import httpx
import pytest

from tests.support.server import run_cli, serve
from tests.support.signing import example

pytestmark = pytest.mark.slow


def test_serve_on_sqlite_default_creates_secret_and_stores_what_send_test_sends(tmp_path):
    """A new user's first minutes: serve with no configuration, send the three examples,
    read them back through /payload."""
    with serve(cwd=tmp_path) as server:
        secret_file = tmp_path / "data" / "webhook-secret"
        assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
        secret = secret_file.read_text().strip()
        logs = "\n".join(server.log_lines())
        assert str(secret_file) in logs
        assert secret not in logs

        url = server.url + "/webhooks/analysis"
        for name in ("video", "image", "failed"):
            sent = run_cli("send-test", url, "--secret", secret, "--example", name)
            assert sent.stdout.startswith("HTTP 200")
            assert '"outcome":"stored"' in sent.stdout
        again = run_cli("send-test", url, "--secret-file", str(secret_file))
        assert '"outcome":"duplicate"' in again.stdout
        wrong = run_cli("send-test", url, "--secret", "wrong", check=False)
        assert wrong.returncode == 1
        assert wrong.stdout.startswith("HTTP 401")

        token = run_cli("tokens", "create", "--name", "e2e", "--scope", "read",
                        cwd=tmp_path).stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        for job_id, name in (("video_12345", "video_finished.json"),
                             ("image_batch_123", "image_batch_finished.json"),
                             ("video_12346", "video_failed.json")):
            payload = httpx.get(f"{server.url}/v1/jobs/{job_id}/payload", headers=headers)
            assert payload.status_code == 200
            assert payload.json() == example(name)
        summary = httpx.get(f"{server.url}/v1/jobs/video_12345", headers=headers).json()
        assert summary["deliveries"] == 2
        assert httpx.get(server.url + "/readyz").json()["status"] == "ready"
        logs = "\n".join(server.log_lines())
        assert token not in logs
        assert secret not in logs
        for line in server.log_lines():
            if line.startswith("{"):
                record = json.loads(line)
                assert "event" in record
                assert "level" in record


def test_send_test_with_standard_webhooks_scheme_is_accepted(tmp_path):
    env = {"RECEIVER_WEBHOOK_SECRETS": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
    with serve(cwd=tmp_path, env=env) as server:
        sent = run_cli("send-test", server.url + "/webhooks/analysis", "--scheme", "standard",
                       "--secret", env["RECEIVER_WEBHOOK_SECRETS"], "--example", "image")
        assert sent.stdout.startswith("HTTP 200"), sent.stdout + sent.stderr


def test_two_workers_on_one_sqlite_file_store_concurrent_duplicates_once(tmp_path):
    env = {"RECEIVER_WEBHOOK_SECRETS": "s3cret-for-two-workers"}
    with serve("--workers", "2", cwd=tmp_path, env=env) as server:
        import concurrent.futures

        url = server.url + "/webhooks/analysis"

        def send(_: int) -> str:
            return run_cli("send-test", url, "--secret", env["RECEIVER_WEBHOOK_SECRETS"],
                           "--example", "image").stdout

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            outputs = list(pool.map(send, range(16)))
    assert sum('"outcome":"stored"' in o for o in outputs) == 1
    assert sum('"outcome":"duplicate"' in o for o in outputs) == 15


def test_serve_refuses_a_bad_configuration_with_a_clear_message(tmp_path):
    result = run_cli("serve", env={"RECEIVER_LOG_FORMAT": "xml",
                                   "RECEIVER_DATABASE_URL": "mysql://u:hunter2@h/db"},
                     cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "RECEIVER_LOG_FORMAT" in result.stderr
    assert "RECEIVER_DATABASE_URL" in result.stderr
    assert "hunter2" not in result.stderr
