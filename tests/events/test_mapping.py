"""Change events -> typed domain events: selection, payloads, times, ids, dead letters."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from typing import Any

import pytest

from strangler.events import DomainEventMapper, DomainEventsConfig
from strangler.events.envelope import UNAVAILABLE
from tests.events.changes import COMMIT_MS, change, customer

NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
ADDRESS_RULE: dict[str, Any] = {
    "table": "public.customers", "ops": ["u"], "changed": ["corr_street", "corr_city", "corr_zip"],
    "event": "CustomerCorrespondenceAddressChanged", "aggregate_type": "customer", "key": "id",
    "payload": {"customer_id": "id", "street": "corr_street", "city": "corr_city", "zip": "corr_zip"},
    "effective_time": "address_valid_from", "correlation_id": "correlation_id", "topic": "domain.customer",
}
TYPES: dict[str, Any] = {
    "CustomerCorrespondenceAddressChanged": {"payload": {"customer_id": "int", "street": "str", "city": "str",
                                                         "zip": "str"}},
    "CustomerRegistered": {"version": 2, "payload": {"customer_id": "int", "name": "str", "tier": "int|null"}},
    "CustomerStatusChanged": {"payload": {"customer_id": "int", "status": "str"}},
}


def mapper(*rules: dict[str, Any], types: dict[str, Any] | None = None, **extra: Any) -> DomainEventMapper:
    return DomainEventMapper(DomainEventsConfig.model_validate(
        {"source": "legacy.crm", "types": types or TYPES, "rules": list(rules), **extra}))


def registered(**overrides: Any) -> dict[str, Any]:
    rule = {"table": "public.customers", "ops": ["c", "r"], "event": "CustomerRegistered", "aggregate_type": "customer",
            "key": "id", "payload": {"customer_id": "id", "name": "name", "tier": "tier"}, "topic": "domain.customer"}
    rule.update(overrides)
    return rule


def moved(before: dict[str, Any] | None = None, **after: Any) -> dict[str, Any]:
    return change("u", customer(**after), before)


# -- selection -------------------------------------------------------------------------------------------


def test_an_update_changing_a_listed_column_becomes_the_typed_event() -> None:
    result = mapper(ADDRESS_RULE).map({"id": 42}, moved(customer(), corr_street="2 Elm St"), "lsn:1000", NOW)
    assert result.dead == []
    [(topic, event)] = result.events
    assert topic == "domain.customer"
    assert (event.event_type, event.event_version, event.aggregate_type, event.aggregate_id) == (
        "CustomerCorrespondenceAddressChanged", 1, "customer", "42")
    assert event.payload == {"customer_id": 42, "street": "2 Elm St", "city": "Springfield", "zip": "12345"}
    assert event.source == "legacy.crm" and event.sequence == "1000"
    assert event.event_time == dt.datetime.fromtimestamp(COMMIT_MS / 1000, dt.UTC)
    assert event.effective_time == dt.datetime(2023, 12, 9, tzinfo=dt.UTC)  # epoch day 19700
    assert event.processing_time == NOW and event.correlation_id == "req-1"


def test_one_change_may_produce_several_events() -> None:
    status = {"table": "public.customers", "ops": ["u"], "changed": ["status"], "event": "CustomerStatusChanged",
              "aggregate_type": "customer", "key": "id", "payload": {"customer_id": "id", "status": "status"},
              "topic": "domain.customer-status"}
    result = mapper(ADDRESS_RULE, status).map(
        {"id": 42}, moved(customer(), corr_zip="99999", status="closed"), "p", NOW)
    assert [(t, e.event_type) for t, e in result.events] == [
        ("domain.customer", "CustomerCorrespondenceAddressChanged"),
        ("domain.customer-status", "CustomerStatusChanged"),
    ]
    assert len({e.event_id for _, e in result.events}) == 2


def test_two_rules_for_the_same_event_type_get_different_ids() -> None:
    other = dict(ADDRESS_RULE, topic="domain.customer-copy")
    result = mapper(ADDRESS_RULE, other).map({"id": 42}, moved(customer(), corr_zip="1"), "p", NOW)
    assert len(result.events) == 2
    assert result.events[0][1].event_id != result.events[1][1].event_id


@pytest.mark.parametrize("value", [
    change("u", customer(), customer()),  # nothing listed changed
    change("c", customer()),  # the rule takes updates only
    change("u", customer(name="Bob"), customer(), table="orders"),  # another table
    change("t", None, None),  # truncate
])
def test_a_change_no_rule_selects_produces_nothing(value: dict[str, Any]) -> None:
    result = mapper(ADDRESS_RULE).map({"id": 42}, value, "p", NOW)
    assert result.events == [] and result.dead == []


def test_a_tombstone_is_ignored() -> None:
    result = mapper(ADDRESS_RULE).map({"id": 42}, None, "p", NOW)
    assert result.events == [] and result.dead == []


@pytest.mark.parametrize(("condition", "selected"), [
    ({"column": "status", "op": "eq", "value": "active"}, True),
    ({"column": "status", "op": "eq", "value": "closed"}, False),
    ({"column": "status", "op": "ne", "value": "closed"}, True),
    ({"column": "status", "op": "ne", "value": "active"}, False),
    ({"column": "tier", "op": "in", "value": [1, 2]}, True),
    ({"column": "tier", "op": "in", "value": [3]}, False),
    ({"column": "tier", "op": "not_null"}, True),
    ({"column": "tier", "op": "is_null"}, False),
    ({"column": "correlation_id", "op": "eq", "value": None}, False),
])
def test_predicates(condition: dict[str, Any], selected: bool) -> None:
    result = mapper(registered(when=[condition])).map({"id": 42}, change("c", customer()), "p", NOW)
    assert len(result.events) == (1 if selected else 0)
    assert result.dead == []


def test_null_predicates_on_a_null_column() -> None:
    value = change("c", customer(tier=None))
    assert len(mapper(registered(when=[{"column": "tier", "op": "is_null"}])).map({}, value, "p", NOW).events) == 1
    assert mapper(registered(when=[{"column": "tier", "op": "not_null"}])).map({}, value, "p", NOW).events == []


def test_all_predicates_must_hold() -> None:
    when = [{"column": "status", "op": "eq", "value": "active"}, {"column": "tier", "op": "in", "value": [5]}]
    assert mapper(registered(when=when)).map({"id": 42}, change("c", customer()), "p", NOW).events == []


def test_a_predicate_on_an_absent_or_unsent_column_is_a_dead_letter() -> None:
    absent = mapper(registered(when=[{"column": "colour", "op": "is_null"}]))
    [dead] = absent.map({"id": 42}, change("c", customer()), "p", NOW).dead
    assert "colour" in dead.reason and "not in the row" in dead.reason
    toasted = mapper(registered(when=[{"column": "name", "op": "ne", "value": "x"}]))
    [dead] = toasted.map({"id": 42}, change("c", customer(name=UNAVAILABLE)), "p", NOW).dead
    assert "TOAST" in dead.reason


# -- `changed` and the before image ----------------------------------------------------------------------


def test_without_a_before_image_every_update_counts_as_a_change() -> None:
    result = mapper(ADDRESS_RULE).map({"id": 42}, moved(None), "p", NOW)  # REPLICA IDENTITY DEFAULT
    assert len(result.events) == 1


def test_a_key_only_before_image_counts_as_a_change() -> None:
    result = mapper(ADDRESS_RULE).map({"id": 42}, moved({"id": 42}), "p", NOW)
    assert len(result.events) == 1


def test_an_unchanged_toast_value_is_not_a_change() -> None:
    value = moved(customer(corr_street="old"), corr_street=UNAVAILABLE)
    assert mapper(ADDRESS_RULE).map({"id": 42}, value, "p", NOW).events == []


def test_a_toast_value_the_payload_needs_is_a_dead_letter_naming_the_fix() -> None:
    value = moved(None, corr_city=UNAVAILABLE)
    result = mapper(ADDRESS_RULE).map({"id": 42}, value, "legacy.crm.public.customers/0/17", NOW)
    assert result.events == []
    [dead] = result.dead
    assert "corr_city" in dead.reason and "REPLICA IDENTITY FULL" in dead.reason
    assert dead.position == "legacy.crm.public.customers/0/17"


# -- dead letters ----------------------------------------------------------------------------------------


def test_a_payload_that_fails_validation_is_a_dead_letter_with_reason_and_position() -> None:
    value = change("c", customer(tier="gold"))
    result = mapper(registered()).map({"id": 42}, value, "topic/0/5", NOW)
    assert result.events == []
    [dead] = result.dead
    assert dead.reason.startswith("CustomerRegistered from public.customers: payload does not validate: tier:")
    assert dead.position == "topic/0/5" and dead.key == {"id": 42} and dead.value == value and dead.at == NOW
    assert dead.as_dict()["position"] == "topic/0/5"


def test_a_type_mismatch_is_a_dead_letter() -> None:
    [dead] = mapper(registered()).map({"id": 42}, change("c", customer(id="forty-two")), "p", NOW).dead
    assert "customer_id" in dead.reason


def test_a_missing_key_is_a_dead_letter() -> None:
    [dead] = mapper(registered()).map(None, change("c", customer(id=None)), "p", NOW).dead
    assert "missing key column(s) ['id']" in dead.reason


def test_a_missing_payload_column_is_a_dead_letter() -> None:
    row = customer()
    del row["tier"]
    [dead] = mapper(registered()).map({"id": 42}, change("c", row), "p", NOW).dead
    assert "'tier' is not in the row" in dead.reason


@pytest.mark.parametrize(("value", "reason"), [
    ([1, 2], "expected a JSON object"),
    ({"op": "c", "after": {}}, "no 'source'"),
    ({"op": "c", "after": {}, "source": {"connector": "postgresql"}}, "names no schema and table"),
    ({"after": {}, "source": {"schema": "public", "table": "customers"}}, "no 'op'"),
    ({"op": "c", "after": [1], "source": {"schema": "public", "table": "customers"}}, "must be objects"),
])
def test_what_is_not_a_change_event_is_a_dead_letter(value: Any, reason: str) -> None:
    result = mapper(registered()).map(None, value, "t/0/1", NOW)
    [dead] = result.dead
    assert dead.reason.startswith("not a change event") and reason in dead.reason


def test_one_failing_rule_does_not_stop_the_others() -> None:
    strict = registered(payload={"customer_id": "id", "name": "status", "tier": "name"})  # tier from text
    result = mapper(strict, registered(topic="domain.other")).map({"id": 42}, change("c", customer()), "p", NOW)
    assert len(result.events) == 1 and len(result.dead) == 1


def test_a_bad_effective_time_is_a_dead_letter() -> None:
    [dead] = mapper(ADDRESS_RULE).map({"id": 42}, moved(None, address_valid_from="soon"), "p", NOW).dead
    assert "cannot read a time from 'soon'" in dead.reason


# -- ids -------------------------------------------------------------------------------------------------


def test_a_replay_yields_identical_ids() -> None:
    m = mapper(ADDRESS_RULE)
    value = moved(None, corr_zip="1")
    first = m.map({"id": 42}, value, "t/0/1", NOW).events[0][1]
    again = mapper(ADDRESS_RULE).map({"id": 42}, value, "t/0/999", NOW + dt.timedelta(hours=1)).events[0][1]
    assert first.event_id == again.event_id
    assert uuid.UUID(first.event_id).version == 5
    assert again.processing_time != first.processing_time


def test_another_source_position_yields_another_id() -> None:
    m = mapper(ADDRESS_RULE)
    a = m.map({"id": 42}, change("u", customer(), lsn=1000), "p", NOW).events[0][1]
    b = m.map({"id": 42}, change("u", customer(), lsn=1008), "p", NOW).events[0][1]
    assert a.event_id != b.event_id


def test_snapshot_rows_at_one_lsn_get_ids_by_key_or_row() -> None:
    m = mapper(registered())
    ids = {m.map({"id": i}, change("r", customer(id=i)), "p", NOW).events[0][1].event_id for i in range(5)}
    assert len(ids) == 5
    keyless = {m.map(None, change("r", customer(id=i)), "p", NOW).events[0][1].event_id for i in range(5)}
    assert len(keyless) == 5


def test_the_position_stands_in_for_a_source_without_one() -> None:
    value = change("c", customer())
    value["source"] = {"schema": "public", "table": "customers", "ts_ms": COMMIT_MS}
    a = mapper(registered()).map({"id": 42}, value, "t/0/1", NOW).events[0][1]
    b = mapper(registered()).map({"id": 42}, value, "t/0/2", NOW).events[0][1]
    assert (a.sequence, b.sequence) == ("t/0/1", "t/0/2") and a.event_id != b.event_id


# -- envelopes and values --------------------------------------------------------------------------------


def test_the_json_with_schema_form_is_read_and_its_decimals_decoded() -> None:
    types = {"PriceSet": {"payload": {"sku": "str", "price": "decimal", "weight": "decimal|null"}}}
    rule = {"table": "public.products", "ops": ["c"], "event": "PriceSet", "aggregate_type": "product", "key": "sku",
            "payload": {"sku": "sku", "price": "price", "weight": "weight"}, "topic": "domain.product"}
    payload = change("c", {"sku": "A-1", "price": base64.b64encode((-12345).to_bytes(2, "big", signed=True)).decode(),
                           "weight": {"scale": 3, "value": base64.b64encode((1500).to_bytes(2, "big")).decode()}},
                     table="products")
    decimal = {"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "parameters": {"scale": "2"},
               "field": "price"}
    variable = {"type": "struct", "name": "io.debezium.data.VariableScaleDecimal", "field": "weight"}
    row_schema = {"type": "struct", "fields": [{"type": "string", "field": "sku"}, decimal, variable]}
    schema = {"type": "struct", "fields": [dict(row_schema, field="before"), dict(row_schema, field="after")]}
    key = {"schema": {"type": "struct", "fields": [{"type": "string", "field": "sku"}]}, "payload": {"sku": "A-1"}}
    result = mapper(rule, types=types).map(key, {"schema": schema, "payload": payload}, "p", NOW)
    assert result.dead == []
    [(_, event)] = result.events
    assert event.payload == {"sku": "A-1", "price": "-123.45", "weight": "1.500"}
    schemaless = mapper(rule, types=types).map({"sku": "A-1"}, payload, "p", NOW)
    assert schemaless.events == []  # base64 without its scale cannot be a decimal
    assert "price" in schemaless.dead[0].reason


def test_a_mysql_style_source_reads_database_table_and_binlog_position() -> None:
    value = change("c", customer())
    value["source"] = {"connector": "mysql", "db": "crm", "table": "customers", "file": "binlog.000003",
                       "pos": 4711, "row": 2, "ts_ms": COMMIT_MS}
    rule = registered(table="crm.customers")
    [(_, event)] = mapper(rule).map({"id": 42}, value, "p", NOW).events
    assert event.sequence == "binlog.000003:4711:2"


def test_a_delete_maps_from_the_before_image() -> None:
    rule = {"table": "public.customers", "ops": ["d"], "event": "CustomerStatusChanged", "aggregate_type": "customer",
            "key": "id", "payload": {"customer_id": "id", "status": "status"}, "topic": "domain.customer"}
    [(_, event)] = mapper(rule).map({"id": 42}, change("d", None, customer(status="gone")), "p", NOW).events
    assert event.payload == {"customer_id": 42, "status": "gone"}


def test_composite_keys_join_with_a_colon() -> None:
    [(_, event)] = mapper(registered(key=["id", "tier"])).map({}, change("c", customer()), "p", NOW).events
    assert event.aggregate_id == "42:2"


def test_a_declared_name_and_version_are_published() -> None:
    types = dict(TYPES, registered_v3={"name": "CustomerRegistered", "version": 3,
                                       "payload": {"customer_id": "int", "name": "str"}})
    rule = registered(event="registered_v3", payload={"customer_id": "id", "name": "name"})
    [(_, event)] = mapper(rule, types=types).map({"id": 42}, change("c", customer()), "p", NOW).events
    assert (event.event_type, event.event_version) == ("CustomerRegistered", 3)


def test_a_pydantic_class_named_by_import_path_validates_the_payload() -> None:
    types = {"AddressChanged": {"model": "tests.events.models:AddressChanged", "version": 4}}
    rule = {"table": "public.customers", "ops": ["u"], "event": "AddressChanged", "aggregate_type": "customer",
            "key": "id", "payload": {"customer_id": "id", "street": "corr_street", "zip": "corr_zip",
                                     "valid_from": "address_valid_from", "changed_at": "changed_at"},
            "topic": "domain.customer"}
    m = mapper(rule, types=types)
    micros = 1_700_000_000_123_456
    [(_, event)] = m.map({"id": 42}, moved(None, changed_at=micros), "p", NOW).events
    assert event.event_version == 4
    assert event.payload == {"customer_id": 42, "street": "1 Main St", "zip": "12345", "valid_from": "2023-12-09",
                             "changed_at": "2023-11-14T22:13:20.123456Z"}
    [dead] = m.map({"id": 42}, moved(None, changed_at=None, corr_zip=12345), "p", NOW).dead
    assert "zip" in dead.reason


@pytest.mark.parametrize(("value", "expected"), [
    ("2024-01-02T03:04:05Z", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)),
    ("2024-01-02T03:04:05", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)),
    (1_704_164_645, dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)),
    (1_704_164_645_000, dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)),
    (1_704_164_645_000_000, dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)),
    (19724, dt.datetime(2024, 1, 2, tzinfo=dt.UTC)),
])
def test_effective_times_in_every_rendering(value: Any, expected: dt.datetime) -> None:
    [(_, event)] = mapper(ADDRESS_RULE).map({"id": 42}, moved(None, address_valid_from=value), "p", NOW).events
    assert event.effective_time == expected


def test_datetime_payload_fields_read_epoch_renderings() -> None:
    types = {"Seen": {"payload": {"id": "int", "at": "datetime", "on": "date|null"}}}
    rule = {"table": "public.customers", "ops": ["c"], "event": "Seen", "aggregate_type": "customer", "key": "id",
            "payload": {"id": "id", "at": "address_valid_from", "on": "tier"}, "topic": "domain.seen"}
    row = customer(address_valid_from=1_704_164_645_000, tier=None)
    [(_, event)] = mapper(rule, types=types).map({"id": 42}, change("c", row), "p", NOW).events
    assert event.payload == {"id": 42, "at": "2024-01-02T03:04:05Z", "on": None}


def test_the_commit_time_falls_back_to_milliseconds() -> None:
    value = change("c", customer())
    del value["source"]["ts_us"]
    value["source"]["ts_ms"] = 1_704_164_645_250
    [(_, event)] = mapper(registered()).map({"id": 42}, value, "p", NOW).events
    assert event.event_time == dt.datetime(2024, 1, 2, 3, 4, 5, 250000, tzinfo=dt.UTC)


@pytest.mark.parametrize("identity", ["", "legacy.crm|public.customers|1000|{\"id\":42}|X|1|0", "ü" * 300])
def test_event_ids_are_uuid5_in_the_mappers_namespace(identity: str) -> None:
    from strangler.events.mapping import NAMESPACE, event_id

    assert event_id(identity) == str(uuid.uuid5(NAMESPACE, identity))
