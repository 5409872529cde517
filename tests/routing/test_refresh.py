"""Each process's in-memory flags: refreshed from a real store, kept when the store goes away, never flipped alone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from strangler.app import utcnow
from strangler.config import StranglerConfig
from strangler.routing.gate import NoEvidence
from strangler.routing.metrics import FlagMetrics
from strangler.routing.modes import Mode, RoutingFlag
from strangler.routing.refresh import FlagCache, FlagRefresher
from strangler.routing.router import initial_flags
from strangler.routing.service import FlagService
from strangler.routing.store import SqlFlagStore, StoredFlag
from strangler.store import create_store_engine, upgrade_schema

CAP = "customer-profile"
CAPABILITIES = StranglerConfig.model_validate(
    {
        "upstreams": {"legacy": {"url": "http://127.0.0.1:9"}, "customers": {"url": "http://127.0.0.1:9"}},
        "capabilities": {
            CAP: {"legacy": "legacy", "new": "customers", "routes": ["GET /customers/{id}"], "mode": "shadow",
                  "sticky": "path:id"},
            "orders": {"legacy": "legacy", "new": "customers", "routes": ["GET /orders/{id}"]},
        },
    }
).capabilities
INITIAL = initial_flags(CAPABILITIES)


class CountingStore:
    """The real store, counting the loads the refresher asks for."""

    def __init__(self, store: SqlFlagStore) -> None:
        self.store = store
        self.loads = 0

    def change_counter(self) -> int:
        return self.store.change_counter()

    def load(self) -> dict[str, StoredFlag]:
        self.loads += 1
        return self.store.load()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


class Setup:
    def __init__(self, url: str, interval: float = 30.0) -> None:
        upgrade_schema(url)
        self.url = url
        self.engine = create_store_engine(url)
        self.store = CountingStore(SqlFlagStore(self.engine, INITIAL, utcnow))
        self.cache = FlagCache(INITIAL)
        self.registry = CollectorRegistry()
        self.refresher = FlagRefresher(self.store, self.cache, interval, store_url=url,
                                       metrics=FlagMetrics(self.registry))
        # a second writer with its own engine, as another gateway instance would be
        self.other_engine = create_store_engine(url)
        self.writer = FlagService(CAPABILITIES, SqlFlagStore(self.other_engine, INITIAL, utcnow), NoEvidence())

    def flip(self, mode: Mode, percent: float | None = None) -> StoredFlag:
        return self.writer.change(CAP, mode=mode, percent=percent, reason="test", actor="ops", force=True)

    def gauge(self, name: str) -> float | None:
        return self.registry.get_sample_value(name)

    def close(self) -> None:
        self.engine.dispose()
        self.other_engine.dispose()


@pytest.fixture
def sqlite_setup(tmp_path: Path) -> Any:
    setup = Setup(f"sqlite:///{tmp_path / 'flags.db'}")
    yield setup
    setup.close()


@pytest.fixture
def pg_setup(pg_database: Any) -> Any:
    setup = Setup(pg_database.url())
    yield setup
    setup.close()


async def wait_for(condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until `condition()` held; fails after `timeout`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


# --- the cache --------------------------------------------------------------------------------------------


def test_the_cache_starts_with_the_initial_modes_and_says_so() -> None:
    cache = FlagCache(INITIAL)
    assert cache.flag(CAP) == RoutingFlag(Mode.SHADOW, 0.0, 0)
    assert cache.status(100.0) == {
        "flag_store": "unreachable", "flags_source": "configured initial modes", "flags_age_seconds": None,
        "flag_store_error": None,
    }


def test_replacing_keeps_initial_modes_for_unstored_flags_and_ignores_unknown_capabilities() -> None:
    cache = FlagCache(INITIAL)
    cache.replace({"orders": RoutingFlag(Mode.NEW, 0.0, 4), "retired": RoutingFlag(Mode.NEW_ONLY, 0.0, 9)}, 7, 10.0)
    assert cache.flag("orders") == RoutingFlag(Mode.NEW, 0.0, 4)
    assert cache.flag(CAP) == RoutingFlag(Mode.SHADOW, 0.0, 0)
    with pytest.raises(KeyError):
        cache.flag("retired")
    assert cache.status(12.5) == {"flag_store": "up", "flags_source": "store", "flags_age_seconds": 2.5,
                                  "flag_store_error": None}


def test_the_cache_keeps_the_stored_rows_of_known_capabilities() -> None:
    cache = FlagCache(INITIAL)
    row = StoredFlag("orders", Mode.NEW, 0.0, 4, None, "ops", "clean")
    retired = StoredFlag("retired", Mode.NEW, 0.0, 1, None, None, None)
    cache.replace({"orders": row.routing}, 7, 10.0, {"orders": row, "retired": retired})
    assert cache.records == {"orders": row}


# --- refreshing -------------------------------------------------------------------------------------------


async def test_a_refresh_loads_only_when_the_change_counter_moved(sqlite_setup: Setup) -> None:
    s = sqlite_setup
    await s.refresher.refresh()
    assert (s.store.loads, s.cache.counter, s.cache.store_up) == (1, 0, True)
    await s.refresher.refresh()
    assert s.store.loads == 1  # nothing changed: one cheap query, no reload
    s.flip(Mode.CANARY, 5)
    await s.refresher.refresh()
    assert s.store.loads == 2
    assert s.cache.flag(CAP) == RoutingFlag(Mode.CANARY, 5.0, 1)
    assert (s.gauge("strangler_flag_store_up"), s.gauge("strangler_flags_age_seconds")) == (1.0, 0.0)


async def test_polling_picks_up_a_change_within_the_interval(sqlite_setup: Setup) -> None:
    s = sqlite_setup
    s.refresher.interval = 0.2
    await s.refresher.start()
    try:
        s.flip(Mode.NEW)
        took = await wait_for(lambda: s.cache.flag(CAP).mode is Mode.NEW, timeout=2.0)
        assert took < 1.0
    finally:
        await s.refresher.stop()


async def test_stop_ends_the_polling_and_a_second_stop_is_harmless(sqlite_setup: Setup) -> None:
    s = sqlite_setup
    s.refresher.interval = 0.05
    await s.refresher.start()
    await s.refresher.stop()
    before = s.cache.flag(CAP)
    s.flip(Mode.NEW)
    s.refresher.wake()
    await asyncio.sleep(0.3)  # six intervals: a loop still running would have loaded the change
    assert s.cache.flag(CAP) == before
    await s.refresher.stop()


async def test_wake_refreshes_at_once(sqlite_setup: Setup) -> None:
    s = sqlite_setup
    await s.refresher.start()  # interval 30 s: only a wake-up can explain a fast refresh
    try:
        s.flip(Mode.NEW_ONLY)
        s.refresher.wake()
        assert await wait_for(lambda: s.cache.flag(CAP).mode is Mode.NEW_ONLY, timeout=2.0) < 1.0
    finally:
        await s.refresher.stop()


async def test_postgresql_notify_wakes_every_listener_at_once(pg_setup: Setup, pg_database: Any) -> None:
    s = pg_setup
    await s.refresher.start()  # interval 30 s: only NOTIFY can explain a fast refresh
    try:
        with psycopg.connect(pg_database.dsn, autocommit=True) as conn:
            await wait_for(lambda: conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN strangler_flags'"
            ).fetchone()[0] == 1, timeout=10.0)
        s.flip(Mode.CANARY, 50)
        took = await wait_for(lambda: s.cache.flag(CAP) == RoutingFlag(Mode.CANARY, 50.0, 1), timeout=5.0)
        assert took < 1.0
    finally:
        await s.refresher.stop()


# --- the store away ---------------------------------------------------------------------------------------


async def test_an_unreachable_store_keeps_the_last_flags_and_reports_it(
    pg_setup: Setup, pg_cluster: Any
) -> None:
    s = pg_setup
    s.flip(Mode.CANARY, 25)
    await s.refresher.refresh()
    assert s.cache.flag(CAP) == RoutingFlag(Mode.CANARY, 25.0, 1)
    pg_cluster.stop()
    try:
        await s.refresher.refresh()
        assert s.cache.flag(CAP) == RoutingFlag(Mode.CANARY, 25.0, 1)  # never flips by itself
        assert s.cache.flag("orders") == RoutingFlag(Mode.LEGACY, 0.0, 0)
        status = s.cache.status(time.monotonic())
        assert (status["flag_store"], status["flags_source"]) == ("unreachable", "store")
        assert status["flag_store_error"]
        assert s.gauge("strangler_flag_store_up") == 0.0
        first_age = s.gauge("strangler_flags_age_seconds")
        await asyncio.sleep(0.3)
        await s.refresher.refresh()
        assert s.gauge("strangler_flags_age_seconds") > first_age + 0.25  # the age grows
    finally:
        pg_cluster.start()
    await s.refresher.refresh()
    assert (s.cache.store_up, s.gauge("strangler_flag_store_up"), s.gauge("strangler_flags_age_seconds")) == (
        True, 1.0, 0.0
    )
    s.flip(Mode.LEGACY)
    await s.refresher.refresh()
    assert s.cache.flag(CAP) == RoutingFlag(Mode.LEGACY, 0.0, 2)


async def test_starting_without_the_store_routes_by_the_initial_modes(
    pg_setup: Setup, pg_cluster: Any, caplog: pytest.LogCaptureFixture
) -> None:
    s = pg_setup
    s.flip(Mode.NEW)  # stored, but this process never sees it while the store is away
    pg_cluster.stop()
    try:
        await s.refresher.start()
        assert s.cache.flag(CAP) == RoutingFlag(Mode.SHADOW, 0.0, 0)
        status = s.cache.status(time.monotonic())
        assert (status["flag_store"], status["flags_source"], status["flags_age_seconds"]) == (
            "unreachable", "configured initial modes", None
        )
        assert (s.gauge("strangler_flag_store_up"), s.gauge("strangler_flags_age_seconds")) == (0.0, -1.0)
        assert "routing by the configured initial modes" in caplog.text
    finally:
        pg_cluster.start()
    try:
        s.refresher.wake()
        await wait_for(lambda: s.cache.flag(CAP).mode is Mode.NEW, timeout=10.0)
        assert s.cache.status(time.monotonic())["flags_source"] == "store"
    finally:
        await s.refresher.stop()


async def test_a_flag_row_this_version_cannot_read_keeps_the_last_flags_and_refreshing_goes_on(
    sqlite_setup: Setup,
) -> None:
    """E.g. a newer gateway stored a mode this one does not know: report it, never flip, keep polling."""
    s = sqlite_setup
    s.refresher.interval = 0.1
    s.flip(Mode.CANARY, 5)
    await s.refresher.start()
    try:
        assert s.cache.flag(CAP) == RoutingFlag(Mode.CANARY, 5.0, 1)
        with s.other_engine.begin() as conn:
            conn.execute(text("UPDATE routing_flags SET mode = 'dark-launch', version = 2"))
            conn.execute(text("UPDATE strangler_meta SET value = value + 1"))
        await wait_for(lambda: not s.cache.store_up, timeout=2.0)
        assert s.cache.flag(CAP) == RoutingFlag(Mode.CANARY, 5.0, 1)
        assert "dark-launch" in (s.cache.last_error or "")
        assert s.gauge("strangler_flag_store_up") == 0.0
        with s.other_engine.begin() as conn:
            conn.execute(text("UPDATE routing_flags SET mode = 'new'"))
            conn.execute(text("UPDATE strangler_meta SET value = value + 1"))
        await wait_for(lambda: s.cache.flag(CAP) == RoutingFlag(Mode.NEW, 5.0, 2), timeout=2.0)
        assert s.cache.store_up and s.gauge("strangler_flag_store_up") == 1.0
    finally:
        await s.refresher.stop()
