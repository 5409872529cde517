"""Configuration of the domain-event mapping (`cdc.domain_events`).

    domain_events:
      source: legacy.crm
      types:
        CustomerCorrespondenceAddressChanged:
          version: 1
          payload: {customer_id: int, street: str, city: str, zip: str}
      rules:
        - table: public.customers
          ops: [u]
          changed: [corr_street, corr_city, corr_zip]
          event: CustomerCorrespondenceAddressChanged
          aggregate_type: customer
          key: id
          payload: {customer_id: id, street: corr_street, city: corr_city, zip: corr_zip}
          effective_time: address_valid_from
          topic: domain.customer
      dead_letter: {topic: domain.dead-letters}
      consume: {bootstrap_servers: ..., topics: [legacy.crm.public.customers], group_id: strangler-mapper}
      publish: {bootstrap_servers: ...}
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from strangler.model import ConfigModel

_TYPE = re.compile(r"^(str|int|float|bool|decimal|datetime|date|json)(\|null)?$")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*$")
TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")

# Producer settings that would let an acknowledged change go missing, with what is needed instead.
_REQUIRED_PRODUCER = {"acks": {"all", "-1"}, "enable.idempotence": {"true"}}
_OWN_PRODUCER = {"on_delivery", "error_cb", "delivery.report.only.error"}


def import_model(path: str) -> type[BaseModel]:
    """The pydantic model at 'package.module:Class' (ValueError naming what is wrong)."""
    module_name, colon, attr = path.partition(":")
    if not colon or not module_name or not attr:
        raise ValueError(f"expected 'package.module:Class', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from None
    model = getattr(module, attr, None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ValueError(f"{path} is not a pydantic model class")
    return model


class EventTypeConfig(ConfigModel):
    """An event type and version: its payload fields declared here, or a pydantic class by import path."""

    name: str | None = Field(None, description="the event_type published (default: this entry's key), so that "
                                               "two versions of one type can be configured side by side")
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

    @field_validator("model")
    @classmethod
    def _importable(cls, value: str | None) -> str | None:
        if value is not None:
            import_model(value)
        return value

    @model_validator(mode="after")
    def _one(self) -> EventTypeConfig:
        if (self.payload is None) == (self.model is None):
            raise ValueError("give exactly one of 'payload' (field types) or 'model' (an import path)")
        return self

    def fields(self) -> tuple[set[str], set[str]]:
        """(every payload field, the required ones) of this type."""
        if self.payload is not None:
            return set(self.payload), set(self.payload)
        model = import_model(self.model or "")
        every = set(model.model_fields)
        return every, {name for name, f in model.model_fields.items() if f.is_required()}


class Condition(ConfigModel):
    column: str
    op: Literal["eq", "ne", "in", "not_null", "is_null"] = "eq"
    value: Any = None

    @model_validator(mode="after")
    def _value(self) -> Condition:
        if self.op == "in" and not isinstance(self.value, list):
            raise ValueError("op 'in' needs a list as 'value'")
        if self.op in ("not_null", "is_null") and self.value is not None:
            raise ValueError(f"op {self.op!r} takes no 'value'")
        return self


Op = Literal["c", "u", "d", "r"]


def _upserts() -> list[Op]:
    return ["c", "u", "r"]


class MappingRule(ConfigModel):
    table: str = Field(description="schema.table")
    ops: list[Op] = Field(default_factory=_upserts, min_length=1)
    changed: list[str] = Field(default_factory=list, description="for updates: any of these columns changed")
    when: list[Condition] = Field(default_factory=list, description="all must hold (on the row after the change; "
                                                                     "for deletes, before it)")
    event: str = Field(description="a key of `types`")
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

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        if not TOPIC.match(value):
            raise ValueError(f"expected a Kafka topic name (letters, digits, '.', '_', '-'), got {value!r}")
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

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        if not _TABLE.match(value):
            raise ValueError(f"expected schema.table, got {value!r}")
        return value

    @field_validator("extra_columns")
    @classmethod
    def _extra(cls, value: dict[str, str]) -> dict[str, str]:
        allowed = {"correlation_id", "causation_id", "effective_time", "event_version"}
        for name in value:
            if name not in allowed:
                raise ValueError(f"extra column target {name!r} must be one of {sorted(allowed)}")
        return value


class DeadLetterConfig(ConfigModel):
    """Where changes that cannot be mapped go: a topic (on `publish`'s broker) or a JSON-lines file."""

    topic: str | None = None
    path: str | None = None
    unmapped_tables: bool = Field(False, description="also a change of a table that no rule or outbox names "
                                                     "(by default such a change produces nothing)")

    @model_validator(mode="after")
    def _one(self) -> DeadLetterConfig:
        if (self.topic is None) == (self.path is None):
            raise ValueError("give exactly one of 'topic' or 'path'")
        if self.topic is not None and not TOPIC.match(self.topic):
            raise ValueError(f"topic: expected a Kafka topic name, got {self.topic!r}")
        return self


class ConsumeConfig(ConfigModel):
    """Change events read from Kafka by a consumer group (our connector's topics or Debezium's)."""

    bootstrap_servers: str
    topics: list[str] = Field(min_length=1, description="topic names, or regular expressions starting with '^'")
    group_id: str = "strangler-domain-events"
    settings: dict[str, str | int | float | bool] = Field(default_factory=dict, description="librdkafka consumer "
                                                                                          "settings")

    @field_validator("settings")
    @classmethod
    def _settings(cls, value: dict[str, str | int | float | bool]) -> dict[str, str | int | float | bool]:
        for key in ("enable.auto.commit", "enable.auto.offset.store"):
            if key in value and str(value[key]).lower() != "false":
                raise ValueError(f"{key} cannot be turned on: offsets are committed only after the outputs are "
                                 "acknowledged")
        return value


class PublishConfig(ConfigModel):
    """Where domain events (and dead letters with `dead_letter.topic`) are published."""

    bootstrap_servers: str | None = None
    path: str | None = Field(None, description="a JSON-lines file instead of Kafka (local use)")
    producer: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("producer")
    @classmethod
    def _producer(cls, value: dict[str, str | int | float | bool]) -> dict[str, str | int | float | bool]:
        for key, setting in value.items():
            text = str(setting).lower()
            if key in _REQUIRED_PRODUCER and text not in _REQUIRED_PRODUCER[key]:
                wanted = " or ".join(sorted(_REQUIRED_PRODUCER[key]))
                raise ValueError(f"{key}: {setting!r} can lose acknowledged events; it must be {wanted}")
            if key in _OWN_PRODUCER:
                raise ValueError(f"{key} cannot be set: the mapper sets its own")
            if key in ("retries", "message.send.max.retries") and text == "0":
                raise ValueError(f"{key}: 0 turns a transient broker error into a lost batch")
        return value

    @model_validator(mode="after")
    def _one(self) -> PublishConfig:
        if (self.bootstrap_servers is None) == (self.path is None):
            raise ValueError("give exactly one of 'bootstrap_servers' or 'path'")
        if self.path is not None and self.producer:
            raise ValueError("'producer' settings apply to Kafka only")
        return self


class DomainEventsConfig(ConfigModel):
    source: str = Field(description="the authority that produced these events, e.g. legacy.crm")
    types: dict[str, EventTypeConfig] = Field(default_factory=dict)
    rules: list[MappingRule] = Field(default_factory=list)
    outbox: list[OutboxRoute] = Field(default_factory=list)
    dead_letter: DeadLetterConfig = DeadLetterConfig(path="dead-letters.jsonl")
    consume: ConsumeConfig | None = Field(None, description="for `strangler events run`: the change topics")
    publish: PublishConfig | None = Field(None, description="where events go (`strangler events run`, or a "
                                                            "connector mapping in-process)")

    @model_validator(mode="after")
    def _known_types(self) -> DomainEventsConfig:
        for i, rule in enumerate(self.rules):
            if rule.event not in self.types:
                known = ", ".join(sorted(self.types)) or "none declared"
                raise ValueError(f"rules[{i}].event: unknown event type {rule.event!r} (types: {known})")
            every, required = self.types[rule.event].fields()
            missing = required - set(rule.payload)
            if missing:
                raise ValueError(f"rules[{i}].payload: no column for {sorted(missing)} "
                                 f"(required by types.{rule.event})")
            unknown = set(rule.payload) - every
            if unknown:
                raise ValueError(f"rules[{i}].payload: {sorted(unknown)} not fields of types.{rule.event}")
        if self.dead_letter.topic is not None and self.publish is not None and self.publish.path is not None:
            raise ValueError("dead_letter.topic needs a broker: publish to 'bootstrap_servers', or give "
                             "dead_letter.path")
        return self
