"""R5: an upstream that fails again and again. Its circuit breaker opens after `failures` consecutive
failures; while open, requests are answered 503 at once (p99 <= 5 ms) without touching the upstream; after
`interval` one probe goes through, and the breaker closes when it succeeds or opens again when it fails."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from strangler.gateway.breaker import BreakerState, CircuitBreaker
from tests.reliability.latency import KeepAliveClient, percentile
from tests.reliability.report import record
from tests.support.echo import EchoUpstream
from tests.support.faultproxy import FaultProxy
from tests.support.gateway import GatewayProcess, metric_value

pytestmark = [pytest.mark.reliability]

FAILURES = 5
INTERVAL = 2.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(3, 10.0, Clock())
    for _ in range(5):
        breaker.failed()
        breaker.failed()
        breaker.succeeded()  # a success in between resets the count
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    assert [breaker.failed() for _ in range(3)] == [False, False, True]
    assert breaker.state is BreakerState.OPEN and not breaker.allow()


def test_breaker_half_opens_after_its_interval_with_one_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 10.0, clock)
    breaker.failed()
    clock.now += 9.9
    assert not breaker.allow() and breaker.retry_after() == pytest.approx(0.1)
    clock.now += 0.1
    assert breaker.allow()  # the probe
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow()  # everyone else waits for the probe
    breaker.failed()  # the probe failed: open for another interval
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now += 10.0
    assert breaker.allow()
    breaker.abandoned()  # the probe's client went away: the next request probes
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.state is BreakerState.CLOSED and breaker.allow() and breaker.allow()


@pytest.fixture
def flaky(legacy_upstream: EchoUpstream) -> Iterator[FaultProxy]:
    proxy = FaultProxy(legacy_upstream.port).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def breaker_gateway(tmp_path: Path, flaky: FaultProxy) -> Iterator[GatewayProcess]:
    config = {
        "workers": 2,
        "upstreams": {"flaky": {"url": flaky.url, "circuit_breaker": {"failures": FAILURES, "interval": INTERVAL}}},
        "default_upstream": "flaky",
    }
    gateway = GatewayProcess(config, tmp_path / "gateway").start()
    yield gateway
    gateway.stop()


@pytest.mark.integration
def test_open_breaker_fails_fast_and_half_opens_after_its_interval(
    breaker_gateway: GatewayProcess, flaky: FaultProxy
) -> None:
    client = KeepAliveClient(breaker_gateway.port)
    flaky.set(mode="close")  # every connection is accepted and closed: a failure the gateway sees at once
    statuses = []
    opened_at = 0.0
    for i in range(40):  # both workers see their failures (each request is up to 3 attempts)
        response, _ = client.get(f"/opening/{i}", b"connection: close\r\n")
        statuses.append(response.status)
        if response.status == 503:
            opened_at = time.monotonic()
    assert set(statuses) <= {502, 503} and statuses[-10:] == [503] * 10
    connections = flaky.connections
    timings = []
    for i in range(300):
        response, elapsed = client.get(f"/open/{i}")
        assert response.status == 503
        assert response.header(b"content-type") == b"application/problem+json"
        assert "circuit breaker open" in orjson.loads(response.body)["detail"]
        timings.append(elapsed)
    p50, p99 = percentile(timings, 0.5), percentile(timings, 0.99)
    assert flaky.connections == connections, "the upstream was called while its breaker was open"
    assert time.monotonic() - opened_at < INTERVAL, "the fail-fast sample ran past the interval; it proves nothing"
    assert p99 <= 0.005, f"p99 {p99 * 1000:.2f} ms"
    record("R5", "open breaker: 300 requests answered 503", f"p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, "
           "0 upstream connections")

    # half-open with the upstream still failing: one probe per worker, then open again
    time.sleep(INTERVAL + 0.2)
    connections = flaky.connections
    for i in range(20):
        assert client.get(f"/probe-fails/{i}", b"connection: close\r\n")[0].status in (502, 503)
    probes = flaky.connections - connections
    assert 1 <= probes <= 2 * 3, f"{probes} connections while half-open"  # a probe per worker, up to 3 attempts

    # the upstream is back: the next probe closes the breaker
    flaky.set()
    time.sleep(INTERVAL + 0.2)
    recovered = None
    started = time.monotonic()
    while time.monotonic() - started < 3 * INTERVAL:
        if client.get("/recovered", b"connection: close\r\n")[0].status == 200:
            recovered = time.monotonic() - started
            if all(client.get(f"/after/{i}", b"connection: close\r\n")[0].status == 200 for i in range(20)):
                break
        time.sleep(0.05)
    assert recovered is not None
    assert all(client.get(f"/closed/{i}")[0].status == 200 for i in range(50))
    text = breaker_gateway.metrics()
    opened = metric_value(text, "strangler_upstream_circuit_opened_total", upstream="flaky")
    refused = metric_value(text, "strangler_upstream_circuit_refused_total", upstream="flaky")
    assert opened >= 2 and refused >= 300
    record("R5", "half-open", f"{probes} probe connection(s) per interval while failing; closed {recovered:.2f} s "
           f"after the upstream was back and the interval passed; opened {opened:g}x, refused {refused:g}")
