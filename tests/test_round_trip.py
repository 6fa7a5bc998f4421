"""What goes in comes back out: /payload, rebuilt from the normalized rows only, is JSON-equal
to the delivered payload less unknown fields and nulls, on SQLite and PostgreSQL."""

from __future__ import annotations

import struct
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.conftest import bearer
from tests.support.db import stored_bodies
from tests.support.signing import encode, example, signed_headers

pytestmark = pytest.mark.anyio


def without_nulls(value: Any) -> Any:
    """The payload as it must come back: object members that are null are left out. An
    ``error`` is the upstream's opaque value and comes back verbatim, nulls inside included."""
    if isinstance(value, dict):
        return {k: v if k == "error" else without_nulls(v)
                for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def assert_json_equal(actual: Any, expected: Any, path: str = "$") -> None:
    """Equality of JSON values: numbers by value (1 == 1.0), but a bool is never a number."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        assert actual is expected, path
    elif isinstance(expected, int | float) and isinstance(actual, int | float):
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), path
        assert actual.keys() == expected.keys(), f"{path}: {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            assert_json_equal(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), path
        assert len(actual) == len(expected), path
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_json_equal(a, e, f"{path}[{index}]")
    else:
        assert type(actual) is type(expected), f"{path}: {actual!r}"
        assert actual == expected, f"{path}: {actual!r}"


async def deliver_and_read_back(client, token: str, document: dict[str, Any]) -> Any:
    body = encode(document)
    response = await client.post("/webhooks/analysis", content=body,
                                 headers=signed_headers(body))
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "stored"
    read = await client.get(f"/v1/jobs/{document['job_id']}/payload", headers=bearer(token))
    assert read.status_code == 200, read.text
    return read.json()


@pytest.mark.parametrize("name", ["video_finished.json", "image_batch_finished.json",
                                  "video_failed.json"])
async def test_reference_example_round_trips_through_payload(client, read_token, name):
    document = example(name)
    assert_json_equal(await deliver_and_read_back(client, read_token, document), document)


async def test_unknown_fields_are_dropped_from_payload_but_kept_in_the_raw_delivery(
        client, settings, read_token):
    document = example("image_batch_finished.json")
    document["vendor_extra"] = {"trace": [1, 2, 3]}
    document["items"][0]["result"]["tags"][0]["colour"] = "orange"
    rebuilt = await deliver_and_read_back(client, read_token, document)
    assert_json_equal(rebuilt, example("image_batch_finished.json"))
    assert await stored_bodies(settings) == [encode(document)]


async def test_payload_of_an_unknown_job_is_404(client, read_token):
    response = await client.get("/v1/jobs/nope/payload", headers=bearer(read_token))
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_payload_needs_a_token(client):
    response = await client.get("/v1/jobs/video_1/payload")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


@pytest.mark.parametrize("value", [-0.0, 5e-324, -2.2250738585072014e-308,
                                   1.7976931348623157e308, 0.1, 1e22, 9007199254740993.0])
async def test_every_double_of_a_video_comes_back_bit_for_bit(client, read_token, database_url,
                                                               value):
    if value == 0 and database_url.startswith("sqlite"):
        # A column of REAL affinity stores an integral value as an integer: -0.0 comes back
        # as 0.0 (equal by value, as /payload promises; not bit for bit).
        pytest.xfail("SQLite's REAL columns keep -0.0 as 0")
    segment = {"start_seconds": value, "end_seconds": value}
    document = {"job_id": f"video_{uuid.uuid4().hex}", "status": "finished", "result": {
        "raw_scenes": [segment],
        "frame_activity_diffs": [value, value],
        "sections": [{"section_tag": "a", "time_segments": [segment],
                      "thumbnail_timestamp": value, "confidence": value,
                      "relative_activity": value}],
        "ocr_results": [{"language_code": "en", "full_text": "x", "time_segment": segment}],
        "person_constellation_scenes": [{"time_segment": segment, "person_ids": [
            {"age": value, "face_embedding": [value, value], "relative_prominence": value}]}],
    }}
    rebuilt = await deliver_and_read_back(client, read_token, document)
    assert_json_equal(rebuilt, document)

    def doubles(node: Any) -> list[float]:
        if isinstance(node, dict):
            return [x for v in node.values() for x in doubles(v)]
        if isinstance(node, list):
            return [x for v in node for x in doubles(v)]
        return [node] if isinstance(node, float) else []

    found = doubles(rebuilt["result"])
    assert len(found) == 17
    assert {struct.pack("<d", x) for x in found} == {struct.pack("<d", value)}


# --- property: generated payloads round-trip ----------------------------------------------------

numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.sampled_from([0.0, -0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
                     -1.7976931348623157e308, 0.1, 1e-300]),
)
texts = st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
                max_size=40)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Present with a value, present as null, or (via ``optional=``) absent."""
    return st.one_of(st.none(), strategy)


def obj(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={k: maybe(v) for k, v in fields.items()})


def lists(strategy: st.SearchStrategy[Any], size: int = 4) -> st.SearchStrategy[list[Any]]:
    return st.lists(strategy, max_size=size)


segment = obj(start_seconds=numbers, end_seconds=numbers)
person = obj(age=numbers, gender=texts, face_embedding=lists(numbers, 8), face_thumbnail=texts,
             allowlisted=st.booleans(), relative_prominence=numbers)
ocr = obj(language_code=texts, full_text=texts, time_segment=segment)
section = obj(section_tag=texts, time_segments=lists(segment), thumbnail_timestamp=numbers,
              confidence=numbers, is_critical=st.booleans(), relative_activity=numbers)
video_result = obj(
    raw_scenes=lists(segment), frame_activity_diffs=lists(numbers, 20), sections=lists(section),
    ocr_results=lists(ocr), person_constellation_scenes=lists(
        obj(time_segment=segment, person_ids=lists(person))),
)
image_result = obj(tags=lists(obj(tag=texts, probability=numbers, is_critical=st.booleans())),
                   person_ids=lists(person), ocr_results=lists(ocr))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), texts),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(texts, children, max_size=3)),
    max_leaves=8,
)
errors = st.one_of(texts, st.dictionaries(texts, json_values, max_size=3))
image_item = st.builds(
    lambda external_id, extra: {"external_id": external_id, **extra},
    texts.filter(bool),
    obj(result=image_result, status=texts, error=errors),
)


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, Any]:
    status = draw(st.sampled_from(["finished", "failed"]))
    document: dict[str, Any] = {"job_id": f"job_{uuid.uuid4().hex}", "status": status}
    shape = draw(st.sampled_from(["video", "image", "neither"]))
    if shape == "video":
        document["result"] = draw(video_result)
    elif shape == "image":
        document["items"] = draw(lists(image_item, 3))
    if draw(st.booleans()):
        document["error"] = draw(maybe(errors))
    return document


@hypothesis_settings(max_examples=60, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])
@given(document=payloads())
async def test_generated_payloads_round_trip_exactly(client, read_token, document):
    rebuilt = await deliver_and_read_back(client, read_token, document)
    assert_json_equal(rebuilt, without_nulls(document))
