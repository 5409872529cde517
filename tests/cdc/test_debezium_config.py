from __future__ import annotations

import json
from pathlib import Path

import pytest

from strangler.cli import main

CONFIG = """\
cdc:
  connectors:
    legacy-crm:
      source:
        kind: postgres
        dsn: "host=db.internal port=5433 user=cdc password=s3cret dbname=crm sslmode=require"
        slot: strangler_crm
        publication: strangler_crm
        table_include: ["public\\\\.customers", "public\\\\.orders"]
        column_exclude: ["public\\\\.customers\\\\.ssn"]
        snapshot: when_needed
        heartbeat_interval: 5
        heartbeat_action_query: "UPDATE heartbeat SET at = now()"
        decimal_handling_mode: string
        tombstones_on_delete: false
        skipped_operations: [t]
      sink: {kind: kafka, bootstrap_servers: "kafka:9092", topic_prefix: legacy.crm, schemas: true}
    embedded:
      source: {kind: sqlite, path: legacy.db}
      sink: {kind: jsonl}
"""


def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    path = tmp_path / "strangler.yaml"
    path.write_text(CONFIG)
    code = main(["cdc", "debezium-config", "-c", str(path), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_debezium_config_key_by_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(tmp_path, capsys, "legacy-crm")
    assert code == 0
    body = json.loads(out)
    assert body["name"] == "legacy-crm"
    assert body["config"] == {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "plugin.name": "pgoutput",
        "database.hostname": "db.internal",
        "database.port": "5433",
        "database.user": "cdc",
        "database.password": "${env:PGPASSWORD}",
        "database.dbname": "crm",
        "database.sslmode": "require",
        "topic.prefix": "legacy.crm",
        "slot.name": "strangler_crm",
        "publication.name": "strangler_crm",
        "publication.autocreate.mode": "filtered",
        "snapshot.mode": "when_needed",
        "snapshot.fetch.size": "2000",
        "table.include.list": "public\\.customers,public\\.orders",
        "column.exclude.list": "public\\.customers\\.ssn",
        "tombstones.on.delete": "false",
        "decimal.handling.mode": "string",
        "time.precision.mode": "adaptive",
        "interval.handling.mode": "numeric",
        "binary.handling.mode": "bytes",
        "skipped.operations": "t",
        "heartbeat.interval.ms": "5000",
        "heartbeat.action.query": "UPDATE heartbeat SET at = now()",
        "topic.heartbeat.prefix": "__debezium-heartbeat",
        "status.update.interval.ms": "10000",
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable": "true",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "true",
    }


def test_the_password_only_with_show_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(tmp_path, capsys, "legacy-crm", "--show-secrets")
    assert code == 0 and json.loads(out)["config"]["database.password"] == "s3cret"


def test_a_sqlite_connector_has_no_debezium_equivalent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(tmp_path, capsys, "embedded")
    assert code == 2 and "Debezium has no connector for it" in err


def test_an_unknown_connector_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(tmp_path, capsys, "nope")
    assert code == 2 and "unknown connector 'nope' (configured: embedded, legacy-crm)" in err


def test_install_is_for_sqlite_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "strangler.yaml"
    path.write_text(CONFIG)
    assert main(["cdc", "install", "-c", str(path), "legacy-crm"]) == 2
    assert "install is for sqlite sources" in capsys.readouterr().err
