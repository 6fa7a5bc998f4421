"""Unit tests of ``service.payloads``: parse, job_id_hint, kind_of and content_hash."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bench import payloads as bench_payloads
from service.payloads import (
    PIECE_ITEMS,
    Payload,
    PayloadError,
    canonical,
    canonical_pieces,
    content_hash,
    job_id_hint,
    kind_of,
    parse,
)
from tests.support.signing import EXAMPLES, encode, example

VIDEO = "video_finished.json"
IMAGES = "image_batch_finished.json"
FAILED = "video_failed.json"


def doc(name: str) -> dict[str, Any]:
    return copy.deepcopy(example(name))


def invalid(body: bytes) -> PayloadError:
    with pytest.raises(PayloadError) as caught:
        parse(body)
    return caught.value


def invalid_payload_at(body: bytes) -> str | None:
    error = invalid(body)
    assert error.code == "invalid_payload", error.message
    return error.path


def invalid_json(body: bytes) -> None:
    error = invalid(body)
    assert error.code == "invalid_json", (error.code, error.path, error.message)


def video_with_scene_start(value: str) -> bytes:
    """The video example with raw_scenes[1].start_seconds replaced by a raw JSON literal."""
    document = doc(VIDEO)
    document["result"]["raw_scenes"][1]["start_seconds"] = "@START@"
    text = json.dumps(document)
    assert text.count('"@START@"') == 1
    return text.replace('"@START@"', value).encode()


def reordered(value: Any) -> Any:
    """The same JSON value with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {key: reordered(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [reordered(item) for item in value]
    return value


# --- the reference examples ----------------------------------------------------------------


def test_video_reference_example_parses() -> None:
    payload = parse((EXAMPLES / VIDEO).read_bytes())
    assert payload.job_id == "video_12345"
    assert payload.status == "finished"
    assert payload.result is not None
    assert payload.items is None
    assert payload.result.raw_scenes is not None
    assert [(s.start_seconds, s.end_seconds) for s in payload.result.raw_scenes] == [
        (0, 5.2), (5.2, 10.7)]
    assert payload.result.frame_activity_diffs is not None
    assert payload.result.frame_activity_diffs.tolist() == [0.01, 0.15, 0.08]
    assert payload.result.ocr_results is not None
    assert payload.result.ocr_results[0].full_text == "No dogs off leash"
    assert payload.result.person_constellation_scenes is not None
    assert payload.result.person_constellation_scenes[1].person_ids == []


def test_image_batch_reference_example_parses() -> None:
    payload = parse((EXAMPLES / IMAGES).read_bytes())
    assert payload.job_id == "image_batch_123"
    assert payload.result is None
    assert payload.items is not None
    assert [item.external_id for item in payload.items] == ["101", "102"]
    first = payload.items[0].result
    assert first is not None
    assert first.tags is not None
    assert [(t.tag, t.probability, t.is_critical) for t in first.tags] == [
        ("cat", 0.92, False), ("indoor", 0.76, None)]


def test_failed_reference_example_parses_with_its_error_object() -> None:
    payload = parse((EXAMPLES / FAILED).read_bytes())
    assert payload.status == "failed"
    assert payload.result is None
    assert payload.items is None
    assert payload.error == {
        "code": "MAX_PROCESSING_TIME_EXCEEDED",
        "message": "The job exceeded Max-Processing-Time and was cancelled.",
    }


def test_failure_with_an_error_string_parses() -> None:
    payload = parse(b'{"job_id":"video_1","status":"failed","error":"decoder crashed"}')
    assert payload.error == "decoder crashed"


def test_failure_without_an_error_parses() -> None:
    assert parse(b'{"job_id":"video_1","status":"failed"}').error is None


def test_failure_with_a_null_error_parses() -> None:
    assert parse(b'{"job_id":"video_1","status":"failed","error":null}').error is None


def test_image_item_may_fail_on_its_own() -> None:
    document = doc(IMAGES)
    document["items"][1] = {"external_id": "102", "status": "failed", "error": "unreadable"}
    payload = parse(encode(document))
    assert payload.items is not None
    assert payload.items[1].result is None
    assert payload.items[1].error == "unreadable"


def test_optional_fields_may_be_null() -> None:
    body = json.dumps({
        "job_id": "video_1", "status": "finished", "error": None, "items": None,
        "result": {
            "raw_scenes": [{"start_seconds": None, "end_seconds": None}],
            "frame_activity_diffs": None,
            "sections": [{"section_tag": None, "time_segments": None, "thumbnail_timestamp": None,
                          "confidence": None, "is_critical": None, "relative_activity": None}],
            "ocr_results": [{"language_code": None, "full_text": None, "time_segment": None}],
            "person_constellation_scenes": [{"time_segment": None, "person_ids": [
                {"age": None, "gender": None, "face_embedding": None, "face_thumbnail": None,
                 "allowlisted": None, "relative_prominence": None}]}],
        },
    }).encode()
    payload = parse(body)
    assert payload.result is not None
    assert payload.result.sections is not None
    assert payload.result.sections[0].confidence is None


def test_optional_fields_may_be_absent() -> None:
    body = json.dumps({
        "job_id": "video_1", "status": "finished",
        "result": {"raw_scenes": [{}], "sections": [{}], "ocr_results": [{}],
                   "person_constellation_scenes": [{"person_ids": [{}]}]},
    }).encode()
    payload = parse(body)
    assert payload.result is not None
    assert payload.result.raw_scenes is not None
    assert payload.result.raw_scenes[0].start_seconds is None


def test_image_item_result_may_be_null_or_absent() -> None:
    body = (b'{"job_id":"image_batch_1","status":"finished","items":'
            b'[{"external_id":"a","result":null},{"external_id":"b"}]}')
    payload = parse(body)
    assert payload.items is not None
    assert [item.result for item in payload.items] == [None, None]


def test_integer_numbers_are_accepted_where_floats_belong() -> None:
    payload = parse(video_with_scene_start("5"))
    assert payload.result is not None
    assert payload.result.raw_scenes is not None
    assert payload.result.raw_scenes[1].start_seconds == 5.0


# --- content_hash --------------------------------------------------------------------------


# Content hashes are stored with every job and compared with every later delivery of it: a
# release that changed them would take a redelivery of an old job for changed content.
@pytest.mark.parametrize(("name", "digest"), [
    (VIDEO, "6fa807841907884c8a977b98d49a6594ecc336d4c727dd4f053cb2762e10b0de"),
    (IMAGES, "131cd93655714748a186af47b44f99a4a857a77480258c692f43738751a2bbc0"),
    (FAILED, "c288e9c06c30e78a69e3b50c2863d287fbf06a008438352df126237a59c9ec36"),
])
def test_the_content_hash_of_each_reference_example_is_the_one_earlier_releases_stored(
        name: str, digest: str) -> None:
    assert content_hash(parse((EXAMPLES / name).read_bytes())) == digest


def _long(name: str, count: int) -> bytes:
    """The example with every list of its result (or its items) ``count`` elements long."""
    document = doc(name)

    def grown(values: Any) -> Any:
        if not isinstance(values, list) or not values:
            return values
        return [copy.deepcopy(values[i % len(values)]) for i in range(count)]

    if "items" in document:
        document["items"] = grown(document["items"])
        for item in document["items"]:
            for key, values in (item.get("result") or {}).items():
                item["result"][key] = grown(values)
    else:
        for key, values in document["result"].items():
            if key != "frame_activity_diffs":
                document["result"][key] = grown(values)
    return encode(document)


@pytest.mark.parametrize(("body", "cut"), [
    pytest.param(_long(VIDEO, count), count > PIECE_ITEMS, id=f"video-lists-of-{count}")
    for count in (PIECE_ITEMS, PIECE_ITEMS + 1, 2 * PIECE_ITEMS, 5 * PIECE_ITEMS + 3)] + [
    pytest.param(_long(IMAGES, 3 * PIECE_ITEMS + 1), True, id="image-batch-of-97-items"),
    pytest.param(bench_payloads.template("typical").body("video_bench_1"), True,
                 id="bench-typical"),
    pytest.param(bench_payloads.template("image").body("image_batch_bench_1"), False,
                 id="bench-image"),
])
def test_a_payloads_hash_is_fed_in_pieces_that_make_exactly_its_canonical_form(
        body: bytes, cut: bool) -> None:
    payload = parse(body)
    pieces = [bytes(piece) for piece in canonical_pieces(payload)]
    # a list longer than PIECE_ITEMS is encoded a slice at a time
    assert (len(pieces) > 3) == cut
    assert b"".join(pieces) == canonical(payload)
    assert content_hash(payload) == hashlib.sha256(canonical(payload)).hexdigest()


def test_unknown_fields_at_the_top_level_and_deep_inside_a_video_are_accepted() -> None:
    document = doc(VIDEO)
    document["delivered_by"] = "analysis-api/2"
    document["result"]["model_version"] = {"scenes": "v3", "list": [1, [2, [3]]]}
    document["result"]["raw_scenes"][0]["score"] = 0.5
    document["result"]["sections"][0]["time_segments"][0]["frame"] = 12
    document["result"]["ocr_results"][0]["time_segment"]["confidence"] = None
    document["result"]["person_constellation_scenes"][0]["person_ids"][0]["bbox"] = [1, 2, 3, 4]
    document["result"]["person_constellation_scenes"][0]["extra"] = {"deep": {"er": True}}
    payload = parse(encode(document))
    assert content_hash(payload) == content_hash(parse(encode(doc(VIDEO))))


def test_unknown_fields_deep_inside_an_image_batch_do_not_change_content_hash() -> None:
    document = doc(IMAGES)
    document["batch_size"] = 2
    document["items"][0]["source_url"] = "https://example.test/101.jpg"
    document["items"][0]["result"]["tags"][0]["language"] = "en"
    document["items"][0]["result"]["person_ids"][0]["landmarks"] = {"eyes": [[1, 2], [3, 4]]}
    document["items"][1]["result"]["ocr_results"][0]["boxes"] = []
    assert content_hash(parse(encode(document))) == content_hash(parse(encode(doc(IMAGES))))


def test_unknown_fields_do_not_change_content_hash_of_a_failure() -> None:
    document = doc(FAILED)
    document["attempt"] = 3
    assert content_hash(parse(encode(document))) == content_hash(parse(encode(doc(FAILED))))


@pytest.mark.parametrize("name", [VIDEO, IMAGES])
def test_key_order_and_whitespace_do_not_change_content_hash(name: str) -> None:
    original = (EXAMPLES / name).read_bytes()
    compact = json.dumps(doc(name), separators=(",", ":")).encode()
    shuffled = json.dumps(reordered(doc(name)), indent=7).encode()
    hashes = {content_hash(parse(body)) for body in (original, compact, shuffled)}
    assert len(hashes) == 1


def test_key_order_inside_an_error_object_does_not_change_content_hash() -> None:
    original = (EXAMPLES / FAILED).read_bytes()
    shuffled = json.dumps(reordered(doc(FAILED))).encode()
    assert list(json.loads(shuffled)["error"]) == ["message", "code"]
    assert content_hash(parse(shuffled)) == content_hash(parse(original))


def test_null_and_absent_optional_fields_give_the_same_content_hash() -> None:
    with_nulls = doc(VIDEO)
    with_nulls["error"] = None
    with_nulls["result"]["sections"][0]["confidence"] = None
    without = doc(VIDEO)
    del without["result"]["sections"][0]["confidence"]
    assert content_hash(parse(encode(with_nulls))) == content_hash(parse(encode(without)))


def test_a_different_value_changes_content_hash() -> None:
    changed = doc(VIDEO)
    changed["result"]["raw_scenes"][1]["end_seconds"] = 10.8
    assert content_hash(parse(encode(changed))) != content_hash(parse(encode(doc(VIDEO))))


def test_a_different_item_tag_changes_content_hash() -> None:
    changed = doc(IMAGES)
    changed["items"][1]["result"]["tags"][0]["tag"] = "wolf"
    assert content_hash(parse(encode(changed))) != content_hash(parse(encode(doc(IMAGES))))


def test_a_different_error_message_changes_content_hash() -> None:
    changed = doc(FAILED)
    changed["error"]["message"] = "something else"
    assert content_hash(parse(encode(changed))) != content_hash(parse(encode(doc(FAILED))))


def test_content_hash_is_a_sha256_hex_digest() -> None:
    digest = content_hash(parse((EXAMPLES / VIDEO).read_bytes()))
    assert len(digest) == 64
    assert int(digest, 16) >= 0


# --- invalid_json --------------------------------------------------------------------------


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "nan", "inf"])
def test_non_finite_number_literal_is_invalid_json(literal: str) -> None:
    invalid_json(video_with_scene_start(literal))


