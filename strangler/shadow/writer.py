"""The batched background writer: records (comparisons, ledger stage events) go into a bounded queue,
a task writes them in batches.

`submit` never blocks and never fails the request path: when the queue is full the record is dropped
and counted. A batch that cannot be written is retried after each of `retry_delays`, then dropped and
counted. `stop` writes whatever is queued or gathering before it returns.
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
        retry_delays: Sequence[float] = (0.5, 1.0),
        on_drop: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.store = store
        self._queue: asyncio.Queue[T] = asyncio.Queue(max_queue)
        self._batch_size = batch_size
        self._interval = interval
        self._retry_delays = tuple(retry_delays)
        self._on_drop = on_drop
        self._task: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()
        self._closing = asyncio.Event()
        self.written = 0
        self.dropped = 0

    def submit(self, record: T) -> None:
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1
            self._on_drop(1)
            return
        self._arrived.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self, timeout: float = 30.0) -> None:
        """Write what is queued (the batch being gathered included), then end the background task."""
        self._closing.set()
        self._arrived.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except TimeoutError:
                log.warning("the batch writer did not finish within %.0f s", timeout)
            self._task = None
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
            if self._queue.empty():
                if self._closing.is_set():
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            if not self._closing.is_set() and self._queue.qsize() < self._batch_size:
                with contextlib.suppress(TimeoutError):  # let a batch gather, unless closing
                    await asyncio.wait_for(self._closing.wait(), self._interval)
            await self._write(self._take())

    async def _write(self, batch: list[T]) -> None:
        if not batch:
            return
        for attempt, delay in enumerate((*self._retry_delays, None)):
            try:
                await asyncio.to_thread(self.store.record, batch)
            except StoreUnavailable as exc:
                log.warning("cannot write %d records (attempt %d): %s", len(batch), attempt + 1, exc)
            except Exception:  # a bug must not end the writer: drop this batch, keep the next ones
                log.exception("cannot write %d records; dropped", len(batch))
                break
            else:
                self.written += len(batch)
                return
            if delay is not None:
                await asyncio.sleep(delay)
        self.dropped += len(batch)
        self._on_drop(len(batch))
