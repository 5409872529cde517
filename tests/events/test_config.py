"""The mapping configuration refuses what could not work, naming where."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from strangler.events import DomainEventsConfig

RULE = {"table": "public.customers", "event": "CustomerRegistered", "aggregate_type": "customer", "key": "id",
        "payload": {"customer_id": "id", "name": "name"}, "topic": "domain.customer"}
TYPES = {"CustomerRegistered": {"payload": {"customer_id": "int", "name": "str"}}}


def config(**changes: Any) -> DomainEventsConfig:
    return DomainEventsConfig.model_validate({"source": "legacy.crm", "types": TYPES, "rules": [RULE], **changes})


def problem(**changes: Any) -> str:
    with pytest.raises(ValidationError) as info:
        config(**changes)
    return str(info.value)


def test_a_valid_configuration() -> None:
    c = config(consume={"bootstrap_servers": "b:9092", "topics": ["legacy.crm.public.customers"]},
               publish={"bootstrap_servers": "b:9092"}, dead_letter={"topic": "dead"})
    assert c.rules[0].ops == ["c", "u", "r"] and c.consume is not None and c.consume.group_id


@pytest.mark.parametrize(("changes", "message"), [
    ({"rules": [dict(RULE, event="Nope")]}, "rules[0].event: unknown event type 'Nope' (types: CustomerRegistered)"),
    ({"rules": [dict(RULE, payload={"customer_id": "id"})]}, "rules[0].payload: no column for ['name']"),
    ({"rules": [dict(RULE, payload={**RULE["payload"], "x": "y"})]}, "rules[0].payload: ['x'] not fields of"),
    ({"rules": [dict(RULE, table="customers")]}, "expected schema.table"),
    ({"rules": [dict(RULE, topic="no spaces")]}, "expected a Kafka topic name"),
    ({"rules": [dict(RULE, ops=["x"])]}, "rules.0.ops.0"),
    ({"rules": [dict(RULE, when=[{"column": "a", "op": "in", "value": "abc"}])]}, "op 'in' needs a list"),
    ({"rules": [dict(RULE, when=[{"column": "a", "op": "is_null", "value": 1}])]}, "op 'is_null' takes no 'value'"),
    ({"types": {"CustomerRegistered": {"payload": {"a": "integer"}}}}, "unknown type 'integer'"),
    ({"types": {"CustomerRegistered": {}}}, "exactly one of 'payload'"),
    ({"types": {"CustomerRegistered": {"model": "tests.events.models:NOT_A_MODEL"}}}, "is not a pydantic model"),
    ({"types": {"CustomerRegistered": {"model": "tests.events.nowhere:X"}}}, "cannot import 'tests.events.nowhere'"),
    ({"types": {"CustomerRegistered": {"model": "no_colon"}}}, "expected 'package.module:Class'"),
    ({"dead_letter": {"topic": "a", "path": "b"}}, "exactly one of 'topic' or 'path'"),
    ({"dead_letter": {"topic": "dead"}, "publish": {"path": "events.jsonl"}}, "dead_letter.topic needs a broker"),
    ({"publish": {"bootstrap_servers": "b", "producer": {"acks": 1}}}, "acks: 1 can lose acknowledged events"),
    ({"publish": {"bootstrap_servers": "b", "producer": {"enable.idempotence": False}}}, "must be true"),
    ({"publish": {"bootstrap_servers": "b", "producer": {"retries": 0}}}, "retries: 0"),
    ({"publish": {"bootstrap_servers": "b", "path": "x"}}, "exactly one of 'bootstrap_servers' or 'path'"),
    ({"consume": {"bootstrap_servers": "b", "topics": ["t"], "settings": {"enable.auto.commit": True}}},
     "enable.auto.commit cannot be turned on"),
    ({"consume": {"bootstrap_servers": "b", "topics": []}}, "consume.topics"),
    ({"outbox": [{"table": "public.outbox", "extra_columns": {"tenant": "tenant"}}]}, "extra column target 'tenant'"),
])
def test_a_bad_configuration_names_the_problem(changes: dict[str, Any], message: str) -> None:
    assert message in problem(**changes)


def test_a_model_type_needs_its_required_fields_mapped() -> None:
    types = {"CustomerRegistered": {"model": "tests.events.models:AddressChanged"}}
    text = problem(types=types)
    assert "no column for ['street', 'valid_from', 'zip']" in text
