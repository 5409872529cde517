from __future__ import annotations

import threading
import time
from collections.abc import Callable

import orjson
import pytest
from prometheus_client import CollectorRegistry

from strangler.cdc.config import ConnectorConfig
from strangler.cdc.connector import Connector
from strangler.cdc.mapping import PipelineMapping
from strangler.cdc.metrics import CdcMetrics
from strangler.events import DomainEventMapper, DomainEventsConfig
from strangler.events.pipeline import DomainEventPipeline
from tests.cdc.fakes import FakeDatabase, FakeSink, FakeSource, change_value
from tests.events.fakes import FakeSink as EventsFakeSink

CONFIG = ConnectorConfig.model_validate({
    "source": {"kind": "sqlite", "path": "x.db"}, "sink": {"kind": "jsonl"}, "confirm_interval": 0.01,
    "batch_size": 7, "retry_max_wait": 0.05,
})


def start(db: FakeDatabase, sink: FakeSink, config: ConnectorConfig = CONFIG) -> tuple[Connector, threading.Event,
                                                                                        threading.Thread]:
    connector = Connector("fake", config, make_source=lambda: FakeSource(db), make_sink=lambda: sink,
                          metrics=CdcMetrics(CollectorRegistry()))
    stop = threading.Event()
    thread = threading.Thread(target=connector.run, args=(stop,), daemon=True)
    thread.start()
    return connector, stop, thread


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_every_change_is_delivered_and_confirmed() -> None:
    db, sink = FakeDatabase(100), FakeSink()
    connector, stop, thread = start(db, sink)
    eventually(lambda: db.confirmed == db.log[-1][0])
    stop.set()
    thread.join(5)
    assert sorted(int(k) for k in sink.delivered) == list(range(100))
    assert db.acknowledged == sorted(set(db.acknowledged))  # checkpoints handed back in order, once
    assert connector.acknowledged == 100 and connector.phase == "stopped"


def test_a_lost_delivery_stops_the_position_and_the_session_rewinds() -> None:
    db, sink = FakeDatabase(60, per_txn=5), FakeSink()
    sink.fail_next = 1  # the very first record is lost
    connector, stop, thread = start(db, sink)
    eventually(lambda: db.confirmed == db.log[-1][0])
    stop.set()
    thread.join(5)
    assert sink.opened >= 2  # a second session re-read from the confirmed position
    assert {int(k) for k in sink.delivered} == set(range(60))  # nothing lost
    assert connector.metrics.sink_errors.labels("fake")._value.get() == 1  # type: ignore[attr-defined]


def test_while_the_sink_is_down_nothing_is_confirmed_and_the_connector_is_unhealthy() -> None:
    db, sink = FakeDatabase(30), FakeSink()
    sink.down = True
    connector, stop, thread = start(db, sink)
    eventually(lambda: not connector.healthy and connector.reason is not None and "broker down" in connector.reason)
    assert db.confirmed == -1 and db.acknowledged == []
    sink.down = False
    eventually(lambda: db.confirmed == db.log[-1][0])
    eventually(lambda: connector.healthy)
    stop.set()
    thread.join(5)


def test_a_failing_start_is_retried_with_backoff() -> None:
    db, sink = FakeDatabase(10), FakeSink()
    db.fail_start = 2
    connector, stop, thread = start(db, sink)
    eventually(lambda: db.confirmed == db.log[-1][0])
    stop.set()
    thread.join(5)
    assert connector.metrics.source_errors.labels("fake")._value.get() == 2  # type: ignore[attr-defined]


def test_stop_flushes_and_confirms_what_is_in_flight() -> None:
    db, sink = FakeDatabase(1000, per_txn=10), FakeSink()
    config = CONFIG.model_copy(update={"confirm_interval": 3600.0})  # only the stop confirms
    connector, stop, thread = start(db, sink, config)
    eventually(lambda: len(sink.delivered) == 1000)
    assert db.confirmed == -1
    stop.set()
    thread.join(5)
    assert db.confirmed == db.log[-1][0]


def test_in_flight_is_bounded() -> None:
    db, sink = FakeDatabase(500), FakeSink()
    sink.down = True
    config = CONFIG.model_copy(update={"max_in_flight": 20})
    connector, stop, thread = start(db, sink, config)
    eventually(lambda: len(sink.pending) >= 20)
    time.sleep(0.1)
    assert len(sink.pending) < 20 + config.batch_size + 1
    stop.set()
    thread.join(5)


# -- domain events mapped in-process ------------------------------------------------------------------------

