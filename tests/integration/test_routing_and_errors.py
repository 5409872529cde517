"""Which upstream answers, what the gateway answers itself when it cannot, and when it tries again."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.integration.conftest import HANG_TIMEOUT, SMALL_BODY_LIMIT
from tests.support.echo import EchoUpstream
from tests.support.gateway import GatewayProcess, metric_value
from tests.support.raw_upstream import RawUpstream

pytestmark = pytest.mark.integration


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["correlation_id"] == response.headers["x-correlation-id"]
    return problem


@pytest.mark.parametrize(
    ("path", "server"),
    [("/orders/42", "new"), ("/billing/7/invoices", "legacy"), ("/not/a/capability", "legacy")],
    ids=["new-only", "legacy-mode", "unmatched"],
)
def test_request_goes_to_the_upstream_its_route_selects(
    client: httpx.Client, legacy_echo: EchoUpstream, new_echo: EchoUpstream, path: str, server: str
) -> None:
    echoes = {"legacy": legacy_echo, "new": new_echo}
    before = {name: echo.count for name, echo in echoes.items()}
    response = client.get(path)
    assert response.status_code == 200
    assert response.json()["server"] == server
    assert response.json()["raw_path"] == path
    assert {name: echo.count - before[name] for name, echo in echoes.items()} == {
        name: int(name == server) for name in echoes
    }


def test_connection_refused_is_502(client: httpx.Client) -> None:
    problem = assert_problem(client.get("/refused/x"), 502)
    assert problem["upstream"] == "refused"


def test_upstream_that_never_answers_is_504_after_its_timeout(
    client: httpx.Client, hanging_upstream: RawUpstream
) -> None:
    before = hanging_upstream.requests
    started = time.monotonic()
    response = client.get("/hanging/x")
    elapsed = time.monotonic() - started
    problem = assert_problem(response, 504)
    assert problem["upstream"] == "hanging"
    assert HANG_TIMEOUT * 0.9 <= elapsed < HANG_TIMEOUT + 1.5
    assert hanging_upstream.requests - before == 1  # a timeout is not retried


def test_body_over_the_capability_limit_with_content_length_is_413(
    client: httpx.Client, legacy_echo: EchoUpstream
) -> None:
    before = legacy_echo.count
    assert_problem(client.post("/small/x", content=b"x" * (SMALL_BODY_LIMIT + 1)), 413)
    assert legacy_echo.count == before
    assert client.post("/small/x", content=b"x" * SMALL_BODY_LIMIT).status_code == 200


def test_chunked_body_over_the_capability_limit_is_413(client: httpx.Client) -> None:
    pieces = iter([b"x" * 600, b"y" * 600])
    assert_problem(client.post("/small/x", content=pieces), 413)
    assert client.post("/small/x", content=iter([b"x" * 600, b"y" * 400])).status_code == 200


def test_request_headers_over_the_limit_are_431(client: httpx.Client, legacy_echo: EchoUpstream) -> None:
    before = legacy_echo.count
    response = client.get("/big-headers", headers={f"x-filler-{i}": "v" * 1000 for i in range(40)})
    assert response.status_code == 431
    assert response.headers["content-type"] == "application/problem+json"
    assert legacy_echo.count == before
    assert client.get("/big-headers", headers={f"x-filler-{i}": "v" * 1000 for i in range(20)}).status_code == 200


def retries(gateway: GatewayProcess, upstream: str) -> float:
    return metric_value(gateway.metrics(), "strangler_upstream_retries_total", upstream=upstream)


@pytest.mark.parametrize(("upstream", "expected"), [("refused", 2), ("refused-once", 0)])
def test_connect_failure_is_retried_up_to_the_configured_retries(
    client: httpx.Client, gateway: GatewayProcess, upstream: str, expected: int
) -> None:
    before = retries(gateway, upstream)
    assert_problem(client.get(f"/{upstream}/x"), 502)
    assert retries(gateway, upstream) - before == expected


def test_get_reset_before_anything_was_read_is_retried_within_limits(
    client: httpx.Client, early_resetting_upstream: RawUpstream
) -> None:
    before = early_resetting_upstream.connections
    assert_problem(client.get("/early-resetting/x"), 502)
    assert early_resetting_upstream.connections - before == 3  # one attempt and `retries: 2`


@pytest.mark.parametrize(
    ("method", "body"), [("POST", b""), ("POST", b"payload"), ("PUT", b"payload"), ("PATCH", b"payload")]
)
def test_request_reset_after_the_upstream_read_it_is_not_retried(
    client: httpx.Client, resetting_upstream: RawUpstream, method: str, body: bytes
) -> None:
    before = resetting_upstream.requests
    assert_problem(client.request(method, "/resetting/x", content=body), 502)
    assert resetting_upstream.requests - before == 1
    assert resetting_upstream.bodies[-1] == body


def test_get_reset_after_the_upstream_read_it_is_retried_within_limits(
    client: httpx.Client, resetting_upstream: RawUpstream
) -> None:
    before = resetting_upstream.requests
    assert_problem(client.get("/resetting/x"), 502)
    assert resetting_upstream.requests - before == 3  # idempotent and no body: one attempt and `retries: 2`
