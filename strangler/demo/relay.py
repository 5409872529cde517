"""The demo's event plumbing, in the gateway's own event loop: change events from the CDC connector's JSON Lines
file go through the domain-event mapper; the legacy side's domain events and the new service's own go to the
outcome comparison on the admin API (`POST /outcomes/legacy|new`); and the new service follows the legacy's
address changes (it keeps its store in step from the events, as a consumer of the anti-corruption layer)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from starlette.concurrency import run_in_threadpool

from strangler.demo.domain import Address
from strangler.demo.new_service import CustomerProfile, ProfileStore
from strangler.events.pipeline import DomainEventPipeline
from strangler.lifecycle import BackgroundTask

NEW_EVENT = "CustomerAddressChanged"


class _Tail:
    """The complete lines appended to a file since the last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def lines(self) -> Iterator[tuple[int, dict[str, Any]]]:
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        for raw in data[:end].splitlines():
            self.offset += len(raw) + 1
            yield self.offset, json.loads(raw)

    @property
    def caught_up(self) -> bool:
        return not self.path.exists() or self.path.stat().st_size == self.offset


class EventRelay(BackgroundTask):
    def __init__(self, *, changes: Path, events: Path, legacy_db: Path, changelog_table: str,
                 pipeline: DomainEventPipeline, admin: httpx.AsyncClient, profiles: ProfileStore) -> None:
        self.changes = _Tail(changes)
        self.events = _Tail(events)
        self.legacy_db = legacy_db
        self.changelog_table = changelog_table
        self.pipeline = pipeline
        self.admin = admin
        self.profiles = profiles
        self.legacy_events: list[dict[str, Any]] = []
        self.new_events: list[dict[str, Any]] = []
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._sequence = itertools.count(1)
        self._lock = asyncio.Lock()

    def publish_new(self, profile: CustomerProfile, correlation_id: str | None) -> None:
        """The new service's publisher: its own domain event for an address it changed."""
        now = datetime.now(UTC).isoformat()
        address = profile.address
        self._queue.put_nowait({
            "event_id": str(uuid.uuid4()), "event_type": NEW_EVENT, "event_version": 1, "aggregate_type": "customer",
            "aggregate_id": str(profile.customer_id), "event_time": now, "processing_time": now,
            "source": "customers", "sequence": str(next(self._sequence)), "correlation_id": correlation_id,
            "payload": {"customer_id": profile.customer_id, "street": address.street, "postcode": address.postcode,
                        "city": address.city, "country": address.country},
        })

    async def stop(self) -> None:
        await super().stop()
        self.pipeline.close()

    async def _run(self) -> None:
        while True:
            await self.step()
            await asyncio.sleep(0.05)

    async def step(self) -> None:
        async with self._lock:
            await self._step()

    async def _step(self) -> None:
        for position, line in self.changes.lines():
            self.pipeline.submit(line["key"], line["value"], f"changes.jsonl:{position}")
        self.pipeline.flush(5.0)
        for _, line in self.events.lines():
            event = json.loads(line["value"])
            self.legacy_events.append(event)
            payload = event["payload"]
            address = Address(payload["street"], payload["postcode"], payload["city"], payload["country"])
            await run_in_threadpool(self.profiles.change_address, int(payload["customer_id"]), address)
            (await self.admin.post("/outcomes/legacy", json=event)).raise_for_status()
        while not self._queue.empty():
            event = self._queue.get_nowait()
            self.new_events.append(event)
            (await self.admin.post("/outcomes/new", json=event)).raise_for_status()

    def _changelog_empty(self) -> bool:
        with contextlib.closing(sqlite3.connect(self.legacy_db, timeout=5)) as conn:
            try:
                (count,) = conn.execute(f'SELECT count(*) FROM "{self.changelog_table}"').fetchone()
            except sqlite3.OperationalError:  # the connector has not installed its changelog yet
                return True
        return int(count) == 0

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until every change so far went all the way through: captured, mapped, compared."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if (self.changes.caught_up and self.events.caught_up and self._queue.empty()
                    and await run_in_threadpool(self._changelog_empty)):
                await self.step()
                if self.changes.caught_up and self.events.caught_up and self._queue.empty():
                    return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"the change events did not settle within {timeout:g} s")
