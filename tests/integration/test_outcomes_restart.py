"""The outcome comparison across a crash and a store outage.

`strangler serve` takes the legacy side's events from the broker and is killed (SIGKILL) while they wait for
the new side's; started again, it joins them with the new side's events published after the restart.
Nothing waiting is forgotten (no `missing`), the events the broker delivers again (those after the last
committed offset) give no second outcome, every change's journey in the maturity ledger ends `reconciled`,
and the offsets committed before the kill never run ahead of what the store held. While the store is down
no offset is committed; the events taken meanwhile are written, then committed, when it is back.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from strangler.maturity.store import changes_table
from strangler.shadow.outcome_service import NOT_COMMITTING
from strangler.shadow.outcome_store import pending_table, seen_table
from strangler.shadow.store import comparisons_table
from strangler.store import create_store_engine
from tests.support.gateway import GatewayProcess, children_of
from tests.support.kafka import TansuBroker
from tests.support.postgres import PostgresDatabase

pytestmark = pytest.mark.integration

EVENTS = 1000


def domain_event(side: str, customer: int, cid: str) -> bytes:
    now = dt.datetime.now(dt.UTC).isoformat()
    return orjson.dumps({
        "event_id": f"{side}-{cid}", "event_type": "CustomerAddressChanged", "event_version": 1,
        "aggregate_type": "customer", "aggregate_id": str(customer), "event_time": now, "effective_time": None,
        "processing_time": now, "source": f"{side}.crm", "sequence": cid, "correlation_id": cid,
        "causation_id": None, "payload": {"customer_id": customer, "street": f"{customer} Main St"},
    })


def publish(bootstrap: str, topic: str, side: str, cids: list[str], partitions: int = 1) -> None:
    """Each event to the partition `customer % partitions`: both sides' events of a customer in the same."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    errors: list[Any] = []
    for cid in cids:
        customer = int(cid.split("-")[1])
        producer.produce(topic, domain_event(side, customer, cid), str(customer).encode(),
                         partition=customer % partitions,
                         on_delivery=lambda err, msg: errors.append(err) if err else None)
    if producer.flush(30) or errors:
        raise KafkaException(f"cannot publish to {topic}: {errors}")


def committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return max(int(tp.offset), 0)  # none yet (-1001): nothing is committed
    finally:
        consumer.close()


def count(engine: Engine, query: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)


def outcomes(engine: Engine) -> list[tuple[str, str]]:
    t = comparisons_table
    with engine.connect() as conn:
        return [(r.outcome, r.correlation_id) for r in conn.execute(
            select(t.c.outcome, t.c.correlation_id).where(t.c.kind == "outcome").order_by(t.c.id))]


def eventually(probe: Callable[[], Any], timeout: float, what: str, gateway: GatewayProcess) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if gateway.process is not None and gateway.process.poll() is not None:
            raise AssertionError(f"strangler serve exited {gateway.process.returncode}:\n{gateway.log()}")
        last = probe()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})\n{gateway.log()[-3000:]}")


def gateway_config(bootstrap: str, store: str, legacy_topic: str, new_topic: str, group: str,
                   window: float = 600) -> dict[str, Any]:
    return {
        "workers": 1,
        "store": store,
        "upstreams": {"legacy": {"url": "http://127.0.0.1:9"}},
        "default_upstream": "legacy",
        "precedence": {"entities": {"customer": {"groups": {"all": {"fields": ["/*"], "authority": "legacy"}}}}},
        "outcomes": {"window": window, "kafka": {
            "bootstrap_servers": bootstrap, "legacy_topics": [legacy_topic], "new_topics": [new_topic],
            "group_id": group,
            # the restart's join waits for the killed member up to its rebalance timeout on this broker
            "settings": {"max.poll.interval.ms": 15000}}},
    }


def topics(broker: TansuBroker, partitions: int = 1) -> tuple[str, str, str]:
    """A legacy topic, a new topic and a consumer group of their own: the tests share one broker."""
    suffix = uuid.uuid4().hex[:8]
    return (broker.create_topic(f"domain.customer-{suffix}", partitions=partitions),
            broker.create_topic(f"new.customer-{suffix}", partitions=partitions), f"outcomes-{suffix}")


def kill(gateway: GatewayProcess) -> None:
    """SIGKILL the serve process (the admin part, where the comparison runs) and its workers."""
    pids = [gateway.pid, *children_of(gateway.pid)]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert gateway.process is not None
    gateway.process.wait(10)


