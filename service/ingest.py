"""A verified delivery becomes rows: idempotency, precedence, one transaction, bulk inserts.

:func:`prepare` turns a validated payload into plain row tuples (CPU only, outside any
transaction). :func:`store` writes the raw delivery and every row in the caller's transaction:

* first result of a job -> ``stored``;
* same content as stored -> ``duplicate`` (only the delivery is logged);
* a ``failed`` after a ``finished`` -> ``ignored`` (the finished result stays);
* any other different result -> ``updated``: the old rows are deleted and the new ones written.

Concurrent copies of one delivery are serialized on the job's row: the insert of the job row
uses ``ON CONFLICT (job_id) DO NOTHING``, and a delivery that finds the job already there locks
it (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite has one writer at a time) before deciding.
The statements themselves are the :class:`service.writer.Writer`'s, per database.
"""

from __future__ import annotations

from collections.abc import Sequence, Sized
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from service import cjk, payloads
from service.payloads import Payload
from service.rows import IncomingDelivery, PreparedResult, Row, StoredBody
from service.vocabulary import Outcome
from service.writer import Writer

if TYPE_CHECKING:
    from service.privacy.protect import Protector

__all__ = ["IncomingDelivery", "PreparedResult", "StoreResult", "parse_and_prepare", "prepare",
           "store", "store_rejected"]

# Parsing a body this large would hold up the event loop; it is done on a worker thread.
THREAD_PARSE_BYTES = 256 * 1024


@dataclass(frozen=True)
class StoreResult:
    outcome: Outcome
    job_id: str | None
    delivery_id: int
    rows: int
    job_pk: int | None = None  # the job's primary key, when this delivery stored it first


def _n(values: Sized | None) -> int | None:
    return None if values is None else len(values)


def prepare(payload: Payload) -> PreparedResult:
    """Flatten a validated payload into rows for every entity table."""
    prepared = PreparedResult(
        job_id=payload.job_id,
        status=payload.status,
        kind=payloads.kind_of(payload),
        error=payloads.encode_error(payload.error),
        content_sha256=payloads.content_hash(payload),
        n_items=_n(payload.items),
    )
    rows: dict[str, list[Row]] = {
        name: [] for name in ("media_items", "scenes", "frame_activity", "sections",
                              "section_segments", "ocr_texts", "person_scenes", "persons", "tags")
    }
    if payload.result is not None:
        _video_rows(payload.result, rows)
    for index, item in enumerate(payload.items or ()):
        _image_rows(index, item, rows)
    prepared.rows = {name: table_rows for name, table_rows in rows.items() if table_rows}
    return prepared


async def parse_and_prepare(delivery: IncomingDelivery, protector: Protector) -> PreparedResult:
    """An authenticated body (a webhook's, or a poll's answer) parsed, flattened into rows and
    put under the privacy policy: what :func:`store` takes. Raises
    :class:`payloads.PayloadError` when the body is not a result."""
    if len(delivery.body) > THREAD_PARSE_BYTES:
        return await run_in_threadpool(_parse_and_prepare, delivery, protector)
    return _parse_and_prepare(delivery, protector)


def _parse_and_prepare(delivery: IncomingDelivery, protector: Protector) -> PreparedResult:
    prepared = prepare(payloads.parse(delivery.body))
    protector.protect(prepared, delivery)
    return prepared


def _video_rows(result: payloads.VideoResult, rows: dict[str, list[Row]]) -> None:
    item = 0
    rows["media_items"].append({
        "item_index": item, "media_type": "video", "external_id": None, "status": None,
        "error": None, "has_result": True,
        "n_scenes": _n(result.raw_scenes), "n_activity": _n(result.frame_activity_diffs),
        "n_sections": _n(result.sections), "n_ocr": _n(result.ocr_results),
        "n_person_scenes": _n(result.person_constellation_scenes),
        "n_tags": None, "n_persons": None,
    })
    rows["scenes"].extend(
        {"item_index": item, "scene_index": i, "start_seconds": s.start_seconds,
         "end_seconds": s.end_seconds}
        for i, s in enumerate(result.raw_scenes or ())
    )
    if result.frame_activity_diffs:
        rows["frame_activity"].append({
            "item_index": item, "frame_count": len(result.frame_activity_diffs),
            "diffs": result.frame_activity_diffs.packed,
        })
    for i, section in enumerate(result.sections or ()):
        rows["sections"].append({
            "item_index": item, "section_index": i, "section_tag": section.section_tag,
            "thumbnail_timestamp": section.thumbnail_timestamp,
            "confidence": section.confidence, "is_critical": section.is_critical,
            "relative_activity": section.relative_activity,
            "n_segments": _n(section.time_segments),
        })
        rows["section_segments"].extend(
            {"item_index": item, "section_index": i, "segment_index": j,
             "start_seconds": seg.start_seconds, "end_seconds": seg.end_seconds}
            for j, seg in enumerate(section.time_segments or ())
        )
    _ocr_rows(item, result.ocr_results, rows)
    person_index = 0
    for i, scene in enumerate(result.person_constellation_scenes or ()):
        segment = scene.time_segment
        rows["person_scenes"].append({
            "item_index": item, "scene_index": i, "has_time_segment": segment is not None,
            "start_seconds": segment.start_seconds if segment else None,
            "end_seconds": segment.end_seconds if segment else None,
            "n_persons": _n(scene.person_ids),
        })
        for person in scene.person_ids or ():
            rows["persons"].append(_person_row(item, person_index, i, person))
            person_index += 1


