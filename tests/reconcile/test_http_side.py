from __future__ import annotations

import asyncio

import httpx

from strangler.reconcile.config import HttpSide
from strangler.reconcile.http_side import HttpStateSide, RateLimiter, pointer_value
from strangler.reconcile.normalise import FieldKind


def side(handler: object, retries: int = 1) -> HttpStateSide:
    config = HttpSide(http="http://svc/customers/{cid}/{part}", key=["cid", "part"], retries=retries, rate=10_000)
    return HttpStateSide(config, ["/name", "/balance", "/tags/1"], [FieldKind("text"), FieldKind("decimal", 2),
                                                                   FieldKind("text")],
                         transport=httpx.MockTransport(handler))  # type: ignore[arg-type]


async def read(s: HttpStateSide, keys: list[tuple[object, ...]]) -> list[object]:
    async with s.client() as client:
        return list(await s.read_many(client, keys))  # type: ignore[arg-type]


def test_pointers() -> None:
    document = {"a": {"b/c": [1, {"d": None}]}}
    assert pointer_value(document, "/a/b~1c/1/d") is None
    assert pointer_value(document, "/a/b~1c/0") == 1
    assert pointer_value(document, "/a/x") is not None and pointer_value(document, "/a/x") != 1


def test_reads_values_missing_entities_and_retries() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.raw_path.decode())
        if request.url.path.startswith("/customers/9/"):
            return httpx.Response(404)
        if request.url.path.startswith("/customers/5/") and calls.count(request.url.path) == 1:
            return httpx.Response(503)
        if request.url.path.startswith("/customers/6/"):
            return httpx.Response(200, content=b"not json")
        return httpx.Response(200, json={"name": " Ann ", "balance": 1.5, "tags": ["a", "b"]})

    reads = asyncio.run(read(side(handler), [(1, "x y"), (9, "a"), (5, "a"), (6, "a")]))
    ok, missing, retried, broken = reads
    assert ok.values == ("Ann", "1.50", "b") and ok.error is None  # type: ignore[attr-defined]
    assert "/customers/1/x%20y" in calls  # key parts are escaped into the path
    assert missing.values is None and missing.error is None  # type: ignore[attr-defined]
    assert retried.values == ("Ann", "1.50", "b")  # type: ignore[attr-defined]
    assert broken.values is None and "not JSON" in broken.error  # type: ignore[attr-defined]


def test_a_service_that_keeps_failing_is_an_error_not_drift() -> None:
    reads = asyncio.run(read(side(lambda request: httpx.Response(500), retries=2), [(1, "a")]))
    assert reads[0].values is None and "HTTP 500" in reads[0].error and "3 attempts" in reads[0].error  # type: ignore


def test_values_of_the_wrong_type_show_as_such() -> None:
    s = side(lambda request: httpx.Response(200, json={"name": "x", "balance": "lots", "tags": []}))
    reads = asyncio.run(read(s, [(1, "a")]))
    assert reads[0].values == ("x", '<not a decimal: "lots">', None)  # type: ignore[attr-defined]


def test_rate_limiter_spaces_acquisitions() -> None:
    now = [0.0]
    slept: list[float] = []

    async def run() -> None:
        limiter = RateLimiter(10, clock=lambda: now[0])
        original = asyncio.sleep

        async def fake_sleep(seconds: float) -> None:
            slept.append(round(seconds, 3))
            await original(0)

        asyncio.sleep = fake_sleep  # type: ignore[assignment]
        try:
            for _ in range(4):
                await limiter.acquire()
        finally:
            asyncio.sleep = original  # type: ignore[assignment]

    asyncio.run(run())
    assert slept == [0.1, 0.2, 0.3]
