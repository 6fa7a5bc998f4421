"""``GET /openapi.json``: the OpenAPI 3.1 description of every route, parameter and response.

Written out by hand next to the routes it describes; ``tests/test_openapi.py`` checks that it
names every route the app serves, and a schemathesis run checks the live app against it.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from service.api import expected, faces, params
from service.http import JSONResponse
from service.vocabulary import (
    ACCEPTED_OUTCOMES,
    AUDIT_ACTIONS,
    AWAITED_STATUSES,
    JOB_KINDS,
    JOB_STATUSES,
    OUTCOMES,
    RECONCILED,
)

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _object(required: list[str] | None = None, **properties: Schema) -> Schema:
    return {"type": "object", "properties": properties,
            "required": list(properties) if required is None else required}


INTEGER = {"type": "integer"}


def _counts(*names: str) -> Schema:
    return {"type": "object", "properties": dict.fromkeys(names, INTEGER),
            "required": list(names)}


NUMBER = {"type": "number"}
N_NUMBER = _nullable(NUMBER)
STRING = {"type": "string"}
N_STRING = _nullable(STRING)
N_BOOL = _nullable({"type": "boolean"})
DATETIME = {"type": "string", "format": "date-time"}
LINKS = {"type": "object", "additionalProperties": {"type": "string"}}
UPSTREAM_ERROR = {"anyOf": [{"type": "string"}, {"type": "object"}]}


def _page(item: str) -> Schema:
    return _object(data={"type": "array", "items": _ref(item)}, next_cursor=N_STRING)


def _upstream_schemas() -> dict[str, Schema]:
    """The analysis API's payload, as rebuilt by /payload (nulls left out)."""
    segment = _object([], start_seconds=NUMBER, end_seconds=NUMBER)
    person = _object([], age=NUMBER, gender=STRING,
                     face_embedding={"type": "array", "items": NUMBER},
                     face_thumbnail=STRING, allowlisted={"type": "boolean"},
                     relative_prominence=NUMBER)
    ocr = _object([], language_code=STRING, full_text=STRING,
                  time_segment=_ref("UpstreamTimeSegment"))
    return {
        "UpstreamTimeSegment": segment,
        "UpstreamPerson": person,
        "UpstreamOcr": ocr,
        "UpstreamVideoResult": _object(
            [],
            raw_scenes={"type": "array", "items": _ref("UpstreamTimeSegment")},
            frame_activity_diffs={"type": "array", "items": NUMBER},
            sections={"type": "array", "items": _object(
                [], section_tag=STRING,
                time_segments={"type": "array", "items": _ref("UpstreamTimeSegment")},
                thumbnail_timestamp=NUMBER, confidence=NUMBER,
                is_critical={"type": "boolean"}, relative_activity=NUMBER)},
            ocr_results={"type": "array", "items": _ref("UpstreamOcr")},
            person_constellation_scenes={"type": "array", "items": _object(
                [], time_segment=_ref("UpstreamTimeSegment"),
                person_ids={"type": "array", "items": _ref("UpstreamPerson")})},
        ),
        "UpstreamImageItem": _object(
            ["external_id"], external_id=STRING,
            result=_object([], tags={"type": "array", "items": _object(
                [], tag=STRING, probability=NUMBER, is_critical={"type": "boolean"})},
                person_ids={"type": "array", "items": _ref("UpstreamPerson")},
                ocr_results={"type": "array", "items": _ref("UpstreamOcr")}),
            status=STRING, error=UPSTREAM_ERROR,
        ),
        "Payload": _object(
            ["job_id", "status"], job_id=STRING,
            status={"type": "string", "enum": list(JOB_STATUSES)},
            result=_ref("UpstreamVideoResult"),
            items={"type": "array", "items": _ref("UpstreamImageItem")},
            error=UPSTREAM_ERROR,
        ),
    }


