"""Outbox routing as Debezium's EventRouter does it: rows of an outbox table published by aggregate type."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from strangler.events import DomainEventMapper, DomainEventsConfig
from tests.events.changes import COMMIT_MS, change

NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def mapper(**route: Any) -> DomainEventMapper:
    return DomainEventMapper(DomainEventsConfig.model_validate({
        "source": "legacy.orders",
        "types": {"OrderPlaced": {"version": 2, "payload": {"order_id": "int", "total": "decimal"}}},
        "outbox": [{"table": "public.outbox", **route}],
    }))


def outbox_row(**columns: Any) -> dict[str, Any]:
    row = {"id": "7d2b5f0e-5c8e-4a43-9d63-3f1b8a1c2e11", "aggregatetype": "order", "aggregateid": "1001",
           "type": "OrderShipped", "payload": '{"order_id": 1001, "carrier": "dhl"}', "correlation_id": "req-9",
           "valid_from": "2024-04-30T08:00:00Z"}
    row.update(columns)
    return row


def test_an_inserted_row_is_published_by_aggregate_type_with_its_own_id() -> None:
    result = mapper().map({"id": "k"}, change("c", outbox_row(), table="outbox"), "p", NOW)
    assert result.dead == []
    [(topic, event)] = result.events
    assert topic == "outbox.event.order"
    assert (event.event_id, event.event_type, event.aggregate_type, event.aggregate_id, event.event_version) == (
        "7d2b5f0e-5c8e-4a43-9d63-3f1b8a1c2e11", "OrderShipped", "order", "1001", 1)
    assert event.payload == {"order_id": 1001, "carrier": "dhl"}
    assert event.source == "legacy.orders"
    assert event.event_time == dt.datetime.fromtimestamp(COMMIT_MS / 1000, dt.UTC)
    assert event.correlation_id is None  # extra columns are mapped only when configured


def test_extra_columns_and_the_topic_prefix_are_configurable() -> None:
    m = mapper(topic_prefix="domain", extra_columns={"correlation_id": "correlation_id",
                                                     "effective_time": "valid_from", "event_version": "v"})
    [(topic, event)] = m.map(None, change("c", outbox_row(v=3), table="outbox"), "p", NOW).events
    assert topic == "domain.order"
    assert event.correlation_id == "req-9" and event.event_version == 3
    assert event.effective_time == dt.datetime(2024, 4, 30, 8, tzinfo=dt.UTC)


def test_a_json_column_payload_is_taken_as_is() -> None:
    [(_, event)] = mapper().map(None, change("r", outbox_row(payload={"a": [1, 2]}), table="outbox"), "p", NOW).events
    assert event.payload == {"a": [1, 2]}


def test_a_declared_type_validates_the_payload_and_sets_the_version() -> None:
    ok = outbox_row(type="OrderPlaced", payload='{"order_id": "1001", "total": 12.5}')
    [(_, event)] = mapper().map(None, change("c", ok, table="outbox"), "p", NOW).events
    assert event.payload == {"order_id": 1001, "total": "12.5"} and event.event_version == 2
    bad = outbox_row(type="OrderPlaced", payload='{"order_id": 1001}')
    result = mapper().map(None, change("c", bad, table="outbox"), "t/0/3", NOW)
    assert result.events == []
    assert "OrderPlaced payload does not validate: total: Field required" in result.dead[0].reason
    assert result.dead[0].position == "t/0/3"


@pytest.mark.parametrize(("row", "reason"), [
    (outbox_row(payload="{not json"), "is not JSON"),
    (outbox_row(payload="[1, 2]"), "is not a JSON object"),
    (outbox_row(payload=None), "'payload' is empty"),
    (outbox_row(aggregatetype=None), "'aggregatetype' is empty"),
    (outbox_row(aggregatetype="has space"), "does not make a valid topic name"),
    ({k: v for k, v in outbox_row().items() if k != "type"}, "no column 'type'"),
    (outbox_row(v="three"), "event_version 'three' is not an integer"),
])
def test_a_bad_outbox_row_is_a_dead_letter(row: dict[str, Any], reason: str) -> None:
    result = mapper(extra_columns={"event_version": "v"}).map(None, change("c", row, table="outbox"), "t/0/4", NOW)
    assert result.events == []
    [dead] = result.dead
    assert dead.reason.startswith("outbox row of public.outbox: ") and reason in dead.reason
    assert dead.position == "t/0/4"


@pytest.mark.parametrize("op", ["u", "d"])
def test_updates_and_deletes_of_outbox_rows_publish_nothing(op: str) -> None:
    value = change(op, outbox_row() if op == "u" else None, outbox_row(), table="outbox")
    result = mapper().map(None, value, "p", NOW)
    assert result.events == [] and result.dead == []


def test_a_replayed_outbox_row_keeps_its_id() -> None:
    value = change("c", outbox_row(), table="outbox")
    a = mapper().map(None, value, "t/0/1", NOW).events[0][1]
    b = mapper().map(None, value, "t/0/2", NOW + dt.timedelta(days=1)).events[0][1]
    assert a.event_id == b.event_id
