"""The connector killed with SIGKILL at random points while changes flow to a real Kafka-protocol broker:
afterwards every change is there, the slot never confirmed past what the broker acknowledged, and the
duplicates re-emitted after each restart are bounded by what was unconfirmed and reported (never over).

`STRANGLER_CDC_CRASH_CHANGES` sets the number of changes (default 20,000 to keep the suite short; the full run
is 50,000) and `STRANGLER_CDC_CRASH_KILLS` the number of kills (default 10)."""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from pathlib import Path

import orjson
import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from tests.integration.cdc_support import (
    CdcProcess,
    confirmed_lsn,
    connector_config,
    eventually,
    execute,
    slot_released,
)
from tests.support.kafka import TansuBroker
from tests.support.postgres import PostgresDatabase

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

CHANGES = int(os.environ.get("STRANGLER_CDC_CRASH_CHANGES", "20000"))
KILLS = int(os.environ.get("STRANGLER_CDC_CRASH_KILLS", "10"))
MAX_IN_FLIGHT = 5000


class Writer(threading.Thread):
    """Inserts (v = 0) and updates (v + 1) in transactions of 1-200 changes, about 1,500 changes a second;
    records each transaction's id, its changes and an LSN at or after its commit."""

    def __init__(self, dsn: str, total: int) -> None:
        super().__init__(daemon=True)
        self.dsn, self.total = dsn, total
        self.transactions: list[tuple[int, int, list[tuple[int, int]]]] = []  # (xid, lsn after commit, changes)
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(11)
        versions: dict[int, int] = {}
        written = 0
        started = time.monotonic()
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while written < self.total:
                    changes = []
                    with conn.transaction():
                        xid = int(conn.execute("SELECT txid_current()").fetchone()[0])  # type: ignore[index]
                        for _ in range(min(rng.randint(1, 200), self.total - written)):
                            if not versions or rng.random() < 0.5:
                                key = len(versions) + 1
                                versions[key] = 0
                                conn.execute("INSERT INTO t VALUES (%s, 0)", (key,))
                            else:
                                key = rng.randint(1, len(versions))
                                versions[key] += 1
                                conn.execute("UPDATE t SET v = %s WHERE id = %s", (versions[key], key))
                            changes.append((key, versions[key]))
                    lsn = int(conn.execute("SELECT (pg_current_wal_lsn() - '0/0')::bigint").fetchone()[0])  # type: ignore[index]
                    self.transactions.append((xid, lsn, changes))
                    written += len(changes)
                    ahead = written / 1500 - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


class TopicTail:
    """Every record of a single-partition topic, read incrementally by direct assignment."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"tail-{uuid.uuid4().hex}",
                                  "enable.auto.commit": False, "enable.partition.eof": True,
                                  "fetch.wait.max.ms": 50})
        self.consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self.records: list[tuple[int, int, int]] = []  # (id, v, txId) of every data record, duplicates included

    def drain(self, timeout: float = 60, quiet: float = 1.5) -> None:
        """Read until nothing new arrived for `quiet` seconds: this broker reports the end of a partition a
        little before the last acknowledged records can be read, so the end alone is not enough."""
        deadline = time.monotonic() + timeout
        quiet_until = time.monotonic() + quiet
        while time.monotonic() < deadline:
            if time.monotonic() >= quiet_until:
                return
            message = self.consumer.poll(0.1)
            if message is None:
                continue
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(f"consuming: {message.error()}")
            quiet_until = time.monotonic() + quiet
            value = message.value()
            if value is not None:
                event = orjson.loads(value)
                self.records.append((event["after"]["id"], event["after"]["v"], event["source"]["txId"]))
        raise AssertionError("timed out reading the topic")


def test_sigkill_at_random_points_loses_nothing(pg_database: PostgresDatabase, kafka_broker: TansuBroker,
                                                tmp_path: Path) -> None:
    kafka_broker.start()
    dsn = pg_database.dsn
    execute(dsn, "CREATE TABLE t (id bigint PRIMARY KEY, v int NOT NULL)")
    prefix = f"crash-{uuid.uuid4().hex[:8]}"  # the broker is shared by the session's tests
    topic = kafka_broker.create_topic(f"{prefix}.public.t")
    config = connector_config(
        {"kind": "postgres", "dsn": dsn, "snapshot": "never", "heartbeat_interval": 0},
        {"kind": "kafka", "bootstrap_servers": kafka_broker.bootstrap_servers, "topic_prefix": prefix}, tmp_path,
        confirm_interval=0.5, max_in_flight=MAX_IN_FLIGHT,
    )
    process = CdcProcess(config, tmp_path).start()
    eventually(lambda: (process.health() or {}).get("healthy"), 60, "the first start", process)
    writer = Writer(dsn, CHANGES)
    writer.start()
    tail = TopicTail(kafka_broker.bootstrap_servers, topic)
    rng = random.Random(5)
    bound = reported = 0
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.2, 2.0))
            reported += int(process.metric("strangler_cdc_duplicates_total") or 0)
            process.kill()
            eventually(lambda: slot_released(dsn), 30, "the slot to be released")
            confirmed = confirmed_lsn(dsn)
            assert confirmed is not None
            committed = list(writer.transactions)  # a superset of what the killed process could have read
            must_have = {c for _, lsn, changes in committed if lsn <= confirmed for c in changes}

            def confirmed_changes_present(must_have: set[tuple[int, int]] = must_have) -> bool:
                # committed at or before the confirmed position: all of them must be in the topic (read again
                # for a while if not: the broker makes acknowledged records readable with some delay)
                tail.drain()
                return must_have <= {(i, v) for i, v, _ in tail.records}

            eventually(confirmed_changes_present, 20, f"every change confirmed at {confirmed} in the topic")
            # what a restart may send again: at most the changes of every transaction committed but unconfirmed
            bound += sum(len(changes) for _, lsn, changes in committed if lsn > confirmed)
            process.start()
            eventually(lambda: (process.health() or {}).get("healthy"), 60, "a restart", process)
        writer.join(120)
        assert writer.error is None and not writer.is_alive()
        expected = {c for _, _, changes in writer.transactions for c in changes}
        assert len(expected) == CHANGES

        def all_present() -> bool:
            tail.drain()
            return expected <= {(i, v) for i, v, _ in tail.records}

        eventually(all_present, 120, "every change in the topic", process)
        eventually(lambda: (process.metric("strangler_cdc_in_flight") == 0), 30, "nothing in flight", process)
        time.sleep(0.6)  # one metrics fold
        reported += int(process.metric("strangler_cdc_duplicates_total") or 0)
        assert process.terminate() == 0  # SIGTERM flushes and confirms
        assert (confirmed_lsn(dsn) or 0) >= writer.transactions[-1][1] - 1024 * 1024
    except BaseException:
        print(f"connector log:\n{process.log()}")  # the reason, when a kill or a restart went wrong
        raise
    finally:
        process.stop()
        tail.consumer.close()
    duplicates = len(tail.records) - len({(i, v) for i, v, _ in tail.records})
    print(f"CRASH duplicates={duplicates} reported={reported} bound={bound} records={len(tail.records)}")
    assert {(i, v) for i, v, _ in tail.records} == expected
    assert duplicates <= bound, f"{duplicates} duplicates, more than the {bound} changes unconfirmed at the kills"
    assert reported <= duplicates, f"reported {reported} duplicates, only {duplicates} happened"
    assert duplicates == 0 or reported > 0, "duplicates happened and none was reported"