def test_invalid_utf8_inside_a_string_is_invalid_json() -> None:
    invalid_json(b'{"job_id":"video_\xff","status":"finished"}')


def test_invalid_utf8_inside_an_unknown_field_is_invalid_json() -> None:
    invalid_json(b'{"job_id":"video_1","status":"finished","note":"caf\xe9"}')


def test_lone_surrogate_escape_is_invalid_json() -> None:
    invalid_json(b'{"job_id":"video_\\ud800","status":"finished"}')


def test_lone_surrogate_escape_in_an_unknown_field_is_invalid_json() -> None:
    invalid_json(b'{"job_id":"video_1","status":"finished","note":"\\ud800"}')


def test_absurdly_deep_nesting_as_the_whole_body_is_invalid_json() -> None:
    invalid_json(b"[" * 100_000)


def test_absurdly_deep_balanced_nesting_as_the_whole_body_is_invalid_json() -> None:
    invalid_json(b"[" * 100_000 + b"]" * 100_000)


def test_absurdly_deep_nesting_in_an_unknown_field_is_invalid_json() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    invalid_json(b'{"job_id":"video_1","status":"finished","extra":' + deep + b"}")


def test_absurdly_deep_nesting_inside_the_error_object_is_invalid_json() -> None:
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    invalid_json(b'{"job_id":"video_1","status":"failed","error":' + deep + b"}")