def _face_schemas() -> dict[str, Schema]:
    unit = {"type": "number", "minimum": -1, "maximum": 1}
    hit = _object(
        ["job_id", "kind", "item_index", "external_id", "person_index", "start_seconds",
         "end_seconds", "similarity", "allowlisted", "age", "gender"],
        job_id=STRING, kind=_nullable({"type": "string", "enum": list(JOB_KINDS)}),
        item_index=INTEGER, external_id=N_STRING, person_index=INTEGER,
        start_seconds=N_NUMBER, end_seconds=N_NUMBER, similarity=unit, allowlisted=N_BOOL,
        age=N_NUMBER, gender=N_STRING,
        thumbnail_url={"type": "string", "description": "present when a thumbnail is stored"})
    person = _object(job_id={"type": "string", "minLength": 1, "maxLength": 512},
                     item_index={"type": "integer", "minimum": 0, "maximum": 999_999_999},
                     person_index={"type": "integer", "minimum": 0, "maximum": 999_999_999})
    person["additionalProperties"] = False
    search = {
        "type": "object",
        "description": "either embedding or person; the filters narrow the faces searched",
        "properties": {
            "embedding": {"type": "array", "minItems": 1, "maxItems": faces.MAX_DIMENSION,
                          "items": NUMBER,
                          "description": "a face embedding (any length but zero); only "
                                         "faces of the same dimension are compared"},
            "person": person,
            "k": {"type": "integer", "minimum": 1, "maximum": faces.MAX_K,
                  "default": faces.DEFAULT_K},
            "min_similarity": {"anyOf": [unit, {"type": "null"}]},
            "allowlisted": {"anyOf": [{"type": "boolean"}, {"type": "null"}],
                            "description": "false: faces not marked allowlisted"},
            "kind": {"anyOf": [{"type": "string", "enum": list(JOB_KINDS)},
                               {"type": "null"}]},
            "received_after": {"anyOf": [DATETIME, {"type": "null"}],
                               "description": "ISO 8601, exclusive"},
            "received_before": {"anyOf": [DATETIME, {"type": "null"}],
                                "description": "ISO 8601, exclusive"},
            "exact": {"type": "boolean", "default": False,
                      "description": "exact search even where the approximate index answers"},
        },
        "oneOf": [{"required": ["embedding"]}, {"required": ["person"]}],
        "additionalProperties": False,
    }
    return {"FaceHit": hit, "FaceHits": _object(data={"type": "array", "items": _ref("FaceHit")}),
            "FaceSearch": search}


