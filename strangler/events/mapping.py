"""Change events -> domain events (pure: the change, its position and `now` in; events and dead letters out).

A rule selects changes by table, operation, changed columns and predicates; one change may produce
several events or none. Event ids are derived from the source position, so a replay yields the same ids
and consumers deduplicate. A change that cannot be mapped or fails validation becomes a dead letter
with the reason and the source position: nothing is dropped silently.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from strangler.events.config import Condition, DomainEventsConfig, MappingRule
from strangler.events.envelope import (
    UNAVAILABLE,
    BadValue,
    ChangeEnvelope,
    NotAChange,
    canonical,
    commit_time,
    read_envelope,
    source_sequence,
    to_date,
    to_time,
    unwrap_key,
)
from strangler.events.model import (
    DomainEvent,
    PayloadValidator,
    assemble_event,
    payload_model,
    time_fields,
    validation_reason,
)
from strangler.events.outbox import OutboxRouter

NAMESPACE = uuid.UUID("6f1d3c1e-9a55-4c0e-8a8e-5f0c2b7a9d41")
_NAMESPACE_BYTES = NAMESPACE.bytes


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A change that produced no event it should have: why, and where it was read."""

    reason: str
    position: str
    key: Any
    value: Any
    at: dt.datetime
    correlation_id: str | None = None  # when the rule names a correlation column and the row has it
    entity_key: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "position": self.position, "key": self.key, "value": self.value,
                "at": self.at.isoformat(), "correlation_id": self.correlation_id, "entity_key": self.entity_key}


@dataclass(slots=True)
class MappingResult:
    events: list[tuple[str, DomainEvent]] = field(default_factory=list)  # (topic, event)
    dead: list[DeadLetter] = field(default_factory=list)


