"""The batched background writer: batches, drop-and-count on a full queue, retry then drop on store failure."""

from __future__ import annotations

import asyncio
import datetime as dt

from strangler.shadow.records import ComparisonRecord
from strangler.shadow.writer import BatchWriter
from strangler.store import StoreUnavailable
from tests.shadow.fakes import FakeDivergenceStore

AT = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)


def record(i: int) -> ComparisonRecord:
    return ComparisonRecord(AT, "items", "GET /items/{id}", "GET", "candidate", "compared", f"cid-{i}", "legacy",
                            200, 200, 1.0, 1.0)


def ids(records: list[ComparisonRecord]) -> list[str]:
    return [r.correlation_id for r in records]


async def test_records_are_written_in_batches_in_order() -> None:
    store = FakeDivergenceStore()
    writer = BatchWriter(store, batch_size=3, interval=0.01)
    await writer.start()
    for i in range(7):
        writer.submit(record(i))
    await asyncio.sleep(0.2)
    assert ids(store.records) == [f"cid-{i}" for i in range(7)]
    assert all(1 <= len(batch) <= 3 for batch in store.batches) and len(store.batches) >= 3
    assert (writer.written, writer.dropped) == (7, 0)
    await writer.stop()


async def test_records_arriving_together_share_one_batch() -> None:
    store = FakeDivergenceStore()
    writer = BatchWriter(store, batch_size=100, interval=0.05)
    await writer.start()
    for i in range(5):
        writer.submit(record(i))
        await asyncio.sleep(0)
    await asyncio.sleep(0.2)
    assert [len(b) for b in store.batches] == [5]
    await writer.stop()


async def test_a_full_queue_drops_and_counts() -> None:
    store = FakeDivergenceStore()
    drops: list[int] = []
    writer = BatchWriter(store, max_queue=2, interval=0.01, on_drop=drops.append)
    for i in range(5):  # nothing drains the queue yet
        writer.submit(record(i))
    assert (writer.dropped, drops) == (3, [1, 1, 1])
    await writer.start()
    await writer.stop()
    assert ids(store.records) == ["cid-0", "cid-1"]


async def test_a_failing_store_is_retried() -> None:
    store = FakeDivergenceStore(failures=[StoreUnavailable("down"), StoreUnavailable("still down")])
    writer = BatchWriter(store, interval=0.0, retry_delays=(0.01, 0.01))
    await writer.start()
    writer.submit(record(1))
    await asyncio.sleep(0.2)
    assert store.calls == 3 and ids(store.records) == ["cid-1"]
    assert (writer.written, writer.dropped) == (1, 0)
    await writer.stop()


async def test_a_batch_is_dropped_and_counted_after_the_retries() -> None:
    store = FakeDivergenceStore(failures=[StoreUnavailable("down")] * 3)
    drops: list[int] = []
    writer = BatchWriter(store, interval=0.02, retry_delays=(0.01, 0.01), on_drop=drops.append)
    await writer.start()
    for i in range(4):
        writer.submit(record(i))
    await asyncio.sleep(0.2)
    assert store.calls == 3 and store.records == []
    assert (writer.dropped, drops) == (4, [4])
    writer.submit(record(9))  # the writer goes on once the store is back
    await asyncio.sleep(0.2)
    assert ids(store.records) == ["cid-9"]
    await writer.stop()


async def test_an_unexpected_store_error_does_not_stop_the_writer() -> None:
    store = FakeDivergenceStore(failures=[ValueError("a bug")])
    drops: list[int] = []
    writer = BatchWriter(store, interval=0.0, retry_delays=(0.01,), on_drop=drops.append)
    await writer.start()
    writer.submit(record(1))
    await asyncio.sleep(0.1)
    writer.submit(record(2))
    await asyncio.sleep(0.1)
    assert ids(store.records) == ["cid-2"] and drops == [1]
    await writer.stop()


async def test_stop_writes_what_is_queued_or_gathering() -> None:
    store = FakeDivergenceStore()
    writer = BatchWriter(store, interval=10.0)  # a batch would gather for 10 s
    await writer.start()
    for i in range(3):
        writer.submit(record(i))
    await asyncio.sleep(0.05)  # the loop took the first record and is gathering
    await asyncio.wait_for(writer.stop(), 2.0)
    assert ids(store.records) == ["cid-0", "cid-1", "cid-2"]


async def test_stop_without_start_flushes() -> None:
    store = FakeDivergenceStore()
    writer = BatchWriter(store)
    writer.submit(record(1))
    await writer.stop()
    assert ids(store.records) == ["cid-1"]