def _schemas() -> dict[str, Schema]:
    counts = _counts("items", "scenes", "activity", "sections", "segments", "ocr",
                     "person_scenes", "persons", "tags")
    time_segment = _object(start_seconds=N_NUMBER, end_seconds=N_NUMBER)
    section = _object(
        item_index=INTEGER, index=INTEGER, section_tag=N_STRING,
        time_segments=_nullable({"type": "array", "items": _ref("TimeSegment")}),
        thumbnail_timestamp=N_NUMBER, confidence=N_NUMBER, is_critical=N_BOOL,
        relative_activity=N_NUMBER)
    ocr_row = _object(job_id=STRING, item_index=INTEGER, external_id=N_STRING, index=INTEGER,
                      language_code=N_STRING, full_text=N_STRING, start_seconds=N_NUMBER,
                      end_seconds=N_NUMBER)
    tag_row = _object(item_index=INTEGER, external_id=N_STRING, index=INTEGER, tag=N_STRING,
                      probability=N_NUMBER, is_critical=N_BOOL)
    return {
        "Error": _object(error=STRING, code=STRING, details={"type": "object"}),
        "WebhookAccepted": _object(
            job_id=STRING, delivery_id=INTEGER,
            outcome={"type": "string", "enum": list(ACCEPTED_OUTCOMES)}),
        "Health": _object(["status"], status=STRING, schema=N_STRING, reason=STRING,
                          head=STRING),
        "JobSummary": _object(
            job_id=STRING, kind=_nullable({"type": "string", "enum": list(JOB_KINDS)}),
            status={"type": "string", "enum": [*JOB_STATUSES, *AWAITED_STATUSES],
                    "description": "the result's (finished, failed) or, expected without a "
                                   "result yet, pending, overdue (past expected_at) or "
                                   "expired (past expires_at)"},
            error=_nullable(UPSTREAM_ERROR),
            received_at=_nullable(DATETIME), updated_at=_nullable(DATETIME),
            deliveries=INTEGER, counts=counts,
            submitted_at=_nullable(DATETIME), expected_at=_nullable(DATETIME),
            expires_at=_nullable(DATETIME), poll_attempts=INTEGER,
            last_polled_at=_nullable(DATETIME),
            reconciled=_nullable({"type": "string", "enum": list(RECONCILED),
                                  "description": "how the first result arrived"}),
            links=LINKS),
        "ExpectedJob": {
            "type": "object",
            "description": "a job submitted upstream; media_seconds for a video, image_count "
                           "for an image_batch",
            "properties": {
                "job_id": {"type": "string", "minLength": 1, "maxLength": 512},
                "kind": {"type": "string", "enum": list(JOB_KINDS)},
                "submitted_at": {**DATETIME, "description": "default: now"},
                "media_seconds": {"type": "number", "exclusiveMinimum": 0,
                                  "maximum": expected.MAX_MEDIA_SECONDS},
                "image_count": {"type": "integer", "minimum": 1,
                                "maximum": expected.MAX_IMAGE_COUNT},
                "max_processing_time": {"type": "integer", "minimum": 0,
                                        "maximum": expected.MAX_PROCESSING_TIME,
                                        "description": "seconds; 0 (default): no limit"},
            },
            "required": ["job_id", "kind"],
            "additionalProperties": False,
        },
        "JobPage": _page("JobSummary"),
        "TimeSegment": time_segment,
        "Scene": _object(item_index=INTEGER, index=INTEGER, start_seconds=N_NUMBER,
                         end_seconds=N_NUMBER),
        "ScenePage": _page("Scene"),
        "Activity": _object(item_index=INTEGER, index=INTEGER, value=NUMBER),
        "ActivityPage": _page("Activity"),
        "Section": section,
        "SectionPage": _page("Section"),
        "SectionHit": {"allOf": [_ref("Section"), _object(job_id=STRING)]},
        "SectionHitPage": _page("SectionHit"),
        "Ocr": ocr_row,
        "OcrPage": _page("Ocr"),
        "OcrHit": {"allOf": [_ref("Ocr"), _object(rank=NUMBER)]},
        "OcrHitPage": _page("OcrHit"),
        "Person": _object(
            item_index=INTEGER, external_id=N_STRING, index=INTEGER,
            scene_index=_nullable(INTEGER), start_seconds=N_NUMBER, end_seconds=N_NUMBER,
            age=N_NUMBER, gender=N_STRING,
            face_embedding=_nullable({"type": "array", "items": NUMBER}),
            face_thumbnail=N_STRING, allowlisted=N_BOOL, relative_prominence=N_NUMBER,
            erased={"type": "boolean"}),
        "PersonPage": _page("Person"),
        "Tag": tag_row,
        "TagPage": _page("Tag"),
        "TagHit": {"allOf": [_ref("Tag"), _object(job_id=STRING)]},
        "TagHitPage": _page("TagHit"),
        "Item": _object(
            item_index=INTEGER, media_type={"type": "string", "enum": ["video", "image"]},
            external_id=N_STRING, status=N_STRING, error=_nullable(UPSTREAM_ERROR),
            has_result={"type": "boolean"},
            counts=_counts("scenes", "activity", "sections", "ocr", "person_scenes", "tags",
                           "persons")),
        "ItemPage": _page("Item"),
        "Delivery": _object(
            ["id", "job_id", "received_at", "outcome", "error", "error_code",
             "signature_scheme", "size", "body_sha256", "request_id", "client_ip"],
            id=INTEGER, job_id=N_STRING, received_at=DATETIME,
            outcome={"type": "string", "enum": list(OUTCOMES)},
            error=N_STRING, error_code=N_STRING, signature_scheme=STRING, size=INTEGER,
            body_sha256=STRING, request_id=N_STRING, client_ip=N_STRING, links=LINKS),
        "DeliveryPage": _page("Delivery"),
        "AuditRecord": _object(
            id=INTEGER, at=DATETIME, action={"type": "string", "enum": list(AUDIT_ACTIONS)},
            token_name=STRING, job_id=N_STRING,
            counts={"type": "object", "additionalProperties": INTEGER},
            details={"type": "object", "additionalProperties": STRING}),
        "AuditPage": _page("AuditRecord"),
        "PeopleSummary": _object(id=INTEGER, appearance_count=INTEGER, created_at=DATETIME,
                                 updated_at=DATETIME),
        "PeoplePage": _page("PeopleSummary"),
        "Appearance": _object(
            job_id=STRING, kind=_nullable({"type": "string", "enum": list(JOB_KINDS)}),
            item_index=INTEGER, external_id=N_STRING, person_index=INTEGER,
            start_seconds=N_NUMBER, end_seconds=N_NUMBER, similarity=NUMBER),
        "People": {"allOf": [_ref("PeopleSummary"), _object(
            appearances={"type": "array", "items": _ref("Appearance")})]},
        **_face_schemas(),
        **_upstream_schemas(),
    }


