"""Which upstream answers, what the gateway answers itself when it cannot, and when it tries again."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.integration.main_gateway import HANG_TIMEOUT, HEADER_TIMEOUT, SMALL_BODY_LIMIT
from tests.support.echo import EchoUpstream
from tests.support.gateway import GatewayProcess, memory_kib, metric_value
from tests.support.raw_upstream import RawUpstream
from tests.support.rawhttp import RawResponse, parse_responses, read_response
from tests.support.rawhttp import request as raw_request

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


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(("upstream", "expected"), [("refused", 2), ("refused-once", 0)])
def test_connect_failure_is_retried_up_to_the_configured_retries(
    client: httpx.Client, gateway: GatewayProcess, upstream: str, expected: int, method: str
) -> None:
    # nothing was sent: safe to try again whatever the method, body included
    before = retries(gateway, upstream)
    assert_problem(client.request(method, f"/{upstream}/x", content=b"payload" if method == "POST" else None), 502)
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


def send_head_in_pieces(port: int, head: bytes, piece: int = 1024) -> RawResponse:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for i in range(0, len(head), piece):
            sock.sendall(head[i : i + piece])  # the rest of a refused head is left unread, not reset
            time.sleep(0.0005)  # separate reads on the gateway's side, most of the time
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return parse_responses(received)[0]


@pytest.mark.parametrize(("fillers", "status"), [(20, 200), (40, 431)])
def test_header_limit_does_not_depend_on_how_the_head_is_split(
    gateway: GatewayProcess, fillers: int, status: int
) -> None:
    fields = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 1000) for i in range(fillers))
    head = b"GET /split HTTP/1.1\r\nHost: x\r\n" + fields + b"Connection: close\r\n\r\n"
    assert send_head_in_pieces(gateway.port, head).status == status
    assert raw_request(gateway.port, head).status == status


@pytest.mark.parametrize(
    ("start", "line", "status"),
    [
        (b"GET /endless HTTP/1.1\r\nHost: x\r\n", b"X-Filler: " + b"v" * 1000 + b"\r\n", 431),
        (b"GET /endless?", b"q" * 1024, 414),
    ],
    ids=["headers", "target"],
)
def test_endless_request_head_is_refused_without_buffering_it(
    gateway: GatewayProcess, start: bytes, line: bytes, status: int
) -> None:
    pids = gateway.worker_pids()
    before = {pid: memory_kib(pid) for pid in pids}
    sent = 0
    received = b""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(start)
        try:
            while sent < 200 * 1024 * 1024:
                sock.sendall(line)
                sent += len(line)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the gateway stopped reading (the send blocks), then closed
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass  # the refusal can be lost when the gateway closes with unread bytes: the RST wins
    assert sent < 32 * 1024 * 1024, "the gateway kept reading an endless request head"
    if received:
        assert parse_responses(received)[0].status == status
    assert max(memory_kib(pid) - before[pid] for pid in pids) < 16 * 1024


@pytest.mark.parametrize(
    "trickle", [b"", b"GET /slow-head HTTP/1.1\r\nHost: x\r\nX-Trickle: "], ids=["silent", "trickling"]
)
def test_request_head_that_takes_too_long_is_408(gateway: GatewayProcess, trickle: bytes) -> None:
    started = time.monotonic()
    received = b""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=HEADER_TIMEOUT + 3) as sock:
        sock.sendall(trickle)
        sock.settimeout(0.2)
        while time.monotonic() - started < HEADER_TIMEOUT + 3:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if trickle:
                    sock.sendall(b"a")  # a byte now and then keeps the connection busy, never complete
                continue
            if not chunk:
                break
            received += chunk
    elapsed = time.monotonic() - started
    assert parse_responses(received)[0].status == 408
    assert HEADER_TIMEOUT * 0.9 <= elapsed < HEADER_TIMEOUT + 2.5


def test_idle_keep_alive_connection_outlives_the_header_timeout(gateway: GatewayProcess) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        for pause in (0, HEADER_TIMEOUT + 0.5):
            time.sleep(pause)
            sock.sendall(b"GET /keep-alive HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock).status == 200
