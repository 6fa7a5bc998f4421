"""A sender that behaves like the upstream: sign, POST, retry until a 2xx.

Deliveries run ``concurrency`` at a time. Any answer other than a 2xx, and any connection
error (refused, reset, timed out), is retried with exponential backoff from 0.05 s doubling up
to 2 s (each wait jittered down by up to half, so retries after an outage do not arrive in
lockstep), until the job's deadline. Every attempt is recorded with its status (or the error),
and every 2xx with its JSON body, so a scenario can check each acknowledgement afterwards.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.signing import SECRET, signed_headers

FIRST_BACKOFF = 0.05
MAX_BACKOFF = 2.0
WEBHOOK_PATH = "/webhooks/analysis"

# What to send: (key naming this delivery, job_id, signed body's bytes).
Outgoing = tuple[str, str, bytes]


@dataclass(frozen=True)
class Attempt:
    started: float  # time.monotonic()
    ended: float
    status: int | None  # None: no HTTP answer (connection refused/reset, timeout)
    error: str | None = None  # the transport error's class name
    body: Any = None  # the 2xx answer's JSON


@dataclass
class Delivery:
    """One job's delivery: a body sent until acknowledged, and every attempt made."""

    key: str
    job_id: str
    body: bytes
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def acknowledgement(self) -> Attempt | None:
        for attempt in self.attempts:
            if attempt.status is not None and 200 <= attempt.status < 300:
                return attempt
        return None

    @property
    def acknowledged(self) -> bool:
        return self.acknowledgement is not None


class Sender:
    """``async with Sender(url) as sender: await sender.deliver_all([...])``."""

    def __init__(self, base_url: str, *, concurrency: int = 32, deadline: float = 60.0,
                 request_timeout: float = 30.0, secret: str = SECRET,
                 rng: random.Random | None = None) -> None:
        self.base_url = base_url
        self.concurrency = concurrency
        self.deadline = deadline
        self.request_timeout = request_timeout
        self.secret = secret
        self.rng = rng or random.Random(0)
        self.deliveries: list[Delivery] = []
        self.acks: list[Attempt] = []  # every 2xx, in the order received
        self.ended = 0  # deliveries acknowledged or given up
        self._semaphore = asyncio.Semaphore(concurrency)
        self._progress = asyncio.Condition()
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Sender:
        limits = httpx.Limits(max_connections=self.concurrency,
                              max_keepalive_connections=self.concurrency)
        self._client = httpx.AsyncClient(base_url=self.base_url, limits=limits,
                                         timeout=self.request_timeout)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._client is not None
        await self._client.aclose()

    # --- sending ---------------------------------------------------------------------------

    async def deliver_all(self, items: Iterable[Outgoing], *,
                          interval: float = 0.0) -> list[Delivery]:
        """Deliver every (key, job_id, body), at most ``concurrency`` at a time; with an
        ``interval``, the jobs become ready one every ``interval`` seconds (a stream, as
        jobs finish upstream) instead of all at once."""

        async def later(delay: float, key: str, job_id: str, body: bytes) -> Delivery:
            await asyncio.sleep(delay)
            return await self.deliver(key, job_id, body)

        return list(await asyncio.gather(*(later(index * interval, key, job_id, body)
                                           for index, (key, job_id, body) in enumerate(items))))

    async def deliver(self, key: str, job_id: str, body: bytes) -> Delivery:
        delivery = Delivery(key=key, job_id=job_id, body=body)
        self.deliveries.append(delivery)
        async with self._semaphore:
            await self._until_acknowledged(delivery)
        async with self._progress:
            self.ended += 1
            self._progress.notify_all()
        return delivery

    async def _until_acknowledged(self, delivery: Delivery) -> None:
        assert self._client is not None
        headers = signed_headers(delivery.body, self.secret)
        deadline = time.monotonic() + self.deadline
        delay = FIRST_BACKOFF
        while True:
            started = time.monotonic()
            try:
                response = await self._client.post(WEBHOOK_PATH, content=delivery.body,
                                                   headers=headers)
            except httpx.TransportError as exc:
                delivery.attempts.append(Attempt(started, time.monotonic(), None,
                                                 type(exc).__name__))
            else:
                ended = time.monotonic()
                if response.is_success:
                    attempt = Attempt(started, ended, response.status_code, body=response.json())
                    delivery.attempts.append(attempt)
                    await self._acknowledged(attempt)
                    return
                delivery.attempts.append(Attempt(started, ended, response.status_code))
            wait = delay * self.rng.uniform(0.5, 1.0)
            if time.monotonic() + wait > deadline:
                return  # given up: the scenario reports it as undelivered
            await asyncio.sleep(wait)
            delay = min(delay * 2, MAX_BACKOFF)

    async def _acknowledged(self, attempt: Attempt) -> None:
        async with self._progress:
            self.acks.append(attempt)
            self._progress.notify_all()

    async def wait_acknowledged(self, count: int, *, total: int) -> bool:
        """Until ``count`` deliveries are acknowledged (True) or all ``total`` have ended."""
        async with self._progress:
            await self._progress.wait_for(
                lambda: len(self.acks) >= count or self.ended >= total)
            return len(self.acks) >= count

    # --- what happened -----------------------------------------------------------------------

    @property
    def attempts(self) -> list[Attempt]:
        return [a for d in self.deliveries for a in d.attempts]

    def statuses(self) -> Counter[str]:
        """Attempts by HTTP status, connection errors under their error class name."""
        return Counter(str(a.status) if a.status is not None else str(a.error)
                       for a in self.attempts)

    def recovery_times(self, moments: Iterable[float]) -> list[float]:
        """For each moment (a kill, a database stop), seconds until the first 2xx to a request
        sent after it: answers already under way at that moment do not count. Moments
        followed by no such 2xx are left out."""
        times = []
        for moment in moments:
            later = [a.ended for a in self.acks if a.started >= moment]
            if later:
                times.append(round(min(later) - moment, 3))
        return times


def server_errors(attempts: Sequence[Attempt]) -> int:
    """5xx answers other than the 503 the contract allows ("retry later")."""
    return sum(1 for a in attempts if a.status is not None and a.status >= 500
               and a.status != 503)
