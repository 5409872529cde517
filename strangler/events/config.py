"""Configuration of the domain-event mapping (`cdc.domain_events`)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from strangler.model import ConfigModel

_TYPE = re.compile(r"^(str|int|float|bool|decimal|datetime|date|json)(\|null)?$")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*$")


class EventTypeConfig(ConfigModel):
    """An event type and version: its payload fields declared here, or a pydantic class by import path."""

    version: int = Field(1, ge=1)
    payload: dict[str, str] | None = Field(None, description="field -> str|int|float|bool|decimal|datetime|date|"
                                                              "json, with '|null' when it may be null")
    model: str | None = Field(None, description="import path 'package.module:Class' of a pydantic model")

    @field_validator("payload")
    @classmethod
    def _types(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, kind in (value or {}).items():
            if not _TYPE.match(kind):
                raise ValueError(f"field {name!r}: unknown type {kind!r}; expected str, int, float, bool, decimal, "
                                 "datetime, date or json, optionally with '|null'")
        return value

    @model_validator(mode="after")
    def _one(self) -> EventTypeConfig:
        if (self.payload is None) == (self.model is None):
            raise ValueError("give exactly one of 'payload' (field types) or 'model' (an import path)")
        return self


class Condition(ConfigModel):
    column: str
    op: Literal["eq", "ne", "in", "not_null", "is_null"] = "eq"
    value: Any = None


class MappingRule(ConfigModel):
    table: str = Field(description="schema.table")
    ops: list[Literal["c", "u", "d", "r"]] = Field(default_factory=lambda: ["c", "u", "r"])
    changed: list[str] = Field(default_factory=list, description="for updates: any of these columns changed")
    when: list[Condition] = Field(default_factory=list)
    event: str
    aggregate_type: str
    key: str | list[str] = Field(description="column(s) whose value is the aggregate id")
    payload: dict[str, str] = Field(description="payload field -> column")
    effective_time: str | None = Field(None, description="column holding the business (effective) time")
    correlation_id: str | None = Field(None, description="column carrying the request's correlation id")
    causation_id: str | None = None
    topic: str

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        if not _TABLE.match(value):
            raise ValueError(f"expected schema.table, got {value!r}")
        return value


class OutboxRoute(ConfigModel):
    """Debezium outbox-router semantics: inserted rows become events routed by aggregate type."""

    table: str
    topic_prefix: str = "outbox.event"
    id_column: str = "id"
    aggregate_type_column: str = "aggregatetype"
    aggregate_id_column: str = "aggregateid"
    type_column: str = "type"
    payload_column: str = "payload"
    extra_columns: dict[str, str] = Field(default_factory=dict, description="event field -> column, e.g. "
                                                                           "correlation_id: correlation_id")

    @field_validator("extra_columns")
    @classmethod
    def _extra(cls, value: dict[str, str]) -> dict[str, str]:
        allowed = {"correlation_id", "causation_id", "effective_time", "event_version"}
        for name in value:
            if name not in allowed:
                raise ValueError(f"extra column target {name!r} must be one of {sorted(allowed)}")
        return value


class DeadLetterConfig(ConfigModel):
    topic: str | None = None
    path: str | None = None

    @model_validator(mode="after")
    def _one(self) -> DeadLetterConfig:
        if (self.topic is None) == (self.path is None):
            raise ValueError("give exactly one of 'topic' or 'path'")
        return self


class DomainEventsConfig(ConfigModel):
    source: str = Field(description="the authority that produced these events, e.g. legacy.crm")
    types: dict[str, EventTypeConfig] = Field(default_factory=dict)
    rules: list[MappingRule] = Field(default_factory=list)
    outbox: list[OutboxRoute] = Field(default_factory=list)
    dead_letter: DeadLetterConfig = DeadLetterConfig(path="dead-letters.jsonl")

    @model_validator(mode="after")
    def _known_types(self) -> DomainEventsConfig:
        for i, rule in enumerate(self.rules):
            if rule.event not in self.types:
                raise ValueError(f"rules[{i}].event: unknown event type {rule.event!r}")
            declared = self.types[rule.event].payload
            if declared is not None:
                missing = set(declared) - set(rule.payload)
                if missing:
                    raise ValueError(f"rules[{i}].payload: no column for {sorted(missing)}")
        return self
