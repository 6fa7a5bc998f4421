"""The group-commit queue on its own: batching, key exclusion, failures, no item left behind."""

from __future__ import annotations

import asyncio
import random

import pytest

from service.writer.group_commit import GroupCommit

pytestmark = pytest.mark.anyio


async def test_items_of_one_key_are_never_written_concurrently_and_none_is_left_waiting() -> None:
    writing: set[str] = set()
    overlaps: list[str] = []
    order: list[tuple[str, int]] = []

    async def flush(batch: list[tuple[str, int]]) -> list[int]:
        keys = [key for key, _ in batch]
        assert len(set(keys)) == len(keys), "one key twice in a batch"
        overlaps.extend(k for k in keys if k in writing)
        writing.update(keys)
        await asyncio.sleep(random.random() / 200)
        writing.difference_update(keys)
        order.extend(batch)
        return [n for _, n in batch]

    queue: GroupCommit[tuple[str, int], int] = GroupCommit(
        flush, key=lambda item: item[0], max_batch=8, max_concurrent=3)
    items = [(f"job-{n % 7}", n) for n in range(200)]

    arrived: list[tuple[str, int]] = []

    async def submit_later(item: tuple[str, int]) -> int:
        await asyncio.sleep(random.random() / 100)
        arrived.append(item)
        return await queue.submit(item)

    results = await asyncio.wait_for(asyncio.gather(*(submit_later(i) for i in items)), 30)

    assert results == [n for _, n in items]
    assert overlaps == []
    for key in {k for k, _ in items}:  # a key's items are written in arrival order
        assert [n for k, n in order if k == key] == [n for k, n in arrived if k == key]
    assert queue.flushes < len(items)


async def test_a_failing_flush_fails_its_batch_only_and_later_items_still_go_through() -> None:
    calls = 0

    async def flush(batch: list[int]) -> list[int | Exception]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("the database went away")
        return [ValueError("bad item") if n == 13 else n * 2 for n in batch]

    queue: GroupCommit[int, int] = GroupCommit(flush, key=lambda n: n, max_batch=4,
                                               max_concurrent=1)
    with pytest.raises(ConnectionError):
        await queue.submit(1)
    results = await asyncio.gather(*(queue.submit(n) for n in (12, 13, 14)),
                                   return_exceptions=True)
    assert results[0] == 24
    assert isinstance(results[1], ValueError)
    assert results[2] == 28


async def test_an_item_submitted_as_the_last_flush_ends_is_still_written() -> None:
    """A delivery that arrives while the only flush is finishing (its queue found empty, its
    task's done callbacks not yet run) must start a flush of its own, not wait for the next
    delivery to come along."""
    loop = asyncio.get_running_loop()
    flush_ending: asyncio.Future[None] = loop.create_future()

    async def flush(batch: list[int]) -> list[int]:
        if batch == [1]:
            flush_ending.set_result(None)  # wakes the scenario before the flush task is done
        return batch

    queue: GroupCommit[int, int] = GroupCommit(flush, key=lambda n: n, max_batch=4,
                                               max_concurrent=1)

    async def scenario() -> tuple[int, int]:
        first = asyncio.create_task(queue.submit(1))
        await flush_ending
        second = await queue.submit(2)  # runs now, between the flush's end and its callbacks
        return await first, second

    assert await asyncio.wait_for(scenario(), 2) == (1, 2)