def test_empty_body_is_invalid_json() -> None:
    invalid_json(b"")


@pytest.mark.parametrize("body", [b"   ", b"not json", b"{", b'{"job_id":', b"\xef\xbb\xbf{}"])
def test_text_that_is_not_json_is_invalid_json(body: bytes) -> None:
    invalid_json(body)


@pytest.mark.parametrize("body", [b'{"job_id":1', b"[", b'[] "trailing"',
                                  b'{"job_id":"video_1","status":"done"'])
def test_truncated_json_with_an_early_shape_error_is_invalid_json(body: bytes) -> None:
    # Not JSON at all, even though the first value read has the wrong type.
    invalid_json(body)


def test_trailing_garbage_after_a_valid_payload_is_invalid_json() -> None:
    invalid_json(b'{"job_id":"video_1","status":"failed"} x')


@pytest.mark.parametrize(("body", "message"), [
    (b"", r"the body is empty"),
    (b"  \n", r"the body holds only whitespace, no JSON document"),
    (b"nope", r"not JSON: unexpected character at byte 4"),
    (b'{"job_id":"video_1"', r"not JSON: the document ends early at byte 19"),
    (b"[", r"not JSON: the document ends early at byte 1"),
    (b'{"job_id":"video_1","status":"failed"} x',
     r"not JSON: unexpected text after the end of the document at byte \d+"),
    (b'{"job_id":"video_1",}', r"not JSON: trailing comma in object at byte \d+"),
    (b'{"job_id":"video_\xff"}', r"not valid UTF-8 at byte 17"),
    (b"\xef\xbb\xbf{}", r"not JSON: the body starts with a byte order mark .*"),
    (b"[" * 100_000 + b"]" * 100_000, r"the JSON is nested deeper than \d{3} levels"),
], ids=["empty", "whitespace", "bad-character", "ends-early", "ends-early-array",
        "trailing-text", "trailing-comma", "bad-utf8", "bom", "deep"])
