"""Debezium-shaped change events for the mapping tests (PostgreSQL connector, schemaless JSON)."""

from __future__ import annotations

from typing import Any

COMMIT_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z


def change(
    op: str,
    after: dict[str, Any] | None = None,
    before: dict[str, Any] | None = None,
    *,
    table: str = "customers",
    schema: str = "public",
    lsn: int = 1000,
    ts_ms: int = COMMIT_MS,
) -> dict[str, Any]:
    return {
        "before": before,
        "after": after,
        "source": {
            "version": "2.7.0.Final", "connector": "postgresql", "name": "legacy.crm", "ts_ms": ts_ms,
            "ts_us": ts_ms * 1000, "snapshot": "false", "db": "crm", "sequence": f'["{lsn - 8}","{lsn}"]',
            "schema": schema, "table": table, "txId": 771, "lsn": lsn, "xmin": None,
        },
        "op": op,
        "ts_ms": ts_ms + 5,
        "ts_us": (ts_ms + 5) * 1000,
        "transaction": None,
    }


def customer(**columns: Any) -> dict[str, Any]:
    row = {"id": 42, "name": "Ada", "status": "active", "corr_street": "1 Main St", "corr_city": "Springfield",
           "corr_zip": "12345", "address_valid_from": 19700, "correlation_id": "req-1", "tier": 2}
    row.update(columns)
    return row
