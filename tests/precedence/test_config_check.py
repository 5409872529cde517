"""`strangler check`: every payload field the outcome comparison compares needs an authority."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from strangler.cli import main
from strangler.config import load_config_text
from strangler.errors import ConfigError

BASE = """
upstreams:
  legacy: {url: "http://127.0.0.1:1"}
  new: {url: "http://127.0.0.1:2"}
capabilities:
  profile: {legacy: legacy, new: new, routes: ["PUT /customers/{id}/address"]}
cdc:
  domain_events:
    source: legacy.crm
    types:
      AddressChanged: {payload: {customer_id: int, street: str, city: str, zip: str}}
      OrderPlaced: {payload: {order_id: int}}
    rules:
      - {table: public.customers, event: AddressChanged, aggregate_type: customer, key: id, topic: domain.customer,
         payload: {customer_id: id, street: corr_street, city: corr_city, zip: corr_zip}}
"""
PRECEDENCE = """
precedence:
  entities:
    customer:
      capability: profile
      groups:
        address: {fields: [/street, /city], authority: {follow: profile}, conflict: authority-wins}
"""


def problems(text: str) -> list[tuple[str, str, int | None]]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="strangler.yaml")
    return info.value.problems


def test_compared_fields_without_authority_are_an_error_naming_them() -> None:
    [(path, message, line)] = problems(BASE + PRECEDENCE)
    assert path == "precedence.entities.customer.groups"
    assert message.startswith("compared fields with no authority: /customer_id, /zip "
                              "(payload fields of cdc.domain_events.rules[0])")
    assert line == (BASE + PRECEDENCE).splitlines().index("      groups:") + 1


def test_an_entity_without_any_rule_is_an_error() -> None:
    [(path, message, _)] = problems(BASE)
    assert path == "precedence.entities.customer"
    assert message.startswith("no precedence rule for entity 'customer', whose events are compared "
                              "(cdc.domain_events.rules[0])")
    assert "/customer_id, /street, /city, /zip" in message


def test_every_field_covered_passes() -> None:
    text = BASE + PRECEDENCE.replace("[/street, /city]", "[/street, /city, /zip]") + """
        ids: {fields: [/customer_id], authority: legacy, conflict: reject}
"""
    config = load_config_text(text)
    assert config.cdc is not None and config.cdc.domain_events is not None


def test_fields_the_comparison_ignores_need_no_authority() -> None:
    text = BASE + PRECEDENCE + "outcomes: {compare: {ignore: [/customer_id, /zip]}}\n"
    assert load_config_text(text).outcomes.compare.ignore == ["/customer_id", "/zip"]


def test_strangler_check_exits_2_with_the_key_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "strangler.yaml"
    path.write_text(BASE + PRECEDENCE)
    assert main(["check", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "precedence.entities.customer.groups: compared fields with no authority: /customer_id, /zip" in err
    fixed = yaml.safe_load(BASE + PRECEDENCE)
    fixed["outcomes"] = {"compare": {"ignore": ["/customer_id", "/zip"]}}
    path.write_text(yaml.safe_dump(fixed))
    assert main(["check", "-c", str(path)]) == 0