def test_invalid_json_message_says_what_is_wrong_in_user_terms(body: bytes, message: str) -> None:
    error = invalid(body)
    assert error.code == "invalid_json"
    assert re.fullmatch(message, error.message), error.message
    assert "truncated" not in error.message
    assert "(byte" not in error.message


# --- invalid_payload -----------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"[]", b'"x"', b"1", b"null", b"true", b"[{}]"])
def test_json_that_is_not_an_object_is_invalid_payload(body: bytes) -> None:
    assert invalid_payload_at(body) == "$"


def test_missing_job_id_is_invalid_payload_at_job_id() -> None:
    assert invalid_payload_at(b'{"status":"finished"}') == "$.job_id"


def test_integer_job_id_is_invalid_payload_at_job_id() -> None:
    assert invalid_payload_at(b'{"job_id":12345,"status":"finished"}') == "$.job_id"


def test_empty_job_id_is_invalid_payload_at_job_id() -> None:
    assert invalid_payload_at(b'{"job_id":"","status":"finished"}') == "$.job_id"


def test_null_job_id_is_invalid_payload_at_job_id() -> None:
    assert invalid_payload_at(b'{"job_id":null,"status":"finished"}') == "$.job_id"


def test_overlong_job_id_is_invalid_payload_at_job_id() -> None:
    body = json.dumps({"job_id": "v" * 513, "status": "finished"}).encode()
    assert invalid_payload_at(body) == "$.job_id"


