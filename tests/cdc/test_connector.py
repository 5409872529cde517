from __future__ import annotations

import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from strangler.cdc.config import ConnectorConfig
from strangler.cdc.connector import Connector
from strangler.cdc.metrics import CdcMetrics
from tests.cdc.fakes import FakeDatabase, FakeSink, FakeSource

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
