"""Concurrent copies and conflicting results of one job: one set of rows, precedence kept."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from tests.conftest import bearer
from tests.support.db import table_counts
from tests.support.signing import encode, example, signed_headers

pytestmark = pytest.mark.anyio


async def test_fifty_concurrent_copies_give_one_stored_and_one_set_of_rows(client, settings,
                                                                           read_token):
    body = encode(example("video_finished.json"))
    responses = await asyncio.gather(*(
        client.post("/webhooks/analysis", content=body, headers=signed_headers(body))
        for _ in range(50)
    ))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    outcomes = Counter(r.json()["outcome"] for r in responses)
    assert outcomes == {"stored": 1, "duplicate": 49}
    counts = await table_counts(settings)
    assert counts["jobs"] == 1
    assert counts["deliveries"] == 50
    assert counts["delivery_bodies"] == 1
    assert counts["scenes"] == 2
    assert counts["frame_activity"] == 1  # one packed series per video
    assert counts["persons"] == 2
    payload = await client.get("/v1/jobs/video_12345/payload", headers=bearer(read_token))
    assert payload.json() == example("video_finished.json")


async def test_concurrent_conflicting_results_follow_precedence_and_never_mix(client, settings,
                                                                              read_token):
    a = example("video_finished.json")
    b = example("video_finished.json")
    b["result"] = {"raw_scenes": [{"start_seconds": 7, "end_seconds": 8}],
                   "frame_activity_diffs": [0.5] * 10}
    failed = {"job_id": "video_12345", "status": "failed", "error": "cancelled"}
    rng = random.Random(20261122)
    for _round in range(5):
        documents = [a, b, failed] * 4
        rng.shuffle(documents)
        bodies = [encode(d) for d in documents]
        responses = await asyncio.gather(*(
            client.post("/webhooks/analysis", content=body, headers=signed_headers(body))
            for body in bodies
        ))
        assert all(r.status_code == 200 for r in responses)
        payload = (await client.get("/v1/jobs/video_12345/payload",
                                    headers=bearer(read_token))).json()
        # Once any finished result landed, a failure can never replace it.
        assert payload in (a, b)
        counts = await table_counts(settings)
        expected_scenes = len(payload["result"]["raw_scenes"])
        summary = (await client.get("/v1/jobs/video_12345", headers=bearer(read_token))).json()
        assert summary["counts"]["activity"] == len(payload["result"]["frame_activity_diffs"])
        assert counts["scenes"] == expected_scenes
        assert counts["frame_activity"] == 1
        assert counts["persons"] == (2 if payload == a else 0)