def test_missing_status_is_invalid_payload_at_status() -> None:
    assert invalid_payload_at(b'{"job_id":"video_1"}') == "$.status"


def test_unknown_status_is_invalid_payload_at_status() -> None:
    assert invalid_payload_at(b'{"job_id":"video_1","status":"done"}') == "$.status"


def test_string_where_a_number_belongs_is_invalid_payload_naming_its_path() -> None:
    path = invalid_payload_at(video_with_scene_start('"3"'))
    assert path == "$.result.raw_scenes[1].start_seconds"


def test_boolean_where_a_number_belongs_is_invalid_payload_naming_its_path() -> None:
    path = invalid_payload_at(video_with_scene_start("true"))
    assert path == "$.result.raw_scenes[1].start_seconds"


@pytest.mark.parametrize("literal", ["1e400", "-1e400", "1" + "0" * 400])
def test_number_out_of_double_range_is_invalid_payload(literal: str) -> None:
    error = invalid(video_with_scene_start(literal))
    assert error.code == "invalid_payload"
    assert error.path == "$.result.raw_scenes[1].start_seconds"
    assert "range" in error.message


def test_nul_character_in_full_text_is_invalid_payload_naming_its_path() -> None:
    document = doc(VIDEO)
    document["result"]["ocr_results"][0]["full_text"] = "No dogs\x00 off leash"
    body = encode(document)
    assert b"\\u0000" in body
    assert invalid_payload_at(body) == "$.result.ocr_results[0].full_text"


