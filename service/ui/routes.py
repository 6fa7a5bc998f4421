"""Every route of the explorer under ``/ui``, and how a page's failure becomes an HTML page.

Page handlers take the :class:`~service.ui.render.Renderer` and the request. What they raise
is answered here, as a page: no session, a redirect to sign in; a refusal, its error page
(403, 404, 422, ...); a key that is not configured, 409; the database unavailable, 503 with
``Retry-After``; anything else, a 500 page (and the error in the log). The URLs are stable:
links and bookmarks depend on them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from service.db import UNAVAILABLE_ERRORS, describe_error
from service.http import ApiError
from service.metrics import Metrics
from service.privacy.reveal import KeyUnavailable
from service.ui import audit, faces, jobs, login, search, thumbnails
from service.ui.access import Refused, SignInRequired
from service.ui.render import STATIC, Renderer

log = structlog.get_logger("service.ui")

Handler = Callable[[Renderer, Request], Awaitable[Response]]

_TITLES = {400: "Bad request", 404: "Not found", 405: "Not allowed", 409: "Key unavailable",
           413: "Too large", 422: "Bad address", 503: "Unavailable"}


async def handle(ui: Renderer, handler: Handler, request: Request) -> Response:
    try:
        return await handler(ui, request)
    except SignInRequired:
        return login.redirect_to_sign_in(request)
    except Refused as exc:
        return ui.error(request, exc.status, exc.title, exc.message, session=exc.session)
    except ApiError as exc:
        return ui.error(request, exc.status, _TITLES.get(exc.status, "Request refused"),
                        exc.message[:1].upper() + exc.message[1:] + ".", headers=exc.headers)
    except KeyUnavailable as exc:
        log.error("privacy.key_unavailable", key_id=exc.key_id)
        return ui.error(request, 409, "Key unavailable", exc.message)
    except UNAVAILABLE_ERRORS as exc:
        log.error("database.unavailable", **describe_error(exc))
        metrics: Metrics | None = getattr(request.state, "metrics", None)
        if metrics is not None:
            metrics.database_errors.labels("query").inc()
        return ui.error(request, 503, "Database unavailable", "The database cannot be "
                        "reached right now. Try again in a few seconds.",
                        headers={"Retry-After": "5"})
    except Exception as exc:
        log.error("http.internal_error", error_type=type(exc).__name__, exc_info=exc)
        return ui.error(request, 500, "Something went wrong",
                        "This page could not be shown; the service log says why.")


def explorer_routes(ui: Renderer) -> list[BaseRoute]:
    def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await handle(ui, handler, request)

        endpoint.__name__ = f"ui_{handler.__name__}"
        return endpoint

    person = "/ui/jobs/{job_id}/persons/{item_index}/{person_index}"
    return [
        Route("/ui", page(login.home), methods=["GET"], name="ui"),
        Route("/ui/login", page(login.login), methods=["GET", "POST"], name="ui:login"),
        Route("/ui/logout", page(login.logout), methods=["GET", "POST"], name="ui:logout"),
        Route("/ui/jobs", page(jobs.job_list), methods=["GET"], name="ui:jobs"),
        Route("/ui/jobs/{job_id}", page(jobs.job), methods=["GET"], name="ui:job"),
        Route("/ui/jobs/{job_id}/deliveries", page(jobs.deliveries), methods=["GET"],
              name="ui:deliveries"),
        Route("/ui/jobs/{job_id}/deliveries/{delivery_id}/raw", page(jobs.raw_body),
              methods=["GET"], name="ui:raw"),
        Route(person, page(faces.face), methods=["GET"], name="ui:face"),
        Route(person + "/thumbnail", page(thumbnails.thumbnail), methods=["GET"],
              name="ui:thumbnail"),
        Route("/ui/search", page(search.search_page), methods=["GET"], name="ui:search"),
        Route("/ui/people/{person_id}", page(faces.person), methods=["GET"], name="ui:person"),
        Route("/ui/audit", page(audit.audit_page), methods=["GET"], name="ui:audit"),
        Mount("/ui/static", app=StaticFiles(directory=STATIC), name="ui:static"),
    ]
