"""Reconciliation between two real PostgreSQL schemas of 200,000 rows: every injected difference is found
exactly, normalisation leaves no false positives, drift ages across runs, the ledger advances, a stopped
run resumes, and repair events reach a real broker.

One database is populated once for the module (legacy `crm.customers`, new `profile.customers` holding
the same state in another shape); each scenario copies the new table and injects its differences.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette

from strangler.config import load_config_text
from strangler.maturity.ledger import Stage, StageEvent
from strangler.reconcile.admin_api import drift_routes
from strangler.reconcile.repair import KafkaRepairPublisher
from strangler.reconcile.scheduler import ReconcileScheduler
from strangler.reconcile.service import Reconciliation
from strangler.routing.modes import Mode
from strangler.store import create_store_engine, upgrade_schema
from tests.support.kafka import consume_all
from tests.support.postgres import PostgresCluster, PostgresDatabase, unique_database_name

pytestmark = pytest.mark.integration

ROWS = 200_000
T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
# the legacy side: integer keys (negative and int4's maximum included), exact types, UTC timestamps
LEGACY = f"""
CREATE SCHEMA crm;
CREATE TABLE crm.customers (id integer PRIMARY KEY, full_name text, email varchar(200), balance numeric(12,2),
                            active boolean, updated timestamptz);
INSERT INTO crm.customers
SELECT CASE WHEN g = 1 THEN -5 WHEN g = 2 THEN 2147483647 ELSE g END, 'name ' || g, 'user' || g || '@example.org',
       round((g % 100000) / 7.0, 2), g % 3 = 0, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second'
FROM generate_series(1, {ROWS}) AS g;
"""
# the new side: bigint keys under another name, padded strings, a wider numeric scale, naive Berlin times
NEW = """
CREATE SCHEMA profile;
CREATE TABLE profile.customers (customer_id bigint PRIMARY KEY, name text, email text, balance numeric(16,4),
                                is_active boolean, updated_local timestamp);
INSERT INTO profile.customers
SELECT id, full_name || CASE WHEN id % 10 = 0 THEN '  ' ELSE '' END, ' ' || email, balance, active,
       (updated AT TIME ZONE 'Europe/Berlin') FROM dblink_placeholder;
"""
FIELDS = {"full_name": "name", "email": "email", "balance": "balance",
          "active": "is_active", "updated": "updated_local"}


@pytest.fixture(scope="module")
def state_db(pg_cluster: PostgresCluster) -> Iterator[PostgresDatabase]:
    pg_cluster.start()
    db = pg_cluster.create_database(unique_database_name("reconcile_state"))
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute(LEGACY)
        conn.execute(NEW.replace("dblink_placeholder", "crm.customers"))
        conn.execute("ANALYZE")
    yield db
    pg_cluster.drop_database(db.name)


def config_text(db: PostgresDatabase, table: str, **job: Any) -> str:
    options = "".join(f"\n      {k}: {json.dumps(v)}" for k, v in job.items())
    return f"""
store: {db.url()}
capabilities:
  customer-profile: {{legacy: legacy, new: customers, routes: ["GET /customers/{{id}}"], mode: new}}
upstreams: {{legacy: {{url: "http://127.0.0.1:1"}}, customers: {{url: "http://127.0.0.1:2"}}}}
precedence:
  entities:
    customer:
      capability: customer-profile
      groups:
        contact: {{fields: [/email, /active], authority: legacy}}
        profile: {{fields: [/full_name, /updated], authority: {{follow: customer-profile}}}}
reconcile:
  jobs:
    {table.split(".")[1]}:
      entity: customer
      legacy: {{url: "{db.url()}", table: crm.customers, key: [id]}}
      new: {{url: "{db.url()}", table: "{table}", key: [customer_id], timezone: Europe/Berlin}}
      fields: {json.dumps({**FIELDS, "balance": {"new": "balance"}})}
      no_authority: report{options}
