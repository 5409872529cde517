"""Kafka Connect schemas of change events, for the JSON-with-schema form (`{"schema": ..., "payload": ...}`),
as Debezium's PostgreSQL connector declares them."""

from __future__ import annotations

from typing import Any

from strangler.cdc.tables import CapturedTable

_SNAPSHOT_ALLOWED = "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"


def _field(column_schema: dict[str, Any], name: str, optional: bool) -> dict[str, Any]:
    return {**column_schema, "optional": optional, "field": name}


def _source_fields(connector: str) -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = [
        {"type": "string", "optional": False, "field": "version"},
        {"type": "string", "optional": False, "field": "connector"},
        {"type": "string", "optional": False, "field": "name"},
        {"type": "int64", "optional": False, "field": "ts_ms"},
        {"type": "int64", "optional": True, "field": "ts_us"},
        {"type": "string", "optional": True, "name": "io.debezium.data.Enum", "version": 1,
         "parameters": {"allowed": _SNAPSHOT_ALLOWED}, "default": "false", "field": "snapshot"},
        {"type": "string", "optional": False, "field": "db"},
        {"type": "string", "optional": True, "field": "sequence"},
        {"type": "string", "optional": False, "field": "schema"},
        {"type": "string", "optional": False, "field": "table"},
        {"type": "int64", "optional": True, "field": "txId"},
    ]
    if connector == "postgresql":
        fields += [{"type": "int64", "optional": True, "field": "lsn"},
                   {"type": "int64", "optional": True, "field": "xmin"}]
    else:
        fields.append({"type": "int64", "optional": True, "field": "changelog_id"})
    return fields


def key_schema(table: CapturedTable, prefix: str) -> dict[str, Any]:
    by_name = {c.name: c for c in table.columns}
    return {
        "type": "struct",
        "fields": [_field(by_name[k].renderer.schema, k, False) for k in table.key],
        "optional": False,
        "name": f"{prefix}.{table.schema}.{table.name}.Key",
    }


def value_schema(table: CapturedTable, prefix: str, connector: str) -> dict[str, Any]:
    row = {
        "type": "struct",
        "fields": [_field(c.renderer.schema, c.name, c.optional) for c in table.columns],
        "optional": True,
        "name": f"{prefix}.{table.schema}.{table.name}.Value",
    }
    source_name = f"io.debezium.connector.{connector}.Source"
    return {
        "type": "struct",
        "fields": [
            {**row, "field": "before"},
            {**row, "field": "after"},
            {"type": "struct", "fields": _source_fields(connector), "optional": False, "name": source_name,
             "field": "source"},
            {"type": "string", "optional": False, "field": "op"},
            {"type": "int64", "optional": True, "field": "ts_ms"},
            {"type": "int64", "optional": True, "field": "ts_us"},
            {"type": "struct", "fields": [
                {"type": "string", "optional": False, "field": "id"},
                {"type": "int64", "optional": False, "field": "total_order"},
                {"type": "int64", "optional": False, "field": "data_collection_order"},
            ], "optional": True, "name": "event.block", "version": 1, "field": "transaction"},
        ],
        "optional": False,
        "name": f"{prefix}.{table.schema}.{table.name}.Envelope",
        "version": 2,
    }
