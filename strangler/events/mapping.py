"""Change events -> domain events (pure: the change, its position and `now` in; events and dead letters out).

A rule selects changes by table, operation, changed columns and predicates; one change may produce
several events or none. Event ids are derived from the source position, so a replay yields the same ids
and consumers deduplicate. A change that cannot be mapped or fails validation becomes a dead letter
with the reason and the source position: nothing is dropped silently.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from strangler.events.config import Condition, DomainEventsConfig, MappingRule, OutboxRoute
from strangler.events.model import DomainEvent, payload_model

NAMESPACE = uuid.UUID("6f1d3c1e-9a55-4c0e-8a8e-5f0c2b7a9d41")
UNAVAILABLE = "__debezium_unavailable_value"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    position: str
    key: Any
    value: Any
    at: dt.datetime

    def as_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "position": self.position, "key": self.key, "value": self.value,
                "at": self.at.isoformat()}


@dataclass(slots=True)
class MappingResult:
    events: list[tuple[str, DomainEvent]] = field(default_factory=list)  # (topic, event)
    dead: list[DeadLetter] = field(default_factory=list)


class MappingError(ValueError):
    """A change that cannot become the event its rule asks for; the message is the dead letter's reason."""


def to_time(value: Any) -> dt.datetime | None:
    """A time from a Debezium-rendered value: ISO-8601 text, or epoch days / seconds / ms / us by size."""
    if value is None or value == UNAVAILABLE:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, str):
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MappingError(f"cannot read a time from {value!r}")
    magnitude = abs(value)
    if magnitude < 1_000_000:  # a date: days since the epoch
        return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=value)
    seconds = value if magnitude < 1e11 else value / 1e3 if magnitude < 1e14 else value / 1e6
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


