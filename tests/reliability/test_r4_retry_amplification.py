"""R4: an upstream that fails everything must not get more load from the gateway's retries than the retry
budget allows (<= 1.2x). A 5xx answer is never retried (the upstream answered), so an upstream answering
500 to everything gets exactly one call per request. Connection failures of idempotent requests are
retried, within the budget (`limits.retry_budget`, 0.2): measured here on an upstream that resets every
connection after reading the request, with its circuit breaker off (the budget alone) and on (the default,
which stops nearly all calls once open)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.reliability.load import steady_load
from tests.reliability.report import record
from tests.support.echo import ThreadedUvicorn
from tests.support.gateway import GatewayProcess, metric_value
from tests.support.raw_upstream import RawUpstream

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.timeout(180)]

BUDGET = 0.2
RATE = 200.0


class FailingService:
    """Answers 500 to every request, keeping the connection; counts the requests."""

    def __init__(self) -> None:
        self.count = 0
        self.server = ThreadedUvicorn(self)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.count += 1
        body = b'{"error": "internal"}'
        await send({"type": "http.response.start", "status": 500,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"21")]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, Any]]:
    failing = FailingService()
    failing.server.start()
    budget_only, with_breaker = RawUpstream("reset").start(), RawUpstream("reset").start()
    yield {"failing": failing, "budget-only": budget_only, "with-breaker": with_breaker}
    failing.server.stop()
    budget_only.stop()
    with_breaker.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstreams: dict[str, Any]) -> Iterator[GatewayProcess]:
    config = {
        "workers": 2,
        "limits": {"retry_budget": BUDGET},
        "upstreams": {
            "failing": {"url": upstreams["failing"].server.url},
            "budget-only": {"url": upstreams["budget-only"].url, "circuit_breaker": {"failures": 0}},
            "with-breaker": {"url": upstreams["with-breaker"].url},
        },
        "default_upstream": "failing",
        "capabilities": {
            name: {"legacy": name, "routes": [f"GET /{name}/{{rest:path}}"]} for name in ("budget-only", "with-breaker")
        },
    }
    process = GatewayProcess(config, tmp_path_factory.mktemp("r4")).start()
    yield process
    process.stop()


def run(gateway: GatewayProcess, prefix: str, duration: float) -> Counter[int | None]:
    outcomes = asyncio.run(steady_load(lambda i: f"{gateway.url}/{prefix}/{i}", RATE, duration, 10))
    return Counter(o.status for o in outcomes)


def test_5xx_answers_are_not_retried(gateway: GatewayProcess, upstreams: dict[str, Any]) -> None:
    service = upstreams["failing"]
    before = service.count
    statuses = run(gateway, "everything", 5.0)
    calls = service.count - before
    requests = sum(statuses.values())
    assert statuses == {500: requests}  # passed through as the upstream answered, never turned into 503
    assert calls / requests <= 1.0 + BUDGET
    assert calls == requests
    record("R4", f"upstream answering 500 to all: {requests} requests",
           f"{calls} upstream calls ({calls / requests:.3f}x)")


def test_connection_failures_are_retried_within_the_budget(gateway: GatewayProcess, upstreams: dict[str, Any]) -> None:
    upstream = upstreams["budget-only"]
    warm_up, steady = 2.0, 8.0
    before = upstream.requests
    sent_at_start = time.monotonic()
    marks: dict[str, int] = {}

    async def measure() -> Counter[int | None]:
        async def mark() -> None:
            await asyncio.sleep(warm_up)
            marks["calls"] = upstream.requests

        marker = asyncio.create_task(mark())
        outcomes = await steady_load(lambda i: f"{gateway.url}/budget-only/{i}", RATE, warm_up + steady, 10)
        await marker
        marks["steady_requests"] = sum(1 for o in outcomes if o.sent >= sent_at_start + warm_up)
        return Counter(o.status for o in outcomes)

    statuses = asyncio.run(measure())
    requests = sum(statuses.values())
    calls = upstream.requests - before
    steady_calls = upstream.requests - marks["calls"]
    steady_ratio = steady_calls / marks["steady_requests"]
    retries = metric_value(gateway.metrics(), "strangler_upstream_retries_total", upstream="budget-only")
    assert statuses == {502: requests}
    assert steady_ratio <= 1.0 + BUDGET + 0.02, f"{steady_ratio:.3f}x once the saved tokens were spent"
    # over the whole run: the budget's saved tokens (50 per worker) are the only excess
    assert calls <= requests * (1 + BUDGET) + 2 * 50 + 10
    assert retries == calls - requests
    record("R4", f"connection reset after reading, breaker off, {requests} GETs at {RATE:g}/s",
           f"{calls} upstream calls: {calls / requests:.3f}x over the run, {steady_ratio:.3f}x after the first "
           f"{warm_up:g} s (budget {BUDGET})")


def test_breaker_stops_the_load_of_a_failing_upstream(gateway: GatewayProcess, upstreams: dict[str, Any]) -> None:
    upstream = upstreams["with-breaker"]
    before = upstream.requests
    statuses = run(gateway, "with-breaker", 5.0)
    requests = sum(statuses.values())
    calls = upstream.requests - before
    assert set(statuses) <= {502, 503} and statuses[503] > 0.8 * requests
    assert calls / requests < 0.2
    record("R4", f"connection reset after reading, default breaker, {requests} GETs",
           f"{calls} upstream calls ({calls / requests:.3f}x); statuses {dict(statuses)}")