"""


def new_table(db: PostgresDatabase, name: str, sql: str = "") -> str:
    """A copy of the new side's table with `sql` applied to it (`T` stands for the copy)."""
    table = f"profile.{name}"
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} (LIKE profile.customers INCLUDING ALL)")
        conn.execute(f"INSERT INTO {table} SELECT * FROM profile.customers")
        if sql:
            conn.execute(sql.replace("T.", f"{table}.").replace(" T ", f" {table} "))
        conn.execute(f"ANALYZE {table}")
    return table


def run(db: PostgresDatabase, table: str, clock: dt.datetime = T0, modes: dict[str, Mode] | None = None,
        **job: Any) -> dict[str, Any]:
    config = load_config_text(config_text(db, table, **job))
    upgrade_schema(config.store)
    service = Reconciliation(config, create_store_engine(config.store), lambda: clock)
    return service.run_job(job_name(table), modes or {"customer-profile": Mode.NEW}).as_dict()


def job_name(table: str) -> str:
    return table.split(".")[1]


def found(report: dict[str, Any]) -> set[tuple[str, str]]:
    return {(e["entity_key"], f["field"]) for e in report["drifted"] for f in e["fields"]}


def inject(count: int, seed: int) -> tuple[str, set[tuple[str, str]]]:
    """SQL that makes `count` differences of every kind, and the (entity key, field) each must be found as."""
    rng = random.Random(seed)
    ids = rng.sample(range(3, ROWS + 1), count)
    statements, expected = [], set()
    for i, key in enumerate(ids):
        kind = i % 6
        if kind == 0:
            statements.append(f"UPDATE T SET email = 'changed{key}@example.org' WHERE customer_id = {key};")
            expected.add((str(key), "email"))
        elif kind == 1:
            statements.append(f"UPDATE T SET balance = balance + 0.01 WHERE customer_id = {key};")
            expected.add((str(key), "balance"))
        elif kind == 2:
            statements.append(f"DELETE FROM T WHERE customer_id = {key};")  # missing on the new side
            expected.add((str(key), "(row)"))
        elif kind == 3:
            extra = 3_000_000_000 + key  # beyond int4: a key only the bigint side can hold
            statements.append(f"INSERT INTO T VALUES ({extra}, 'x', 'x', 1, true, '2024-01-01');")
            expected.add((str(extra), "(row)"))
        elif kind == 4:
            statements.append(f"UPDATE T SET updated_local = updated_local + interval '1 millisecond', "
                              f"is_active = NOT is_active WHERE customer_id = {key};")
            expected |= {(str(key), "updated"), (str(key), "active")}
        else:
            statements.append(f"UPDATE T SET name = NULL WHERE customer_id = {key};")
            expected.add((str(key), "full_name"))
    return "\n".join(statements), expected


@pytest.mark.parametrize("count", [0, 1, 100, 10_000])
def test_every_injected_difference_is_found_exactly(state_db: PostgresDatabase, count: int) -> None:
    sql, expected = inject(count, seed=count)
    table = new_table(state_db, f"c_{count}", sql)
    report = run(state_db, table)
    assert report["complete"] is True
    assert found(report) == expected  # nothing missed, no false positive from padding, scale or zones
    extras = sum(1 for key, _ in expected if int(key) >= 3_000_000_000)
    assert report["compared"] == ROWS + extras
    if count == 1:  # a single difference in 200,000 rows: only a sliver is read row by row
        assert report["rows_read"] < 2_000


