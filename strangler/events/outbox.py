"""Outbox routing, as Debezium's EventRouter does it: an inserted outbox row is a domain event already.

The row's `id` is the event id, `aggregatetype` picks the topic (`<topic_prefix>.<aggregatetype>`),
`aggregateid` the aggregate, `type` the event type and `payload` (JSON text or a JSON column) the payload,
validated by the type's model when the type is declared. Updates and deletes of outbox rows are
housekeeping and publish nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from strangler.events.config import TOPIC, DomainEventsConfig, OutboxRoute
from strangler.events.envelope import UNAVAILABLE, BadValue, ChangeEnvelope, commit_time, source_sequence, to_time
from strangler.events.model import DomainEvent, validation_reason


class OutboxRouter:
    def __init__(self, route: OutboxRoute, config: DomainEventsConfig, models: Mapping[str, type[BaseModel]]) -> None:
        self.settings = route
        self.source = config.source
        # a declared type is found by the event type it publishes (its `name`), whatever its key
        self._types = {(t.name or name): (models[name], t.version) for name, t in config.types.items()}

    def route(self, envelope: ChangeEnvelope, position: str, now: dt.datetime) -> tuple[str, DomainEvent] | None:
        """The (topic, event) for an inserted outbox row, None for other operations; BadValue when the row
        cannot be an event."""
        if envelope.op not in ("c", "r"):
            return None
        r = self.settings
        row = envelope.after or {}
        event_id = _required(row, r.id_column)
        aggregate_type = _required(row, r.aggregate_type_column)
        aggregate_id = _required(row, r.aggregate_id_column)
        event_type = _required(row, r.type_column)
        topic = f"{r.topic_prefix}.{aggregate_type}"
        if not TOPIC.match(topic):
            raise BadValue(f"aggregate type {aggregate_type!r} does not make a valid topic name ({topic!r})")
        raw = row.get(r.payload_column)
        if raw is None or raw == UNAVAILABLE:
            raise BadValue(f"column {r.payload_column!r} is empty or an unsent TOAST value")
        try:
            payload = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
        except orjson.JSONDecodeError as exc:
            raise BadValue(f"column {r.payload_column!r} is not JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise BadValue(f"column {r.payload_column!r} is not a JSON object")
        version = 1
        declared = self._types.get(event_type)
        if declared is not None:
            model, version = declared
            try:
                payload = model.model_validate(payload).model_dump(mode="json")
            except ValidationError as exc:
                raise BadValue(f"{event_type} payload does not validate: {validation_reason(exc)}") from None
        extra = {name: row.get(column) for name, column in r.extra_columns.items()}
        if extra.get("event_version") is not None:
            try:
                version = int(str(extra["event_version"]))
            except (TypeError, ValueError):
                raise BadValue(f"event_version {extra['event_version']!r} is not an integer") from None
        event = DomainEvent(
            event_id=event_id,
            event_type=event_type,
            event_version=version,
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            event_time=commit_time(envelope),
            effective_time=to_time(extra.get("effective_time")),
            processing_time=now,
            source=self.source,
            sequence=source_sequence(envelope, position),
            correlation_id=_text(extra.get("correlation_id")),
            causation_id=_text(extra.get("causation_id")),
            payload=payload,
        )
        return topic, event


def _required(row: dict[str, Any], column: str) -> str:
    if column not in row:
        raise BadValue(f"no column {column!r}")
    value = row[column]
    if value is None or value == UNAVAILABLE or value == "":
        raise BadValue(f"column {column!r} is empty")
    return str(value)


def _text(value: Any) -> str | None:
    return None if value is None or value == UNAVAILABLE else str(value)
