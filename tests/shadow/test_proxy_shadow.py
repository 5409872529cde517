"""The proxy feeding the shadow, in process (httpx.ASGITransport, fake upstream clients, no sockets)."""

from __future__ import annotations

import asyncio
import random

import httpx
import orjson
from prometheus_client import CollectorRegistry

from strangler.config import StranglerConfig
from strangler.gateway.proxy import ProxyApp
from strangler.shadow.metrics import ShadowMetrics
from strangler.shadow.mirror import Shadow
from strangler.shadow.records import ComparisonRecord
from tests.shadow.fakes import FakeUpstream


def build(writes: str = "skip", legacy_delay: float = 0.0, new_delay: float = 0.0) -> tuple[
    ProxyApp, Shadow, dict[str, FakeUpstream], list[ComparisonRecord]
]:
    config = StranglerConfig.model_validate({
        "upstreams": {"legacy": {"url": "http://legacy.invalid"}, "new": {"url": "http://new.invalid"}},
        "default_upstream": "legacy",
        "capabilities": {"items": {"legacy": "legacy", "new": "new", "mode": "shadow", "routes": ["* /items/{id}"],
                                   "shadow": {"writes": writes, "noise_sample": 0.0, "timeout": 2.0}}},
    })

    def answer(name: str):  # type: ignore[no-untyped-def]
        return lambda r: (200, {"content-type": "application/json"},
                          orjson.dumps({"side": "same", "path": r.target, "body": len(r.body or b"")}))

    upstreams = {name: FakeUpstream(name, answer=answer(name)) for name in ("legacy", "new")}
    upstreams["legacy"].delay, upstreams["new"].delay = legacy_delay, new_delay
    records: list[ComparisonRecord] = []
    registry = CollectorRegistry()
    shadow = Shadow(config.capabilities, upstreams, records.append, ShadowMetrics(registry), rng=random.Random(1))
    app = ProxyApp(config, registry=registry, clients=upstreams, shadow=shadow)
    return app, shadow, upstreams, records


async def test_a_get_is_answered_by_legacy_mirrored_to_new_and_compared() -> None:
    app, shadow, upstreams, records = build()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        response = await client.get("/items/7?x=1", headers={"x-correlation-id": "cid-proxy-1"})
    assert response.status_code == 200 and response.json()["path"] == "/items/7?x=1"
    await shadow.drain(5)
    [primary], [mirrored] = upstreams["legacy"].sent, upstreams["new"].sent
    assert primary.header("x-strangler-shadow") is None
    assert mirrored.header("x-strangler-shadow") == "1"
    assert primary.header("x-correlation-id") == mirrored.header("x-correlation-id") == "cid-proxy-1"
    [record] = records
    assert (record.outcome, record.differences, record.route) == ("compared", (), "* /items/{id}")


async def test_a_slow_mirror_does_not_delay_the_answer() -> None:
    app, shadow, upstreams, records = build(new_delay=1.0)
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        started = loop.time()
        response = await client.get("/items/1")
        elapsed = loop.time() - started
    assert response.status_code == 200 and elapsed < 0.5
    assert records == []  # the comparison waits for the mirror, the client does not
    await shadow.drain(5)
    assert [r.outcome for r in records] == ["compared"]


async def test_a_dry_run_write_carries_the_body_captured_from_the_stream() -> None:
    app, shadow, upstreams, records = build(writes="dry-run")
    body = b"x" * 150_000
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        async def chunks():  # type: ignore[no-untyped-def]
            yield body[:50_000]
            yield body[50_000:]

        response = await client.post("/items/1", content=chunks())  # no length: chunked
    assert response.status_code == 200 and response.json()["body"] == len(body)
    await shadow.drain(5)
    [mirrored] = upstreams["new"].sent
    assert (mirrored.method, mirrored.body, mirrored.header("x-strangler-shadow")) == ("POST", body, "dry-run")
    assert [r.outcome for r in records] == ["compared"]


async def test_a_client_cannot_mark_its_own_request_as_a_mirror() -> None:
    app, shadow, upstreams, records = build(writes="dry-run")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        for value in ("dry-run", "1"):
            response = await client.post("/items/1", content=b"{}", headers={"X-Strangler-Shadow": value})
            assert response.status_code == 200
        await client.get("/elsewhere", headers={"x-strangler-shadow": "dry-run"})  # no capability: default route
    await shadow.drain(5)
    assert [r.header("x-strangler-shadow") for r in upstreams["legacy"].sent] == [None, None, None]
    assert [r.header("x-strangler-shadow") for r in upstreams["new"].sent] == ["dry-run", "dry-run"]
    assert all(len([k for k, _ in r.headers if k == "x-strangler-shadow"]) == 1 for r in upstreams["new"].sent)
