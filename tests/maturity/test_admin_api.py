"""`GET /changes/{correlation_id}` ("may I trust this yet?"), `GET /maturity` and the gauges, behind the admin
listener's bearer tokens."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr

from strangler.gateway.admin import build_admin_app
from strangler.maturity.admin_api import maturity_routes
from strangler.maturity.config import MaturityConfig
from strangler.maturity.ledger import Stage, StageEvent
from strangler.maturity.monitor import MaturityMonitor
from strangler.maturity.store import SqlLedgerStore
from strangler.store import create_store_engine, upgrade_schema

NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
TOKEN = "maturity-test-token-0123456789"
CONFIG = MaturityConfig(stuck_after=600, window=86400)


def ago(seconds: float) -> dt.datetime:
    return NOW - dt.timedelta(seconds=seconds)


@pytest.fixture
def store(tmp_path: Path) -> SqlLedgerStore:
    url = f"sqlite:///{tmp_path}/store.db"
    upgrade_schema(url)
    ledger = SqlLedgerStore(create_store_engine(url))
    ledger.record([
        StageEvent("req-done", "42", Stage.ACCEPTED, ago(100), "profile"),
        StageEvent("req-done", "42", Stage.APPLIED, ago(99), "profile"),
        StageEvent("req-done", "42", Stage.PROPAGATED, ago(97)),
        StageEvent("req-done", "42", Stage.RECONCILED, ago(90)),
        StageEvent("req-pending", "7", Stage.ACCEPTED, ago(3600), "profile"),
        StageEvent("req-pending", "7", Stage.APPLIED, ago(3599), "profile"),
        StageEvent("req-failed", "9", Stage.ACCEPTED, ago(50), "profile"),
        StageEvent("req-failed", "9", Stage.EXCEPTION, ago(20), detail="outcome differs: /zip (regression)"),
    ])
    return ledger


@pytest.fixture
async def client(store: SqlLedgerStore) -> AsyncIterator[httpx.AsyncClient]:
    app = build_admin_app(tokens={"ops": SecretStr(TOKEN)}, metrics=lambda: b"", readiness=lambda: (True, {}),
                          routes=maturity_routes(store, CONFIG, lambda: NOW))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin",
                                 headers={"authorization": f"Bearer {TOKEN}"}) as c:
        yield c


async def test_a_reconciled_change_may_be_trusted(client: httpx.AsyncClient) -> None:
    response = await client.get("/changes/req-done")
    assert response.status_code == 200
    body = response.json()
    assert (body["correlation_id"], body["stage"], body["trusted"]) == ("req-done", "reconciled", True)
    [change] = body["changes"]
    assert change["entity_key"] == "42" and change["capability"] == "profile"
    assert list(change["stages"]) == ["accepted", "applied", "propagated", "reconciled"]
    assert dt.datetime.fromisoformat(change["stages"]["reconciled"]) == ago(90)


async def test_a_change_on_its_way_may_not_be_trusted_yet(client: httpx.AsyncClient) -> None:
    body = (await client.get("/changes/req-pending")).json()
    assert (body["stage"], body["trusted"]) == ("applied", False)


async def test_an_exception_says_why(client: httpx.AsyncClient) -> None:
    body = (await client.get("/changes/req-failed")).json()
    assert (body["stage"], body["trusted"]) == ("exception", False)
    assert body["changes"][0]["exception"] == "outcome differs: /zip (regression)"


async def test_an_unknown_correlation_id_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/changes/req-nobody-sent")
    assert response.status_code == 404
    assert "req-nobody-sent" in response.json()["detail"]


async def test_the_endpoints_need_a_token(client: httpx.AsyncClient) -> None:
    for path in ("/changes/req-done", "/maturity"):
        assert (await client.get(path, headers={"authorization": "Bearer wrong"})).status_code == 401


async def test_maturity_shows_lags_and_stuck_changes(client: httpx.AsyncClient) -> None:
    body = (await client.get("/maturity")).json()
    assert body["changes"] == 3 and body["exceptions"] == 1
    assert body["lag_seconds"]["reconciled"] == {"p50": 10.0, "p99": 10.0, "count": 1}
    assert body["stuck"] == {"accepted": 0, "applied": 1, "propagated": 0}
    assert body["stuck_after_seconds"] == 600.0


async def test_the_monitor_publishes_gauges(store: SqlLedgerStore) -> None:
    registry = CollectorRegistry()
    monitor = MaturityMonitor(store, CONFIG, lambda: NOW, registry)
    await monitor.update()
    text = generate_latest(registry).decode()
    assert 'strangler_maturity_stuck_changes{stage="applied"} 1.0' in text
    assert 'strangler_maturity_stage_lag_seconds{quantile="p99",stage="reconciled"} 10.0' in text