def _param(name: str, where: str, schema: Schema, description: str,
           required: bool = False) -> Schema:
    return {"name": name, "in": where, "required": required or where == "path",
            "schema": schema, "description": description}


LIMIT = _param("limit", "query",
               {"type": "integer", "minimum": 1, "maximum": params.MAX_LIMIT,
                "default": params.DEFAULT_LIMIT}, "page size")
CURSOR = _param("cursor", "query", {"type": "string"},
                "next_cursor of the previous page (opaque)")
JOB_ID = _param("job_id", "path", {"type": "string"}, "the upstream's job id")
DELIVERY_ID = _param("delivery_id", "path", {"type": "integer", "minimum": 0},
                     "a delivery's id")


def _error(description: str) -> Schema:
    return {"description": description,
            "content": {"application/json": {"schema": _ref("Error")}}}


def _json(schema: str, description: str = "OK") -> Schema:
    return {"description": description,
            "content": {"application/json": {"schema": _ref(schema)}}}


WITHHELD = {"Withheld-Biometrics": {
    "description": "what a drop policy or an erasure left out, e.g. "
                   "fields=face_embedding; erased_persons=0/2 (absent when nothing was)",
    "schema": {"type": "string"}}}


def _operation(summary: str, ok: dict[str, Schema], *parameters: Schema, admin: bool = False,
               not_found: bool = False, tag: str = "query", sealed: bool = False) -> Schema:
    responses: dict[str, Schema] = {
        **ok,
        "401": _error("missing, unknown or revoked bearer token"),
        "422": _error("a bad parameter; details.parameter names it"),
        "503": _error("the database is unavailable"),
    }
    if admin:
        responses["403"] = _error("the token's scope is read, the route needs admin")
    if not_found:
        responses["404"] = _error("no such job or delivery")
    if sealed:
        responses["409"] = _error("encrypted under a master key that is not configured "
                                  "(key_unavailable); details.key_id names it")
    return {"summary": summary, "tags": [tag], "parameters": list(parameters),
            "security": [{"bearer": []}], "responses": responses}


def _expected_operation() -> Schema:
    operation = _operation(
        "Record a job submitted upstream as expected: if its result has not arrived by its "
        "expected time, it is fetched from the upstream. Idempotent per job id (the first "
        "expectation stays); a stored job keeps its result",
        {"201": _json("JobSummary", "recorded"),
         "200": _json("JobSummary", "already expected: nothing changed")},
        admin=True, tag="reconciliation")
    operation["requestBody"] = {"required": True, "content": {
        "application/json": {"schema": _ref("ExpectedJob")}}}
    operation["responses"]["400"] = _error("not JSON (invalid_json)")
    operation["responses"]["413"] = _error("a body over 16 KiB (payload_too_large)")
    operation["responses"]["422"] = _error("a bad field; details.parameter names it")
    return operation


