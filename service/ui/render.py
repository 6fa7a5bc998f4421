"""Templates and the responses built from them: the Jinja2 environment (autoescaped, strict
about undefined names), the filters pages format values with, root-path-aware links, and the
explorer's error page."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

if TYPE_CHECKING:
    from starlette.templating import Jinja2Templates

from service.ui import text
from service.ui.sessions import Session

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"

_QUOTED_PARAMS = frozenset({"job_id"})


def asset_version() -> str:
    """A short hash of the static files: asset URLs change when their content does."""
    digest = hashlib.sha256()
    for path in sorted(STATIC.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


_templates: dict[int, dict[str, str]] = {}


def _path_templates(router: Any) -> dict[str, str]:
    """Route name -> path template (``/ui/jobs/{job_id}``), read once per router: a page has
    hundreds of links, and ``Router.url_path_for`` scans every route for each."""
    found = _templates.get(id(router))
    if found is None:
        found = {}
        for route in router.routes:
            if isinstance(route, Mount) and route.name:
                found[route.name] = route.path + "/{path}"
            elif isinstance(route, Route) and route.name:
                found[route.name] = route.path
        _templates[id(router)] = found
    return found


def path_for(request: Request, name: str, *, query: Mapping[str, Any] | None = None,
             fragment: str | None = None, **params: Any) -> str:
    """The path of route ``name`` under the root path, as a link on a page (never an absolute
    URL: the Host header plays no part). A job id is percent-encoded whole (it may hold a
    ``/``); query values that are None or empty are left out."""
    values = {key: quote(str(value), safe="") if key in _QUOTED_PARAMS else str(value)
              for key, value in params.items()}
    router = request.app.router
    template = _path_templates(router).get(name)
    if template is None:
        route_path = str(router.url_path_for(name, **values))
    else:
        route_path = template.format(**values)
    path: str = str(request.scope.get("root_path", "")) + route_path
    if query:
        kept = [(key, str(value)) for key, value in query.items()
                if value is not None and value != ""]
        if kept:
            path += "?" + urlencode(kept)
    if fragment:
        path += "#" + fragment
    return path


class Renderer:
    """The explorer's templates, built once per app, on its first page: a server that only
    receives webhooks never loads Jinja2."""

    @functools.cached_property
    def templates(self) -> Jinja2Templates:
        import jinja2
        from starlette.templating import Jinja2Templates

        environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
            undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
            # The templates ship with the service: no stat() of each one on every page.
            auto_reload=False)
        environment.filters.update(seconds=text.seconds, span=text.span, size=text.size,
                                   when=text.when, percent=text.percent)
        environment.globals.update(highlight=text.highlight, error_parts=text.error_parts,
                                   asset_version=asset_version())

        @jinja2.pass_context
        def path(context: Mapping[str, Any], name: str, **params: Any) -> str:
            query = params.pop("_query", None)
            fragment = params.pop("_fragment", None)
            return path_for(context["request"], name, query=query, fragment=fragment,
                            **params)

        environment.globals["path"] = path
        return Jinja2Templates(env=environment)

    def page(self, request: Request, name: str, context: Mapping[str, Any], *,
             session: Session | None, status: int = 200,
             headers: Mapping[str, str] | None = None) -> Response:
        return self.templates.TemplateResponse(
            request, name, {"session": session, **context}, status_code=status,
            headers=dict(headers) if headers else None)

    def error(self, request: Request, status: int, title: str, message: str, *,
              session: Session | None = None,
              headers: Mapping[str, str] | None = None) -> Response:
        return self.page(request, "error.html", {"title": title, "message": message,
                                                 "status": status},
                         session=session, status=status, headers=headers)