def test_nul_character_in_job_id_is_invalid_payload_at_job_id() -> None:
    assert invalid_payload_at(b'{"job_id":"video_\\u0000","status":"failed"}') == "$.job_id"


def test_both_result_and_items_is_invalid_payload() -> None:
    document = doc(VIDEO)
    document["items"] = doc(IMAGES)["items"]
    error = invalid(encode(document))
    assert error.code == "invalid_payload"
    assert error.path is not None


def test_image_item_without_external_id_is_invalid_payload_at_its_path() -> None:
    document = doc(IMAGES)
    del document["items"][0]["external_id"]
    assert invalid_payload_at(encode(document)) == "$.items[0].external_id"


def test_image_item_with_numeric_external_id_is_invalid_payload_at_its_path() -> None:
    document = doc(IMAGES)
    document["items"][1]["external_id"] = 102
    assert invalid_payload_at(encode(document)) == "$.items[1].external_id"


def test_result_that_is_a_list_is_invalid_payload_at_result() -> None:
    assert invalid_payload_at(b'{"job_id":"video_1","status":"finished","result":[]}') == (
        "$.result")


def test_error_that_is_a_number_is_invalid_payload_at_error() -> None:
    assert invalid_payload_at(b'{"job_id":"video_1","status":"failed","error":42}') == "$.error"


def test_string_in_frame_activity_diffs_is_invalid_payload_at_its_index() -> None:
    document = doc(VIDEO)
    document["result"]["frame_activity_diffs"][2] = "0.08"
    assert invalid_payload_at(encode(document)) == "$.result.frame_activity_diffs[2]"


def test_a_bad_number_inside_a_face_embedding_is_invalid_payload_at_its_index() -> None:
    document = doc(VIDEO)
    embedding = document["result"]["person_constellation_scenes"][0]["person_ids"][0][
        "face_embedding"]
    embedding[1] = True  # a JSON boolean is not a number, as for any other float field
    assert invalid_payload_at(encode(document)) == (
        "$.result.person_constellation_scenes[0].person_ids[0].face_embedding[1]")


def test_an_embedding_that_is_not_an_array_is_invalid_payload_at_the_embedding() -> None:
    document = doc(VIDEO)
    document["result"]["person_constellation_scenes"][0]["person_ids"][0][
        "face_embedding"] = {"0": 0.5}
    assert invalid_payload_at(encode(document)) == (
        "$.result.person_constellation_scenes[0].person_ids[0].face_embedding")


# --- job_id_hint ---------------------------------------------------------------------------


def test_job_id_hint_reads_the_job_id_of_a_body_that_fails_validation_elsewhere() -> None:
    body = b'{"job_id":"video_12345","status":"done","result":{"raw_scenes":"nope"}}'
    with pytest.raises(PayloadError):
        parse(body)
    assert job_id_hint(body) == "video_12345"


def test_job_id_hint_reads_the_job_id_of_a_valid_body() -> None:
    assert job_id_hint((EXAMPLES / IMAGES).read_bytes()) == "image_batch_123"


@pytest.mark.parametrize("body", [b"", b"not json", b'{"job_id":"video_1"', b"\xff",
                                  b"[" * 100_000])
def test_job_id_hint_is_none_for_a_body_that_is_not_json(body: bytes) -> None:
    assert job_id_hint(body) is None


@pytest.mark.parametrize("body", [b"[]", b'"video_1"', b"1", b"null", b'[{"job_id":"video_1"}]'])
def test_job_id_hint_is_none_for_json_that_is_not_an_object(body: bytes) -> None:
    assert job_id_hint(body) is None


@pytest.mark.parametrize("job_id", ["1", "null", "true", "[]", '{"a":"b"}', '""', '"a\\u0000"'])
def test_job_id_hint_is_none_when_job_id_is_not_a_usable_string(job_id: str) -> None:
    assert job_id_hint(b'{"job_id":' + job_id.encode() + b',"status":"finished"}') is None