def _erase_person() -> Schema:
    operation = _operation(
        "Erase one face observation's embedding, thumbnail, age and gender, from its row and "
        "from every raw body of the job (recorded in the audit log; again: 204, no record)",
        {"204": {"description": "erased (or already erased)"}}, JOB_ID,
        _param("item_index", "path", {"type": "integer", "minimum": 0},
               "the media item (0 for a video)"),
        _param("person_index", "path", {"type": "integer", "minimum": 0},
               "the person within the item (a video's persons count across its scenes)"),
        admin=True, not_found=True, tag="privacy")
    operation["responses"]["404"] = _error("no such job or person")
    operation["responses"]["409"] = _error(
        "a raw body of the job is encrypted under a key that is not configured "
        "(key_unavailable; details.key_id names it); nothing was erased")
    return operation


PERSON_ID = _param("person_id", "path", {"type": "integer", "minimum": 0},
                   "a person's id (a cluster of faces across jobs)")


def _people_paths() -> dict[str, Schema]:
    erase = _operation(
        "Erase every face of a person across jobs (embedding, thumbnail, age and gender, "
        "from the rows and every raw body of their jobs) and remove the person; one "
        "people_erased audit record. Again: 404",
        {"204": {"description": "erased"}}, PERSON_ID, admin=True, tag="privacy")
    erase["responses"]["404"] = _error("no such person (or already erased)")
    erase["responses"]["409"] = _error(
        "a raw body is encrypted under a key that is not configured (key_unavailable; "
        "details.key_id names it); nothing was erased")
    one = _operation("A person and its appearances (oldest job first)",
                     {"200": _json("People")}, PERSON_ID, tag="people")
    one["responses"]["404"] = _error("no such person")
    return {
        "/v1/people": {"get": _operation(
            "People: clusters of faces that are the same person across jobs, newest first",
            {"200": _json("PeoplePage")},
            _param("min_appearances", "query", {"type": "integer", "minimum": 1,
                                                "maximum": 1_000_000, "default": 1},
                   "only people with at least this many faces"),
            LIMIT, CURSOR, tag="people")},
        "/v1/people/{person_id}": {"get": one, "delete": erase},
    }
ITEM_INDEX = _param("item_index", "path", {"type": "integer", "minimum": 0},
                    "the media item (0 for a video)")
PERSON_INDEX = _param("person_index", "path", {"type": "integer", "minimum": 0},
                      "the person within the item (a video's persons count across its scenes)")
LOADING = ("the database is unavailable, the face index is still loading (index_loading), "
           "or this process keeps none (face_index_off)")


def _face_paths() -> dict[str, Schema]:
    search = _operation(
        "Faces most similar to an embedding or to a stored person, across every job, most "
        "similar first (cosine); a person never matches itself", {"200": _json("FaceHits")},
        tag="faces")
    search["requestBody"] = {"required": True, "content": {
        "application/json": {"schema": _ref("FaceSearch")}}}
    search["responses"].update({
        "400": _error("not JSON (invalid_json)"),
        "404": _error("no such job or person"),
        "409": _error("the person's embedding is encrypted under a master key that is not "
                      "configured (key_unavailable)"),
        "413": _error("a body over 256 KiB"),
        "422": _error("a bad field (details.parameter names it): an embedding with no "
                      "direction or of a dimension no indexed face has, k out of range..."),
        "503": _error(LOADING)})
    similar = _operation(
        "The faces most similar to this person's, across every job",
        {"200": _json("FaceHits")}, JOB_ID, ITEM_INDEX, PERSON_INDEX,
        _param("k", "query", {"type": "integer", "minimum": 1, "maximum": faces.MAX_K,
                              "default": faces.DEFAULT_K}, "how many hits at most"),
        _param("min_similarity", "query", {"type": "number", "minimum": -1, "maximum": 1},
               "cosine similarity at least"),
        not_found=True, sealed=True, tag="faces")
    similar["responses"]["404"] = _error("no such job or person")
    similar["responses"]["503"] = _error(LOADING)
    image = {"schema": {"type": "string", "format": "binary"}}
    thumbnail = _operation(
        "The person's face thumbnail: its bytes, with a type sniffed from them",
        {"200": {"description": "the image", "headers": {"X-Content-Type-Options": {
            "description": "nosniff", "schema": {"type": "string"}}},
            "content": dict.fromkeys(("image/jpeg", "image/png", "image/gif", "image/webp",
                                      "application/octet-stream"), image)}},
        JOB_ID, ITEM_INDEX, PERSON_INDEX, not_found=True, sealed=True, tag="faces")
    thumbnail["responses"]["404"] = _error(
        "no such job or person, or no thumbnail stored (dropped, erased or never sent)")
    person = "/v1/jobs/{job_id}/persons/{item_index}/{person_index}"
    return {"/v1/faces/search": {"post": search},
            f"{person}/similar": {"get": similar},
            f"{person}/thumbnail": {"get": thumbnail}}


