"""The batched background writer: records (comparisons, ledger stage events) go into a bounded queue,
a task writes them in batches.

`submit` never blocks and never fails the request path: when the queue is full the record is dropped
and counted. A batch that cannot be written is retried a few times, then dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from strangler.store import StoreUnavailable

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class BatchStore(Protocol[T_contra]):
    def record(self, records: Sequence[T_contra]) -> None: ...

log = logging.getLogger("strangler.shadow")


class BatchWriter(Generic[T]):
    def __init__(
        self,
        store: BatchStore[T],
        *,
        max_queue: int = 20_000,
        batch_size: int = 500,
        interval: float = 0.5,
        on_drop: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.store = store
        self._queue: asyncio.Queue[T] = asyncio.Queue(max_queue)
        self._batch_size = batch_size
        self._interval = interval
        self._on_drop = on_drop
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.dropped = 0

    def submit(self, record: T) -> None:
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1
            self._on_drop(1)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def flush(self) -> None:
        while not self._queue.empty():
            await self._write(self._take())

    def _take(self) -> list[T]:
        batch: list[T] = []
        while len(batch) < self._batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return batch

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            await asyncio.sleep(self._interval)  # let a batch gather
            batch = [first, *self._take()]
            await self._write(batch)

    async def _write(self, batch: list[T]) -> None:
        if not batch:
            return
        for attempt in range(3):
            try:
                await asyncio.to_thread(self.store.record, batch)
                self.written += len(batch)
                return
            except StoreUnavailable as exc:
                log.warning("cannot write %d records (attempt %d): %s", len(batch), attempt + 1, exc)
                await asyncio.sleep(0.5 * (attempt + 1))
        self.dropped += len(batch)
        self._on_drop(len(batch))