def test_job_id_hint_is_none_without_a_job_id() -> None:
    assert job_id_hint(b'{"status":"finished"}') is None


# --- kind_of -------------------------------------------------------------------------------


def test_kind_of_a_payload_with_result_is_video() -> None:
    assert kind_of(parse((EXAMPLES / VIDEO).read_bytes())) == "video"


def test_kind_of_a_payload_with_items_is_image_batch() -> None:
    assert kind_of(parse((EXAMPLES / IMAGES).read_bytes())) == "image_batch"


def test_kind_of_follows_the_shape_before_the_job_id_prefix() -> None:
    payload = parse(b'{"job_id":"video_7","status":"failed","items":[]}')
    assert kind_of(payload) == "image_batch"


def test_kind_of_a_failure_without_result_or_items_with_video_prefix_is_video() -> None:
    assert kind_of(parse((EXAMPLES / FAILED).read_bytes())) == "video"


def test_kind_of_a_failure_without_result_or_items_with_image_batch_prefix_is_image_batch(
        ) -> None:
    payload = parse(b'{"job_id":"image_batch_123","status":"failed","error":"x"}')
    assert kind_of(payload) == "image_batch"


@pytest.mark.parametrize("job_id", ["job_42", "audio_7", "12345", "VIDEO_1", "x_video_1"])
def test_kind_of_a_failure_with_another_job_id_prefix_is_unknown(job_id: str) -> None:
    payload = parse(json.dumps({"job_id": job_id, "status": "failed"}).encode())
    assert kind_of(payload) is None


@pytest.mark.parametrize("job_id", ["videotape_1", "image_7", "imagery_9"])
def test_kind_of_needs_the_full_video_or_image_batch_prefix_with_underscore(
        job_id: str) -> None:
    payload = parse(json.dumps({"job_id": job_id, "status": "failed"}).encode())
    assert kind_of(payload) is None


# --- never anything but PayloadError -------------------------------------------------------

_FUZZ = settings(max_examples=300, database=None, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])



def _json_containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children,
                                                           max_size=4)


def json_values() -> st.SearchStrategy[Any]:
    """Arbitrary JSON values."""
    scalars = (st.none() | st.booleans() | st.integers()
               | st.floats(allow_nan=False, allow_infinity=False) | st.text())
    return st.recursive(scalars, _json_containers, max_leaves=20)


def outcome(body: bytes) -> str:
    """``parsed``, ``invalid_json`` or ``invalid_payload $`` (a path is always named); any
    other exception propagates and fails the test."""
    try:
        payload = parse(body)
    except PayloadError as exc:
        if exc.code == "invalid_payload" and exc.path is not None and exc.path.startswith("$"):
            return "invalid_payload $"
        return exc.code if exc.code == "invalid_json" and exc.path is None else repr(exc)
    return "parsed" if isinstance(payload, Payload) else repr(payload)


@_FUZZ
@given(body=st.binary(max_size=2048))
def test_arbitrary_bytes_parse_or_raise_payload_error(body: bytes) -> None:
    assert outcome(body) in ("parsed", "invalid_json", "invalid_payload $")


@_FUZZ
@given(document=st.dictionaries(
    st.sampled_from(["job_id", "status", "result", "items", "error", "extra"]), json_values()))
def test_arbitrary_json_objects_parse_or_raise_payload_error(document: dict[str, Any]) -> None:
    assert outcome(encode(document)) in ("parsed", "invalid_payload $")


@_FUZZ
@given(extra=json_values(), name=st.text(min_size=1, max_size=12))
def test_any_unknown_top_level_field_leaves_content_hash_unchanged(extra: Any, name: str) -> None:
    document = doc(VIDEO)
    assume(name not in Payload.__struct_fields__)  # known fields (items, error) are not unknown
    document[name] = extra
    assert content_hash(parse(encode(document))) == content_hash(parse(encode(doc(VIDEO))))
