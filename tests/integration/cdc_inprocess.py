"""The PostgreSQL source driven in-process: start it, read parsed events, acknowledge, confirm."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from strangler.cdc.config import SourceConfig
from strangler.cdc.postgres import PostgresSource
from strangler.cdc.state import StateFile

Event = tuple[str, Any, Any, Any]  # topic, key, value (None for a tombstone), headers


def source_config(dsn: str, **options: Any) -> SourceConfig:
    return SourceConfig.model_validate({"kind": "postgres", "dsn": dsn, "heartbeat_interval": 0, **options})


def open_source(dsn: str, state: Path, *, schemas: bool = False, **options: Any) -> PostgresSource:
    source = PostgresSource(source_config(dsn, **options), name="legacy", schemas=schemas, state=StateFile(state))
    source.start()
    return source


def read_events(source: PostgresSource, until: Callable[[list[Event]], bool], timeout: float = 30) -> list[Event]:
    """Events (parsed) until `until(events)` holds; every checkpoint is acknowledged and confirmed."""
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    while not until(events):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; got {len(events)} events: {events[-3:]}")
        for item in source.read(1000, 0.2):
            if type(item) is tuple:
                topic, key, value, headers = item
                events.append((topic, orjson.loads(key) if key else None, orjson.loads(value) if value else None,
                               headers))
            else:
                source.acknowledge(item)  # type: ignore[arg-type]
    source.confirm()
    return events


def count(n: int) -> Callable[[list[Event]], bool]:
    return lambda events: len(events) >= n
