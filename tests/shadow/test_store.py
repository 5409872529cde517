"""The SQL divergence store on SQLite and PostgreSQL: what is written, read back, and pruned by age and count."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine

from strangler.app import RetentionPass
from strangler.config import StranglerConfig
from strangler.shadow.compare import MISSING, FieldDifference
from strangler.shadow.records import ComparisonRecord
from strangler.shadow.store import SqlDivergenceStore, comparisons_table, divergences_table
from strangler.store import StoreUnavailable, create_store_engine, upgrade_schema
from tests.support.postgres import PostgresDatabase

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/store.db"
    else:
        database: PostgresDatabase = request.getfixturevalue("pg_database")
        url = database.url()
    upgrade_schema(url)
    engine = create_store_engine(url)
    yield engine
    engine.dispose()


def record(i: int = 0, *, at: dt.datetime = NOW, capability: str = "items", kind: str = "candidate",
           differences: tuple[FieldDifference, ...] = (), outcome: str = "compared") -> ComparisonRecord:
    return ComparisonRecord(at, capability, "GET /items/{id}", "GET", kind, outcome, f"cid-{i}", "legacy",
                            200, 200 if outcome == "compared" else None, 1.5, 2.5 if outcome == "compared" else None,
                            differences, ("regression",) * len(differences))


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_comparisons_and_divergences_round_trip(engine: Engine) -> None:
    store = SqlDivergenceStore(engine)
    diffs = (FieldDifference("/price", 10, 11.5), FieldDifference("/tags", ["a"], MISSING),
             FieldDifference("/owner", {"id": 1, "name": "Ada"}, None))
    store.record([record(1, differences=diffs), record(2), record(3, kind="noise", differences=diffs[:1])])
    rows = store.comparisons("items", NOW - dt.timedelta(minutes=1))
    assert [(r.kind, r.fields) for r in rows] == [("noise", ("/price",)), ("candidate", ()),
                                                   ("candidate", ("/price", "/tags", "/owner"))]
    assert rows[0].at == NOW and rows[0].at.tzinfo is not None
    assert (rows[2].primary_status, rows[2].other_status, rows[2].primary_latency_ms, rows[2].other_latency_ms) == (
        200, 200, 1.5, 2.5)
    divergences = store.divergences("items")
    assert [(d["field"], d["primary_value"], d["other_value"]) for d in divergences] == [  # newest first
        ("/owner", {"id": 1, "name": "Ada"}, None), ("/tags", ["a"], MISSING), ("/price", 10, 11.5),
    ]  # the noise comparison left no divergence row
    assert {d["correlation_id"] for d in divergences} == {"cid-1"}
    assert divergences[0]["classification"] == "regression"
    assert dt.datetime.fromisoformat(str(divergences[0]["at"])) == NOW


def test_reads_filter_by_capability_time_and_limit(engine: Engine) -> None:
    store = SqlDivergenceStore(engine)
    diff = (FieldDifference("/a", 1, 2),)
    store.record([record(1, at=NOW - dt.timedelta(hours=2), differences=diff),
                  record(2, differences=diff), record(3, capability="other", differences=diff),
                  record(4, differences=diff)])
    assert [r.fields for r in store.comparisons("items", NOW - dt.timedelta(hours=1))] == [("/a",), ("/a",)]
    assert len(store.comparisons("items", NOW - dt.timedelta(hours=3))) == 3
    assert len(store.comparisons("items", NOW - dt.timedelta(hours=3), limit=1)) == 1
    assert [d["correlation_id"] for d in store.divergences("items")] == ["cid-4", "cid-2", "cid-1"]
    assert [d["correlation_id"] for d in store.divergences(None, limit=2)] == ["cid-4", "cid-3"]


def test_prune_deletes_rows_older_than_the_cutoff(engine: Engine) -> None:
    store = SqlDivergenceStore(engine)
    diff = (FieldDifference("/a", 1, 2),)
    old = NOW - dt.timedelta(days=20)
    store.record([record(i, at=old, differences=diff) for i in range(5)])
    store.record([record(i, differences=diff) for i in range(5, 8)])
    deleted = store.prune(NOW - dt.timedelta(days=14), keep=1_000)
    assert deleted == 10
    assert (count(engine, comparisons_table), count(engine, divergences_table)) == (3, 3)
    assert [d["correlation_id"] for d in store.divergences("items")] == ["cid-7", "cid-6", "cid-5"]


def test_prune_keeps_the_newest_rows_per_table(engine: Engine) -> None:
    store = SqlDivergenceStore(engine)
    two = (FieldDifference("/a", 1, 2), FieldDifference("/b", 1, 2))
    for i in range(10):
        store.record([record(i, differences=two)])  # 10 comparisons, 20 divergences
    store.prune(NOW - dt.timedelta(days=14), keep=4)
    assert (count(engine, comparisons_table), count(engine, divergences_table)) == (4, 4)
    assert [r.at for r in store.comparisons("items", NOW - dt.timedelta(days=1))] == [NOW] * 4
    assert [d["correlation_id"] for d in store.divergences("items")] == ["cid-9", "cid-9", "cid-8", "cid-8"]
    assert store.prune(NOW - dt.timedelta(days=14), keep=4) == 0


def test_an_unreachable_store_raises_store_unavailable(tmp_path: Path) -> None:
    store = SqlDivergenceStore(create_store_engine(f"sqlite:///{tmp_path}/missing/dir/store.db"))
    with pytest.raises(StoreUnavailable):
        store.record([record()])
    with pytest.raises(StoreUnavailable):
        store.comparisons("items", NOW)
    with pytest.raises(StoreUnavailable):
        store.prune(NOW, 10)


async def test_the_retention_pass_applies_retention_days_and_max_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    upgrade_schema(url)
    engine = create_store_engine(url)
    store = SqlDivergenceStore(engine)
    store.record([record(i, at=NOW - dt.timedelta(days=3)) for i in range(100)])
    store.record([record(i) for i in range(100, 1300)])
    config = StranglerConfig.model_validate(
        {"upstreams": {"legacy": {"url": "http://127.0.0.1:1"}},
         "divergence_store": {"retention_days": 2, "max_rows": 1000, "prune_interval": 0.05}}
    )
    retention = RetentionPass(store, config)
    await retention.start()
    try:
        for _ in range(100):
            await asyncio.sleep(0.05)
            if count(engine, comparisons_table) == 1000:
                break
    finally:
        await retention.stop()
    rows = store.comparisons("items", NOW - dt.timedelta(days=30), limit=2000)
    assert len(rows) == 1000 and all(r.at == NOW for r in rows)
    engine.dispose()


def test_bodies_are_stored_as_one_more_divergence_row(engine: Engine) -> None:
    store = SqlDivergenceStore(engine)
    diff = (FieldDifference("/a", 1, 2),)
    with_bodies = ComparisonRecord(NOW, "items", "GET /items/{id}", "GET", "candidate", "compared", "cid-b", "legacy",
                                   200, 200, 1.0, 1.0, diff, ("regression",), bodies=({"a": 1}, {"a": 2}))
    store.record([with_bodies])
    rows = store.divergences("items")
    assert [(d["source"], d["field"], d["primary_value"], d["other_value"]) for d in rows] == [
        ("body", "", {"a": 1}, {"a": 2}), ("response", "/a", 1, 2)]
    assert store.comparisons("items", NOW)[0].fields == ("/a",)


def test_sqlite_rows_are_written_as_sqlalchemy_writes_and_reads_them(tmp_path: Path) -> None:
    # the SQLite path bypasses SQLAlchemy's per-row work: its rows must be the ones the Core insert writes
    url = f"sqlite:///{tmp_path}/store.db"
    upgrade_schema(url)
    engine = create_store_engine(url)
    at = dt.datetime(2026, 1, 2, 3, 4, 5, 60708, tzinfo=dt.UTC)
    records = [record(1, at=at, differences=(FieldDifference("/a/é", 1, 2),)),
               record(2, at=at.replace(microsecond=0), kind="noise"),
               ComparisonRecord(at, "items", "GET /x", "GET", "candidate", "dropped", "cid", "legacy", None, None,
                                None, None)]
    SqlDivergenceStore(engine).record(records)
    with engine.begin() as conn:
        conn.execute(insert(comparisons_table), [
            dict(at=r.at, capability=r.capability, route=r.route, method=r.method, kind=r.kind, outcome=r.outcome,
                 correlation_id=r.correlation_id, serving=r.serving, primary_status=r.primary_status,
                 other_status=r.other_status, primary_latency_ms=r.primary_latency_ms,
                 other_latency_ms=r.other_latency_ms, fields=orjson.dumps([d.path for d in r.differences]).decode())
            for r in records])
        raw = conn.exec_driver_sql("SELECT * FROM shadow_comparisons ORDER BY id").fetchall()
    fast, core = raw[:3], raw[3:]
    assert [row[1:] for row in fast] == [row[1:] for row in core]
    rows = SqlDivergenceStore(engine).comparisons("items", at - dt.timedelta(seconds=1))
    assert {row.at for row in rows} == {at, at.replace(microsecond=0)}
    assert sorted(row.outcome for row in rows) == ["compared", "compared", "compared", "compared", "dropped",
                                                  "dropped"]
