"""The admin flag endpoints in-process (httpx.ASGITransport) against a real SQLite file and a real PostgreSQL.

`build_admin` is the composition root's admin app (real shadow evidence: an empty divergence store, so no
forward move meets its gate); `gated_admin` puts the flag routes on `build_admin_app` with a fake of the
`GateEvidence` port, to choose the evidence a test needs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select

from strangler.app import build_admin, utcnow
from strangler.config import StranglerConfig
from strangler.gateway.admin import build_admin_app
from strangler.routing.admin_api import flag_routes
from strangler.routing.gate import Evidence
from strangler.routing.refresh import FlagCache, FlagRefresher
from strangler.routing.router import initial_flags
from strangler.routing.service import FlagService
from strangler.routing.store import SqlFlagStore, audit_table
from strangler.store import create_store_engine, upgrade_schema

OPS_TOKEN = "ops-token-0123456789abcdef"
BOT_TOKEN = "deploy-bot-token-0123456789"
CAP = "customer-profile"


def make_config(store: str) -> StranglerConfig:
    return StranglerConfig.model_validate(
        {
            "store": store,
            "admin": {"tokens": {"ops": OPS_TOKEN, "deploy-bot": BOT_TOKEN}},
            "upstreams": {"legacy": {"url": "http://127.0.0.1:9"}, "customers": {"url": "http://127.0.0.1:9"}},
            "default_upstream": "legacy",
            "capabilities": {
                CAP: {
                    "legacy": "legacy",
                    "new": "customers",
                    "routes": ["GET /customers/{id}", "PUT /customers/{id}/address"],
                    "sticky": "path:id",
                    "gate": {"min_samples": 200, "max_divergence_rate": 0.01},
                },
                "billing": {"legacy": "legacy", "routes": ["* /billing/{rest:path}"]},  # no new side
            },
        }
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'flags.db'}"
    else:
        url = request.getfixturevalue("pg_database").url()
    upgrade_schema(url)
    return url


def client_for(app: Any, token: str | None = OPS_TOKEN) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin", headers=headers)


@pytest.fixture
async def admin(store_url: str) -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    """The composition root's admin app; call it with a token (default: ops) for a client."""
    parts = build_admin(
        make_config(store_url), metrics=lambda: b"", workers_ready=lambda: (True, {}), registry=CollectorRegistry()
    )
    clients: list[httpx.AsyncClient] = []

    def connect(token: str | None = OPS_TOKEN) -> httpx.AsyncClient:
        clients.append(client_for(parts.app, token))
        return clients[-1]

    yield connect
    for c in clients:
        await c.aclose()


class FixedEvidence:
    """A `GateEvidence` that answers what the test set."""

    def __init__(self, samples: int = 0, divergent: int = 0) -> None:
        self.value = Evidence(samples, divergent)
        self.calls = 0

    def evidence(self, capability: str) -> Evidence:
        self.calls += 1
        return self.value


class Gated:
    def __init__(self, store_url: str) -> None:
        config = make_config(store_url)
        self.engine = create_store_engine(store_url)
        self.store = SqlFlagStore(self.engine, initial_flags(config.capabilities), utcnow)
        self.evidence = FixedEvidence()
        service = FlagService(config.capabilities, self.store, self.evidence)
        cache = FlagCache(initial_flags(config.capabilities))
        self.app = build_admin_app(
            tokens=config.admin.tokens, metrics=lambda: b"", readiness=lambda: (True, {}),
            routes=flag_routes(service, cache),
        )

    def audit_rows(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(audit_table)).scalar_one())


@pytest.fixture
async def gated(store_url: str) -> AsyncIterator[tuple[Gated, httpx.AsyncClient]]:
    parts = Gated(store_url)
    async with client_for(parts.app) as c:
        yield parts, c
    parts.engine.dispose()


async def put(c: httpx.AsyncClient, mode: str, reason: str = "test", **extra: Any) -> httpx.Response:
    return await c.put(f"/flags/{CAP}", json={"mode": mode, "reason": reason, **extra})