EVENTS = DomainEventsConfig.model_validate({
    "source": "legacy.test", "types": {"Created": {"payload": {"n": "int"}}},
    "rules": [{"table": "public.t", "ops": ["c"], "event": "Created", "aggregate_type": "thing", "key": "id",
               "payload": {"n": "id"}, "topic": "domain.thing"}],
    "dead_letter": {"topic": "dead"}, "publish": {"bootstrap_servers": "unused:9092"},
})


def start_mapping(db: FakeDatabase, sink: FakeSink, events: EventsFakeSink, *, publish_changes: bool = True,
                  value: Callable[[int], bytes] = change_value) -> tuple[Connector, threading.Event, threading.Thread]:
    def pipeline() -> DomainEventPipeline:
        return DomainEventPipeline(DomainEventMapper(EVENTS), events, dead_letter_topic="dead")

    connector = Connector("fake", CONFIG, make_source=lambda: FakeSource(db, value), make_sink=lambda: sink,
                          metrics=CdcMetrics(CollectorRegistry()),
                          make_mapping=lambda: PipelineMapping(pipeline, connector="fake"),
                          publish_changes=publish_changes)
    stop = threading.Event()
    thread = threading.Thread(target=connector.run, args=(stop,), daemon=True)
    thread.start()
    return connector, stop, thread


def ids(events: EventsFakeSink, topic: str = "domain.thing") -> list[int]:
    return [orjson.loads(r.value)["payload"]["n"] for r in events.sent if r.topic == topic]


def test_the_position_waits_for_the_domain_events_as_well_as_the_change_events() -> None:
    db, sink, events = FakeDatabase(30), FakeSink(), EventsFakeSink(hold=True)
    connector, stop, thread = start_mapping(db, sink, events)
    eventually(lambda: len(sink.delivered) == 30 and len(events.sent) == 30)
    time.sleep(0.05)  # several confirm intervals
    assert db.confirmed == -1 and db.acknowledged == []  # the change events alone do not move the source
    events.hold = False
    eventually(lambda: db.confirmed == db.log[-1][0])
    stop.set()
    thread.join(5)
    assert sorted(ids(events)) == list(range(30)) and connector.mapped == 30


def test_only_domain_events_when_change_events_are_not_published() -> None:
    db, sink, events = FakeDatabase(20), FakeSink(), EventsFakeSink()
    connector, stop, thread = start_mapping(db, sink, events, publish_changes=False)
    eventually(lambda: db.confirmed == db.log[-1][0])
    stop.set()
    thread.join(5)
    assert sink.delivered == [] and sorted(ids(events)) == list(range(20))
    assert connector.acknowledged == 0 and connector.mapped == 20


def test_a_lost_domain_event_rewinds_the_session_and_nothing_is_lost() -> None:
    events = EventsFakeSink(fail_keys={b"7"})  # events are keyed by their aggregate id
    db, sink = FakeDatabase(40, per_txn=4), FakeSink()
    connector, stop, thread = start_mapping(db, sink, events)
    eventually(lambda: connector.metrics.sink_errors.labels("fake")._value.get() >= 1)  # type: ignore[attr-defined]
    assert db.confirmed < 1  # change 7 is in transaction 1: never confirmed while its event is lost
    events.fail_keys = set()
    eventually(lambda: db.confirmed == db.log[-1][0])
    stop.set()
    thread.join(5)
    assert set(ids(events)) == set(range(40))
    first = {orjson.loads(r.value)["payload"]["n"]: orjson.loads(r.value)["event_id"] for r in events.sent}
    assert all(orjson.loads(r.value)["event_id"] == first[orjson.loads(r.value)["payload"]["n"]]
               for r in events.sent)  # a change published again carries the same event id


def test_a_change_that_cannot_be_mapped_is_a_dead_letter_and_the_position_moves_on() -> None:
    db, sink, events = FakeDatabase(9, per_txn=3), FakeSink(), EventsFakeSink()
    connector, stop, thread = start_mapping(db, sink, events, value=lambda n: change_value(n) if n != 4 else b"{}")
    eventually(lambda: db.confirmed == db.log[-1][0])
    stop.set()
    thread.join(5)
    [dead] = [r for r in events.sent if r.topic == "dead"]
    body = orjson.loads(dead.value)
    assert body["reason"].startswith("not a change event") and body["source"] == {"connector": "fake", "topic": "t"}
    assert sorted(ids(events)) == [n for n in range(9) if n != 4]


def test_a_connector_without_any_output_is_refused() -> None:
    with pytest.raises(ValueError, match="publishes no change events"):
        Connector("fake", CONFIG, make_source=lambda: FakeSource(FakeDatabase(1)), make_sink=FakeSink,
                  metrics=CdcMetrics(CollectorRegistry()), publish_changes=False)