def _paths() -> dict[str, Schema]:
    entity_schemas = {"scenes": "ScenePage", "activity": "ActivityPage",
                      "sections": "SectionPage", "ocr": "OcrPage", "persons": "PersonPage",
                      "tags": "TagPage", "items": "ItemPage"}
    public_errors = {"405": _error("method not allowed")}
    paths: dict[str, Schema] = {
        "/webhooks/analysis": {"post": {
            "summary": "Receive a signed analysis result (the upstream calls this)",
            "tags": ["webhook"],
            "parameters": [
                _param("X-Webhook-Signature", "header", STRING,
                       "HMAC-SHA256 of the raw body: hex, sha256=hex or base64; several "
                       "candidates separated by commas or spaces"),
                _param("webhook-id", "header", STRING, "Standard Webhooks message id"),
                _param("webhook-timestamp", "header", STRING, "Standard Webhooks Unix time"),
                _param("webhook-signature", "header", STRING, "Standard Webhooks v1,<base64>"),
            ],
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": _ref("Payload")}}},
            "responses": {
                "200": _json("WebhookAccepted", "committed"),
                "400": _error("not JSON (invalid_json); kept as a rejected delivery"),
                "401": _error("missing, malformed or wrong signature (invalid_signature)"),
                "413": _error("larger than RECEIVER_MAX_BODY_BYTES (payload_too_large)"),
                "422": _error("JSON of the wrong shape (invalid_payload); details.path "
                              "names the field; kept as a rejected delivery"),
                "503": _error("the database could not commit; retry later"),
            },
        }},
        "/healthz": {"get": {"summary": "The process answers", "tags": ["operations"],
                             "responses": {"200": _json("Health"), **public_errors}}},
        "/readyz": {"get": {"summary": "Database reachable and schema at head",
                            "tags": ["operations"],
                            "responses": {"200": _json("Health"),
                                          "503": _json("Health", "not ready")}}},
        "/v1/jobs": {"get": _operation(
            "Jobs with a result, newest first; with status pending, overdue or expired, the "
            "expected jobs still without one, newest submission first",
            {"200": _json("JobPage")},
            _param("status", "query",
                   {"type": "string", "enum": [*JOB_STATUSES, *AWAITED_STATUSES]},
                   "only jobs with this status (received_after/_before then filter the "
                   "submission time of awaited jobs)"),
            _param("kind", "query", {"type": "string", "enum": list(JOB_KINDS)},
                   "only jobs of this kind"),
            _param("received_after", "query", DATETIME, "ISO 8601, exclusive"),
            _param("received_before", "query", DATETIME, "ISO 8601, exclusive"),
            LIMIT, CURSOR)},
        "/v1/jobs/expected": {
            "post": _expected_operation(),
            "get": _operation("The summary of the job whose id is 'expected' (as "
                              "/v1/jobs/{job_id})", {"200": _json("JobSummary")},
                              not_found=True),
            "delete": _operation("Delete the job whose id is 'expected' (as "
                                 "/v1/jobs/{job_id})", {"204": {"description": "deleted"}},
                                 admin=True, not_found=True),
        },
        "/v1/jobs/{job_id}": {
            "get": _operation("A job's summary", {"200": _json("JobSummary")}, JOB_ID,
                              not_found=True),
            "delete": _operation(
                "Delete a job, its rows, search entries and raw deliveries (recorded in the "
                "audit log)",
                {"204": {"description": "deleted"}}, JOB_ID, admin=True, not_found=True),
        },
        "/v1/jobs/{job_id}/payload": {"get": _operation(
            "The result rebuilt from the normalized tables, in the upstream's shape",
            {"200": {**_json("Payload"), "headers": WITHHELD}}, JOB_ID, not_found=True,
            sealed=True)},
        **{f"/v1/jobs/{{job_id}}/{name}": {"get": _operation(
            f"A job's {name}", {"200": _json(schema)}, JOB_ID, LIMIT, CURSOR, not_found=True,
            sealed=name == "persons")}
           for name, schema in entity_schemas.items()},
        "/v1/jobs/{job_id}/persons/{item_index}/{person_index}": {"delete": _erase_person()},
        **_face_paths(),
        "/v1/search/ocr": {"get": _operation(
            "OCR text across all jobs, in relevance order", {"200": _json("OcrHitPage")},
            _param("q", "query", {"type": "string", "minLength": 1, "maxLength": 200},
                   "plain text (never query syntax)", required=True),
            _param("language_code", "query", {"type": "string", "minLength": 1,
                                              "maxLength": 64}, "only this language"),
            LIMIT, CURSOR)},
        "/v1/sections": {"get": _operation(
            "Video sections across jobs", {"200": _json("SectionHitPage")},
            _param("tag", "query", {"type": "string", "minLength": 1, "maxLength": 200},
                   "section_tag equals"),
            _param("critical", "query", {"type": "boolean"}, "is_critical equals"),
            _param("min_confidence", "query", NUMBER, "confidence at least"),
            LIMIT, CURSOR)},
        "/v1/tags": {"get": _operation(
            "Image tags across jobs", {"200": _json("TagHitPage")},
            _param("tag", "query", {"type": "string", "minLength": 1, "maxLength": 200},
                   "tag equals"),
            _param("min_probability", "query", NUMBER, "probability at least"),
            _param("critical", "query", {"type": "boolean"}, "is_critical equals"),
            LIMIT, CURSOR)},
        "/v1/deliveries": {"get": _operation(
            "The delivery log, newest first", {"200": _json("DeliveryPage")},
            _param("job_id", "query", {"type": "string", "minLength": 1, "maxLength": 512},
                   "deliveries of this job"),
            _param("outcome", "query", {"type": "string", "enum": list(OUTCOMES)},
                   "only this outcome"),
            LIMIT, CURSOR, admin=True, tag="deliveries")},
        "/v1/deliveries/{delivery_id}": {"get": _operation(
            "One delivery", {"200": _json("Delivery")}, DELIVERY_ID, admin=True,
            not_found=True, tag="deliveries")},
        "/v1/deliveries/{delivery_id}/raw": {"get": _operation(
            "The exact bytes received (each read is recorded in the audit log)",
            {"200": {"description": "the raw body", "headers": WITHHELD,
                     "content": {"application/octet-stream": {
                         "schema": {"type": "string", "format": "binary"}}}}},
            DELIVERY_ID, admin=True, not_found=True, tag="deliveries", sealed=True)},
        "/v1/audit": {"get": _operation(
            "The audit log (erasures, purges, key rotations, policy changes, raw reads), "
            "newest first", {"200": _json("AuditPage")},
            _param("action", "query", {"type": "string", "enum": list(AUDIT_ACTIONS)},
                   "only this action"),
            LIMIT, CURSOR, admin=True, tag="audit")},
        **_people_paths(),
        "/metrics": {"get": {"summary": "Prometheus metrics (all workers of this instance)",
                             "tags": ["operations"],
                             "responses": {"200": {"description": "Prometheus text format",
                                                   "content": {"text/plain": {
                                                       "schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"summary": "This document", "tags": ["operations"],
                                  "responses": {"200": {
                                      "description": "OpenAPI 3.1",
                                      "content": {"application/json": {
                                          "schema": {"type": "object"}}}}}}},
    }
    return paths


def build_spec(root_path: str = "") -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "results-receiver",
            "version": "1",
            "description": "Receives signed result webhooks of the analysis API, stores them "
                           "in normalized tables and serves them. Errors are "
                           '{"error", "code", "details"}.',
        },
        "servers": [{"url": root_path or "/"}],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "results-receiver tokens create"}},
        },
    }


async def openapi(request: Request) -> Response:
    return JSONResponse(build_spec(request.scope.get("root_path", "")))