def _image_rows(index: int, item: payloads.ImageItem,
                rows: dict[str, list[Row]]) -> None:
    result = item.result
    rows["media_items"].append({
        "item_index": index, "media_type": "image", "external_id": item.external_id,
        "status": item.status, "error": payloads.encode_error(item.error),
        "has_result": result is not None,
        "n_scenes": None, "n_activity": None, "n_sections": None,
        "n_ocr": _n(result.ocr_results) if result else None, "n_person_scenes": None,
        "n_tags": _n(result.tags) if result else None,
        "n_persons": _n(result.person_ids) if result else None,
    })
    if result is None:
        return
    rows["tags"].extend(
        {"item_index": index, "tag_index": i, "tag": tag.tag, "probability": tag.probability,
         "is_critical": tag.is_critical}
        for i, tag in enumerate(result.tags or ())
    )
    rows["persons"].extend(
        _person_row(index, i, None, person) for i, person in enumerate(result.person_ids or ())
    )
    _ocr_rows(index, result.ocr_results, rows)


def _ocr_rows(item: int, ocr: Sequence[payloads.OcrResult] | None,
              rows: dict[str, list[Row]]) -> None:
    for i, text in enumerate(ocr or ()):
        segment = text.time_segment
        rows["ocr_texts"].append({
            "item_index": item, "ocr_index": i, "language_code": text.language_code,
            "full_text": text.full_text, "has_time_segment": segment is not None,
            "start_seconds": segment.start_seconds if segment else None,
            "end_seconds": segment.end_seconds if segment else None,
            "search_terms": cjk.search_terms(text.full_text),
        })


def _person_row(item: int, index: int, scene: int | None,
                person: payloads.Person) -> dict[str, Any]:
    embedding = person.face_embedding
    return {
        "item_index": item, "person_index": index, "scene_index": scene, "age": person.age,
        "gender": person.gender,
        "face_embedding": None if embedding is None else embedding.packed,
        "face_thumbnail": person.face_thumbnail, "allowlisted": person.allowlisted,
        "relative_prominence": person.relative_prominence,
        # Filled by the privacy policy (service.privacy.protect) when it seals a field.
        "face_embedding_sealed": None, "face_thumbnail_sealed": None,
        "demographics_sealed": None, "erased": False,
    }


async def store(writer: Writer, prepared: PreparedResult,
                delivery: IncomingDelivery) -> StoreResult:
    """Write ``delivery`` and, when it changes anything, the job's rows; committed on return.

    The first delivery of a job is one atomic write; any later one is decided and written in
    one transaction holding the job's row lock."""
    # A job deleted between the two steps below is simply new again: try at most twice.
    for _attempt in range(2):
        created = await writer.insert_new_job(prepared, delivery)
        if created is not None:
            return StoreResult(outcome="stored", job_id=prepared.job_id,
                               delivery_id=created[1], rows=prepared.row_count,
                               job_pk=created[0])
        async with writer.transaction():
            current = await writer.lock_job(prepared.job_id)
            if current is None:
                continue
            job_pk, status, content_sha256 = current
            outcome: Outcome
            if content_sha256 == prepared.content_sha256:
                outcome = "duplicate"
            elif status == "finished" and prepared.status == "failed":
                outcome = "ignored"
            else:
                outcome = "updated"
                await writer.replace_rows(job_pk, prepared, delivery.received_at)
            await writer.save_body(prepared.stored_body(delivery))
            delivery_id = await writer.log_delivery(delivery.record(
                job_id=prepared.job_id, outcome=outcome,
                content_sha256=prepared.content_sha256))
        rows = prepared.row_count if outcome == "updated" else 0
        return StoreResult(outcome=outcome, job_id=prepared.job_id, delivery_id=delivery_id,
                           rows=rows)
    raise RuntimeError(f"job {prepared.job_id!r} kept vanishing while being stored")


async def store_rejected(writer: Writer, delivery: IncomingDelivery, body: StoredBody, *,
                         job_id: str | None, error_code: str, error: str) -> int:
    """Keep an authenticated delivery that could not be used (``body``: its stored form),
    with the reason."""
    async with writer.transaction():
        await writer.save_body(body)
        return await writer.log_delivery(delivery.record(
            job_id=job_id, outcome="rejected", content_sha256=None, error_code=error_code,
            error=error))