def test_missing_on_the_legacy_side_and_the_key_edges(state_db: PostgresDatabase) -> None:
    table = new_table(state_db, "edges", "DELETE FROM T WHERE customer_id = -5; "
                                         "UPDATE T SET email = 'x' WHERE customer_id = 2147483647;")
    with psycopg.connect(state_db.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE crm.customers_edges (LIKE crm.customers INCLUDING ALL)")
        conn.execute("INSERT INTO crm.customers_edges SELECT * FROM crm.customers WHERE id <> 77")
    config = config_text(state_db, table).replace("table: crm.customers,", "table: crm.customers_edges,")
    service = Reconciliation(load_config_text(config), create_store_engine(state_db.url()), lambda: T0)
    upgrade_schema(state_db.url())
    report = service.run_job("edges", {"customer-profile": Mode.NEW}).as_dict()
    by_key = {e["entity_key"]: e for e in report["drifted"]}
    assert set(by_key) == {"-5", "2147483647", "77"}
    assert by_key["77"]["fields"][0]["new"] is not None and by_key["77"]["fields"][0]["legacy"] is None
    assert by_key["-5"]["key"] == {"id": -5}


def test_drift_is_classified_under_the_precedence_rules(state_db: PostgresDatabase) -> None:
    table = new_table(state_db, "classes", "UPDATE T SET email = 'e', name = 'n', balance = 0 "
                                           "WHERE customer_id = 10; DELETE FROM T WHERE customer_id = 11;")
    fields = {f["field"]: f for e in run(state_db, table)["drifted"] if e["entity_key"] == "10" for f in e["fields"]}
    assert (fields["email"]["classification"], fields["email"]["authority"]) == ("non-authoritative", "legacy")
    assert (fields["full_name"]["classification"], fields["full_name"]["authority"]) == ("non-authoritative", "new")
    assert (fields["balance"]["classification"], fields["balance"]["authority"]) == ("no-authority", None)
    # entity 11 lacks on the new side, which is authoritative for its profile while the capability serves new
    missing = [e for e in run(state_db, table)["drifted"] if e["entity_key"] == "11"][0]["fields"][0]
    assert missing["classification"] == "authoritative"
    legacy_serving = [e for e in run(state_db, table, modes={"customer-profile": Mode.LEGACY})["drifted"]
                      if e["entity_key"] == "11"][0]["fields"][0]
    assert legacy_serving["classification"] == "non-authoritative"


def test_first_seen_age_and_resolution_across_runs(state_db: PostgresDatabase) -> None:
    table = new_table(state_db, "ages", "UPDATE T SET email = 'a' WHERE customer_id IN (100, 200);")
    first = run(state_db, table, clock=T0)
    assert found(first) == {("100", "email"), ("200", "email")}
    with psycopg.connect(state_db.dsn, autocommit=True) as conn:  # 100 is repaired, 300 starts drifting
        conn.execute(f"UPDATE {table} SET email = ' user100@example.org' WHERE customer_id = 100")
        conn.execute(f"UPDATE {table} SET email = 'b' WHERE customer_id = 300")
    later = T0 + dt.timedelta(hours=2)
    second = run(state_db, table, clock=later)
    by_key = {e["entity_key"]: e for e in second["drifted"]}
    assert set(by_key) == {"200", "300"}
    assert by_key["200"]["first_seen"] == T0.isoformat() and by_key["200"]["age_seconds"] == 7200
    assert by_key["300"]["first_seen"] == later.isoformat() and by_key["300"]["age_seconds"] == 0
    assert second["resolved"] == 1
    with psycopg.connect(state_db.dsn) as conn:
        resolved = conn.execute("SELECT resolved_at FROM reconcile_drift WHERE job = 'ages' "
                                "AND entity_key = '100' AND resolved_at IS NOT NULL").fetchall()
    assert [r[0] for r in resolved] == [later]


def test_ledger_changes_of_clean_entities_become_reconciled(state_db: PostgresDatabase) -> None:
    from strangler.maturity.store import SqlLedgerStore

    table = new_table(state_db, "ledger", "UPDATE T SET email = 'x' WHERE customer_id = 5;")
    upgrade_schema(state_db.url())
    ledger = SqlLedgerStore(create_store_engine(state_db.url()))
    before = T0 - dt.timedelta(minutes=5)
    for cid, key in (("c-clean", "6"), ("c-drift", "5")):
        ledger.record([StageEvent(cid, key, Stage.ACCEPTED, before, "customer-profile"),
                       StageEvent(cid, key, Stage.APPLIED, before, "customer-profile")])
    ledger.record([StageEvent("c-late", "7", Stage.APPLIED, T0 + dt.timedelta(hours=1), "customer-profile")])
    report = run(state_db, table)
    assert report["reconciled"] == 1
    assert ledger.journeys("c-clean")[0].stage is Stage.RECONCILED
    assert ledger.journeys("c-drift")[0].stage is Stage.APPLIED  # its entity drifts: not trusted yet
    assert ledger.journeys("c-late")[0].stage is Stage.APPLIED  # applied after the run began


class StopAfter:
    """A progress observer that asks the run to stop after `n` chunks (as Ctrl-C does)."""

    def __init__(self, n: int, stop: threading.Event) -> None:
        self.n, self.stop, self.seen = n, stop, 0

    def begin(self, job: str, chunks: int, done: int, rows: int) -> None:
        self.chunks, self.done = chunks, done

    def advance(self, job: str, compared: int, drifted: int) -> None:
        self.seen += 1
        if self.seen >= self.n:
            self.stop.set()


def test_an_interrupted_run_resumes_where_it_stopped(state_db: PostgresDatabase) -> None:
    sql, expected = inject(60, seed=7)
    table = new_table(state_db, "resume", sql)
    config = load_config_text(config_text(state_db, table, chunk_rows=20_000))
    upgrade_schema(config.store)
    service = Reconciliation(config, create_store_engine(config.store), lambda: T0)
    stop = threading.Event()
    progress = StopAfter(3, stop)
    first = service.run_job("resume", {"customer-profile": Mode.NEW}, progress=progress, stop=stop)
    assert not first.complete and progress.chunks == 10 and first.resolved == 0
    second_progress = StopAfter(100, threading.Event())
    second = service.run_job("resume", {"customer-profile": Mode.NEW}, progress=second_progress)
    assert second.complete and second.run_id == first.run_id
    assert second.resumed_chunks == 3 and second_progress.done == 3 and second_progress.seen == 7
    assert found(second.as_dict()) == expected
    assert second.compared == run(state_db, table)["compared"]


def test_repair_emits_the_authoritative_state_to_the_broker(state_db: PostgresDatabase, kafka_broker: Any,
                                                            kafka_topic: str) -> None:
    table = new_table(state_db, "repair", "UPDATE T SET email = 'wrong', name = 'other' WHERE customer_id = 42; "
                                          "DELETE FROM T WHERE customer_id = 43;")
    config = load_config_text(config_text(state_db, table))
    upgrade_schema(config.store)
    service = Reconciliation(config, create_store_engine(config.store), lambda: T0)
    publisher = KafkaRepairPublisher(kafka_broker.bootstrap_servers, kafka_topic)
    report = service.run_job("repair", {"customer-profile": Mode.NEW}, publisher=publisher)
    publisher.close()
    assert report.repaired == 2
    records = consume_all(kafka_broker.bootstrap_servers, kafka_topic, expected=2)
    events = {json.loads(value)["aggregate_id"]: json.loads(value) for _, value in records}
    assert {key.decode() for key, _ in records} == {"42", "43"}
    e42 = events["42"]
    assert (e42["event_type"], e42["source"], e42["aggregate_type"]) == ("CustomerStateReconciled",
                                                                        "reconciliation", "customer")
    # email belongs to legacy (its value is legacy's), full_name to new while the capability serves new
    assert e42["payload"]["state"]["email"] == "user42@example.org"
    assert e42["payload"]["state"]["full_name"] == "other"
    assert "balance" not in e42["payload"]["state"]  # no authority: not the reconciliation's to assert
    assert sorted(e42["payload"]["drifted"]) == ["email", "full_name"]
    assert events["43"]["payload"]["absent_on"] == ["new"]


async def test_drift_endpoint_and_gauges(state_db: PostgresDatabase) -> None:
    table = new_table(state_db, "admin", "UPDATE T SET email = 'z' WHERE customer_id IN (1000, 1001);")
    run(state_db, table, clock=T0)
    config = load_config_text(config_text(state_db, table))
    later = T0 + dt.timedelta(minutes=10)
    service = Reconciliation(config, create_store_engine(config.store), lambda: later)
    app = Starlette(routes=drift_routes(service))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin") as client:
        body = (await client.get("/drift", params={"job": "admin"})).json()
        unknown = await client.get("/drift", params={"job": "nope"})
    job = body["jobs"][0]
    assert (job["drifted_entities"], job["oldest_drift_seconds"]) == (2, 600.0)
    assert {e["entity_key"] for e in job["drifted"]} == {"1000", "1001"}
    assert unknown.status_code == 404
    registry = CollectorRegistry()
    scheduler = ReconcileScheduler(service, lambda: {}, registry)
    await scheduler.refresh_gauges()
    text = generate_latest(registry).decode()
    assert 'strangler_reconcile_drifted_entities{job="admin"} 2.0' in text
    assert 'strangler_reconcile_oldest_drift_seconds{job="admin"} 600.0' in text


def test_the_command_stops_on_sigint_and_the_next_run_resumes(state_db: PostgresDatabase, tmp_path: Any) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    sql, expected = inject(30, seed=11)
    table = new_table(state_db, "sigint", sql)
    path = tmp_path / "strangler.yaml"
    path.write_text(config_text(state_db, table, chunk_rows=10_000))
    upgrade_schema(state_db.url())  # the command would create the tables; the test reads them first
    command = [sys.executable, "-m", "strangler", "reconcile", "-c", str(path), "sigint", "--format", "json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": os.getcwd()})
    deadline = time.monotonic() + 60
    done = 0
    with psycopg.connect(state_db.dsn, autocommit=True) as conn:
        while done < 3 and time.monotonic() < deadline and process.poll() is None:
            row = conn.execute("SELECT chunks_done FROM reconcile_runs WHERE job = 'sigint'").fetchone()
            done = len(json.loads(row[0])) if row else 0
            time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    first = json.loads(out)
    assert first["complete"] is False and "checkpoint is kept" in err
    second = run(state_db, table, clock=dt.datetime.now(dt.UTC), chunk_rows=10_000)  # the command's clock
    assert second["run"] == first["run"] and second["resumed_chunks"] >= 3 and second["complete"] is True
    assert found(second) == expected


