"""Reconciliation with keys that are not integers (text, composite, hash-chunked), SQL query sides, and the
`strangler reconcile` command's JSON output and exit codes, on a real PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from strangler.cli import main
from tests.support.postgres import PostgresDatabase

pytestmark = pytest.mark.integration

SETUP = """
CREATE TABLE legacy_accounts (region text, code varchar(20), owner text, opened date, PRIMARY KEY (region, code));
INSERT INTO legacy_accounts SELECT r, 'K' || g, 'owner ' || g, date '2020-01-01' + g
FROM generate_series(1, 3000) g, unnest(ARRAY['eu', 'EU', 'us-east', 'ä/ö', '10', '9']) r;
CREATE TABLE new_accounts AS SELECT region AS area, code AS account, owner AS holder, opened::timestamp AS since
FROM legacy_accounts;
ALTER TABLE new_accounts ADD PRIMARY KEY (area, account);
UPDATE new_accounts SET holder = 'someone' WHERE area = 'ä/ö' AND account = 'K17';
DELETE FROM new_accounts WHERE area = '10' AND account = 'K2';
INSERT INTO new_accounts VALUES ('9', 'K2 ', 'owner 2', '2020-01-03');
UPDATE new_accounts SET holder = upper(holder) WHERE area = 'EU' AND account = 'K5';
"""


def write_config(tmp_path: Path, db: PostgresDatabase, legacy: str, **job: Any) -> Path:
    extra = "".join(f"\n      {k}: {json.dumps(v)}" for k, v in job.items())
    path = tmp_path / "strangler.yaml"
    path.write_text(f"""
store: {db.url()}
precedence:
  entities:
    account: {{groups: {{all: {{fields: [/owner, /opened], authority: new}}}}}}
reconcile:
  jobs:
    accounts:
      entity: account
      legacy: {{url: "{db.url()}", {legacy}, key: [region, code]}}
      new: {{url: "{db.url()}", table: new_accounts, key: [area, account]}}
      fields: {{owner: holder, opened: {{new: since, type: date}}}}{extra}
""")
    return path


@pytest.mark.parametrize("legacy", ["table: legacy_accounts",
                                    'query: "SELECT region, code, owner, opened FROM legacy_accounts"'])
def test_composite_text_keys_in_hash_chunks(pg_database: PostgresDatabase, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str], legacy: str) -> None:
    with psycopg.connect(pg_database.dsn, autocommit=True) as conn:
        conn.execute(SETUP)
    path = write_config(tmp_path, pg_database, legacy, chunks=3, buckets=64, leaf_rows=16)
    code = main(["reconcile", "-c", str(path), "accounts", "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert main(["reconcile", "-c", str(path), "accounts", "--show"]) == 5  # the stored drift, as a table
    table = capsys.readouterr().out
    assert "K17" in table and "owner" in table and "accounts: 4 drifted entities" in table
    assert code == 5  # drift found
    assert report["job"] == "accounts" and report["compared"] == 18_001 and report["chunks"] == 3
    found = {(tuple(e["key"].values()), f["field"]) for e in report["drifted"] for f in e["fields"]}
    # 'EU'/'eu' and 'K2 '/'K2' are distinct keys: key text is neither case-folded nor trimmed
    assert found == {(("ä/ö", "K17"), "owner"), (("10", "K2"), "(row)"), (("9", "K2 "), "(row)"),
                     (("EU", "K5"), "owner")}
    assert {e["entity_key"] for e in report["drifted"]} >= {"ä/ö/K17", "9/K2 "}


def test_reconcile_command_exit_codes(pg_database: PostgresDatabase, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    with psycopg.connect(pg_database.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE legacy_accounts (region text, code text, owner text, opened date, "
                     "PRIMARY KEY (region, code)); CREATE TABLE new_accounts (area text, account text, holder text, "
                     "since date, PRIMARY KEY (area, account));"
                     "INSERT INTO legacy_accounts VALUES ('eu', 'a', 'x', '2020-01-01');"
                     "INSERT INTO new_accounts VALUES ('eu', 'a', ' x ', '2020-01-01');")
    path = write_config(tmp_path, pg_database, "table: legacy_accounts")
    assert main(["reconcile", "-c", str(path), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["drifted"] == []
    assert main(["reconcile", "-c", str(path)]) == 0
    assert "accounts: 0 drifted entities of 1 compared" in capsys.readouterr().out
    assert main(["reconcile", "-c", str(path), "nope"]) == 2
    assert main(["reconcile", "-c", str(path), "--repair", "emit"]) == 2  # no reconcile.repair configured
    assert main(["reconcile", "-c", str(path), "--show", "--format", "json"]) == 0
    broken = write_config(tmp_path, pg_database, "table: no_such_table")
    assert main(["reconcile", "-c", str(broken)]) == 1
    assert "no_such_table" in capsys.readouterr().err


def test_repair_emit_writes_jsonl_events(pg_database: PostgresDatabase, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with psycopg.connect(pg_database.dsn, autocommit=True) as conn:
        conn.execute(SETUP)
    path = write_config(tmp_path, pg_database, "table: legacy_accounts")
    sink = tmp_path / "repair.jsonl"
    path.write_text(path.read_text() + f"  repair: {{kind: jsonl, path: {sink}}}\n")
    assert main(["reconcile", "-c", str(path), "--repair", "emit", "--format", "json"]) == 5
    assert json.loads(capsys.readouterr().out)["repaired"] == 4
    events = [json.loads(line) for line in sink.read_text().splitlines()]
    by_id = {e["aggregate_id"]: e for e in events}
    assert set(by_id) == {"ä/ö/K17", "10/K2", "9/K2 ", "EU/K5"}
    # new is authoritative: its holder stands, and where new lacks the entity the event says so
    assert by_id["ä/ö/K17"]["payload"]["state"] == {"owner": "someone", "opened": "2020-01-18"}
    assert by_id["10/K2"]["payload"]["absent_on"] == ["new"] and by_id["10/K2"]["payload"]["state"] == {}
    assert {e["event_type"] for e in events} == {"AccountStateReconciled"}

