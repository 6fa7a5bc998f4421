"""The ceiling: a bare Starlette endpoint that reads the body, verifies the HMAC and answers 204.

This is the most any webhook receiver written with this stack can do on this machine: same
uvicorn, same settings, same request, no parsing and no database. The service's throughput is
reported as a fraction of it.

    BENCH_WEBHOOK_SECRET=s .venv/bin/python -m bench.ceiling --port 8001 --workers 2
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.common import run_like_service, secret_from_env, serve_parser, verify_hex_signature


def create_app(secret: bytes) -> Starlette:
    async def receive(request: Request) -> Response:
        body = await request.body()
        if not verify_hex_signature(secret, body, request.headers.get("x-webhook-signature")):
            return Response(status_code=401)
        return Response(status_code=204)

    async def healthz(_request: Request) -> Response:
        return Response(status_code=200)

    return Starlette(routes=[
        Route("/webhooks/analysis", receive, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ])


def app_from_env() -> Starlette:
    return create_app(secret_from_env())


def main() -> None:
    args = serve_parser("the ceiling: read, verify, 204").parse_args()
    run_like_service("bench.ceiling:app_from_env", host=args.host, port=args.port,
                     workers=args.workers)


if __name__ == "__main__":
    main()