async def test_the_schedule_runs_jobs_with_every(state_db: PostgresDatabase) -> None:
    import asyncio

    table = new_table(state_db, "every", "UPDATE T SET email = 'q' WHERE customer_id = 3;")
    config = load_config_text(config_text(state_db, table, every="1s", chunk_rows=50_000))
    upgrade_schema(config.store)
    service = Reconciliation(config, create_store_engine(config.store), lambda: dt.datetime.now(dt.UTC))
    registry = CollectorRegistry()
    scheduler = ReconcileScheduler(service, lambda: {"customer-profile": Mode.NEW}, registry)
    await scheduler.start()
    try:
        for _ in range(300):
            runs = service.store.runs("every", 5)
            if sum(1 for r in runs if r["status"] == "done") >= 2:
                break
            await asyncio.sleep(0.1)
    finally:
        await scheduler.stop()
    assert sum(1 for r in service.store.runs("every", 5) if r["status"] == "done") >= 2
    assert 'strangler_reconcile_drifted_entities{job="every"} 1.0' in generate_latest(registry).decode()


def test_deep_bisection_finds_the_same_differences(state_db: PostgresDatabase) -> None:
    sql, expected = inject(6, seed=100)
    table = new_table(state_db, "deep", sql)
    report = run(state_db, table, buckets=16, leaf_rows=4)  # 16 buckets a level: several levels to the leaves
    assert found(report) == expected
    assert report["queries"] > 2 * (2 + 2) and report["rows_read"] < 100  # recursed, then read a few rows