def test_events_waiting_at_a_crash_join_their_partners_after_the_restart_once_each(
    kafka_broker: TansuBroker, pg_database: PostgresDatabase, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    legacy_topic, new_topic, group = topics(kafka_broker)
    config = gateway_config(bootstrap, pg_database.url(), legacy_topic, new_topic, group)
    engine = create_store_engine(pg_database.url())
    cids = [f"req-{i}" for i in range(1, EVENTS + 1)]
    last = f"req-{EVENTS + 1}"
    first = GatewayProcess(config, tmp_path / "first").start()
    try:
        half = EVENTS // 2
        publish(bootstrap, legacy_topic, "legacy", cids[:half])
        publish(bootstrap, new_topic, "new", cids[:10])  # these pair before the crash
        eventually(lambda: committed(bootstrap, group, legacy_topic) > 0, 60, "a first commit", first)
        publish(bootstrap, legacy_topic, "legacy", cids[half:])
        eventually(lambda: count(engine, select(func.count()).select_from(pending_table)) > half - 10,
                   60, "legacy events of the second half waiting in the store", first)
        kill(first)
    finally:
        first.stop()
    # what the crash left: the offsets committed never run ahead of the events the store holds
    seen_legacy = count(engine, select(func.count()).select_from(seen_table).where(seen_table.c.side == "legacy"))
    assert committed(bootstrap, group, legacy_topic) <= seen_legacy
    assert committed(bootstrap, group, new_topic) <= count(
        engine, select(func.count()).select_from(seen_table).where(seen_table.c.side == "new"))
    waiting_at_crash = count(engine, select(func.count()).select_from(pending_table))
    assert waiting_at_crash > EVENTS // 2 - 10 and committed(bootstrap, group, legacy_topic) > 0
    assert all(kind == "match" for kind, _ in outcomes(engine))

    second = GatewayProcess(config, tmp_path / "second").start(timeout=60)
    try:
        publish(bootstrap, new_topic, "new", cids[10:])
        # a last pair after everything else in both topics: once it is joined, every event before it,
        # re-delivered ones included, has been taken
        publish(bootstrap, legacy_topic, "legacy", [last])
        publish(bootstrap, new_topic, "new", [last])
        eventually(lambda: ("match", last) in outcomes(engine), 120, "the last pair to join", second)
        eventually(lambda: len(outcomes(engine)) >= EVENTS + 1, 60, "every pair to be joined", second)
    finally:
        assert second.stop() == 0, second.log()
    results = outcomes(engine)
    assert sorted(cid for _, cid in results) == sorted([*cids, last])  # each pair once: no duplicates
    assert {kind for kind, _ in results} == {"match"}  # nothing waiting was forgotten (no `missing`)
    assert count(engine, select(func.count()).select_from(pending_table)) == 0
    # each change's journey reached `reconciled`, written with its outcome
    assert count(engine, select(func.count()).select_from(changes_table).where(
        changes_table.c.reconciled_at.is_not(None), changes_table.c.exception_at.is_(None))) == EVENTS + 1
    assert "Traceback" not in second.log()
    engine.dispose()


def test_while_the_store_is_down_no_offset_is_committed_and_the_events_are_written_when_it_is_back(
    kafka_broker: TansuBroker, pg_database: PostgresDatabase, pg_cluster: Any, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    legacy_topic, new_topic, group = topics(kafka_broker)
    engine = create_store_engine(pg_database.url())
    cids = [f"req-{i}" for i in range(1, 21)]
    gateway = GatewayProcess(gateway_config(bootstrap, pg_database.url(), legacy_topic, new_topic, group),
                             tmp_path / "gateway").start()
    try:
        publish(bootstrap, legacy_topic, "legacy", cids)
        publish(bootstrap, new_topic, "new", cids[:10])
        eventually(lambda: len(outcomes(engine)) == 10 and committed(bootstrap, group, new_topic) == 10, 60,
                   "the first ten pairs joined and committed", gateway)
        pg_cluster.stop()
        try:
            publish(bootstrap, new_topic, "new", cids[10:])
            eventually(lambda: NOT_COMMITTING in gateway.log(), 60, "the consumer to refuse to commit", gateway)
            assert committed(bootstrap, group, new_topic) == 10  # taken, not written: not committed
        finally:
            pg_cluster.start()
        eventually(lambda: len(outcomes(engine)) == 20 and committed(bootstrap, group, new_topic) == 20, 60,
                   "the rest written, then committed", gateway)
    finally:
        assert gateway.stop() == 0, gateway.log()
    assert sorted(cid for _, cid in outcomes(engine)) == sorted(cids)
    assert {kind for kind, _ in outcomes(engine)} == {"match"}
    assert "Traceback" not in gateway.log()
    engine.dispose()


def test_a_second_instance_takes_over_the_waiting_events_of_the_partitions_it_is_assigned(
    kafka_broker: TansuBroker, pg_database: PostgresDatabase, tmp_path: Path
) -> None:
    """Two gateways on one store, one consumer group: when the second joins, each partition's waiting events
    are joined, or expire, in the one process that reads the partition, never in both."""
    bootstrap = kafka_broker.bootstrap_servers
    legacy_topic, new_topic, group = topics(kafka_broker, partitions=2)
    config = gateway_config(bootstrap, pg_database.url(), legacy_topic, new_topic, group, window=30)
    engine = create_store_engine(pg_database.url())
    cids = [f"req-{i}" for i in range(1, 41)]
    first = GatewayProcess(config, tmp_path / "first").start()
    second = GatewayProcess(config, tmp_path / "second")
    try:
        publish(bootstrap, legacy_topic, "legacy", cids, partitions=2)
        eventually(lambda: count(engine, select(func.count()).select_from(pending_table)) == 40, 60,
                   "the legacy events waiting in the store", first)
        second.start()
        publish(bootstrap, new_topic, "new", cids, partitions=2)
        eventually(lambda: len(outcomes(engine)) >= 40, 120, "every pair to be joined", first)
        # one lonely event a partition, published last: once both expired, so would have any copy of a joined
        # event still waiting in the process that does not read its partition
        lonely = ["req-100", "req-101"]
        publish(bootstrap, legacy_topic, "legacy", lonely, partitions=2)
        eventually(lambda: {cid for kind, cid in outcomes(engine) if kind == "missing"} >= set(lonely), 120,
                   "the lonely events to expire", first)
    finally:
        second_code = second.stop()
        first_code = first.stop()
    assert (first_code, second_code) == (0, 0), first.log() + second.log()
    results = outcomes(engine)
    assert sorted(cid for kind, cid in results if kind == "match") == sorted(cids)
    assert sorted(cid for kind, cid in results if kind != "match") == lonely
    engine.dispose()
