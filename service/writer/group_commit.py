"""Group commit: first deliveries that arrive while the database is busy are written together.

A delivery submits its item and waits. If fewer than ``max_concurrent`` flushes are running,
a flush starts at once with everything queued (so an idle service adds no latency); otherwise
the item waits for the next flush, which takes up to ``max_batch`` queued items in arrival
order. Items with the same key (a job id) never share a flush, and an item waits while a
flush holding its key is running: a later copy is written after the first one committed, so
it sees the first copy's result.

The flush function returns one result per item, or an exception per item that failed on its
own; if it raises, every item of the batch fails with that error. Nothing is acknowledged
before the flush returns, i.e. before the batch's commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

Flush = Callable[[list[Item]], Awaitable[Sequence[Result | Exception]]]


class GroupCommit(Generic[Item, Result]):
    def __init__(self, flush: Flush[Item, Result], *, key: Callable[[Item], Hashable],
                 max_batch: int, max_concurrent: int) -> None:
        self._flush = flush
        self._key = key
        self._max_batch = max_batch
        self._max_concurrent = max_concurrent
        self._queue: list[tuple[Item, asyncio.Future[Result]]] = []
        self._flushers: set[asyncio.Task[None]] = set()
        # Flushes started and not yet out of their loop. Counted here, not by the tasks'
        # done callbacks, which run a loop iteration late: a delivery arriving in between
        # would otherwise find a flush "running" that no longer looks at the queue.
        self._running = 0
        self._busy_keys: set[Hashable] = set()
        self.flushes = 0
        """Batches written so far (with :attr:`items`, the mean batch size)."""
        self.items = 0

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._running < self._max_concurrent:
            self._running += 1
            task = asyncio.create_task(self._run())
            self._flushers.add(task)
            task.add_done_callback(self._flushers.discard)
        # The flush goes on if this request is cancelled (its client went away): the other
        # deliveries of the batch still need their answer.
        return await asyncio.shield(future)

    def _take(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        later: list[tuple[Item, asyncio.Future[Result]]] = []
        for entry in self._queue:
            key = self._key(entry[0])
            if len(batch) < self._max_batch and key not in self._busy_keys:
                self._busy_keys.add(key)
                batch.append(entry)
            else:
                later.append(entry)
        self._queue = later
        return batch

    async def _run(self) -> None:
        try:
            await self._drain()
        finally:
            self._running -= 1

    async def _drain(self) -> None:
        while self._queue:
            batch = self._take()
            if not batch:
                # Everything queued waits for keys another flush holds; that flush takes
                # them when it is done.
                return
            self.flushes += 1
            self.items += len(batch)
            try:
                results = await self._flush([item for item, _ in batch])
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            finally:
                self._busy_keys.difference_update(self._key(item) for item, _ in batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
