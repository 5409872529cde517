"""The cdc package's part of the configuration: `cdc.connectors.NAME.{source, sink}`.

A source or sink is one model whose `kind` decides which keys apply; a key of another kind is an error, like
an unknown key, so that a typo never silently falls back to a default.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from strangler.events.config import DomainEventsConfig
from strangler.model import ConfigModel as Model

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,200}")

# Producer settings that would let an acknowledged change go missing, with what we need instead.
_REQUIRED_PRODUCER = {"acks": {"all", "-1"}, "enable.idempotence": {"true"}}
_REFUSED_PRODUCER = {
    "delivery.report.only.error": "the connector advances only on delivery reports of successes",
    "on_delivery": "the connector sets its own delivery callback",
    "error_cb": "the connector sets its own error callback",
    "enable.gapless.guarantee": "set by the connector",
}


class SourceConfig(Model):
    kind: Literal["postgres", "sqlite"]
    # postgres
    dsn: str | None = Field(None, description="libpq connection string or postgresql:// URL")
    slot: str = "strangler"
    publication: str = "strangler"
    create_slot: bool = True
    publication_autocreate: Literal["filtered", "all_tables", "disabled"] = "filtered"
    snapshot: Literal["initial", "never", "initial_only", "when_needed"] = "initial"
    snapshot_fetch_size: int = Field(2000, ge=1, le=1_000_000)
    heartbeat_interval: float = Field(10.0, ge=0, description="seconds; 0 disables heartbeats")
    heartbeat_action_query: str | None = None
    decimal_handling_mode: Literal["precise", "string", "double"] = "precise"
    lag_warning_bytes: int = Field(1 << 30, ge=0)
    status_interval: float = Field(10.0, ge=1, description="seconds between standby status messages")
    # sqlite
    path: str | None = None
    poll_interval: float = Field(0.2, gt=0)
    changelog_table: str = "_strangler_changelog"
    install_triggers: bool = True
    # both
    table_include: list[str] = Field(default_factory=list)
    table_exclude: list[str] = Field(default_factory=list)
    column_exclude: list[str] = Field(default_factory=list)
    tombstones_on_delete: bool = True
    skipped_operations: list[Literal["c", "u", "d", "t"]] = Field(default_factory=list)

    @field_validator("table_include", "table_exclude", "column_exclude")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return patterns

    @field_validator("slot", "publication")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _IDENTIFIER.fullmatch(value):
            raise ValueError(f"expected lower-case letters, digits and '_' (at most 63), got {value!r}")
        return value

    @model_validator(mode="after")
    def _kind_keys(self) -> SourceConfig:
        _only(self.kind, self.model_fields_set, "postgres", _POSTGRES_ONLY)
        _only(self.kind, self.model_fields_set, "sqlite", _SQLITE_ONLY)
        if self.kind == "postgres" and not self.dsn:
            raise ValueError("a postgres source needs 'dsn'")
        if self.kind == "sqlite":
            if not self.path:
                raise ValueError("a sqlite source needs 'path' (the database file)")
            if self.snapshot not in ("initial", "never"):
                raise ValueError("a sqlite source takes snapshot: initial or never")
            if not _IDENTIFIER.fullmatch(self.changelog_table):
                raise ValueError(f"changelog_table: expected an identifier, got {self.changelog_table!r}")
        return self


_POSTGRES_ONLY = {
    "dsn", "slot", "publication", "create_slot", "publication_autocreate", "snapshot_fetch_size",
    "heartbeat_action_query", "decimal_handling_mode", "lag_warning_bytes", "status_interval",
}
_SQLITE_ONLY = {"path", "poll_interval", "changelog_table", "install_triggers"}


class SinkConfig(Model):
    kind: Literal["kafka", "jsonl"]
    topic_prefix: str | None = Field(None, description="default: the connector's name")
    schemas: bool = Field(False, description="JSON with schema ({schema, payload}) instead of schemaless JSON")
    # kafka
    bootstrap_servers: str | None = None
    producer: dict[str, str | int | float | bool] = Field(default_factory=dict)
    create_topics: bool = True
    topic_partitions: int = Field(1, ge=1)
    topic_replication_factor: int = Field(-1, description="-1: the broker's default")
    heartbeat_topic_prefix: str = "__debezium-heartbeat"
    # jsonl
    path: str = Field("-", description="file to append to, '-' for standard output")
    fsync: bool = False

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix(cls, value: str | None) -> str | None:
        if value is not None and not _TOPIC.fullmatch(value):
            raise ValueError(f"expected letters, digits, '.', '_' or '-', got {value!r}")
        return value

    @model_validator(mode="after")
    def _kind_keys(self) -> SinkConfig:
        _only(self.kind, self.model_fields_set, "kafka", {"bootstrap_servers", "producer", "create_topics",
                                                          "topic_partitions", "topic_replication_factor",
                                                          "heartbeat_topic_prefix"})
        _only(self.kind, self.model_fields_set, "jsonl", {"path", "fsync"})
        if self.kind == "kafka":
            if not self.bootstrap_servers:
                raise ValueError("a kafka sink needs 'bootstrap_servers'")
            unsafe_producer_settings(self.producer)
        return self


def unsafe_producer_settings(settings: dict[str, str | int | float | bool]) -> None:
    """Raise ValueError naming the first producer setting that could lose data."""
    for key, value in settings.items():
        text = str(value).lower()
        if key in _REQUIRED_PRODUCER and text not in _REQUIRED_PRODUCER[key]:
            wanted = " or ".join(sorted(_REQUIRED_PRODUCER[key]))
            raise ValueError(f"producer.{key}: {value!r} can lose acknowledged changes; it must be {wanted}")
        if key in _REFUSED_PRODUCER:
            raise ValueError(f"producer.{key} cannot be set: {_REFUSED_PRODUCER[key]}")
        if key in ("retries", "message.send.max.retries") and text == "0":
            raise ValueError(f"producer.{key}: 0 turns a transient broker error into a lost batch")
        if key == "max.in.flight.requests.per.connection" and text.isdigit() and int(text) > 5:
            raise ValueError(f"producer.{key}: more than 5 breaks ordering with the idempotent producer")


class ConnectorConfig(Model):
    source: SourceConfig
    sink: SinkConfig
    confirm_interval: float = Field(1.0, gt=0, description="seconds between confirmations to the source")
    max_in_flight: int = Field(50_000, ge=1, description="events sent but not yet acknowledged, at most")
    batch_size: int = Field(5000, ge=1, description="changes read from the source per step")
    retry_max_wait: float = Field(30.0, gt=0, description="longest back-off between reconnection attempts")
    state_path: str | None = Field(None, description="default: <cdc.state_dir>/<connector>.json")
    map_domain_events: bool = Field(
        False, description="map this connector's changes to domain events in-process, with the rules of "
                           "cdc.domain_events, published to cdc.domain_events.publish; the source advances only "
                           "past changes whose domain events (and change events) are acknowledged")
    publish_change_events: bool = Field(
        True, description="send the change events to the sink; false (with map_domain_events) publishes only "
                          "the domain events and dead letters")

    @model_validator(mode="after")
    def _outputs(self) -> ConnectorConfig:
        if not self.publish_change_events and not self.map_domain_events:
            raise ValueError("publish_change_events: false needs map_domain_events: true, or the connector "
                             "publishes nothing")
        return self


class CdcConfig(Model):
    connectors: dict[str, ConnectorConfig] = Field(default_factory=dict)
    state_dir: str = ".strangler/cdc"
    metrics_listen: str | None = Field(None, description="HOST:PORT serving /metrics and /healthz")
    domain_events: DomainEventsConfig | None = Field(None, description="change events -> domain events (events/)")

    @field_validator("connectors")
    @classmethod
    def _names(cls, connectors: dict[str, ConnectorConfig]) -> dict[str, ConnectorConfig]:
        for name in connectors:
            if not _TOPIC.fullmatch(name):
                raise ValueError(f"connector name {name!r}: expected letters, digits, '.', '_' or '-'")
        return connectors

    @model_validator(mode="after")
    def _mapping(self) -> CdcConfig:
        for name, connector in self.connectors.items():
            if not connector.map_domain_events:
                continue
            if self.domain_events is None:
                raise ValueError(f"connectors.{name}.map_domain_events: cdc.domain_events is not configured")
            if self.domain_events.publish is None:
                raise ValueError(f"connectors.{name}.map_domain_events: cdc.domain_events.publish is not "
                                 "configured (where the domain events go)")
        return self

    @field_validator("metrics_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            from strangler.gateway.config import parse_listen

            parse_listen(value)
        return value


def _only(actual: str, given: set[str], kind: str, keys: set[str]) -> None:
    """A key of another kind than the model's is an error, like an unknown key."""
    stray = sorted(keys & given) if actual != kind else []
    if stray:
        raise ValueError(f"{', '.join(stray)}: only for kind {kind!r} (this one is {actual!r})")
