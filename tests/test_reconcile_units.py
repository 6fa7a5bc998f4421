"""Units of the reconciliation (service/reconcile): its settings, the WebM duration reader and
the submit command's local checks, the judgement of the upstream's answers, Retry-After,
the expected-arrival arithmetic, the poll pacing and the latency cache."""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from service.config import ConfigError, Settings, UpstreamPaths
from service.devtools.media import webm_bytes
from service.reconcile import expected, submit, webm
from service.reconcile.reconciler import RateLimit
from service.reconcile.upstream import Answer, LatencyCache, Unreachable
from service.reconcile.validate import judge, parse_retry_after

SECRET = "s3cret-Value-42-long-enough"
NOW = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path}/results.db",
            "RECEIVER_WEBHOOK_SECRETS": SECRET}


def _problems(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ)
    return "\n".join(caught.value.problems)


# --- settings --------------------------------------------------------------------------------

def test_reconciliation_is_off_and_defaults_apply_when_no_upstream_is_set(env):
    settings = Settings.from_env(env)
    assert settings.reconcile is False
    assert settings.upstream_url is None
    assert settings.webhook_url is None
    assert settings.expected_factor == 2.0
    assert settings.expected_margin_seconds == 300.0
    assert settings.reconcile_interval_seconds == 30.0
    assert settings.upstream_paths == UpstreamPaths(
        "/video", "/image", "/video/{job_id}", "/image/{job_id}",
        "/latency?media_type={media_type}")


def test_upstream_settings_are_read_from_their_binding_names(env):
    settings = Settings.from_env({
        **env, "RECEIVER_UPSTREAM_URL": "https://api.example.com/v2/",
        "RECEIVER_UPSTREAM_TOKEN": "tok-123", "RECEIVER_PUBLIC_URL": "https://rr.example.com",
        "RECEIVER_EXPECTED_FACTOR": "3", "RECEIVER_EXPECTED_MARGIN_SECONDS": "0.5",
        "RECEIVER_RECONCILE_INTERVAL_SECONDS": "0.2",
        "RECEIVER_RECONCILE_POLLS_PER_SECOND": "50",
        "RECEIVER_RECONCILE_BACKOFF_MAX_SECONDS": "10",
        "RECEIVER_UPSTREAM_TIMEOUT_SECONDS": "2",
        "RECEIVER_UPSTREAM_VIDEO_STATUS_PATH": "/jobs/video/{job_id}/status",
        "RECEIVER_UPSTREAM_LATENCY_PATH": "/stats/{media_type}/latency"})
    assert settings.reconcile is True
    assert settings.upstream_url == "https://api.example.com/v2"
    assert settings.upstream_token == "tok-123"
    assert settings.webhook_url == "https://rr.example.com/webhooks/analysis"
    assert (settings.expected_factor, settings.expected_margin_seconds) == (3.0, 0.5)
    assert settings.reconcile_interval_seconds == 0.2
    assert settings.reconcile_polls_per_second == 50.0
    assert settings.reconcile_backoff_max_seconds == 10.0
    assert settings.upstream_timeout_seconds == 2.0
    assert settings.upstream_paths.video_status == "/jobs/video/{job_id}/status"
    assert settings.upstream_paths.image_status == "/image/{job_id}"
    assert settings.upstream_paths.latency == "/stats/{media_type}/latency"
    assert "tok-123" not in repr(settings)


@pytest.mark.parametrize(("name", "value", "says"), [
    ("UPSTREAM_URL", "ftp://api.example.com", "not an http(s) URL"),
    ("UPSTREAM_URL", "https://api.example.com/?x=1", "not an http(s) URL"),
    ("PUBLIC_URL", "rr.example.com", "not an http(s) URL"),
    ("EXPECTED_FACTOR", "-1", "at least 0"),
    ("EXPECTED_MARGIN_SECONDS", "soon", "not a number"),
    ("RECONCILE_INTERVAL_SECONDS", "0", "at least 0.01"),
    ("RECONCILE_POLLS_PER_SECOND", "inf", "finite"),
    ("UPSTREAM_VIDEO_STATUS_PATH", "/video/status", "must contain {job_id}"),
    ("UPSTREAM_LATENCY_PATH", "latency", "starting with '/'"),
    ("UPSTREAM_IMAGE_PATH", "/image/{other}", "placeholders"),
])
def test_a_bad_upstream_setting_is_an_error_naming_the_variable(env, name, value, says):
    problems = _problems({**env, f"RECEIVER_{name}": value})
    assert f"RECEIVER_{name}" in problems
    assert says in problems


def test_an_upstream_url_with_credentials_is_refused_without_printing_them(env):
    problems = _problems({**env, "RECEIVER_UPSTREAM_URL": "ftp://user:hunter2@example.com"})
    assert "hunter2" not in problems