# --- authentication ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "not-the-token-0123456789", f"{OPS_TOKEN}x", OPS_TOKEN[:-1]])
@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/flags"), ("PUT", f"/flags/{CAP}"), ("GET", f"/flags/{CAP}/history")]
)
async def test_flag_endpoints_answer_401_without_or_with_a_wrong_token(
    admin: Callable[..., httpx.AsyncClient], token: str | None, method: str, path: str
) -> None:
    c = admin(token)
    response = await c.request(method, path, json={"mode": "legacy", "reason": "x"} if method == "PUT" else None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert (await admin().get(f"/flags/{CAP}/history")).json()["history"] == []  # nothing was written


async def test_basic_authorization_with_the_right_secret_is_still_401(admin: Callable[..., httpx.AsyncClient]) -> None:
    response = await admin(None).get("/flags", headers={"authorization": f"Basic {OPS_TOKEN}"})
    assert response.status_code == 401


# --- reading ----------------------------------------------------------------------------------------------


async def test_list_shows_configured_initial_modes_until_a_flag_is_stored(
    admin: Callable[..., httpx.AsyncClient],
) -> None:
    c = admin()
    listed = (await c.get("/flags")).json()
    assert {f["capability"]: (f["mode"], f["version"]) for f in listed["flags"]} == {
        CAP: ("legacy", 0), "billing": ("legacy", 0)
    }
    assert (await put(c, "shadow", force=True)).status_code == 200
    listed = (await c.get("/flags")).json()
    flag = next(f for f in listed["flags"] if f["capability"] == CAP)
    assert (flag["mode"], flag["version"], flag["updated_by"], flag["reason"]) == ("shadow", 1, "ops", "test")


@pytest.mark.parametrize(("method", "path"), [("PUT", "/flags/no-such-thing"), ("GET", "/flags/no-such-thing/history")])
async def test_unknown_capability_is_404(admin: Callable[..., httpx.AsyncClient], method: str, path: str) -> None:
    response = await admin().request(method, path, json={"mode": "legacy", "reason": "x"} if method == "PUT" else None)
    assert response.status_code == 404
    assert "no-such-thing" in response.json()["detail"]


# --- optimistic concurrency -------------------------------------------------------------------------------


async def test_stale_expected_version_is_409_with_the_current_flag(admin: Callable[..., httpx.AsyncClient]) -> None:
    c = admin()
    assert (await put(c, "shadow", force=True, expected_version=0)).json()["version"] == 1
    assert (await put(c, "legacy", expected_version=1)).json()["version"] == 2
    stale = await put(c, "shadow", force=True, expected_version=1)
    assert stale.status_code == 409
    current = stale.json()["current"]
    assert (current["capability"], current["mode"], current["version"]) == (CAP, "legacy", 2)
    assert current["updated_by"] == "ops"
    history = (await c.get(f"/flags/{CAP}/history")).json()["history"]
    assert [e["version"] for e in history] == [2, 1]  # the refused change left no audit row


async def test_expected_version_of_a_never_stored_flag_is_zero(admin: Callable[..., httpx.AsyncClient]) -> None:
    c = admin()
    response = await put(c, "shadow", force=True, expected_version=3)
    assert response.status_code == 409
    assert response.json()["current"]["version"] == 0
    assert (await put(c, "shadow", force=True, expected_version=0)).status_code == 200


@pytest.mark.parametrize("first_version", [0, 1], ids=["first-insert", "update"])
async def test_fifty_concurrent_puts_with_the_same_expected_version_make_one_change(
    gated: tuple[Gated, httpx.AsyncClient], first_version: int
) -> None:
    parts, c = gated
    if first_version:
        assert (await put(c, "legacy", reason="start")).json()["version"] == 1
    before = parts.audit_rows()
    # forward and forced: every request also reads the gate's evidence before its transaction
    responses = await asyncio.gather(
        *(put(c, "canary", reason=f"writer {i}", percent=i + 1, force=True, expected_version=first_version)
          for i in range(50))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * 49, statuses
    winner = next(r.json() for r in responses if r.status_code == 200)
    assert winner["version"] == first_version + 1
    for r in responses:
        if r.status_code == 409:
            assert r.json()["current"] == winner  # every loser is shown the winner's flag
    history = (await c.get(f"/flags/{CAP}/history")).json()["history"]
    assert parts.audit_rows() - before == 1
    assert (history[0]["reason"], history[0]["to"]["percent"]) == (winner["reason"], winner["percent"])


# --- gates ------------------------------------------------------------------------------------------------


async def test_forward_move_without_evidence_is_412_showing_the_evidence(
    admin: Callable[..., httpx.AsyncClient],
) -> None:
    c = admin()
    response = await put(c, "canary", percent=5)
    assert response.status_code == 412
    evidence = response.json()["evidence"]
    assert (evidence["samples"], evidence["rate"]) == (0, 0.0)
    assert (evidence["min_samples"], evidence["max_divergence_rate"]) == (200, 0.01)
    assert "0 samples < 200" in response.json()["detail"]
    assert (await c.get(f"/flags/{CAP}/history")).json()["history"] == []


async def test_412_names_a_divergence_rate_over_the_threshold(gated: tuple[Gated, httpx.AsyncClient]) -> None:
    parts, c = gated
    parts.evidence.value = Evidence(samples=500, divergent=20)
    response = await put(c, "new")
    assert response.status_code == 412
    evidence = response.json()["evidence"]
    assert (evidence["samples"], evidence["divergent"], evidence["rate"]) == (500, 20, 0.04)
    assert evidence["max_divergence_rate"] == 0.01
    assert "0.0400 > 0.01" in response.json()["detail"]
    assert parts.audit_rows() == 0


async def test_gate_met_lets_the_move_through_and_audits_the_evidence(
    gated: tuple[Gated, httpx.AsyncClient],
) -> None:
    parts, c = gated
    parts.evidence.value = Evidence(samples=250, divergent=2)
    response = await put(c, "canary", percent=5, reason="comparisons look clean")
    assert response.status_code == 200
    entry = (await c.get(f"/flags/{CAP}/history")).json()["history"][0]
    assert entry["forced"] is False
    assert (entry["evidence"]["samples"], entry["evidence"]["divergent"]) == (250, 2)
    assert entry["evidence"]["allowed"] is True


async def test_force_overrides_the_gate_and_is_audited_as_forced(admin: Callable[..., httpx.AsyncClient]) -> None:
    c = admin()
    response = await put(c, "new", reason="incident 42: legacy is down", force=True)
    assert response.status_code == 200
    assert response.json()["mode"] == "new"
    entry = (await c.get(f"/flags/{CAP}/history")).json()["history"][0]
    assert entry["forced"] is True
    assert (entry["from"]["mode"], entry["to"]["mode"]) == ("legacy", "new")
    assert entry["evidence"]["samples"] == 0 and "forced" in entry["evidence"]["explanation"]


@pytest.mark.parametrize(
    ("start", "back"),
    [
        ({"mode": "new-only"}, {"mode": "legacy"}),
        ({"mode": "new-only"}, {"mode": "new"}),
        ({"mode": "new"}, {"mode": "shadow"}),
        ({"mode": "canary", "percent": 50}, {"mode": "canary", "percent": 5}),
        ({"mode": "canary", "percent": 50}, {"mode": "shadow"}),
        ({"mode": "shadow"}, {"mode": "shadow"}),
    ],
)
async def test_moving_backward_is_allowed_at_once_whatever_the_evidence(
    gated: tuple[Gated, httpx.AsyncClient], start: dict[str, Any], back: dict[str, Any]
) -> None:
    parts, c = gated
    assert (await put(c, reason="set up", force=True, **start)).status_code == 200
    parts.evidence.value = Evidence(samples=0, divergent=0)
    parts.evidence.calls = 0
    response = await put(c, reason="kill switch", **back)
    assert response.status_code == 200, response.json()
    assert (response.json()["mode"], response.json()["version"]) == (back["mode"], 2)
    assert parts.evidence.calls == 0  # a backward move does not wait for the evidence
    entry = (await c.get(f"/flags/{CAP}/history")).json()["history"][0]
    assert entry["forced"] is False and entry["evidence"]["forward"] is False


async def test_raising_the_canary_share_is_a_forward_move(gated: tuple[Gated, httpx.AsyncClient]) -> None:
    parts, c = gated
    assert (await put(c, "canary", percent=5, force=True)).status_code == 200
    assert (await put(c, "canary", percent=25)).status_code == 412
    parts.evidence.value = Evidence(samples=1000, divergent=0)
    assert (await put(c, "canary", percent=25)).json()["percent"] == 25


async def test_entering_shadow_needs_no_evidence_and_is_audited(gated: tuple[Gated, httpx.AsyncClient]) -> None:
    parts, c = gated
    response = await put(c, "shadow", reason="start comparing")
    assert response.status_code == 200, response.json()
    assert (response.json()["mode"], response.json()["version"]) == ("shadow", 1)
    assert parts.evidence.calls == 0  # not gated, so no evidence is read
    [entry] = (await c.get(f"/flags/{CAP}/history")).json()["history"]
    assert (entry["from"]["mode"], entry["to"]["mode"], entry["forced"]) == ("legacy", "shadow", False)
    assert entry["evidence"]["forward"] is True and entry["evidence"]["allowed"] is True
    assert entry["evidence"]["explanation"].startswith("entering shadow is not gated")
    # the next step forward is gated again
    assert (await put(c, "canary", percent=5)).status_code == 412
    assert parts.audit_rows() == 1


async def test_skipping_shadow_is_still_gated(gated: tuple[Gated, httpx.AsyncClient]) -> None:
    parts, c = gated
    for body in ({"mode": "canary", "percent": 5}, {"mode": "new"}, {"mode": "new-only"}):
        response = await c.put(f"/flags/{CAP}", json={"reason": "skip ahead", **body})
        assert response.status_code == 412, body
    assert parts.audit_rows() == 0


# --- bad input --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capability", "body", "field"),
    [
        (CAP, {"mode": "sideways", "reason": "x"}, "mode"),
        (CAP, {"mode": "canary", "percent": 150, "reason": "x"}, "percent"),
        (CAP, {"mode": "canary", "percent": -1, "reason": "x"}, "percent"),
        (CAP, {"mode": "canary", "percent": "lots", "reason": "x"}, "percent"),
        (CAP, {"mode": "canary", "reason": "x"}, "percent"),
        (CAP, {"mode": "shadow"}, "reason"),
        (CAP, {"mode": "shadow", "reason": ""}, "reason"),
        (CAP, {"mode": "shadow", "reason": "   "}, "reason"),
        (CAP, {"mode": "shadow", "reason": "x", "expected_version": -1}, "expected_version"),
        (CAP, {"mode": "shadow", "reason": "x", "colour": "red"}, "colour"),
        (CAP, {"reason": "x"}, "mode"),
        ("billing", {"mode": "shadow", "reason": "x", "force": True}, "mode"),
    ],
)
async def test_bad_input_is_422_naming_the_field(
    admin: Callable[..., httpx.AsyncClient], capability: str, body: dict[str, Any], field: str
) -> None:
    c = admin()
    response = await c.put(f"/flags/{capability}", json=body)
    assert response.status_code == 422, response.json()
    assert field in [e["field"] for e in response.json()["errors"]]
    assert (await c.get(f"/flags/{capability}/history")).json()["history"] == []


async def test_a_body_that_is_not_json_is_422(admin: Callable[..., httpx.AsyncClient]) -> None:
    response = await admin().put(f"/flags/{CAP}", content=b"mode=shadow", headers={"content-type": "text/plain"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body"


# --- history ----------------------------------------------------------------------------------------------


async def test_history_lists_changes_newest_first_with_the_token_name_as_actor(
    admin: Callable[..., httpx.AsyncClient],
) -> None:
    ops, bot = admin(OPS_TOKEN), admin(BOT_TOKEN)
    assert (await put(ops, "shadow", reason="start shadowing", force=True)).status_code == 200
    assert (await put(bot, "canary", reason="five percent", percent=5, force=True)).status_code == 200
    assert (await put(ops, "legacy", reason="roll back")).status_code == 200
    history = (await bot.get(f"/flags/{CAP}/history")).json()["history"]
    assert [(e["actor"], e["version"], e["reason"]) for e in history] == [
        ("ops", 3, "roll back"), ("deploy-bot", 2, "five percent"), ("ops", 1, "start shadowing")
    ]
    assert [(e["from"]["mode"], e["to"]["mode"], e["to"]["percent"]) for e in history] == [
        ("canary", "legacy", 0.0), ("shadow", "canary", 5.0), ("legacy", "shadow", 0.0)
    ]
    assert [e["forced"] for e in history] == [False, True, False]  # entering shadow is not gated
    times = [e["at"] for e in history]
    assert times == sorted(times, reverse=True)
    limited = (await ops.get(f"/flags/{CAP}/history", params={"limit": 1})).json()["history"]
    assert [e["version"] for e in limited] == [3]


# --- the store away ---------------------------------------------------------------------------------------


def refresher_of(parts: Any) -> FlagRefresher:
    return next(p for p in parts.lifecycle if isinstance(p, FlagRefresher))


async def test_writes_are_503_and_reads_stale_while_the_store_is_unreachable(
    pg_database: Any, pg_cluster: Any
) -> None:
    url = pg_database.url()
    upgrade_schema(url)
    parts = build_admin(
        make_config(url), metrics=lambda: b"", workers_ready=lambda: (True, {}), registry=CollectorRegistry()
    )
    async with client_for(parts.app) as c:
        assert (await put(c, "shadow", reason="start comparing")).status_code == 200
        await refresher_of(parts).refresh()  # what the running refresher does within its interval
        fresh = await c.get("/flags")
        assert (fresh.status_code, fresh.json()["stale"], fresh.json()["flag_store"]) == (200, False, "up")
        assert "warning" not in fresh.headers
        pg_cluster.stop()
        try:
            for body in ({"mode": "legacy"}, {"mode": "new", "force": True}):
                response = await c.put(f"/flags/{CAP}", json={"reason": "x", **body})
                assert response.status_code == 503
                assert "unreachable" in response.json()["detail"]
            listed = await c.get("/flags")
            assert listed.status_code == 200
            data = listed.json()
            assert (data["stale"], data["flag_store"], data["flags_source"]) == (True, "unreachable", "store")
            assert data["flag_store_error"]
            assert listed.headers["warning"].startswith('110 - "Response is Stale: the flag store is unreachable')
            assert data["as_of"] is not None and data["as_of"] in listed.headers["warning"]
            assert dt.datetime.fromisoformat(data["as_of"]) <= dt.datetime.now(dt.UTC)
            flags = {f["capability"]: f for f in data["flags"]}
            assert (flags[CAP]["mode"], flags[CAP]["version"], flags[CAP]["updated_by"], flags[CAP]["reason"]) == (
                "shadow", 1, "ops", "start comparing")  # the row this process routes by
            assert (flags["billing"]["mode"], flags["billing"]["version"]) == ("legacy", 0)
            assert (await c.get(f"/flags/{CAP}/history")).status_code == 503  # history lives only in the store
        finally:
            pg_cluster.start()
        assert (await put(c, "legacy", reason="back")).json()["version"] == 2
        again = await c.get("/flags")
        assert (again.json()["stale"], "warning" in again.headers) == (False, False)


async def test_listing_before_the_store_was_ever_reached_shows_the_configured_modes_as_stale(
    pg_database: Any, pg_cluster: Any
) -> None:
    url = pg_database.url()
    upgrade_schema(url)
    pg_cluster.stop()
    try:
        parts = build_admin(
            make_config(url), metrics=lambda: b"", workers_ready=lambda: (True, {}), registry=CollectorRegistry()
        )
        await refresher_of(parts).refresh()
        async with client_for(parts.app) as c:
            listed = await c.get("/flags")
            write = await put(c, "shadow")
    finally:
        pg_cluster.start()
    assert listed.status_code == 200 and write.status_code == 503
    data = listed.json()
    assert (data["stale"], data["as_of"], data["flags_source"]) == (True, None, "configured initial modes")
    assert "the store was never reached" in listed.headers["warning"]
    initial = "initial mode from configuration"
    assert {(f["capability"], f["mode"], f["version"], f["reason"]) for f in data["flags"]} == {
        (CAP, "legacy", 0, initial), ("billing", "legacy", 0, initial)
    }
