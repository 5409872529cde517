"""Domain events made in-process (`map_domain_events`): each change record a connector reads goes straight to
the mapping pipeline (strangler.events), whose `on_done` tells the connector when the change's domain events
and dead letters are acknowledged. The pipeline's failures become SinkError, so that the connector ends the
session and re-reads from its durable position, as it does when the change events' sink fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from strangler.cdc.envelope import Record
from strangler.cdc.errors import SinkError
from strangler.events.errors import EventsError
from strangler.events.pipeline import DomainEventPipeline


class PipelineMapping:
    """A `ChangeMapping` over a `DomainEventPipeline` made by `make_pipeline` (called by `open`)."""

    def __init__(self, make_pipeline: Callable[[], DomainEventPipeline], *, connector: str) -> None:
        self.make_pipeline = make_pipeline
        self.connector = connector
        self._pipeline: DomainEventPipeline | None = None
        self._sources: dict[str, dict[str, Any]] = {}

    def open(self) -> None:
        try:
            self._pipeline = self.make_pipeline()
        except (EventsError, OSError) as exc:
            raise SinkError(f"domain events: cannot open the publisher: {exc}") from exc

    def send(self, records: list[Record], on_done: Callable[[], Callable[[], None]]) -> None:
        pipeline = self._pipeline
        assert pipeline is not None
        submit, loads, sources = pipeline.submit, orjson.loads, self._sources
        try:
            for topic, key, value, _ in records:
                if value is None:
                    continue  # a tombstone: nothing happened to the business
                change = loads(value)
                source = sources.get(topic)
                if source is None:
                    source = sources.setdefault(topic, {"connector": self.connector, "topic": topic})
                submit(loads(key) if key else None, change, change_position(change), on_done(), source=source,
                       raw_key=key)
        except EventsError as exc:
            raise SinkError(f"domain events: {exc}") from exc

    def poll(self, timeout: float) -> None:
        assert self._pipeline is not None
        try:
            self._pipeline.poll(timeout)
        except EventsError as exc:
            raise SinkError(f"domain events: {exc}") from exc

    def flush(self, timeout: float) -> int:
        assert self._pipeline is not None
        try:
            return self._pipeline.drain(timeout)
        except EventsError as exc:
            raise SinkError(f"domain events: {exc}") from exc

    def close(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            try:
                pipeline.close()
            except (EventsError, OSError):
                pass  # what was not acknowledged is read again from the source


def change_position(change: dict[str, Any]) -> str:
    """Where a change event of ours was read: its LSN (PostgreSQL) or changelog sequence (SQLite)."""
    body = change.get("payload", change) if "schema" in change else change
    source = body.get("source") if isinstance(body, dict) else None
    if not isinstance(source, dict):
        return "?"
    lsn = source.get("lsn")
    return str(lsn) if lsn is not None else str(source.get("sequence"))