# --- WebM and the submit command's local checks -------------------------------------------------

@pytest.mark.parametrize("seconds", [0.5, 7.25, 60.0])
def test_webm_duration_is_read_from_info_duration(seconds):
    assert webm.duration_seconds(webm_bytes(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize("variant", [{"with_duration": False}, {"live": True}])
def test_webm_without_a_duration_is_measured_from_its_last_block(variant):
    assert webm.duration_seconds(webm_bytes(12.3, **variant)) == pytest.approx(12.3)


MEDIA = Path(__file__).parent / "media"


@pytest.mark.parametrize(("name", "seconds"), [
    ("ffmpeg-vp8-7.3s.webm", 7.3), ("ffmpeg-vp8-4.5s-streamed.webm", 4.5),
    ("ffmpeg-vp9-opus-6s.webm", 6.008)])
def test_webm_duration_of_real_encoder_output_matches_ffprobe(name, seconds):
    assert webm.duration_seconds((MEDIA / name).read_bytes()) == pytest.approx(seconds,
                                                                               abs=0.001)


def test_a_matroska_file_is_not_taken_for_webm():
    with pytest.raises(webm.WebmError, match="'matroska'"):
        webm.duration_seconds((MEDIA / "ffmpeg-vp8-3s.mkv").read_bytes())


_SAMPLE = webm_bytes(3)


@pytest.mark.parametrize(("data", "says"), [
    (b"", "EBML header"),
    (b"RIFF\x00\x00\x00\x00AVI LIST", "EBML header"),
    (_SAMPLE.replace(b"webm", b"matr", 1), "DocType"),
    (_SAMPLE[:_SAMPLE.index(b"\x18\x53\x80\x67")], "no Segment"),
    (_SAMPLE[:10], "truncated"),
], ids=["empty", "avi", "matroska", "header-only", "truncated"])
def test_a_file_that_is_not_a_readable_webm_is_a_clear_error(data, says):
    with pytest.raises(webm.WebmError, match=says):
        webm.duration_seconds(data)


def test_submit_refuses_videos_over_60_seconds_or_100_mb_and_non_webm(tmp_path):
    long = tmp_path / "long.webm"
    long.write_bytes(webm_bytes(61))
    with pytest.raises(submit.SubmitError, match=r"lasts 61\.0 s.*at most 60 s"):
        submit.load_video(long)
    big = tmp_path / "big.webm"
    with big.open("wb") as handle:  # sparse: 100 MB + 1 byte without writing them
        handle.truncate(100 * 1024 * 1024 + 1)
    with pytest.raises(submit.SubmitError, match="at most 100 MB"):
        submit.load_video(big)
    mp4 = tmp_path / "clip.mp4"
    mp4.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(64))
    with pytest.raises(submit.SubmitError, match="WebM videos only"):
        submit.load_video(mp4)
    ok = tmp_path / "ok.webm"
    ok.write_bytes(webm_bytes(60))
    assert submit.load_video(ok).units == pytest.approx(60)


def test_submit_sends_images_as_raw_base64_and_refuses_a_data_uri(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    media = submit.load_images([image, image])
    assert [external_id for external_id, _data in media.images] == ["a.png", "a.png#2"]
    assert media.images[0][1].startswith("iVBORw0KGgo")  # base64 of the PNG signature
    assert "data:" not in media.images[0][1]
    uri = tmp_path / "b.txt"
    uri.write_text("data:image/png;base64,iVBORw0KGgo=")
    with pytest.raises(submit.SubmitError, match="data-URI prefix"):
        submit.load_images([uri])
    empty = tmp_path / "c.jpg"
    empty.write_bytes(b"")
    with pytest.raises(submit.SubmitError, match="empty"):
        submit.load_images([empty])


def test_submit_needs_the_public_url_for_the_webhook(env):
    with pytest.raises(submit.SubmitError, match="RECEIVER_PUBLIC_URL"):
        submit.webhook_of(Settings.from_env(env))
    settings = Settings.from_env({**env, "RECEIVER_PUBLIC_URL": "https://rr.example.com/"})
    webhook = submit.webhook_of(settings)
    assert webhook.url == "https://rr.example.com/webhooks/analysis"
    assert webhook.secret == SECRET
    assert SECRET not in repr(webhook)


# --- what the upstream answered -----------------------------------------------------------------

def _answer(status: int, body: bytes, content_type: str = "application/json",
            **headers: str) -> Answer:
    return Answer(status, httpx.Headers({"content-type": content_type, **headers}), body)


@pytest.mark.parametrize(("answer", "kind", "reason"), [
    (_answer(200, b'{"job_id":"j1","status":"finished","result":{}}'), "terminal", None),
    (_answer(200, b'{"job_id":"j1","status":"failed"}'), "terminal", None),
    (_answer(200, b'{"job_id":"j1","status":"pending"}'), "not_ready", "pending"),
    (_answer(200, b'{"job_id":"j1","status":"processing"}'), "not_ready", "processing"),
    (_answer(200, b'{"job_id":"j2","status":"finished"}'), "bad_answer", "other_job"),
    (_answer(200, b'{"job_id":"j1","status":"finished","res'), "bad_answer", "malformed_json"),
    (_answer(200, b"<html><body>Bad Gateway</body></html>", "text/html"), "bad_answer",
     "html_page"),
    (_answer(200, b'["j1"]'), "bad_answer", "not_an_object"),
    (_answer(200, b'{"job_id":"j1"}'), "bad_answer", "no_status"),
    (_answer(401, b'{"error":"bad token"}'), "bad_answer", "http_401"),
    (_answer(404, b"{}"), "not_found", None),
    (_answer(503, b"<html>down</html>", "text/html"), "server_error", "http_503"),
    (_answer(429, b"{}"), "throttled", None),
])
def test_each_answer_of_the_upstream_gets_its_verdict(answer, kind, reason):
    verdict = judge(answer, "j1")
    assert (verdict.kind, verdict.reason) == (kind, reason)


def test_a_truncated_answer_is_never_a_result():
    answer = Answer(200, httpx.Headers(), b'{"job_id":"j1","status":"finished"}', truncated=True)
    assert judge(answer, "j1").reason == "too_large"


def test_retry_after_is_read_as_seconds_or_an_http_date():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("Sun, 22 Nov 2026 06:00:30 GMT", now=NOW) == 30.0
    assert parse_retry_after("Sun, 22 Nov 2026 05:00:00 GMT", now=NOW) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    throttled = judge(_answer(429, b"", **{"retry-after": "7"}), "j1")
    assert throttled.retry_after == 7.0


# --- expected arrival --------------------------------------------------------------------------

def test_expected_arrival_is_units_times_latency_times_factor_plus_margin():
    timing = expected.Timing(factor=2.0, margin_seconds=300.0)
    video = expected.Expectation("v", "video", NOW, 30.0, 600)
    assert timing.expected_at(video, 500.0) == NOW + timedelta(seconds=30 * 0.5 * 2 + 300)
    images = expected.Expectation("i", "image_batch", NOW, 4.0, 0)
    assert timing.expected_at(images, 120.0) == NOW + timedelta(seconds=4 * 0.12 * 2 + 300)
    # Latency unknown (no upstream, or its latency endpoint down): one second per unit.
    assert timing.expected_at(images, None) == NOW + timedelta(seconds=4 * 1.0 * 2 + 300)
    assert expected.deadline(video) == NOW + timedelta(seconds=600)
    assert expected.deadline(images) is None  # 0: no limit


def test_awaited_status_is_pending_then_overdue_then_expired():
    expected_at, deadline = NOW + timedelta(minutes=5), NOW + timedelta(minutes=10)
    assert expected.awaited_status(expected_at, deadline, NOW) == "pending"
    assert expected.awaited_status(expected_at, deadline, expected_at) == "overdue"
    assert expected.awaited_status(expected_at, deadline, deadline) == "expired"
    assert expected.awaited_status(expected_at, None, NOW + timedelta(days=9)) == "overdue"
    # A deadline before the expected arrival: expired once past it, never overdue first.
    assert expected.awaited_status(deadline, expected_at, expected_at) == "expired"


# --- pacing --------------------------------------------------------------------------------------

class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.mark.anyio
async def test_rate_limit_spaces_polls_evenly_without_bursts():
    clock = FakeTime()
    limit = RateLimit(4.0, monotonic=clock.monotonic, sleep=clock.sleep)
    starts = []
    for _ in range(9):
        await limit.wait()
        starts.append(clock.now)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps == pytest.approx([0.25] * 8)
    clock.now += 10  # idle: no credit saved up for a burst
    await limit.wait()
    await limit.wait()
    assert clock.slept[-1] == pytest.approx(0.25)


@pytest.mark.anyio
async def test_latency_cache_asks_again_after_refresh_and_keeps_the_last_value_on_failure():
    clock = FakeTime()
    answers: list[float | Exception] = [120.0, Unreachable("connection_refused"), 90.0]
    asked = []

    async def fetch(media_type: str) -> float:
        asked.append(media_type)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    cache = LatencyCache(fetch, refresh_seconds=300, retry_seconds=30,
                         monotonic=clock.monotonic)
    assert await cache.get("image") == 120.0
    assert await cache.get("image") == 120.0
    assert asked == ["image"]
    clock.now += 301
    assert await cache.get("image") == 120.0  # the upstream failed: the last value
    clock.now += 10
    assert await cache.get("image") == 120.0  # not asked again before the retry delay
    assert len(asked) == 2
    clock.now += 30
    assert await cache.get("image") == 90.0
    assert len(asked) == 3
