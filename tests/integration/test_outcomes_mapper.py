"""The domain-event mapper on a real Kafka-protocol broker: change topics in (our envelope and Debezium's
JSON-with-schema form), typed events and dead letters out, offsets committed only behind acknowledged
outputs; killed mid-way and restarted, nothing is lost and the duplicates carry identical event ids."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from strangler.events import DomainEventMapper, DomainEventsConfig
from strangler.events.errors import DeliveryFailed
from strangler.events.pipeline import DomainEventPipeline
from strangler.events.runner import KafkaMapperRunner, build_pipeline
from tests.events.changes import change, customer
from tests.events.fakes import FakeSink
from tests.support.kafka import TansuBroker, consume_all

pytestmark = pytest.mark.integration

TYPES = {"CustomerRegistered": {"payload": {"customer_id": "int", "name": "str", "tier": "int|null"}}}
RULE = {"table": "public.customers", "ops": ["c", "r"], "event": "CustomerRegistered", "aggregate_type": "customer",
        "key": "id", "payload": {"customer_id": "id", "name": "name", "tier": "tier"},
        "correlation_id": "correlation_id"}


def topics(broker: TansuBroker, *names: str) -> list[str]:
    suffix = uuid.uuid4().hex[:8]
    return [broker.create_topic(f"{name}-{suffix}") for name in names]


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 20})
    failures: list[Any] = []
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=lambda err, msg: failures.append(err) if err else None)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0 and failures == []


def created_customers(count: int, first_lsn: int) -> list[tuple[bytes | None, bytes | None]]:
    """The change records of `count` customers inserted (ids 0 to count - 1) at consecutive LSNs."""
    return [(orjson.dumps({"id": i}), orjson.dumps(change("c", customer(id=i), lsn=first_lsn + i)))
            for i in range(count)]


def committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return int(tp.offset)
    finally:
        consumer.close()


def config(bootstrap: str, source: str, events: str, dead: str, group: str) -> dict[str, Any]:
    return {"source": "legacy.crm", "types": TYPES, "rules": [dict(RULE, topic=events)],
            "dead_letter": {"topic": dead},
            "consume": {"bootstrap_servers": bootstrap, "topics": [source], "group_id": group},
            "publish": {"bootstrap_servers": bootstrap}}


def wait_for(condition: Any, timeout: float, what: str, detail: Any = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{detail()}")


def test_changes_become_events_and_dead_letters_and_offsets_follow_the_acknowledgements(
    kafka_broker: TansuBroker,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    source, events, dead = topics(kafka_broker, "legacy.crm.public.customers", "domain.customer", "domain.dead")
    group = f"mapper-{uuid.uuid4().hex[:8]}"
    with_schema = {"schema": {"type": "struct", "fields": []}, "payload": change("c", customer(id=3), lsn=1003)}
    records: list[tuple[bytes | None, bytes | None]] = [
        (b'{"id": 1}', orjson.dumps(change("c", customer(id=1), lsn=1001))),
        (b'{"id": 2}', orjson.dumps(change("r", customer(id=2), lsn=1002))),
        (b'{"schema": {"type": "struct"}, "payload": {"id": 3}}', orjson.dumps(with_schema)),
        (b'{"id": 4}', b"{this is not json"),
        (b'{"id": 5}', orjson.dumps(change("c", customer(id=5, tier="gold", correlation_id="req-5"), lsn=1005))),
        (b'{"id": 6}', orjson.dumps({"op": "c", "after": {"id": 6}})),  # no source: not a change event
        (b'{"id": 7}', orjson.dumps(change("c", customer(id=None), lsn=1007))),  # missing key
        (b'{"id": 1}', None),  # a tombstone
        (b'{"id": 8}', orjson.dumps(change("u", customer(id=8), lsn=1008))),  # no rule takes updates
    ]
    produce(bootstrap, source, records)
    settings = DomainEventsConfig.model_validate(config(bootstrap, source, events, dead, group))
    assert settings.consume is not None
    pipeline = build_pipeline(settings)
    runner = KafkaMapperRunner(pipeline, settings.consume, commit_interval=0.2)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    try:
        published = consume_all(bootstrap, events, expected=3, timeout=60)
        dead_letters = consume_all(bootstrap, dead, expected=4, timeout=30)
        wait_for(lambda: runner.committed.get((source, 0)) == len(records), 30, "the offsets to be committed")
    finally:
        stop.set()
        thread.join(60)
    pipeline.close()
    assert not thread.is_alive()
    values = [orjson.loads(v or b"") for _, v in published]
    assert [(k, v["aggregate_id"], v["event_type"]) for (k, _), v in zip(published, values, strict=True)] == [
        (b"1", "1", "CustomerRegistered"), (b"2", "2", "CustomerRegistered"), (b"3", "3", "CustomerRegistered")]
    assert values[0]["payload"] == {"customer_id": 1, "name": "Ada", "tier": 2}
    assert values[0]["sequence"] == "1001" and values[0]["correlation_id"] == "req-1"
    reasons = {orjson.loads(v or b"")["source"]["offset"]: orjson.loads(v or b"") for _, v in dead_letters}
    assert sorted(reasons) == [3, 4, 5, 6]
    assert reasons[3]["reason"].startswith("the value is not JSON")
    assert reasons[4]["reason"].startswith("CustomerRegistered from public.customers: payload does not validate: tier")
    assert reasons[4]["correlation_id"] == "req-5" and reasons[4]["position"] == f"{source}/0/4"
    assert reasons[5]["reason"] == "not a change event: no 'source' block"
    assert "missing key column(s) ['id']" in reasons[6]["reason"]
    assert all(d["source"]["topic"] == source and d["source"]["partition"] == 0 for d in reasons.values())
    assert committed(bootstrap, group, source) == len(records)


def test_killed_mid_way_and_restarted_nothing_is_lost_and_duplicates_keep_their_ids(
    kafka_broker: TansuBroker, tmp_path: Path,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    source, events, dead = topics(kafka_broker, "legacy.crm.public.customers", "domain.customer", "domain.dead")
    group = f"mapper-{uuid.uuid4().hex[:8]}"
    total = 40_000
    produce(bootstrap, source, created_customers(total, 10_000))
    path = tmp_path / "strangler.yaml"
    precedence = {"entities": {"customer": {"groups": {"all": {"fields": ["/*"], "authority": "legacy"}}}}}
    path.write_text(yaml.safe_dump({"store": f"sqlite:///{tmp_path}/store.db", "precedence": precedence,
                                    "cdc": {"domain_events": config(bootstrap, source, events, dead, group)}}))

    def start() -> subprocess.Popen[bytes]:
        with open(tmp_path / "mapper.log", "ab") as log:  # the child keeps its own copy of the descriptor
            return subprocess.Popen([sys.executable, "-m", "strangler", "events", "run", "-c", str(path)],
                                    stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def published(process: subprocess.Popen[bytes], at_least: int) -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the mapper exited {process.returncode}:\n{(tmp_path / 'mapper.log').read_text()}")
        return len(consume_all(bootstrap, events, timeout=30)) >= at_least

    first = start()
    try:
        wait_for(lambda: published(first, 2_000), 90, "the first events",
                 lambda: (tmp_path / "mapper.log").read_text())
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.kill()
    at_kill = max(committed(bootstrap, group, source), 0)  # none yet (-1001): the restart reads from the start
    published_at_kill = len(consume_all(bootstrap, events, timeout=30))
    # killed before its offsets reached the end, perhaps before its first commit (it may have published
    # everything by then: the restart must still resume from the committed offset and keep each change's id)
    assert 0 <= at_kill < total and at_kill <= published_at_kill <= total, (at_kill, published_at_kill)

    second = start()
    try:
        wait_for(lambda: committed(bootstrap, group, source) == total, 180, "the restarted mapper to finish",
                 lambda: (tmp_path / "mapper.log").read_text())
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0, (tmp_path / "mapper.log").read_text()
    finally:
        second.kill()
    records = consume_all(bootstrap, events, expected=total, timeout=120)
    ids_by_customer: dict[int, set[str]] = {}
    for _, value in records:
        event = orjson.loads(value or b"")
        ids_by_customer.setdefault(event["payload"]["customer_id"], set()).add(event["event_id"])
    assert sorted(ids_by_customer) == list(range(total))  # nothing lost
    assert all(len(ids) == 1 for ids in ids_by_customer.values())  # a replayed change keeps its event id
    duplicates = len(records) - total
    assert 0 <= duplicates <= published_at_kill - at_kill  # only what was published past the last commit
    counts = Counter(orjson.loads(v or b"")["event_id"] for _, v in records)
    assert max(counts.values()) <= 2
    assert consume_all(bootstrap, dead, timeout=10) == []
    assert "stopped: " in (tmp_path / "mapper.log").read_text()


def test_an_output_never_acknowledged_stops_the_runner_with_the_offset_before_its_change(
    kafka_broker: TansuBroker,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    source, events, dead = topics(kafka_broker, "legacy.crm.public.customers", "domain.customer", "domain.dead")
    group = f"mapper-{uuid.uuid4().hex[:8]}"
    produce(bootstrap, source, created_customers(10, 2000))
    settings = DomainEventsConfig.model_validate(config(bootstrap, source, events, dead, group))
    assert settings.consume is not None
    refusing = FakeSink(fail_keys={b"6"})  # the event of the change at offset 6 is never acknowledged
    runner = KafkaMapperRunner(DomainEventPipeline(DomainEventMapper(settings), refusing), settings.consume,
                               commit_interval=0.1)
    with pytest.raises(DeliveryFailed, match="refused"):
        runner.run(threading.Event())
    assert committed(bootstrap, group, source) == 6  # changes 0-5 done; 6 and whatever followed are not
    accepting = FakeSink()
    again = KafkaMapperRunner(DomainEventPipeline(DomainEventMapper(settings), accepting), settings.consume,
                              commit_interval=0.1)
    stop = threading.Event()
    thread = threading.Thread(target=again.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: again.committed.get((source, 0)) == 10, 60, "the restarted runner to finish")
    finally:
        stop.set()
        thread.join(30)
    assert [r.key for r in accepting.sent][0] == b"6"  # it starts again at the change that failed
    assert sorted(int(r.key or b"") for r in accepting.sent) == list(range(6, 10))
