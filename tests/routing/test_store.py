"""The SQL flag store and the flag service on a real SQLite file and a real PostgreSQL database.

Compare-and-set under concurrency (threads released together by a barrier), the audit row of every change
and of nothing else, the schema managed by Alembic through `strangler db upgrade`.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import Engine

from strangler.config import StranglerConfig
from strangler.routing.errors import GateRefused, InvalidChange, UnknownCapability, VersionConflict
from strangler.routing.gate import Evidence, NoEvidence
from strangler.routing.modes import Mode
from strangler.routing.router import initial_flags
from strangler.routing.service import FlagService
from strangler.routing.store import SqlFlagStore, StoredFlag, audit_table, meta_table
from strangler.store import StoreUnavailable, create_store_engine, upgrade_schema

CAP = "customer-profile"
TABLES = {"strangler_meta", "routing_flags", "routing_flag_audit", "alembic_version"}
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def capabilities() -> dict[str, Any]:
    return StranglerConfig.model_validate(
        {
            "upstreams": {"legacy": {"url": "http://127.0.0.1:9"}, "customers": {"url": "http://127.0.0.1:9"}},
            "capabilities": {
                CAP: {"legacy": "legacy", "new": "customers", "routes": ["GET /customers/{id}"],
                      "sticky": "header:x-customer", "mode": "shadow"},
                "orders": {"legacy": "legacy", "new": "customers", "routes": ["GET /orders/{id}"]},
                "billing": {"legacy": "legacy", "routes": ["GET /billing/{id}"]},
            },
        }
    ).capabilities


def backend_url(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'flags.db'}"
    return str(request.getfixturevalue("pg_database").url())


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(request, tmp_path, request.param)


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    upgrade_schema(store_url)
    engine = create_store_engine(store_url)
    yield engine
    engine.dispose()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=1)
        return self.now


@pytest.fixture
def store(engine: Engine) -> SqlFlagStore:
    return SqlFlagStore(engine, initial_flags(capabilities()), Clock())


def service(store: SqlFlagStore, evidence: Any = None) -> FlagService:
    return FlagService(capabilities(), store, evidence or NoEvidence())


def audit_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(audit_table)).scalar_one())


def counter(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(meta_table.c.value).where(meta_table.c.key == "flags_version")).scalar_one())


# --- one writer -------------------------------------------------------------------------------------------


def test_a_change_stores_the_flag_its_audit_row_and_bumps_the_change_counter(
    store: SqlFlagStore, engine: Engine
) -> None:
    assert store.load() == {}
    assert store.change_counter() == 0
    flags = service(store)
    stored = flags.change(CAP, mode=Mode.CANARY, percent=5, reason=" five percent ", actor="ops", force=True)
    assert (stored.mode, stored.percent, stored.version, stored.updated_by, stored.reason) == (
        Mode.CANARY, 5.0, 1, "ops", "five percent"
    )
    assert store.load() == {CAP: stored}
    assert store.change_counter() == 1
    [entry] = store.history(CAP)
    assert (entry.actor, entry.from_mode, entry.to_mode, entry.to_percent, entry.version) == (
        "ops", "shadow", "canary", 5.0, 1
    )
    assert entry.forced is True and entry.evidence is not None and entry.evidence["samples"] == 0
    assert entry.at == stored.updated_at and entry.at.tzinfo is not None


def test_history_is_newest_first_and_per_capability(store: SqlFlagStore) -> None:
    flags = service(store)
    flags.change(CAP, mode=Mode.LEGACY, percent=None, reason="one", actor="a")
    flags.change("orders", mode=Mode.NEW, percent=None, reason="elsewhere", actor="b", force=True)
    flags.change(CAP, mode=Mode.SHADOW, percent=None, reason="two", actor="c", force=True)
    flags.change(CAP, mode=Mode.LEGACY, percent=None, reason="three", actor="d")
    assert [(e.reason, e.version) for e in store.history(CAP)] == [("three", 3), ("two", 2), ("one", 1)]
    assert [e.reason for e in store.history(CAP, limit=2)] == ["three", "two"]
    assert [e.reason for e in store.history("orders")] == ["elsewhere"]
    assert store.change_counter() == 4


def test_a_refused_change_writes_nothing(store: SqlFlagStore, engine: Engine) -> None:
    flags = service(store, evidence=_Fixed(Evidence(10, 0)))
    with pytest.raises(GateRefused) as refused:
        flags.change(CAP, mode=Mode.NEW, percent=None, reason="too early", actor="ops")
    assert (refused.value.decision.samples, refused.value.decision.min_samples) == (10, 200)
    with pytest.raises(VersionConflict) as conflict:
        flags.change(CAP, mode=Mode.LEGACY, percent=None, reason="x", actor="ops", expected_version=7)
    assert conflict.value.current.version == 0 and conflict.value.current.mode is Mode.SHADOW
    assert (store.load(), audit_count(engine), counter(engine)) == ({}, 0, 0)


@pytest.mark.parametrize(
    ("capability", "kwargs", "error", "field"),
    [
        ("nope", {"mode": Mode.LEGACY, "percent": None, "reason": "x"}, UnknownCapability, None),
        ("billing", {"mode": Mode.SHADOW, "percent": None, "reason": "x"}, InvalidChange, "mode"),
        (CAP, {"mode": Mode.CANARY, "percent": None, "reason": "x"}, InvalidChange, "percent"),
        (CAP, {"mode": Mode.LEGACY, "percent": None, "reason": " \t"}, InvalidChange, "reason"),
        ("orders", {"mode": Mode.CANARY, "percent": 5, "reason": "x"}, InvalidChange, "mode"),  # no sticky key
    ],
)
def test_the_service_refuses_bad_changes_before_the_store(
    store: SqlFlagStore, engine: Engine, capability: str, kwargs: dict[str, Any], error: type[Exception],
    field: str | None,
) -> None:
    with pytest.raises(error) as raised:
        service(store).change(capability, actor="ops", force=True, **kwargs)
    if field is not None:
        assert raised.value.field == field  # type: ignore[attr-defined]
    assert audit_count(engine) == 0


def test_a_percent_outside_canary_is_stored_as_zero(store: SqlFlagStore) -> None:
    stored = service(store).change(CAP, mode=Mode.NEW, percent=40, reason="x", actor="ops", force=True)
    assert stored.percent == 0.0 and store.load()[CAP].percent == 0.0


class _Fixed:
    def __init__(self, evidence: Evidence) -> None:
        self.value = evidence

    def evidence(self, capability: str) -> Evidence:
        return self.value


# --- concurrent writers -----------------------------------------------------------------------------------


def run_together(n: int, work: Callable[[int], StoredFlag]) -> tuple[list[StoredFlag], list[VersionConflict]]:
    """Run `work(i)` in n threads released at the same moment; successes and conflicts (anything else fails)."""
    barrier = threading.Barrier(n)

    def attempt(i: int) -> StoredFlag | VersionConflict:
        barrier.wait()
        try:
            return work(i)
        except VersionConflict as exc:
            return exc

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(attempt, range(n)))
    return [r for r in results if isinstance(r, StoredFlag)], [r for r in results if isinstance(r, VersionConflict)]


@pytest.mark.parametrize("first_version", [0, 1], ids=["first-insert", "update"])
def test_fifty_concurrent_changes_with_the_same_expected_version_make_exactly_one(
    store: SqlFlagStore, engine: Engine, first_version: int
) -> None:
    flags = service(store)
    if first_version:
        flags.change(CAP, mode=Mode.LEGACY, percent=None, reason="start", actor="ops")

    def work(i: int) -> StoredFlag:
        mode = Mode.LEGACY if i % 2 else Mode.NEW  # backward and forced-forward moves race alike
        return flags.change(CAP, mode=mode, percent=None, reason=f"writer {i}", actor=f"w{i}", force=True,
                            expected_version=first_version)

    won, lost = run_together(50, work)
    assert (len(won), len(lost)) == (1, 49)
    assert won[0].version == first_version + 1
    assert {c.current.version for c in lost} == {first_version + 1}  # every loser sees the winner's flag
    assert {c.current.reason for c in lost} == {won[0].reason}
    assert audit_count(engine) == first_version + 1
    assert store.history(CAP)[0].reason == won[0].reason
    assert counter(engine) == first_version + 1


def test_concurrent_changes_without_an_expected_version_never_lose_an_update(
    store: SqlFlagStore, engine: Engine
) -> None:
    flags = service(store)
    flags.change(CAP, mode=Mode.LEGACY, percent=None, reason="start", actor="ops")
    won, lost = run_together(
        30, lambda i: flags.change(CAP, mode=Mode.SHADOW if i % 2 else Mode.LEGACY, percent=None,
                                   reason=f"writer {i}", actor="ops", force=True)
    )
    assert len(won) + len(lost) == 30 and won
    history = store.history(CAP, limit=1000)
    # each success is one audit row, one version step and one counter step: nothing overwritten silently
    assert len(history) == 1 + len(won)
    assert [e.version for e in history] == list(range(len(won) + 1, 0, -1))
    assert sorted(e.reason for e in history[:-1]) == sorted(w.reason for w in won)
    for newer, older in zip(history, history[1:], strict=False):
        assert newer.from_mode == older.to_mode  # every change starts from the flag its predecessor left
    assert store.load()[CAP].version == len(won) + 1 == counter(engine)


# --- unreachable ------------------------------------------------------------------------------------------


def test_an_unreachable_store_raises_store_unavailable(pg_database: Any, pg_cluster: Any) -> None:
    url = pg_database.url()
    upgrade_schema(url)
    engine = create_store_engine(url)
    store = SqlFlagStore(engine, initial_flags(capabilities()), Clock())
    assert store.change_counter() == 0
    pg_cluster.stop()
    try:
        for call in (store.change_counter, store.load, lambda: store.history(CAP)):
            with pytest.raises(StoreUnavailable):
                call()
        with pytest.raises(StoreUnavailable):
            service(store).change(CAP, mode=Mode.LEGACY, percent=None, reason="x", actor="ops")
    finally:
        pg_cluster.start()
    assert service(store).change(CAP, mode=Mode.LEGACY, percent=None, reason="x", actor="ops").version == 1
    engine.dispose()


def test_a_store_without_its_schema_is_unavailable(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    store = SqlFlagStore(engine, initial_flags(capabilities()), Clock())
    with pytest.raises(StoreUnavailable):
        store.change_counter()
    engine.dispose()


# --- schema -----------------------------------------------------------------------------------------------


def strangler(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "strangler", *args], capture_output=True, text=True, timeout=60)


def head_revision() -> str:
    from importlib.resources import files

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(files("strangler.store") / "migrations"))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def schema(url: str) -> tuple[set[str], str | None]:
    engine = create_store_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
        version = None
        if "alembic_version" in tables:
            with engine.connect() as conn:
                version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return tables, version
    finally:
        engine.dispose()


def test_db_upgrade_creates_the_schema_on_an_empty_store_and_is_idempotent(store_url: str, tmp_path: Path) -> None:
    config = tmp_path / "strangler.yaml"
    config.write_text(yaml.safe_dump({"store": store_url}))
    assert schema(store_url)[0] & TABLES == set()
    first = strangler("db", "upgrade", "-c", str(config))
    assert first.returncode == 0, first.stderr
    assert "newest schema" in first.stdout
    tables, version = schema(store_url)
    assert TABLES <= tables and version == head_revision()
    engine = create_store_engine(store_url)
    store = SqlFlagStore(engine, initial_flags(capabilities()), Clock())
    service(store).change(CAP, mode=Mode.LEGACY, percent=None, reason="kept", actor="ops")
    again = strangler("db", "upgrade", "-c", str(config))
    assert again.returncode == 0, again.stderr
    assert schema(store_url) == (tables, version)
    assert store.history(CAP)[0].reason == "kept" and store.change_counter() == 1  # nothing recreated
    engine.dispose()


def test_concurrent_upgrades_of_one_empty_store_all_succeed(store_url: str, tmp_path: Path) -> None:
    """Several gateways starting at once on a new store: one migrates, the others find the schema in place."""
    config = tmp_path / "strangler.yaml"
    config.write_text(yaml.safe_dump({"store": store_url}))
    command = [sys.executable, "-m", "strangler", "db", "upgrade", "-c", str(config)]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
    outcomes = [(p.wait(60), p.stderr.read() if p.stderr else "") for p in processes]
    assert [code for code, _ in outcomes] == [0] * 4, outcomes
    assert schema(store_url)[1] == head_revision()


def test_upgrades_that_start_together_on_postgresql_all_succeed(pg_database: Any, tmp_path: Path) -> None:
    """Four upgrades held at the first CREATE TABLE by another transaction, then released at the same moment."""
    import psycopg

    config = tmp_path / "strangler.yaml"
    config.write_text(yaml.safe_dump({"store": pg_database.url()}))
    command = [sys.executable, "-m", "strangler", "db", "upgrade", "-c", str(config)]
    with psycopg.connect(pg_database.dsn) as blocker:
        blocker.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(4)]
        with psycopg.connect(pg_database.dsn, autocommit=True) as watcher:
            deadline = time.monotonic() + 60
            waiting = 0
            while waiting < 4 and time.monotonic() < deadline:
                waiting = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                    (pg_database.name,),
                ).fetchone()[0]
                time.sleep(0.05)
        assert waiting == 4, [p.poll() for p in processes]
        blocker.rollback()
    outcomes = [(p.wait(60), p.stderr.read() if p.stderr else "") for p in processes]
    assert [code for code, _ in outcomes] == [0] * 4, outcomes
    assert schema(pg_database.url())[1] == head_revision()


def test_the_start_up_upgrader_warns_once_while_the_store_is_away(
    pg_database: Any, pg_cluster: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from strangler.app import SchemaUpgrader

    upgrader = SchemaUpgrader(pg_database.url())
    pg_cluster.stop()
    try:
        assert [upgrader.try_upgrade() for _ in range(5)] == [False] * 5
    finally:
        pg_cluster.start()
    assert upgrader.error is not None and not upgrader.done
    assert caplog.text.count("cannot upgrade the store's schema yet") == 1
    assert upgrader.try_upgrade() and upgrader.done and upgrader.error is None
    assert "schema is up to date now" in caplog.text
    assert schema(pg_database.url())[1] == head_revision()