class MappingError(ValueError):
    """A change that cannot become the event its rule asks for; the message is the dead letter's reason."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """One rule, prepared once: the columns to read, which are times, and how to validate the payload."""

    rule: MappingRule
    keys: tuple[str, ...]
    fields: tuple[tuple[str, str, type[dt.date] | None], ...]  # (payload field, column, time type or None)
    validate: PayloadValidator
    event_type: str
    version: int


class DomainEventMapper:
    def __init__(self, config: DomainEventsConfig) -> None:
        self.config = config
        self.models: dict[str, type[BaseModel]] = {name: payload_model(name, t) for name, t in config.types.items()}
        self._plans: dict[str, list[_Plan]] = {}
        validators = {name: PayloadValidator(self.models[name], t.payload) for name, t in config.types.items()}
        for rule in config.rules:
            times = time_fields(self.models[rule.event])
            declared = config.types[rule.event]
            self._plans.setdefault(rule.table, []).append(_Plan(
                rule, (rule.key,) if isinstance(rule.key, str) else tuple(rule.key),
                tuple((name, column, times.get(name)) for name, column in rule.payload.items()),
                validators[rule.event], declared.name or rule.event, declared.version))
        self._outbox = {route.table: OutboxRouter(route, config, self.models) for route in config.outbox}
        self._unmapped_is_dead = config.dead_letter.unmapped_tables

    def map(self, key: Any, value: Any, position: str, now: dt.datetime) -> MappingResult:
        """Map one change event (Debezium key and value, decoded JSON) read at `position`."""
        result = MappingResult()
        if value is None:
            return result  # a tombstone: nothing happened to the business
        try:
            envelope = read_envelope(value)
        except NotAChange as exc:
            result.dead.append(DeadLetter(f"not a change event: {exc}", position, key, value, now))
            return result
        key = unwrap_key(key)
        router = self._outbox.get(envelope.table)
        if self._unmapped_is_dead and router is None and envelope.table not in self._plans:
            result.dead.append(DeadLetter(f"no rule or outbox maps the table {envelope.table!r}", position, key,
                                          value, now))
            return result
        if router is not None:
            try:
                routed = router.route(envelope, position, now)
            except BadValue as exc:
                result.dead.append(DeadLetter(f"outbox row of {envelope.table}: {exc}", position, key, value, now))
            else:
                if routed is not None:
                    result.events.append(routed)
        ordinals: dict[str, int] = {}
        for plan in self._plans.get(envelope.table, ()):
            rule = plan.rule
            try:
                if not self._selects(rule, envelope):
                    continue
                ordinal = ordinals.get(rule.event, 0)
                ordinals[rule.event] = ordinal + 1
                result.events.append((rule.topic, self._event(plan, envelope, key, position, now, ordinal)))
            except (MappingError, BadValue) as exc:
                cid, entity = _whose(rule, envelope)
                result.dead.append(DeadLetter(f"{rule.event} from {rule.table}: {exc}", position, key, value, now,
                                              cid, entity))
        return result

    def _selects(self, rule: MappingRule, envelope: ChangeEnvelope) -> bool:
        if envelope.op not in rule.ops:
            return False
        row = envelope.row
        if row is None:
            raise MappingError(f"op {envelope.op!r} without the row it changed")
        if rule.changed and envelope.op == "u" and envelope.before is not None:
            # Without a before image (REPLICA IDENTITY DEFAULT) every update counts as a change; a column
            # the before image lacks (only the key was logged) may have changed, so it counts too.
            before = envelope.before
            if not any(c in row and row[c] != UNAVAILABLE and (c not in before or row[c] != before[c])
                       for c in rule.changed):
                return False
        return all(_holds(cond, row) for cond in rule.when)

    def _event(self, plan: _Plan, envelope: ChangeEnvelope, key: Any, position: str, now: dt.datetime,
               ordinal: int) -> DomainEvent:
        rule = plan.rule
        row = envelope.row or {}
        ids = []
        for k in plan.keys:
            value = row.get(k)
            if value is None or value == UNAVAILABLE:
                missing = [k for k in plan.keys if row.get(k) is None or row[k] == UNAVAILABLE]
                raise MappingError(f"missing key column(s) {missing}")
            ids.append(str(value))
        raw: dict[str, Any] = {}
        for name, column, kind in plan.fields:
            if column not in row:
                raise MappingError(f"payload field {name!r}: column {column!r} is not in the row")
            value = row[column]
            if value == UNAVAILABLE:
                raise MappingError(f"payload field {name!r}: column {column!r} is an unchanged TOAST value the "
                                   "database did not send; set REPLICA IDENTITY FULL on the table")
            if kind is not None and value is not None:
                value = to_time(value) if kind is dt.datetime else to_date(value)
            raw[name] = value
        try:
            payload = plan.validate(raw)
        except ValidationError as exc:
            raise MappingError(f"payload does not validate: {validation_reason(exc)}") from None
        sequence = source_sequence(envelope, position)
        source = self.config.source
        identity = "|".join((source, envelope.table, sequence, canonical(key) or canonical(row), plan.event_type,
                             str(plan.version), str(ordinal)))
        # every value below is of the envelope's declared type, so the event is assembled without validation
        return assemble_event({
            "event_id": event_id(identity),
            "event_type": plan.event_type,
            "event_version": plan.version,
            "aggregate_type": rule.aggregate_type,
            "aggregate_id": ":".join(ids),
            "event_time": commit_time(envelope),
            "effective_time": to_time(row.get(rule.effective_time)) if rule.effective_time else None,
            "processing_time": now,
            "source": source,
            "sequence": sequence,
            "correlation_id": text(row.get(rule.correlation_id)) if rule.correlation_id else None,
            "causation_id": text(row.get(rule.causation_id)) if rule.causation_id else None,
            "payload": payload,
        })


def event_id(identity: str) -> str:
    """`str(uuid.uuid5(NAMESPACE, identity))`, computed without building UUID objects (it is on every event)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + identity.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _whose(rule: MappingRule, envelope: ChangeEnvelope) -> tuple[str | None, str | None]:
    """The correlation id and entity key of a change that could not be mapped, as far as they can be read,
    so that the request's journey can show the exception."""
    row = envelope.row or {}
    cid = text(row.get(rule.correlation_id)) if rule.correlation_id else None
    keys = [rule.key] if isinstance(rule.key, str) else rule.key
    values = [text(row.get(k)) for k in keys]
    return cid, ":".join(v for v in values if v is not None) if all(values) else None


def _holds(cond: Condition, row: dict[str, Any]) -> bool:
    if cond.column not in row:
        raise MappingError(f"condition on column {cond.column!r}, which is not in the row")
    value = row[cond.column]
    if value == UNAVAILABLE:
        raise MappingError(f"condition on column {cond.column!r}, an unchanged TOAST value the database did not "
                           "send; set REPLICA IDENTITY FULL on the table")
    if cond.op == "eq":
        return bool(value == cond.value)
    if cond.op == "ne":
        return bool(value != cond.value)
    if cond.op == "in":
        return value in cond.value
    if cond.op == "not_null":
        return value is not None
    return value is None


def text(value: Any) -> str | None:
    return None if value is None or value == UNAVAILABLE else str(value)
