"""How ``serve`` runs uvicorn: one set of options, and a guard on request heads.

uvicorn (0.54, httptools) puts no bound on a request's header size or count, and no time
limit on a client that sends its head byte by byte. :class:`GuardedHttpToolsProtocol` adds
both: a head over :data:`MAX_HEAD_BYTES` or :data:`MAX_HEADERS` gets a 400 and the connection
is closed; a head not complete :data:`HEAD_TIMEOUT_SECONDS` after its first byte (or after
the connection opened) is dropped. Bodies have their own idle timeout in
:func:`service.webhooks.read_body`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 32 * 1024
MAX_HEADERS = 100
HEAD_TIMEOUT_SECONDS = 30.0
WORKER_HEALTHCHECK_SECONDS = 30


class HeadTooLarge(Exception):
    """Raised inside a parser callback; uvicorn answers 400 and closes the connection."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    _raw_head_bytes = 0
    _head_size = 0
    _header_count = 0
    _in_head = True
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._raw_head_bytes += len(data)
        super().data_received(data)
        # One endless header line never reaches a callback: bound the raw bytes too.
        if (self._in_head and self._raw_head_bytes > MAX_HEAD_BYTES + 1024
                and not self.transport.is_closing()):
            self.send_400_response("Request head too large.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_size = 0
        self._header_count = 0
        if self._head_timer is None:
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._check(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > MAX_HEADERS:
            raise HeadTooLarge
        self._check(len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._raw_head_bytes = 0
        self._cancel_head_timer()
        super().on_headers_complete()

    def _check(self, size: int) -> None:
        self._head_size += size
        if self._head_size > MAX_HEAD_BYTES:
            raise HeadTooLarge

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_SECONDS, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self.transport.close()


def uvicorn_options(*, host: str, port: int, workers: int, forwarded_allow_ips: str,
                    root_path: str, graceful_timeout: int = 30,
                    keep_alive: int = 75) -> dict[str, Any]:
    """The keyword arguments for ``uvicorn.run`` that ``serve`` uses (and the benchmark's
    baselines, so that they differ from the service only in the application)."""
    return {
        "host": host,
        "port": port,
        "workers": workers,
        "http": GuardedHttpToolsProtocol,
        "proxy_headers": True,
        "forwarded_allow_ips": forwarded_allow_ips,
        "root_path": root_path,
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "timeout_graceful_shutdown": graceful_timeout,
        "timeout_keep_alive": keep_alive,
        # uvicorn kills a worker that does not answer its supervisor's ping within this
        # time. Its default (5 s) is shorter than a worker's start on a busy 2-core machine
        # (imports, migrations check), which then loops on killing fresh workers.
        "timeout_worker_healthcheck": WORKER_HEALTHCHECK_SECONDS,
    }
