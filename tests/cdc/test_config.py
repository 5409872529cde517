from __future__ import annotations

from pathlib import Path

import pytest

from strangler.cdc.config import ConnectorConfig
from strangler.cdc.errors import UnsafeSinkSettings
from strangler.cdc.kafka import producer_settings
from strangler.config import load_config_text
from strangler.errors import ConfigError

BASE = """\
cdc:
  connectors:
    legacy-crm:
      source: {kind: postgres, dsn: "host=db dbname=crm", slot: strangler_crm, table_include: ["public\\\\.customers"]}
      sink: {kind: kafka, bootstrap_servers: "kafka:9092", topic_prefix: legacy.crm}
"""


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="s.yaml", env={})
    return str(info.value)


def test_the_design_shape_loads_with_defaults() -> None:
    cdc = load_config_text(BASE, env={}).cdc
    assert cdc is not None
    connector = cdc.connectors["legacy-crm"]
    assert connector.source.snapshot == "initial" and connector.source.publication == "strangler"
    assert connector.source.decimal_handling_mode == "precise" and connector.source.tombstones_on_delete
    assert connector.sink.topic_prefix == "legacy.crm" and connector.sink.schemas is False


def test_no_cdc_section_is_fine() -> None:
    assert load_config_text("workers: 1\n", env={}).cdc is None


@pytest.mark.parametrize(
    "old,new,expected",
    [
        ("slot: strangler_crm", "sloot: strangler_crm", "s.yaml:4: cdc.connectors.legacy-crm.source.sloot: unknown "
                                                        "key; did you mean 'slot'?"),
        ("slot: strangler_crm", "slot: Bad-Slot", "cdc.connectors.legacy-crm.source.slot: expected lower-case"),
        ("kind: postgres,", "kind: mysql,", "cdc.connectors.legacy-crm.source.kind: Input should be 'postgres' or "
                                            "'sqlite'"),
        ("slot: strangler_crm", "path: x.db", "path: only for kind 'sqlite'"),
        ("dsn: \"host=db dbname=crm\", ", "", "a postgres source needs 'dsn'"),
        ('table_include: ["public\\\\.customers"]', 'table_include: ["("]', "'(' is not a regular expression"),
        ("topic_prefix: legacy.crm", "topic_prefix: legacy.crm, producer: {acks: 1}",
         "producer.acks: 1 can lose acknowledged changes"),
        ("topic_prefix: legacy.crm", "topic_prefix: legacy.crm, producer: {enable.idempotence: false}",
         "producer.enable.idempotence: False can lose"),
        ("topic_prefix: legacy.crm", "topic_prefix: legacy.crm, path: out.jsonl", "path: only for kind 'jsonl'"),
        ("kind: kafka, bootstrap_servers: \"kafka:9092\", ", "kind: kafka, ", "a kafka sink needs 'bootstrap_servers'"),
    ],
)
def test_invalid_cdc_configuration_names_the_key(old: str, new: str, expected: str) -> None:
    assert old in BASE
    assert expected in error(BASE.replace(old, new, 1))


def test_unknown_key_in_cdc_itself_is_an_error() -> None:
    assert "cdc.domain_event: unknown key" in error(BASE + "  domain_event: {}\n")


@pytest.mark.parametrize("setting", [{"retries": 0}, {"delivery.report.only.error": True},
                                     {"max.in.flight.requests.per.connection": 10}, {"acks": "1"}])
def test_the_kafka_sink_refuses_settings_that_can_lose_data(setting: dict[str, object]) -> None:
    connector = ConnectorConfig.model_construct(
        source=None, sink=ConnectorConfig.model_validate({
            "source": {"kind": "sqlite", "path": "x"}, "sink": {"kind": "kafka", "bootstrap_servers": "k:1"}}).sink)
    sink = connector.sink.model_copy(update={"producer": setting})
    with pytest.raises(UnsafeSinkSettings):
        producer_settings(sink, "x")


def test_the_kafka_sink_forces_acks_all_and_idempotence_and_passes_the_rest_through(tmp_path: Path) -> None:
    sink = ConnectorConfig.model_validate({
        "source": {"kind": "sqlite", "path": "x"},
        "sink": {"kind": "kafka", "bootstrap_servers": "k:1", "producer": {"linger.ms": 50, "acks": "all"}},
    }).sink
    settings = producer_settings(sink, "crm")
    assert settings["acks"] == "all" and settings["enable.idempotence"] is True
    assert settings["linger.ms"] == 50 and settings["bootstrap.servers"] == "k:1"
    assert settings["partitioner"] == "murmur2_random"
