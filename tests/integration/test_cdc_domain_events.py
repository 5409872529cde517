"""A connector mapping its changes to typed domain events in-process (`map_domain_events`), on a real
PostgreSQL and a real Kafka-protocol broker: events and dead letters published, the slot confirmed only
behind them; killed mid-run and restarted, no event is lost and the only duplicates are of the unconfirmed
tail, with the same event ids."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from tests.integration.cdc_support import (
    CdcProcess,
    confirmed_lsn,
    connector_config,
    consume_events,
    eventually,
    execute,
    slot_released,
)
from tests.support.kafka import TansuBroker, consume_all
from tests.support.postgres import PostgresDatabase

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TYPES = {"CustomerRegistered": {"payload": {"customer_id": "int", "name": "str", "tier": "int|null",
                                            "since": "date"}}}
RULE = {"table": "public.customers", "ops": ["c", "r"], "event": "CustomerRegistered", "aggregate_type": "customer",
        "key": "id", "payload": {"customer_id": "id", "name": "name", "tier": "tier", "since": "since"},
        "correlation_id": "correlation_id"}


def mapping_config(dsn: str, broker: TansuBroker, directory: Path, **connector: Any) -> tuple[dict[str, Any],
                                                                                              dict[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    names = {"prefix": f"legacy-{suffix}", "events": f"domain.customer-{suffix}", "dead": f"dead-{suffix}"}
    for topic in (f"{names['prefix']}.public.customers", names["events"], names["dead"]):
        broker.create_topic(topic)
    config = connector_config(
        {"kind": "postgres", "dsn": dsn, "snapshot": "never", "heartbeat_interval": 0},
        {"kind": "kafka", "bootstrap_servers": broker.bootstrap_servers, "topic_prefix": names["prefix"]},
        directory, map_domain_events=True, **connector)
    config["cdc"]["domain_events"] = {
        "source": "legacy.crm", "types": TYPES, "rules": [dict(RULE, topic=names["events"])],
        "dead_letter": {"topic": names["dead"]}, "publish": {"bootstrap_servers": broker.bootstrap_servers}}
    config["precedence"] = {"entities": {"customer": {"groups": {"all": {"fields": ["/*"], "authority": "legacy"}}}}}
    return config, names


def test_changes_become_typed_domain_events_and_dead_letters_in_process(
        pg_database: PostgresDatabase, kafka_broker: TansuBroker, tmp_path: Path) -> None:
    kafka_broker.start()
    dsn = pg_database.dsn
    execute(dsn, "CREATE TABLE customers (id int PRIMARY KEY, name text, tier int, since date, correlation_id text)")
    config, names = mapping_config(dsn, kafka_broker, tmp_path)
    process = CdcProcess(config, tmp_path).start()
    try:
        eventually(lambda: (process.health() or {}).get("healthy"), 60, "the start", process)
        execute(dsn, "INSERT INTO customers VALUES (1, 'Ada', 3, '2024-06-01', 'req-1'), "
                     "(2, 'Grace', NULL, '2024-06-02', NULL)",
                "INSERT INTO customers VALUES (3, NULL, 1, '2024-06-03', 'req-3')",  # name is required: dead letter
                "UPDATE customers SET tier = 4 WHERE id = 1",  # no rule for updates: nothing
                "DELETE FROM customers WHERE id = 2")
        end = _current_lsn(dsn)
        eventually(lambda: process.metric("strangler_cdc_mapped_total") == 5, 60, "five changes mapped", process)
        assert process.terminate() == 0
    finally:
        process.stop()
    events = [value for _, value in consume_events(kafka_broker.bootstrap_servers, names["events"], expected=2)]
    assert [(e["aggregate_id"], e["payload"]) for e in events] == [
        ("1", {"customer_id": 1, "name": "Ada", "tier": 3, "since": "2024-06-01"}),
        ("2", {"customer_id": 2, "name": "Grace", "tier": None, "since": "2024-06-02"}),
    ]
    first = events[0]
    assert (first["event_type"], first["event_version"], first["source"], first["correlation_id"]) == (
        "CustomerRegistered", 1, "legacy.crm", "req-1")
    assert int(first["sequence"]) > 0 and len({e["event_id"] for e in events}) == 2
    [(key, dead)] = consume_events(kafka_broker.bootstrap_servers, names["dead"], expected=1)
    assert key == {"id": 3} and "name" in dead["reason"] and dead["correlation_id"] == "req-3"
    assert dead["position"] == str(dead["value"]["source"]["lsn"])
    assert dead["source"] == {"connector": "legacy", "topic": f"{names['prefix']}.public.customers"}
    changes = consume_events(kafka_broker.bootstrap_servers, f"{names['prefix']}.public.customers", expected=6)
    assert [v["op"] if v else None for _, v in changes] == ["c", "c", "c", "u", "d", None]  # still published
    assert (confirmed_lsn(dsn) or 0) >= end - 1024 * 1024  # SIGTERM confirmed behind all of it


class EventTail:
    """Every record of a single-partition topic, read incrementally by direct assignment."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"tail-{uuid.uuid4().hex}",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 50})
        self.consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self.events: list[dict[str, Any]] = []

    def drain(self, quiet: float = 1.5, timeout: float = 60) -> list[dict[str, Any]]:
        deadline, quiet_until = time.monotonic() + timeout, time.monotonic() + quiet
        while time.monotonic() < quiet_until:
            assert time.monotonic() < deadline, "timed out reading the events"
            message = self.consumer.poll(0.1)
            if message is None:
                continue
            if message.error() is not None and message.error().code() != KafkaError._PARTITION_EOF:
                raise AssertionError(f"consuming: {message.error()}")
            if message.error() is None:
                self.events.append(orjson.loads(message.value()))
                quiet_until = time.monotonic() + quiet
        return self.events


