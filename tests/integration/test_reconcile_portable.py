"""Reconciliation between SQL sides of different databases: SQLite files, MariaDB (the machine's server, a
private database per test) and PostgreSQL (a private cluster), in every pairing that mixes them. The same
state is written to each side in its own types; every injected difference is found exactly, and padding,
numeric scale and the sides' own number, boolean, date and timestamp types never count as drift."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pymysql
import pytest
from sqlalchemy import create_engine, text

from strangler.config import load_config_text
from strangler.reconcile.service import Reconciliation
from strangler.reconcile.sql_dialects import portable_hash
from strangler.store import create_store_engine, upgrade_schema
from tests.support.postgres import PostgresDatabase

pytestmark = pytest.mark.integration

ROWS = 3000
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}

TYPES = {  # dialect -> (integer, text, legacy decimal, new decimal, boolean, timestamp, date)
    "sqlite": ("INTEGER", "VARCHAR(200)", "DECIMAL(12,2)", "NUMERIC(16,4)", "BOOLEAN", "TIMESTAMP", "DATE"),
    "mariadb": ("BIGINT", "VARCHAR(200)", "DECIMAL(12,2)", "DECIMAL(16,4)", "BOOLEAN", "DATETIME(6)", "DATE"),
    "postgresql": ("bigint", "text", "numeric(12,2)", "numeric(16,4)", "boolean", "timestamp", "date"),
}


def customers(new: bool) -> list[dict[str, Any]]:
    """The state each side holds: legacy's exactly, new's padded and at another numeric scale."""
    rows = []
    for i in range(1, ROWS + 1):
        key = -5 if i == 1 else i
        rows.append({
            "id": key,
            "name": f"name {i}" + ("  " if new and i % 10 == 0 else ""),
            "email": ("\t" if new and i % 7 == 0 else "") + f"user{i}@example.org",
            "balance": Decimal(i % 1000) / 7 if new else round(Decimal(i % 1000) / 7, 2),
            "active": i % 3 == 0,
            "updated": dt.datetime(2024, 1, 1) + dt.timedelta(seconds=i, microseconds=(i % 4) * 250_000),
            "opened": dt.date(2020, 1, 1) + dt.timedelta(days=i % 400),
        })
    if new:
        for row in rows:
            row["balance"] = round(row["balance"], 4)
    return rows


def inject(rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """Differences of every kind on the new side, and how each must be found."""
    by_id = {r["id"]: r for r in rows}
    by_id[5]["email"] = "changed@example.org"
    by_id[6]["balance"] += Decimal("0.01")
    rows.remove(by_id[7])
    rows.append({**by_id[11], "id": 100_001})
    by_id[8]["name"] = None
    by_id[9]["updated"] += dt.timedelta(milliseconds=1)
    by_id[9]["active"] = not by_id[9]["active"]
    by_id[10]["opened"] += dt.timedelta(days=1)
    by_id[2000]["name"] = "NAME 2000"
    return {("5", "email"), ("6", "balance"), ("7", "(row)"), ("100001", "(row)"), ("8", "full_name"),
            ("9", "updated"), ("9", "active"), ("10", "opened"), ("2000", "full_name")}


def sqlite_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def create_table(url: str, dialect: str, table: str, key: str, name: str, decimal_type: str,
                 rows: list[dict[str, Any]]) -> None:
    integer, text_type, _, _, boolean, timestamp, date = TYPES[dialect]
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table} ({key} {integer} PRIMARY KEY, {name} {text_type}, "
                          f"email {text_type}, balance {decimal_type}, active {boolean}, updated {timestamp}, "
                          f"opened {date})"))
        values = [{k: sqlite_value(v) if dialect == "sqlite" else v for k, v in r.items()} for r in rows]
        conn.execute(text(f"INSERT INTO {table} ({key}, {name}, email, balance, active, updated, opened) "
                          f"VALUES (:id, :name, :email, :balance, :active, :updated, :opened)"), values)
    engine.dispose()


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """A private database on the machine's MariaDB server, dropped afterwards."""
    name = f"strangler_{uuid.uuid4().hex[:12]}"
    with pymysql.connect(**MARIADB) as conn, conn.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    try:
        yield f"mysql+pymysql://root@127.0.0.1:3306/{name}"
    finally:
        with pymysql.connect(**MARIADB) as conn, conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name}")


