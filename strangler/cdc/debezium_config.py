"""`strangler cdc debezium-config`: the Kafka Connect configuration that runs real Debezium
(io.debezium.connector.postgresql.PostgresConnector, 2.6 or later) on the same slot, publication, tables and
rendering options, so that a team can choose either engine and keep everything downstream."""

from __future__ import annotations

from typing import Any

from psycopg.conninfo import conninfo_to_dict

from strangler.cdc.config import ConnectorConfig
from strangler.cdc.errors import CdcError

_SNAPSHOT_MODES = {"initial": "initial", "never": "no_data", "initial_only": "initial_only",
                   "when_needed": "when_needed"}
JSON_CONVERTER = "org.apache.kafka.connect.json.JsonConverter"
PASSWORD_REFERENCE = "${env:PGPASSWORD}"


def debezium_config(name: str, connector: ConnectorConfig, *, show_secrets: bool = False) -> dict[str, Any]:
    source, sink = connector.source, connector.sink
    if source.kind != "postgres":
        raise CdcError(f"connector {name!r} reads {source.kind}: Debezium has no connector for it")
    try:
        dsn = conninfo_to_dict(str(source.dsn))
    except Exception as exc:  # noqa: BLE001 - psycopg's parse error, reported with the key
        raise CdcError(f"cdc.connectors.{name}.source.dsn cannot be parsed: {exc}") from None
    config: dict[str, Any] = {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "plugin.name": "pgoutput",
        "database.hostname": str(dsn.get("host", "localhost")),
        "database.port": str(dsn.get("port", "5432")),
        "database.user": str(dsn.get("user", "postgres")),
        "database.dbname": str(dsn.get("dbname", dsn.get("user", "postgres"))),
        "topic.prefix": sink.topic_prefix or name,
        "slot.name": source.slot,
        "publication.name": source.publication,
        "publication.autocreate.mode": source.publication_autocreate,
        "snapshot.mode": _SNAPSHOT_MODES[source.snapshot],
        "snapshot.fetch.size": str(source.snapshot_fetch_size),
        "tombstones.on.delete": str(source.tombstones_on_delete).lower(),
        "decimal.handling.mode": source.decimal_handling_mode,
        "time.precision.mode": "adaptive",
        "interval.handling.mode": "numeric",
        "binary.handling.mode": "bytes",
        "skipped.operations": ",".join(source.skipped_operations) or "none",
        "heartbeat.interval.ms": str(int(source.heartbeat_interval * 1000)),
        "status.update.interval.ms": str(int(source.status_interval * 1000)),
        "key.converter": JSON_CONVERTER,
        "key.converter.schemas.enable": str(sink.schemas).lower(),
        "value.converter": JSON_CONVERTER,
        "value.converter.schemas.enable": str(sink.schemas).lower(),
    }
    if "password" in dsn:
        config["database.password"] = str(dsn["password"]) if show_secrets else PASSWORD_REFERENCE
    if "sslmode" in dsn:
        config["database.sslmode"] = str(dsn["sslmode"])
    if source.heartbeat_interval > 0 and sink.kind == "kafka":
        config["topic.heartbeat.prefix"] = sink.heartbeat_topic_prefix
    if source.heartbeat_action_query:
        config["heartbeat.action.query"] = source.heartbeat_action_query
    for key, values in (("table.include.list", source.table_include), ("table.exclude.list", source.table_exclude),
                        ("column.exclude.list", source.column_exclude)):
        if values:
            config[key] = ",".join(values)
    return {"name": name, "config": config}