def test_killed_mid_run_the_restart_loses_no_domain_event(
        pg_database: PostgresDatabase, kafka_broker: TansuBroker, tmp_path: Path) -> None:
    kafka_broker.start()
    dsn, total = pg_database.dsn, 6000
    execute(dsn, "CREATE TABLE customers (id int PRIMARY KEY, name text, tier int, since date, correlation_id text)")
    config, names = mapping_config(dsn, kafka_broker, tmp_path, publish_change_events=False, confirm_interval=0.3,
                                   max_in_flight=500, batch_size=200)
    process = CdcProcess(config, tmp_path).start()
    commits: list[tuple[int, list[int]]] = []  # (LSN at or after the commit, ids inserted)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                for start in range(1, total + 1, 50):
                    ids = list(range(start, start + 50))
                    conn.execute("INSERT INTO customers SELECT i, 'c' || i, i %% 5, date '2024-06-01', NULL "
                                 "FROM generate_series(%s::int, %s::int) AS i", (ids[0], ids[-1]))
                    # the insert position: the test clusters commit asynchronously, so the write position may
                    # still lie before this transaction's commit record
                    lsn = conn.execute("SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint").fetchone()[0]  # type: ignore[index]
                    commits.append((int(lsn), ids))
                    time.sleep(0.01)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    tail = EventTail(kafka_broker.bootstrap_servers, names["events"])
    try:
        eventually(lambda: (process.health() or {}).get("healthy"), 60, "the start", process)
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        eventually(lambda: errors or (process.metric("strangler_cdc_mapped_total") or 0) >= total // 4, 60,
                   "a quarter of the changes mapped", process)
        assert not errors, errors

        def some_commit_confirmed() -> bool:  # the slot's position trails the mapping by a confirm interval
            confirmed = confirmed_lsn(dsn) or 0
            return any(lsn <= confirmed for lsn, _ in list(commits))

        eventually(some_commit_confirmed, 60, "a transaction confirmed", process)
        process.kill()
        eventually(lambda: slot_released(dsn), 30, "the slot to be released")
        confirmed = confirmed_lsn(dsn) or 0
        confirmed_ids = {i for lsn, ids in list(commits) if lsn <= confirmed for i in ids}
        assert confirmed_ids, "nothing was confirmed before the kill"
        published = {e["payload"]["customer_id"] for e in tail.drain()}
        assert confirmed_ids <= published  # the slot never ran ahead of the acknowledged domain events
        unconfirmed_at_kill = published - confirmed_ids  # what a restart may publish again
        process.start()
        writer.join(120)
        assert not errors and not writer.is_alive()
        eventually(lambda: {e["payload"]["customer_id"] for e in tail.drain()} >= set(range(1, total + 1)), 120,
                   "every change's domain event", process)
        assert process.terminate() == 0
        events = tail.drain()
    finally:
        process.stop()
        tail.consumer.close()
    counts = Counter(e["payload"]["customer_id"] for e in events)
    assert set(counts) == set(range(1, total + 1))  # nothing lost
    duplicated = {i for i, n in counts.items() if n > 1}
    log = (tmp_path / "cdc.log").read_text(errors="replace")
    # a session that failed and reconnected (a broker hiccup) also re-sends what was unconfirmed at that time
    retries = log.count("retrying in")
    print(f"MAPPING killed at {len(published)} published, {len(confirmed_ids)} confirmed; "
          f"{len(duplicated)} duplicated, bound {len(unconfirmed_at_kill)}, {retries} session retries")
    assert len(published) < total  # the kill landed mid-run
    if retries == 0:
        assert duplicated <= unconfirmed_at_kill, log[-3000:]  # only the tail the slot had not confirmed
    assert max(counts.values()) <= 2 + retries
    ids_by_customer: dict[int, set[str]] = {}
    for event in events:
        ids_by_customer.setdefault(event["payload"]["customer_id"], set()).add(event["event_id"])
    assert all(len(ids) == 1 for ids in ids_by_customer.values())  # a replayed change keeps its event id
    assert consume_all(kafka_broker.bootstrap_servers, names["dead"]) == []
    changes = consume_all(kafka_broker.bootstrap_servers, f"{names['prefix']}.public.customers")
    assert changes == []  # publish_change_events: false


def _current_lsn(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return int(conn.execute("SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint").fetchone()[0])  # type: ignore[index]
