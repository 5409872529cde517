"""R3: an upstream that reads the request and then resets the connection. A POST or PATCH may have taken
effect: it is never sent again (0 retries). A GET is retried, no more than `retries` times and only while
the retry budget allows (the budget under sustained failure is R4's)."""

from __future__ import annotations

import httpx
import pytest

from tests.reliability.report import record
from tests.support.gateway import GatewayProcess, metric_value
from tests.support.raw_upstream import RawUpstream

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

RETRIES = 2  # the resetting upstream's `retries`


def retries(gateway: GatewayProcess) -> float:
    return metric_value(gateway.metrics(), "strangler_upstream_retries_total", upstream="resetting")


@pytest.mark.parametrize(
    ("method", "body", "expected_sends"),
    [("POST", b"", 1), ("POST", b"order=1", 1), ("PATCH", b"qty=2", 1), ("GET", b"", 1 + RETRIES)],
    ids=["POST-empty", "POST", "PATCH", "GET"],
)
def test_reset_after_reading(
    hostile_gateway: GatewayProcess, resetting: RawUpstream, method: str, body: bytes, expected_sends: int
) -> None:
    before_requests, before_retries = resetting.requests, retries(hostile_gateway)
    response = httpx.request(method, f"{hostile_gateway.url}/resetting/x", content=body or None, timeout=10)
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    sends = resetting.requests - before_requests
    retried = retries(hostile_gateway) - before_retries
    assert sends == expected_sends
    assert retried == expected_sends - 1
    assert resetting.bodies[-1] == body
    record("R3", f"{method} {'with' if body else 'without'} body: upstream received", f"{sends}x ({retried:g} retries)")
