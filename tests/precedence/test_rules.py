"""Looking up field groups, the response classifier and the configuration check's coverage."""

from __future__ import annotations

from typing import Any

import pytest

from strangler.events import DomainEventsConfig
from strangler.precedence import PrecedenceConfig, PrecedenceRules
from strangler.precedence.coverage import uncovered_fields
from strangler.precedence.rules import response_classifier
from strangler.shadow.compare import PointerSet

PRECEDENCE = PrecedenceConfig.model_validate({"entities": {
    "customer": {"capability": "profile", "groups": {
        "address": {"fields": ["street", "/city", "/lines/*/text"], "authority": {"follow": "profile"},
                    "conflict": "authority-wins"},
        "contact": {"fields": ["/email"], "authority": "legacy"},
    }},
}})


@pytest.mark.parametrize(("path", "group"), [
    ("/street", "address"),
    ("/city", "address"),
    ("/lines/3/text", "address"),
    ("/lines/3/kind", None),
    ("/email", "contact"),
    ("/email/verified", "contact"),  # beneath a covered field
    ("/name", None),
])
def test_the_group_covering_a_field(path: str, group: str | None) -> None:
    rules = PrecedenceRules(PRECEDENCE)
    found = rules.group_for("customer", path)
    expected = PRECEDENCE.entities["customer"].groups[group] if group else None
    assert found is expected


def test_uncovered_lists_fields_with_no_authority() -> None:
    rules = PrecedenceRules(PRECEDENCE)
    assert rules.uncovered("customer", ["/street", "/name", "/email", "/zip"]) == ["/name", "/zip"]
    assert rules.uncovered("order", ["/total"]) == ["/total"]
    assert rules.by_capability == {"profile": "customer"}


@pytest.mark.parametrize(("capability", "path", "classification"), [
    ("profile", "/street", "regression"),
    ("profile", "/name", "unknown-authority"),
    ("profile", "/updated_at", "expected"),
    ("profile", "status", "regression"),  # the response's status: the serving side decides
    ("profile", "header:content-type", "regression"),
    ("profile", "body", "regression"),
    ("billing", "/anything", "regression"),  # no entity claims the capability: the serving side decides
])
def test_the_response_classifier(capability: str, path: str, classification: str) -> None:
    classify = response_classifier({"profile": PointerSet(["/updated_at"])}, PrecedenceRules(PRECEDENCE))
    assert classify(capability, path, "legacy") == classification


def events(*rules: dict[str, Any]) -> DomainEventsConfig:
    types = {"AddressChanged": {"payload": {"customer_id": "int", "street": "str", "city": "str", "zip": "str"}},
             "OrderPlaced": {"payload": {"order_id": "int", "total": "float"}}}
    return DomainEventsConfig.model_validate({"source": "legacy.crm", "types": types, "rules": list(rules)})


ADDRESS = {"table": "public.customers", "event": "AddressChanged", "aggregate_type": "customer", "key": "id",
           "payload": {"customer_id": "id", "street": "s", "city": "c", "zip": "z"}, "topic": "domain.customer"}
ORDER = {"table": "public.orders", "event": "OrderPlaced", "aggregate_type": "order", "key": "id",
         "payload": {"order_id": "id", "total": "total"}, "topic": "domain.order"}


def test_coverage_lists_uncovered_payload_fields_per_entity() -> None:
    [customer, order] = uncovered_fields(events(ADDRESS, ORDER), PRECEDENCE)
    assert (customer.entity, customer.fields, customer.rules, customer.no_rule) == (
        "customer", ("/customer_id", "/zip"), (0,), False)
    assert "compared fields with no authority: /customer_id, /zip (payload fields of cdc.domain_events.rules[0])" in (
        customer.message("cdc.domain_events.rules"))
    assert (order.entity, order.fields, order.no_rule) == ("order", ("/order_id", "/total"), True)
    assert "no precedence rule for entity 'order'" in order.message("rules")


def test_ignored_fields_need_no_authority() -> None:
    assert [u.fields for u in uncovered_fields(events(ADDRESS), PRECEDENCE, ["/customer_id", "/zip"])] == []


def test_a_fully_covered_mapping_passes() -> None:
    precedence = PrecedenceConfig.model_validate({"entities": {"customer": {"groups": {
        "all": {"fields": ["/*"], "authority": "legacy"}}}}})
    assert uncovered_fields(events(ADDRESS), precedence) == []
