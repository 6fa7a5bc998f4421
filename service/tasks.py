"""A background loop of the service (retention, people re-clustering, reconciliation): one
named asyncio task, started once, cancelled and awaited on stop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextlib import suppress
from typing import Any


class LoopTask:
    def __init__(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.name = name
        self._loop = loop
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop (nothing when it runs already)."""
        if self.task is None:
            self.task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        """Cancel the loop and wait until it has ended."""
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