class DomainEventMapper:
    def __init__(self, config: DomainEventsConfig) -> None:
        self.config = config
        self.models: dict[str, type[BaseModel]] = {name: payload_model(name, t) for name, t in config.types.items()}
        self._time_fields = {
            name: {f for f, kind in (t.payload or {}).items() if kind.split("|")[0] in ("datetime", "date")}
            for name, t in config.types.items()
        }
        self._rules: dict[str, list[tuple[int, MappingRule]]] = {}
        for i, rule in enumerate(config.rules):
            self._rules.setdefault(rule.table, []).append((i, rule))
        self._outbox = {route.table: route for route in config.outbox}

    def map(self, key: Any, value: Any, position: str, now: dt.datetime) -> MappingResult:
        """Map one change event (Debezium key and value, decoded JSON) read at `position`."""
        result = MappingResult()
        if value is None:
            return result  # a tombstone: nothing happened to the business
        try:
            envelope = self._envelope(value)
            source = envelope["source"]
            table = f"{source['schema']}.{source['table']}"
            op = envelope["op"]
        except (KeyError, TypeError) as exc:
            result.dead.append(DeadLetter(f"not a change event: missing {exc}", position, key, value, now))
            return result
        if table in self._outbox:
            self._map_outbox(self._outbox[table], envelope, key, value, position, now, result)
        for index, rule in self._rules.get(table, ()):
            try:
                if self._selects(rule, envelope, op):
                    result.events.append((rule.topic, self._event(index, rule, envelope, key, position, now)))
            except MappingError as exc:
                result.dead.append(DeadLetter(f"rule {index} ({rule.event}): {exc}", position, key, value, now))
        return result

    @staticmethod
    def _envelope(value: Any) -> dict[str, Any]:
        if isinstance(value, dict) and "payload" in value and "schema" in value:
            value = value["payload"]  # the JSON-with-schema form
        if not isinstance(value, dict):
            raise TypeError("value")
        return value

    def _selects(self, rule: MappingRule, envelope: dict[str, Any], op: str) -> bool:
        if op not in rule.ops:
            return False
        row = envelope.get("before") if op == "d" else envelope.get("after")
        if not isinstance(row, dict):
            raise MappingError(f"op {op!r} without the row it changed")
        if rule.changed and op == "u":
            before = envelope.get("before")
            if isinstance(before, dict):  # without REPLICA IDENTITY FULL every update counts as a change
                if not any(row.get(c) != before.get(c) and row.get(c) != UNAVAILABLE for c in rule.changed):
                    return False
        return all(_holds(cond, row) for cond in rule.when)

    def _event(self, index: int, rule: MappingRule, envelope: dict[str, Any], key: Any, position: str,
               now: dt.datetime) -> DomainEvent:
        op = envelope["op"]
        row: dict[str, Any] = envelope["before"] if op == "d" else envelope["after"]
        keys = [rule.key] if isinstance(rule.key, str) else rule.key
        missing = [k for k in keys if row.get(k) is None]
        if missing:
            raise MappingError(f"missing key column(s) {missing}")
        aggregate_id = ":".join(str(row[k]) for k in keys)
        raw: dict[str, Any] = {}
        for name, column in rule.payload.items():
            if column not in row:
                raise MappingError(f"payload field {name!r}: column {column!r} is not in the row")
            value = row[column]
            if value == UNAVAILABLE:
                raise MappingError(f"payload field {name!r}: column {column!r} is an unchanged TOAST value; "
                                   "set REPLICA IDENTITY FULL on the table")
            if name in self._time_fields[rule.event] and value is not None:
                value = to_time(value)
            raw[name] = value
        try:
            payload = self.models[rule.event].model_validate(raw)
        except ValidationError as exc:
            errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))
            raise MappingError(f"payload does not validate: {errors}") from None
        source = envelope["source"]
        sequence = _sequence(source, position)
        identity = f"{self.config.source}|{source['schema']}.{source['table']}|{sequence}|{_canon(key)}|{index}"
        return DomainEvent(
            event_id=str(uuid.uuid5(NAMESPACE, identity)),
            event_type=rule.event,
            event_version=self.config.types[rule.event].version,
            aggregate_type=rule.aggregate_type,
            aggregate_id=aggregate_id,
            event_time=_commit_time(source, envelope),
            effective_time=to_time(row.get(rule.effective_time)) if rule.effective_time else None,
            processing_time=now,
            source=self.config.source,
            sequence=sequence,
            correlation_id=_text(row.get(rule.correlation_id)) if rule.correlation_id else None,
            causation_id=_text(row.get(rule.causation_id)) if rule.causation_id else None,
            payload=payload.model_dump(mode="json"),
        )

    def _map_outbox(self, route: OutboxRoute, envelope: dict[str, Any], key: Any, value: Any, position: str,
                    now: dt.datetime, result: MappingResult) -> None:
        if envelope["op"] not in ("c", "r"):
            return  # the outbox router publishes inserts; deletes are housekeeping
        row = envelope.get("after") or {}
        try:
            aggregate_type = str(row[route.aggregate_type_column])
            raw_payload = row[route.payload_column]
            payload = orjson.loads(raw_payload) if isinstance(raw_payload, str | bytes) else raw_payload
            if not isinstance(payload, dict):
                raise MappingError("the payload is not a JSON object")
            event_type = str(row[route.type_column])
            if event_type in self.models:
                payload = self.models[event_type].model_validate(payload).model_dump(mode="json")
            extra = {name: row.get(column) for name, column in route.extra_columns.items()}
            event = DomainEvent(
                event_id=str(row[route.id_column]),
                event_type=event_type,
                event_version=int(extra.get("event_version") or 1),
                aggregate_type=aggregate_type,
                aggregate_id=str(row[route.aggregate_id_column]),
                event_time=_commit_time(envelope["source"], envelope),
                effective_time=to_time(extra.get("effective_time")),
                processing_time=now,
                source=self.config.source,
                sequence=_sequence(envelope["source"], position),
                correlation_id=_text(extra.get("correlation_id")),
                causation_id=_text(extra.get("causation_id")),
                payload=payload,
            )
        except KeyError as exc:
            result.dead.append(DeadLetter(f"outbox row without column {exc}", position, key, value, now))
            return
        except (orjson.JSONDecodeError, MappingError, ValidationError, ValueError) as exc:
            result.dead.append(DeadLetter(f"outbox row: {exc}".splitlines()[0], position, key, value, now))
            return
        result.events.append((f"{route.topic_prefix}.{aggregate_type}", event))


def _holds(cond: Condition, row: dict[str, Any]) -> bool:
    value = row.get(cond.column)
    if cond.op == "eq":
        return bool(value == cond.value)
    if cond.op == "ne":
        return bool(value != cond.value)
    if cond.op == "in":
        return value in (cond.value or [])
    if cond.op == "not_null":
        return value is not None
    return value is None


def _sequence(source: dict[str, Any], position: str) -> str:
    for name in ("lsn", "sequence", "pos"):
        if source.get(name) is not None:
            return str(source[name])
    return position


def _commit_time(source: dict[str, Any], envelope: dict[str, Any]) -> dt.datetime:
    if source.get("ts_us") is not None:
        return dt.datetime.fromtimestamp(source["ts_us"] / 1e6, dt.UTC)
    millis = source.get("ts_ms") or envelope.get("ts_ms")
    if millis is None:
        raise MappingError("the change has no commit time (source.ts_ms)")
    return dt.datetime.fromtimestamp(millis / 1e3, dt.UTC)


def _canon(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode() if value is not None else ""


def _text(value: Any) -> str | None:
    return None if value is None or value == UNAVAILABLE else str(value)