@pytest.fixture
def side_url(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[str, str], str]:
    """The URL of a fresh database of a dialect for one side (`legacy` or `new`)."""

    def make(dialect: str, side: str) -> str:
        if dialect == "sqlite":
            return f"sqlite:///{tmp_path / f'{side}.db'}"
        if dialect == "mariadb":
            return str(request.getfixturevalue("mariadb_url"))
        db: PostgresDatabase = request.getfixturevalue("pg_database")
        return db.url()

    return make


def config_text(store: str, legacy: str, new: str, **job: Any) -> str:
    options = "".join(f"\n      {k}: {v}" for k, v in job.items())
    return f"""
store: {store}
reconcile:
  jobs:
    customers:
      entity: customer
      legacy: {{url: "{legacy}", table: legacy_customers, key: [id]}}
      new: {{url: "{new}", table: new_customers, key: [customer_id]}}
      fields: {{full_name: name, email: email, balance: balance, active: active, updated: updated,
               opened: opened}}
      no_authority: report{options}
"""


def found(report: dict[str, Any]) -> set[tuple[str, str]]:
    return {(e["entity_key"], f["field"]) for e in report["drifted"] for f in e["fields"]}


PAIRS = [("sqlite", "sqlite"), ("mariadb", "mariadb"), ("postgresql", "mariadb"), ("mariadb", "sqlite"),
         ("sqlite", "postgresql")]


