"""R8: the flag store (PostgreSQL) stops while traffic flows. Every gateway process keeps routing by its
last known flags (0 flips), flag changes through the admin API are refused with 503, and once the store is
back a change is accepted and reaches the workers.

CI stops the store for 10 s; `STRANGLER_RELIABILITY_FULL=1` for 60 s."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.report import full_run, record
from tests.support.echo import EchoUpstream
from tests.support.gateway import ADMIN_TOKEN, GatewayProcess, metric_value
from tests.support.postgres import PostgresCluster, PostgresDatabase

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.timeout(240)]

OUTAGE = 60.0 if full_run() else 10.0
AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def gateway(tmp_path: Path, pg_database: PostgresDatabase, legacy_upstream: EchoUpstream,
            new_upstream: EchoUpstream) -> Iterator[GatewayProcess]:
    config = {
        "workers": 2,
        "store": pg_database.url(),
        "flags": {"refresh_interval": 0.5},
        "upstreams": {"legacy": {"url": legacy_upstream.url}, "new": {"url": new_upstream.url}},
        "default_upstream": "legacy",
        "capabilities": {
            "orders": {"legacy": "legacy", "new": "new", "mode": "legacy", "routes": ["GET /orders/{id}"]},
        },
    }
    process = GatewayProcess(config, tmp_path / "gateway").start()
    yield process
    process.stop()


def flip(gateway: GatewayProcess, mode: str) -> httpx.Response:
    return httpx.put(f"{gateway.admin_url}/flags/orders", headers=AUTH, timeout=10,
                     json={"mode": mode, "reason": "reliability test R8", "force": True})


def served_by(client: httpx.Client, n: int) -> Counter[str]:
    return Counter(client.get(f"/orders/{i}").json()["server"] for i in range(n))


def eventually(condition, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while (result := condition()) is False or result is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)
    return result


def test_flag_store_stopped_and_restarted(gateway: GatewayProcess, pg_cluster: PostgresCluster) -> None:
    client = httpx.Client(base_url=gateway.url, timeout=10)
    assert flip(gateway, "new").status_code == 200
    eventually(lambda: served_by(client, 20) == {"new": 20}, 10, "both workers routing to new")

    pg_cluster.stop("fast")
    stopped = time.monotonic()
    answers: Counter[str] = Counter()
    refused = []
    while time.monotonic() - stopped < OUTAGE:
        answers += served_by(client, 20)
        refused.append(flip(gateway, "legacy").status_code)
        time.sleep(0.2)
    readiness = httpx.get(f"{gateway.admin_url}/readyz", timeout=5).json()
    store_up = metric_value(gateway.metrics(), "strangler_flag_store_up")

    pg_cluster.start()
    restarted = time.monotonic()
    eventually(lambda: flip(gateway, "legacy").status_code == 200, 30, "a flag write after the restart")
    accepted = time.monotonic() - restarted
    eventually(lambda: served_by(client, 20) == {"legacy": 20}, 10, "the flip to reach both workers")
    propagated = time.monotonic() - restarted
    client.close()

    assert answers == {"new": sum(answers.values())}, f"routing changed while the store was down: {answers}"
    assert set(refused) == {503}
    assert readiness["flag_store"] == "unreachable"
    assert store_up == 0
    record("R8", f"PostgreSQL flag store stopped {OUTAGE:g} s",
           f"{sum(answers.values())} requests all routed by the last flags (0 flips); {len(refused)} admin writes "
           f"all 503; after the restart a write was accepted in {accepted:.2f} s and reached both workers in "
           f"{propagated:.2f} s")
