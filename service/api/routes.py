"""Every route of the query API under /v1.

One ``Route`` per path, carrying every method the path supports (an endpoint dispatches on the
method when there are several), so that a 405's ``Allow`` header lists them all.
"""

from __future__ import annotations

from starlette.routing import Route

from service.api import audit, catalog, deliveries, expected, faces, jobs, people, persons


def api_routes() -> list[Route]:
    entity_routes = [
        Route(f"/v1/jobs/{{job_id}}/{name}", jobs.entity_endpoint(name), methods=["GET"])
        for name in jobs.ENTITIES
    ]
    return [
        Route("/v1/jobs", jobs.list_jobs, methods=["GET"]),
        # Before /v1/jobs/{job_id}, which it also is (the job "expected": GET, DELETE).
        Route("/v1/jobs/expected", expected.jobs_expected, methods=["GET", "DELETE", "POST"]),
        Route("/v1/jobs/{job_id}", jobs.job, methods=["GET", "DELETE"]),
        Route("/v1/jobs/{job_id}/payload", jobs.get_payload, methods=["GET"]),
        *entity_routes,
        Route("/v1/jobs/{job_id}/persons/{item_index}/{person_index}", persons.erase_person,
              methods=["DELETE"]),
        Route("/v1/jobs/{job_id}/persons/{item_index}/{person_index}/similar",
              faces.similar_faces, methods=["GET"]),
        Route("/v1/jobs/{job_id}/persons/{item_index}/{person_index}/thumbnail",
              faces.thumbnail, methods=["GET"]),
        Route("/v1/faces/search", faces.search_faces, methods=["POST"]),
        Route("/v1/search/ocr", catalog.search_ocr, methods=["GET"]),
        Route("/v1/sections", catalog.list_sections, methods=["GET"]),
        Route("/v1/tags", catalog.list_tags, methods=["GET"]),
        Route("/v1/deliveries", deliveries.list_deliveries, methods=["GET"]),
        Route("/v1/deliveries/{delivery_id}", deliveries.get_delivery, methods=["GET"]),
        Route("/v1/deliveries/{delivery_id}/raw", deliveries.get_delivery_raw, methods=["GET"]),
        Route("/v1/people", people.list_people, methods=["GET"]),
        Route("/v1/people/{person_id}", people.person, methods=["GET", "DELETE"]),
        Route("/v1/audit", audit.list_audit, methods=["GET"]),
    ]
