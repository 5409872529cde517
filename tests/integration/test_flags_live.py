"""Routing flags across real `strangler serve` processes on one PostgreSQL store.

A flip through one instance's admin API reaches routing in every instance within 2 s (measured through
each proxy against two echo upstreams that say who answered); with the store stopped, routing stays as the
last flags said, metrics and readiness say so and writes are refused; with the store back, flips work again.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import inspect, text

from strangler.store import create_store_engine
from tests.support.echo import EchoUpstream
from tests.support.gateway import ADMIN_TOKEN, GatewayProcess, metric_value
from tests.support.postgres import PostgresCluster, PostgresDatabase

pytestmark = pytest.mark.integration

CAP = "customer-profile"
AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}
PROPAGATION_LIMIT = 2.0
SETTLED = 30  # consecutive answers from the new side (fresh connections, so every worker is asked)


def gateway_config(store: str, legacy: EchoUpstream, new: EchoUpstream, mode: str = "legacy") -> dict[str, Any]:
    return {
        "workers": 2,
        "store": store,
        "flags": {"refresh_interval": 1.0},
        "limits": {"drain_timeout": 2},
        "upstreams": {"legacy": {"url": legacy.url}, "new": {"url": new.url}},
        "default_upstream": "legacy",
        "capabilities": {
            CAP: {"legacy": "legacy", "new": "new", "mode": mode, "routes": ["GET /customers/{id}"],
                  "sticky": "path:id"},
        },
    }


@pytest.fixture
def gateways(
    pg_database: PostgresDatabase, legacy_echo: EchoUpstream, new_echo: EchoUpstream, tmp_path: Path
) -> Iterator[list[GatewayProcess]]:
    started: list[GatewayProcess] = []
    try:
        for name in ("a", "b"):
            config = gateway_config(pg_database.url(), legacy_echo, new_echo)
            started.append(GatewayProcess(config, tmp_path / name).start())
        yield started
    finally:
        for gateway in started:
            gateway.stop()


@functools.cache
def fresh_connections() -> httpx.Client:
    """A client without keep-alive: a new connection per request, which the kernel may hand to any worker."""
    return httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=5.0)


def answered_by(gateway: GatewayProcess, path: str = "/customers/42") -> str:
    """Which upstream answered."""
    response = fresh_connections().get(f"{gateway.url}{path}")
    assert response.status_code == 200, response.text
    return str(response.json()["server"])


def flip(gateway: GatewayProcess, mode: str, **extra: Any) -> httpx.Response:
    return httpx.put(f"{gateway.admin_url}/flags/{CAP}", headers=AUTH, timeout=10.0,
                     json={"mode": mode, "reason": "integration test", **extra})


def time_until_settled(gateway: GatewayProcess, side: str, since: float, limit: float = 10.0) -> float:
    """Seconds from `since` to the first request after which every answer came from `side` (SETTLED in a row)."""
    run_started: float | None = None
    run = 0
    answers: list[str] = []
    while run or time.monotonic() - since < limit:  # a run that began in time may finish after it
        sent = time.monotonic()
        answers.append(answered_by(gateway))
        if answers[-1] == side:
            run_started = sent if run == 0 else run_started
            run += 1
            if run >= SETTLED:
                assert run_started is not None
                return run_started - since
        else:
            run = 0
    ready = httpx.get(f"{gateway.admin_url}/readyz").json()
    raise AssertionError(f"{gateway.url} did not settle on {side!r} within {limit} s: answers {answers[-40:]}, "
                         f"readyz {ready}, store_up {store_state(gateway)}\n{gateway.log()[-3000:]}")


def measure_flip(gateways: list[GatewayProcess], through: GatewayProcess, mode: str, side: str,
                 **extra: Any) -> list[float]:
    with ThreadPoolExecutor(len(gateways)) as pool:
        since = time.monotonic()
        response = flip(through, mode, **extra)
        assert response.status_code == 200, response.text
        return list(pool.map(lambda g: time_until_settled(g, side, since), gateways))


def test_a_flip_through_one_instance_reaches_routing_in_both_within_2_s(
    gateways: list[GatewayProcess], pg_database: PostgresDatabase, record_property: Any
) -> None:
    a, b = gateways
    engine = create_store_engine(pg_database.url())
    try:  # serve's start-up migrated the empty database
        assert {"routing_flags", "routing_flag_audit", "strangler_meta"} <= set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        engine.dispose()
    for gateway in gateways:
        assert {answered_by(gateway) for _ in range(10)} == {"legacy"}
        # the admin API is never reachable through the proxy port: /flags is just another legacy path
        through_proxy = httpx.get(f"{gateway.url}/flags", headers=AUTH)
        assert through_proxy.json()["server"] == "legacy"

    forward = measure_flip(gateways, a, "new-only", "new", force=True)
    back = measure_flip(gateways, b, "legacy", "legacy")  # the kill switch, through the other instance
    record_property("flip_propagation_seconds", {"forward": forward, "back": back})
    print(f"\nflip propagation (s): legacy->new-only via a: a={forward[0]:.3f} b={forward[1]:.3f}; "
          f"new-only->legacy via b: a={back[0]:.3f} b={back[1]:.3f}")
    assert max(forward + back) < PROPAGATION_LIMIT, (forward, back)
    history = httpx.get(f"{a.admin_url}/flags/{CAP}/history", headers=AUTH).json()["history"]
    assert [(e["to"]["mode"], e["actor"], e["forced"]) for e in history] == [
        ("legacy", "ops", False), ("new-only", "ops", True)
    ]


def store_state(gateway: GatewayProcess) -> tuple[float, float]:
    metrics = gateway.metrics()
    return metric_value(metrics, "strangler_flag_store_up"), metric_value(metrics, "strangler_flags_age_seconds")


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def test_with_the_store_stopped_routing_stays_and_metrics_readiness_and_writes_say_so(
    gateways: list[GatewayProcess], pg_cluster: PostgresCluster
) -> None:
    a, b = gateways
    assert flip(a, "new", force=True).status_code == 200
    for gateway in gateways:
        time_until_settled(gateway, "new", time.monotonic())
        assert store_state(gateway)[0] == 1.0
    pg_cluster.stop()
    try:
        for gateway in gateways:
            wait_until(lambda g=gateway: store_state(g)[0] == 0.0, 10.0, "strangler_flag_store_up 0")
        first_age = store_state(a)[1]
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # routing unchanged: never flips by itself
            assert answered_by(a) == "new" and answered_by(b) == "new"
        assert store_state(a)[1] > first_age + 2.0  # the flags' age grows
        ready = httpx.get(f"{a.admin_url}/readyz").json()
        assert (ready["flag_store"], ready["flags_source"]) == ("unreachable", "store")
        assert ready["flag_store_error"]
        refused = flip(a, "legacy")
        assert refused.status_code == 503 and "unreachable" in refused.json()["detail"]
        assert flip(b, "new-only", force=True).status_code == 503
    finally:
        pg_cluster.start()
    for gateway in gateways:
        wait_until(lambda g=gateway: store_state(g)[0] == 1.0, 15.0, "strangler_flag_store_up 1")
        assert httpx.get(f"{gateway.admin_url}/readyz").json()["flag_store"] == "up"
    assert answered_by(a) == "new"  # nothing was written while the store was away
    took = measure_flip(gateways, b, "legacy", "legacy")
    print(f"\nflip propagation after the store came back (s): a={took[0]:.3f} b={took[1]:.3f}")
    assert max(took) < PROPAGATION_LIMIT


def test_a_gateway_started_without_its_store_routes_by_the_configured_modes(
    pg_database: PostgresDatabase, pg_cluster: PostgresCluster, legacy_echo: EchoUpstream, new_echo: EchoUpstream,
    tmp_path: Path,
) -> None:
    pg_cluster.stop()
    gateway = GatewayProcess(gateway_config(pg_database.url(), legacy_echo, new_echo, mode="new-only"), tmp_path)
    try:
        gateway.start()
        assert {answered_by(gateway) for _ in range(10)} == {"new"}
        ready = httpx.get(f"{gateway.admin_url}/readyz")
        assert ready.status_code == 200
        detail = ready.json()
        assert (detail["flag_store"], detail["flags_source"], detail["flags_age_seconds"]) == (
            "unreachable", "configured initial modes", None
        )
        assert "routing by the configured initial modes" in gateway.log()
        assert store_state(gateway)[0] == 0.0
        assert flip(gateway, "legacy").status_code == 503
        pg_cluster.start()
        # the schema is created once the store answers; then the flags come from the store
        wait_until(lambda: flip(gateway, "legacy").status_code == 200, 20.0, "a flip accepted")
        time_until_settled(gateway, "legacy", time.monotonic())
        assert httpx.get(f"{gateway.admin_url}/readyz").json()["flags_source"] == "store"
    finally:
        pg_cluster.start()
        gateway.stop()
