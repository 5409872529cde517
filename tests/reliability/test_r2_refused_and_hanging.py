"""R2: an upstream that refuses is answered 502 within its connect timeout; one that accepts the request
and never answers is answered 504 at its timeout, +-10%."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.reliability.hostile_gateway import CONNECT_TIMEOUT, HANG_TIMEOUT
from tests.reliability.report import record
from tests.support.faultproxy import FaultProxy
from tests.support.gateway import GatewayProcess

pytestmark = [pytest.mark.reliability, pytest.mark.integration]


def timed(client: httpx.Client, path: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - started


def test_refused_is_502_within_the_connect_timeout(hostile_gateway: GatewayProcess) -> None:
    with httpx.Client(base_url=hostile_gateway.url, timeout=10) as client:
        results = [timed(client, f"/refused/{i}") for i in range(20)]
    assert {r.status_code for r, _ in results} == {502}
    assert {r.headers["content-type"] for r, _ in results} == {"application/problem+json"}
    slowest = max(elapsed for _, elapsed in results)
    assert slowest < CONNECT_TIMEOUT, f"a refused request took {slowest:.3f} s"
    record("R2", "refused: slowest 502 of 20", f"{slowest * 1000:.1f} ms (connect timeout {CONNECT_TIMEOUT:g} s)")


def test_accepted_and_hanging_is_504_at_the_timeout(hostile_gateway: GatewayProcess, blackhole: FaultProxy) -> None:
    before = blackhole.connections
    with httpx.Client(base_url=hostile_gateway.url, timeout=10) as client:
        results = [timed(client, f"/hanging/{i}") for i in range(3)]
    assert [r.status_code for r, _ in results] == [504] * 3
    elapsed = [e for _, e in results]
    assert all(HANG_TIMEOUT * 0.9 <= e <= HANG_TIMEOUT * 1.1 for e in elapsed), elapsed
    assert blackhole.connections - before == 3  # a timeout is not retried: the upstream is slow, not broken
    record("R2", "hang: 504 after", ", ".join(f"{e:.3f} s" for e in elapsed) + f" (timeout {HANG_TIMEOUT:g} s)")
