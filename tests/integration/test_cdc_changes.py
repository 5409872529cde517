"""Change events from a real PostgreSQL: every operation, both replica identities, TOAST, schema changes, an
idle slot that keeps moving; and the whole connector to a real Kafka-protocol broker."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from strangler.cdc.values import UNAVAILABLE
from tests.integration.cdc_inprocess import count, open_source, read_events
from tests.integration.cdc_support import (
    CdcProcess,
    confirmed_lsn,
    connector_config,
    consume_events,
    eventually,
    execute,
    wal_lsn,
)
from tests.support.kafka import TansuBroker
from tests.support.postgres import PostgresDatabase

pytestmark = pytest.mark.integration


def ops(events: list) -> list[str]:  # type: ignore[type-arg]
    return [value["op"] if value else "tombstone" for _, _, value, _ in events]


@pytest.fixture
def customers(pg_database: PostgresDatabase) -> str:
    execute(pg_database.dsn, "CREATE TABLE customers (id int PRIMARY KEY, name text, points int)")
    return pg_database.dsn


def test_default_identity(customers: str, tmp_path: Path) -> None:
    source = open_source(customers, tmp_path / "s.json", snapshot="never")
    try:
        execute(customers, "INSERT INTO customers VALUES (1, 'ann', 10)",
                "UPDATE customers SET points = 11 WHERE id = 1",
                "UPDATE customers SET id = 2 WHERE id = 1",
                "DELETE FROM customers WHERE id = 2")
        events = read_events(source, count(7))
    finally:
        source.close()
    assert ops(events) == ["c", "u", "d", "tombstone", "c", "d", "tombstone"]
    create, update, key_delete, key_tombstone, key_create, delete, tombstone = events
    assert create[1] == {"id": 1} and create[2]["after"] == {"id": 1, "name": "ann", "points": 10}
    assert update[2]["before"] is None and update[2]["after"]["points"] == 11
    # the key change: delete of the old key (before = the old key only), its tombstone, create of the new key
    assert key_delete[1] == {"id": 1} and key_delete[2]["before"] == {"id": 1, "name": None, "points": None}
    assert key_delete[3] == [("__debezium.newkey", b'{"id":2}')]
    assert key_tombstone[1] == {"id": 1} and key_tombstone[2] is None
    assert key_create[1] == {"id": 2} and key_create[2]["after"] == {"id": 2, "name": "ann", "points": 11}
    assert key_create[3] == [("__debezium.oldkey", b'{"id":1}')]
    assert delete[1] == {"id": 2} and delete[2]["before"] == {"id": 2, "name": None, "points": None}
    assert tombstone[1] == {"id": 2} and tombstone[2] is None
    # one transaction each, in commit order, each change at its own LSN
    tx_ids = [e[2]["source"]["txId"] for e in events if e[2]]
    assert tx_ids == sorted(tx_ids) and len(set(tx_ids)) == 4
    lsns = [e[2]["source"]["lsn"] for e in events if e[2]]
    assert lsns == sorted(lsns)


def test_full_identity_has_the_whole_old_row(customers: str, tmp_path: Path) -> None:
    execute(customers, "ALTER TABLE customers REPLICA IDENTITY FULL", "INSERT INTO customers VALUES (1, 'ann', 10)")
    source = open_source(customers, tmp_path / "s.json", snapshot="never")
    try:
        execute(customers, "UPDATE customers SET points = 11 WHERE id = 1",
                "UPDATE customers SET id = 2 WHERE id = 1", "DELETE FROM customers WHERE id = 2")
        events = read_events(source, count(6))
    finally:
        source.close()
    assert ops(events) == ["u", "d", "tombstone", "c", "d", "tombstone"]
    assert events[0][2]["before"] == {"id": 1, "name": "ann", "points": 10}
    assert events[1][2]["before"] == {"id": 1, "name": "ann", "points": 11}
    assert events[4][2]["before"] == {"id": 2, "name": "ann", "points": 11}


def test_truncate_and_tombstones_off(customers: str, tmp_path: Path) -> None:
    execute(customers, "CREATE TABLE orders (id int PRIMARY KEY)")
    source = open_source(customers, tmp_path / "s.json", snapshot="never", tombstones_on_delete=False)
    try:
        execute(customers, "INSERT INTO customers VALUES (1, 'a', 1)", "DELETE FROM customers",
                "INSERT INTO orders VALUES (1)", "TRUNCATE customers, orders")
        events = read_events(source, count(5))
    finally:
        source.close()
    assert ops(events) == ["c", "d", "c", "t", "t"]
    truncates = {topic: (key, value["before"], value["after"]) for topic, key, value, _ in events[3:]}
    assert truncates == {"legacy.public.customers": (None, None, None), "legacy.public.orders": (None, None, None)}


def test_unchanged_toast_values_are_the_placeholder(customers: str, tmp_path: Path) -> None:
    big = os.urandom(6000).hex()  # incompressible: stored out of line
    execute(customers, f"INSERT INTO customers VALUES (1, '{big}', 1)")
    source = open_source(customers, tmp_path / "s.json", snapshot="never")
    try:
        execute(customers, "UPDATE customers SET points = 2 WHERE id = 1",
                "UPDATE customers SET name = 'short', points = 3 WHERE id = 1")
        events = read_events(source, count(2))
    finally:
        source.close()
    assert events[0][2]["after"] == {"id": 1, "name": UNAVAILABLE, "points": 2}
    assert events[1][2]["after"] == {"id": 1, "name": "short", "points": 3}


def test_columns_added_and_dropped_while_streaming(customers: str, tmp_path: Path) -> None:
    source = open_source(customers, tmp_path / "s.json", snapshot="never",
                         column_exclude=["public\\.customers\\.secret"])
    try:
        execute(customers, "INSERT INTO customers VALUES (1, 'a', 1)",
                "ALTER TABLE customers ADD COLUMN email text, ADD COLUMN secret text",
                "INSERT INTO customers VALUES (2, 'b', 2, 'b@example.com', 'pw')",
                "ALTER TABLE customers DROP COLUMN points", "INSERT INTO customers VALUES (3, 'c', 'c@x', 'pw')")
        events = read_events(source, count(3))
    finally:
        source.close()
    assert [e[2]["after"] for e in events] == [
        {"id": 1, "name": "a", "points": 1},
        {"id": 2, "name": "b", "points": 2, "email": "b@example.com"},
        {"id": 3, "name": "c", "email": "c@x"},
    ]


def test_an_idle_slot_advances_while_other_tables_change(customers: str, tmp_path: Path) -> None:
    execute(customers, "CREATE TABLE audit (id serial PRIMARY KEY, note text)")
    source = open_source(customers, tmp_path / "s.json", snapshot="never", status_interval=1,
                         table_include=["public\\.customers"], heartbeat_action_query="SELECT 1")
    try:
        execute(customers, "INSERT INTO customers VALUES (1, 'a', 1)")
        read_events(source, count(1))
        start = confirmed_lsn(customers)
        execute(customers, *["INSERT INTO audit (note) SELECT repeat('x', 1000) FROM generate_series(1, 200)"] * 5)
        after_writes = wal_lsn(customers)
        assert start is not None and after_writes > start
        source.heartbeat(0)

        def moved() -> bool:
            assert source.read(100, 0.2) == []  # nothing for the captured table, only keepalives
            current = confirmed_lsn(customers)
            return current is not None and current >= after_writes

        eventually(moved, 20, "the slot to advance past the writes to an uncaptured table")
        assert source.status.lag_bytes is not None
    finally:
        source.close()


def test_the_connector_to_kafka(pg_database: PostgresDatabase, kafka_broker: TansuBroker, tmp_path: Path) -> None:
    kafka_broker.start()
    dsn = pg_database.dsn
    prefix = f"legacy.crm-{uuid.uuid4().hex[:8]}"  # the broker is shared by the session's tests
    execute(dsn, "CREATE TABLE customers (id int PRIMARY KEY, name text)", "INSERT INTO customers VALUES (1, 'ann')")
    config = connector_config(
        {"kind": "postgres", "dsn": dsn, "heartbeat_interval": 0.5},
        {"kind": "kafka", "bootstrap_servers": kafka_broker.bootstrap_servers, "topic_prefix": prefix},
        tmp_path,
    )
    process = CdcProcess(config, tmp_path).start()
    try:
        eventually(lambda: (process.metric("strangler_cdc_acknowledged_total") or 0) >= 1, 60, "the snapshot",
                   process)
        execute(dsn, "UPDATE customers SET name = 'anne' WHERE id = 1", "DELETE FROM customers WHERE id = 1")
        events = consume_events(kafka_broker.bootstrap_servers, f"{prefix}.public.customers", expected=4)
        heartbeats = consume_events(kafka_broker.bootstrap_servers, f"__debezium-heartbeat.{prefix}", expected=1)
        series = 'strangler_cdc_events_total{{connector="legacy",op="{}",table="public.customers"}}'
        eventually(lambda: process.metric(series.format("d")) == 1, 10, "the metrics", process)
        snapshot_rows, deletes = process.metric(series.format("r")), process.metric(series.format("d"))
        lag_bytes = process.metric("strangler_cdc_lag_bytes")
        assert process.terminate() == 0
    finally:
        process.stop()
    assert [(k, v["op"] if v else None) for k, v in events] == [({"id": 1}, "r"), ({"id": 1}, "u"),
                                                                 ({"id": 1}, "d"), ({"id": 1}, None)]
    assert events[1][1]["after"] == {"id": 1, "name": "anne"}
    assert heartbeats[0][0] == {"serverName": prefix} and heartbeats[0][1]["ts_ms"] > 0
    assert (snapshot_rows, deletes) == (1, 1)  # events by table and op (the tombstone is not an event)
    assert lag_bytes is not None and lag_bytes >= 0  # refreshed by the heartbeat