@pytest.mark.parametrize(("legacy", "new"), PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_every_difference_is_found_exactly_across_databases(
    tmp_path: Path, side_url: Callable[[str, str], str], legacy: str, new: str
) -> None:
    legacy_url, new_url = side_url(legacy, "legacy"), side_url(new, "new")
    create_table(legacy_url, legacy, "legacy_customers", "id", "full_name", TYPES[legacy][2], customers(False))
    new_rows = customers(True)
    expected = inject(new_rows)
    renamed = [{**r, "name": r["name"]} for r in new_rows]
    create_table(new_url, new, "new_customers", "customer_id", "name", TYPES[new][3], renamed)
    config = load_config_text(config_text(f"sqlite:///{tmp_path / 'store.db'}", legacy_url, new_url,
                                          chunk_rows=1000, buckets=64, leaf_rows=16))
    upgrade_schema(config.store)
    service = Reconciliation(config, create_store_engine(config.store), lambda: T0)
    report = service.run_job("customers", {}).as_dict()
    assert report["complete"] and not report["errors"], report["errors"]
    assert found(report) == expected
    assert report["compared"] == ROWS + 1  # every key of either side, once
    by_key = {e["entity_key"]: {f["field"]: f for f in e["fields"]} for e in report["drifted"]}
    assert (by_key["6"]["balance"]["legacy"], by_key["6"]["balance"]["new"]) == ("0.86", "0.87")
    assert (by_key["9"]["updated"]["legacy"], by_key["9"]["updated"]["new"]) == (
        "2024-01-01 00:00:09.25", "2024-01-01 00:00:09.251")
    assert by_key["8"]["full_name"]["new"] is None and by_key["10"]["opened"]["new"] == "2020-01-12"
    # no change: a second run finds the same, nothing more
    again = service.run_job("customers", {}).as_dict()
    assert found(again) == expected


ACCOUNTS = [(region, f"K{i}", f"owner {i}") for i in range(1, 401) for region in ("eu", "us-east", "ä/ö", "10", "9")]


@pytest.mark.parametrize(("legacy", "new"), [("mariadb", "postgresql"), ("sqlite", "mariadb")],
                         ids=["mariadb-postgresql", "sqlite-mariadb"])
def test_composite_text_keys_in_hash_chunks_across_databases(
    tmp_path: Path, side_url: Callable[[str, str], str], legacy: str, new: str
) -> None:
    urls = {"legacy": side_url(legacy, "legacy"), "new": side_url(new, "new")}
    for side, dialect in (("legacy", legacy), ("new", new)):
        text_type = TYPES[dialect][1] if dialect != "mariadb" else "VARCHAR(50)"
        rows = [{"region": r, "code": c, "owner": o} for r, c, o in ACCOUNTS]
        if side == "new":
            rows = [r for r in rows if (r["region"], r["code"]) != ("10", "K2")]
            rows.append({"region": "9", "code": "K999", "owner": "owner 999"})
            for r in rows:
                if (r["region"], r["code"]) == ("ä/ö", "K17"):
                    r["owner"] = "someone"
        engine = create_engine(urls[side])
        with engine.begin() as conn:
            conn.execute(text(f"CREATE TABLE accounts (region {text_type}, code {text_type}, owner {text_type}, "
                              f"PRIMARY KEY (region, code))"))
            conn.execute(text("INSERT INTO accounts VALUES (:region, :code, :owner)"), rows)
        engine.dispose()
    store = f"sqlite:///{tmp_path / 'store.db'}"
    config = load_config_text(f"""
store: {store}
reconcile:
  jobs:
    accounts:
      entity: account
      legacy: {{url: "{urls['legacy']}", table: accounts, key: [region, code]}}
      new: {{url: "{urls['new']}", table: accounts, key: [region, code]}}
      fields: {{owner: owner}}
      no_authority: report
      chunks: 3
      buckets: 64
      leaf_rows: 16
""")
    upgrade_schema(config.store)
    report = Reconciliation(config, create_store_engine(config.store), lambda: T0).run_job("accounts", {}).as_dict()
    assert report["complete"] and not report["errors"], report["errors"]
    assert found(report) == {("10/K2", "(row)"), ("9/K999", "(row)"), ("ä/ö/K17", "owner")}
    assert report["compared"] == len(ACCOUNTS) + 1


def test_the_portable_hash_is_the_same_in_every_database(mariadb_url: str, pg_database: PostgresDatabase) -> None:
    value = "name 42\x1fä/ö"
    pg = create_engine(pg_database.url())
    maria = create_engine(mariadb_url + "?charset=utf8mb4")
    with pg.connect() as conn:
        in_pg = conn.execute(text("SELECT ('x' || substr(md5(:v), 1, 15))::bit(60)::bigint"), {"v": value}).scalar()
    with maria.connect() as conn:
        in_maria = conn.execute(text("SELECT CAST(CONV(SUBSTRING(MD5(:v), 1, 15), 16, 10) AS UNSIGNED)"),
                                {"v": value}).scalar()
    pg.dispose()
    maria.dispose()
    assert in_pg == in_maria == portable_hash(value)


def test_a_mariadb_side_in_a_zone_the_server_does_not_know_is_refused_with_its_reason(
    tmp_path: Path, mariadb_url: str
) -> None:
    from strangler.reconcile.errors import SideUnavailable

    create_table(mariadb_url, "mariadb", "legacy_customers", "id", "full_name", "DECIMAL(12,2)", customers(False))
    create_table(mariadb_url, "mariadb", "new_customers", "customer_id", "name", "DECIMAL(16,4)", customers(True))
    text_config = config_text(f"sqlite:///{tmp_path / 'store.db'}", mariadb_url, mariadb_url).replace(
        "key: [customer_id]}", "key: [customer_id], timezone: Mars/Olympus}")
    config = load_config_text(text_config)
    upgrade_schema(config.store)
    with pytest.raises(SideUnavailable) as raised:
        Reconciliation(config, create_store_engine(config.store), lambda: T0).run_job("customers", {})
    assert "new_customers" in str(raised.value) and "time zone" in str(raised.value).lower()
