"""The mapping pipeline: outputs through sinks, a change done only when all its outputs are acknowledged."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest

from strangler.events import DomainEventMapper, DomainEventsConfig
from strangler.events.errors import DeliveryFailed
from strangler.events.pipeline import DomainEventPipeline
from strangler.events.runner import OffsetTracker, build_pipeline
from strangler.events.sinks import JsonlRecordSink
from strangler.maturity.ledger import Stage, StageEvent
from tests.events.changes import change, customer
from tests.events.fakes import FakeSink

NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
CONFIG: dict[str, Any] = {
    "source": "legacy.crm",
    "types": {"CustomerRegistered": {"payload": {"customer_id": "int", "name": "str"}},
              "CustomerTiered": {"payload": {"customer_id": "int", "tier": "int"}}},
    "rules": [
        {"table": "public.customers", "ops": ["c"], "event": "CustomerRegistered", "aggregate_type": "customer",
         "key": "id", "payload": {"customer_id": "id", "name": "name"}, "correlation_id": "correlation_id",
         "topic": "domain.customer"},
        {"table": "public.customers", "ops": ["c"], "event": "CustomerTiered", "aggregate_type": "customer",
         "key": "id", "payload": {"customer_id": "id", "tier": "tier"}, "correlation_id": "correlation_id",
         "topic": "domain.customer-tier"},
    ],
    "dead_letter": {"topic": "domain.dead"},
}


def pipeline(sink: FakeSink, ledger: list[StageEvent] | None = None, **extra: Any) -> DomainEventPipeline:
    mapper = DomainEventMapper(DomainEventsConfig.model_validate({**CONFIG, **extra}))
    return DomainEventPipeline(mapper, sink, dead_letter_topic="domain.dead", clock=lambda: NOW,
                               ledger=ledger.append if ledger is not None else None)


def test_events_are_published_keyed_by_aggregate_with_their_ids_in_headers() -> None:
    sink = FakeSink()
    p = pipeline(sink)
    p.submit({"id": 42}, change("c", customer()), "t/0/1")
    assert [(r.topic, r.key) for r in sink.sent] == [("domain.customer", b"42"), ("domain.customer-tier", b"42")]
    value = orjson.loads(sink.sent[0].value)
    assert value["event_type"] == "CustomerRegistered" and value["payload"] == {"customer_id": 42, "name": "Ada"}
    assert sink.sent[0].headers["event_id"].decode() == value["event_id"]
    assert sink.sent[0].headers["correlation_id"] == b"req-1" and sink.sent[0].headers["event_version"] == b"1"


def test_a_change_is_done_only_when_every_output_is_acknowledged() -> None:
    sink = FakeSink(hold=True)
    p = pipeline(sink)
    done: list[str] = []
    p.submit({"id": 42}, change("c", customer()), "t/0/1", lambda: done.append("t/0/1"))
    assert len(sink.sent) == 2 and done == []
    _, first_ack = sink.waiting.pop(0)
    first_ack(None)
    assert done == []
    sink.hold = False
    p.poll()
    assert done == ["t/0/1"] and p.stats.done == 1


def test_a_change_without_outputs_is_done_at_once() -> None:
    sink = FakeSink(hold=True)
    p = pipeline(sink)
    done: list[int] = []
    p.submit({"id": 42}, change("u", customer()), "t/0/1", lambda: done.append(1))  # no rule takes updates
    p.submit({"id": 42}, None, "t/0/2", lambda: done.append(2))  # a tombstone
    assert done == [1, 2] and sink.sent == []


def test_an_unacknowledged_output_stops_the_pipeline_and_its_change_stays_undone() -> None:
    sink = FakeSink(fail_topics={"domain.customer-tier"})
    p = pipeline(sink)
    done: list[int] = []
    p.submit({"id": 42}, change("c", customer()), "t/0/1", lambda: done.append(1))
    with pytest.raises(DeliveryFailed, match="domain.customer-tier: refused"):
        p.poll()
    assert done == []
    with pytest.raises(DeliveryFailed):
        p.submit({"id": 43}, change("c", customer(id=43)), "t/0/2", lambda: done.append(2))
    assert done == [] and len(sink.sent) == 2


def test_dead_letters_carry_reason_position_and_source() -> None:
    sink = FakeSink()
    ledger: list[StageEvent] = []
    p = pipeline(sink, ledger)
    value = change("c", customer(tier="gold"))
    done: list[int] = []
    p.submit({"id": 42}, value, "t/3/77", lambda: done.append(1), source={"topic": "t", "partition": 3, "offset": 77})
    assert [r.topic for r in sink.sent] == ["domain.customer", "domain.dead"]
    dead = orjson.loads(sink.sent[1].value)
    assert dead["reason"].startswith("CustomerTiered from public.customers: payload does not validate: tier:")
    assert (dead["position"], dead["source"], dead["key"], dead["value"]) == (
        "t/3/77", {"topic": "t", "partition": 3, "offset": 77}, {"id": 42}, value)
    assert (dead["mapper"], dead["correlation_id"], dead["entity_key"]) == ("legacy.crm", "req-1", "42")
    assert sink.sent[1].key == b'{"id":42}' and sink.sent[1].headers["reason"].startswith(b"CustomerTiered")
    assert ledger == []  # recorded once the dead letter is acknowledged
    p.poll()
    assert done == [1]
    assert [(e.correlation_id, e.entity_key, e.stage) for e in ledger] == [("req-1", "42", Stage.EXCEPTION)]
    assert ledger[0].detail is not None and ledger[0].detail.startswith("dead letter: CustomerTiered")


@pytest.mark.parametrize(("key", "value", "reason"), [
    (b'{"id": 42}', b"{not json", "the value is not JSON"),
    (b"{broken", b"{}", "the key is not JSON"),
])
def test_bytes_that_are_not_json_are_dead_letters(key: bytes, value: bytes, reason: str) -> None:
    sink = FakeSink()
    done: list[int] = []
    pipeline(sink).submit_raw(key, value, "t/0/9", lambda: done.append(1),
                              source={"topic": "t", "partition": 0, "offset": 9})
    [record] = sink.sent
    dead = orjson.loads(record.value)
    assert record.topic == "domain.dead" and dead["reason"].startswith(reason)
    assert dead["value"] == value.decode() and dead["source"]["offset"] == 9 and record.key == key
    pipeline(sink).poll()
    assert done == [1]


def test_raw_records_map_like_decoded_ones() -> None:
    sink = FakeSink()
    p = pipeline(sink)
    p.submit_raw(b'{"id": 42}', orjson.dumps(change("c", customer())), "t/0/1")
    p.submit_raw(b'{"id": 42}', None, "t/0/2")
    assert [r.topic for r in sink.sent] == ["domain.customer", "domain.customer-tier"]


def test_run_maps_an_iterable_in_process_and_waits_for_acknowledgements() -> None:
    sink = FakeSink()
    changes = [({"id": i}, change("c", customer(id=i), lsn=1000 + i), f"lsn:{1000 + i}") for i in range(2500)]
    stats = pipeline(sink).run(changes)
    assert (stats.changes, stats.events, stats.dead_letters, stats.done) == (2500, 5000, 0, 2500)
    assert sink.waiting == []
    assert len({orjson.loads(r.value)["event_id"] for r in sink.sent}) == 5000


def test_run_raises_when_outputs_are_not_acknowledged_in_time() -> None:
    with pytest.raises(DeliveryFailed, match="2 outputs were not acknowledged"):
        pipeline(FakeSink(hold=True)).run([({"id": 1}, change("c", customer(id=1)), "p")], flush_timeout=0.01)


def test_the_jsonl_sink_acknowledges_what_it_wrote(tmp_path: Path) -> None:
    config = DomainEventsConfig.model_validate({**CONFIG, "publish": {"path": str(tmp_path / "events.jsonl")},
                                                "dead_letter": {"path": str(tmp_path / "dead.jsonl")}})
    p = build_pipeline(config)
    done: list[int] = []
    p.submit({"id": 42}, change("c", customer(tier="gold")), "t/0/1", lambda: done.append(1))
    assert done == []
    p.flush(1.0)
    assert done == [1]
    p.close()
    [line] = (tmp_path / "events.jsonl").read_text().splitlines()
    record = orjson.loads(line)
    assert record["topic"] == "domain.customer" and record["key"] == "42"
    assert orjson.loads(record["value"])["event_type"] == "CustomerRegistered"
    [dead_line] = (tmp_path / "dead.jsonl").read_text().splitlines()
    assert "payload does not validate" in orjson.loads(orjson.loads(dead_line)["value"])["reason"]


def test_the_jsonl_sink_keeps_bytes_that_are_not_text(tmp_path: Path) -> None:
    sink = JsonlRecordSink(str(tmp_path / "out.jsonl"))
    acks: list[Exception | None] = []
    sink.send("t", b"\xff", b"ok", [], acks.append)
    sink.flush(0)
    sink.close()
    record = orjson.loads((tmp_path / "out.jsonl").read_text())
    assert record["key_b64"] == "/w==" and record["value"] == "ok" and acks == [None]


def test_the_offset_tracker_commits_only_the_done_prefix() -> None:
    tracker = OffsetTracker()
    done = {offset: tracker.add("t", 0, offset) for offset in (10, 11, 12, 13)}
    other = tracker.add("t", 1, 5)
    assert tracker.ready() == {}
    done[11]()
    done[12]()
    assert tracker.ready() == {}  # 10 is still out: nothing may be committed past it
    done[10]()
    assert tracker.ready() == {("t", 0): 13}
    assert tracker.ready() == {} and tracker.in_flight() == 2
    other()
    assert tracker.ready({("t", 0)}) == {}
    assert tracker.ready({("t", 1)}) == {("t", 1): 6}
    tracker.forget({("t", 0)})
    assert tracker.in_flight() == 0


def test_done_changes_waiting_for_a_commit_are_not_in_flight() -> None:
    # back-pressure waits for in_flight to drop without committing: done changes must not hold it up
    tracker = OffsetTracker()
    finishers = [tracker.add("t", 0, offset) for offset in range(5)]
    for finish in finishers[1:]:
        finish()
    assert tracker.in_flight() == 1 and tracker.ready() == {}
    finishers[1]()  # a second acknowledgement of the same change counts once
    assert tracker.in_flight() == 1
    finishers[0]()
    assert tracker.in_flight() == 0 and tracker.ready() == {("t", 0): 5}
