"""ProxyApp in-process through `httpx.ASGITransport`, with fake upstream clients (the `UpstreamClient` port)."""

from __future__ import annotations

import gc
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from strangler.config import StranglerConfig
from strangler.gateway.errors import ConnectFailed, UpstreamTimeout, UpstreamUnavailable
from strangler.gateway.proxy import ProxyApp
from strangler.gateway.upstream import UpstreamRequest, UpstreamResponse
from strangler.routing.modes import Mode, RoutingFlag


@dataclass(frozen=True)
class Reply:
    """A canned upstream response; every send gets a fresh copy."""

    status: int = 200
    headers: tuple[tuple[bytes, bytes], ...] = ((b"content-type", b"text/plain"),)
    chunks: tuple[bytes, ...] = (b"hello",)


@dataclass
class _Response:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    chunks: tuple[bytes, ...]
    closed: bool = False

    async def body(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk

    async def close(self) -> None:
        self.closed = True


@dataclass
class Sent:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes | None

    def header(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name]


@dataclass
class FakeUpstream:
    """Plays `outcomes` in order (the last one repeats) and records what it was sent."""

    outcomes: list[Reply | Exception] = field(default_factory=lambda: [Reply()])
    sent: list[Sent] = field(default_factory=list)
    responses: list[_Response] = field(default_factory=list)
    closed: bool = False

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        body: bytes | None = None
        if not isinstance(outcome, ConnectFailed):  # a refused connection never reads the body
            if isinstance(request.body, bytes) or request.body is None:
                body = request.body
            else:
                body = b"".join([chunk async for chunk in request.body])
        self.sent.append(Sent(request.method, request.target, list(request.headers), body))
        if isinstance(outcome, Exception):
            raise outcome
        response = _Response(outcome.status, outcome.headers, outcome.chunks)
        self.responses.append(response)
        return response

    async def aclose(self) -> None:
        self.closed = True


class FixedFlags:
    """The FlagSource port with flags set by the test."""

    def __init__(self, flags: Mapping[str, RoutingFlag]) -> None:
        self.flags = dict(flags)

    def flag(self, capability: str) -> RoutingFlag:
        return self.flags[capability]


def make_config(**overrides: Any) -> StranglerConfig:
    data: dict[str, Any] = {
        "upstreams": {
            "legacy": {"url": "http://legacy.internal:8001", "retries": 2},
            "svc": {"url": "http://svc.internal:8002", "retries": 0},
        },
        "default_upstream": "legacy",
        "limits": {"max_request_body": 64, "max_header_bytes": 2048},
        "capabilities": {
            "customer-profile": {
                "legacy": "legacy",
                "new": "svc",
                "routes": ["GET /customers/{id}", "PUT /customers/{id}/address", "POST /customers"],
                "sticky": "path:id",
            },
        },
    }
    data.update(overrides)
    return StranglerConfig.model_validate(data)


@dataclass
class Gateway:
    app: ProxyApp
    legacy: FakeUpstream
    svc: FakeUpstream
    client: httpx.AsyncClient


def gateway(
    mode: Mode = Mode.LEGACY,
    percent: float = 0.0,
    *,
    legacy: FakeUpstream | None = None,
    svc: FakeUpstream | None = None,
    **overrides: Any,
) -> Gateway:
    legacy = legacy or FakeUpstream()
    svc = svc or FakeUpstream(outcomes=[Reply(chunks=(b"from svc",))])
    config = make_config(**overrides)
    flags = FixedFlags({name: RoutingFlag(mode, percent) for name in config.capabilities})
    app = ProxyApp(config, flags=flags, registry=CollectorRegistry(), clients={"legacy": legacy, "svc": svc})
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 50000))
    client = httpx.AsyncClient(transport=transport, base_url="http://shop.example")
    return Gateway(app, legacy, svc, client)


def assert_problem(response: httpx.Response, status: int, detail: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = orjson.loads(response.content)
    assert problem["status"] == status
    assert problem["type"] == "about:blank"
    assert problem["title"]
    assert detail in problem["detail"]
    return problem  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("mode", "percent", "serving"),
    [
        (Mode.LEGACY, 0.0, "legacy"),
        (Mode.SHADOW, 0.0, "legacy"),
        (Mode.CANARY, 0.0, "legacy"),
        (Mode.CANARY, 100.0, "svc"),
        (Mode.NEW, 0.0, "svc"),
        (Mode.NEW_ONLY, 0.0, "svc"),
    ],
)
async def test_requests_go_to_the_side_the_mode_selects(mode: Mode, percent: float, serving: str) -> None:
    gw = gateway(mode, percent)
    response = await gw.client.get("/customers/42")
    assert response.status_code == 200
    served, idle = (gw.legacy, gw.svc) if serving == "legacy" else (gw.svc, gw.legacy)
    assert [s.target for s in served.sent] == ["/customers/42"]
    assert idle.sent == []
    assert response.content == (b"hello" if serving == "legacy" else b"from svc")


async def test_canary_keeps_a_key_on_one_side() -> None:
    gw = gateway(Mode.CANARY, 50.0)
    for _ in range(3):
        for key in ("1", "2", "3", "4", "5", "6", "7", "8"):
            assert (await gw.client.get(f"/customers/{key}")).status_code == 200
    by_side = {
        "legacy": {s.target for s in gw.legacy.sent},
        "svc": {s.target for s in gw.svc.sent},
    }
    assert by_side["legacy"].isdisjoint(by_side["svc"])
    assert by_side["legacy"] and by_side["svc"]  # 8 keys at 50%: both sides get some
    assert len(gw.legacy.sent) + len(gw.svc.sent) == 24


async def test_unmatched_requests_go_to_the_default_upstream() -> None:
    gw = gateway(Mode.NEW)
    response = await gw.client.post("/orders/7/cancel", content=b"now")
    assert response.status_code == 200
    assert [(s.method, s.target, s.body) for s in gw.legacy.sent] == [("POST", "/orders/7/cancel", b"now")]
    assert gw.svc.sent == []


async def test_without_a_default_upstream_an_unmatched_request_is_503() -> None:
    gw = gateway(default_upstream=None)
    response = await gw.client.get("/orders/7")
    assert_problem(response, 503, "no upstream is configured")
    assert gw.legacy.sent == [] and gw.svc.sent == []


async def test_the_query_string_is_forwarded_byte_exact() -> None:
    gw = gateway()
    await gw.client.get("/customers/42", params={"a": "1 2", "b": "é"})
    await gw.client.get(httpx.URL("http://shop.example/customers/42?x=%2F..%2f&&y"))
    assert [s.target for s in gw.legacy.sent] == ["/customers/42?a=1+2&b=%C3%A9", "/customers/42?x=%2F..%2f&&y"]


async def test_the_normalised_path_is_routed_and_forwarded() -> None:
    gw = gateway(Mode.NEW)
    response = await gw.client.get("/customers/%34%32")  # unreserved escapes are decoded: /customers/42
    assert response.status_code == 200
    assert [s.target for s in gw.svc.sent] == ["/customers/42"]


async def test_a_dot_segment_cannot_smuggle_a_request_past_its_route() -> None:
    gw = gateway(Mode.NEW)
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http", "http_version": "1.1", "method": "GET", "scheme": "http", "path": "/static/../customers/42",
        "raw_path": b"/static/%2e%2e/customers/42", "query_string": b"", "headers": [(b"host", b"shop.example")],
        "client": ("203.0.113.9", 50000), "server": ("shop.example", 80),
    }
    await gw.app(scope, receive, send)
    assert messages[0]["status"] == 200
    assert [s.target for s in gw.svc.sent] == ["/customers/42"]  # the capability's side, with the routed path
    assert gw.legacy.sent == []


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/customers/4%2F2", "encoded '/'"),
        ("/customers/4%5c2", "encoded '/' or '\\'"),
        ("/customers/%zz", "invalid percent escape"),
        ("/customers/4%002", "encoded control character"),
    ],
)
async def test_a_path_that_cannot_be_normalised_is_400(path: str, detail: str) -> None:
    gw = gateway()
    response = await gw.client.get(path)
    assert_problem(response, 400, detail)
    assert gw.legacy.sent == []


async def test_semicolons_can_be_refused() -> None:
    kept = gateway()
    assert (await kept.client.get("/customers/42;v=1")).status_code == 200
    assert [s.target for s in kept.legacy.sent] == ["/customers/42;v=1"]
    refused = gateway(path_semicolons="reject")
    assert_problem(await refused.client.get("/customers/42;v=1"), 400, "';' is not allowed")
    assert refused.legacy.sent == []


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({"connection": "close, host"}, "Connection may not name host"),
        ({"connection": "x-forwarded-for"}, "Connection may not name x-forwarded-for"),
        ({"content-length": "5, 5"}, "Content-Length"),
    ],
)
async def test_bad_request_headers_are_400(headers: dict[str, str], detail: str) -> None:
    gw = gateway()
    response = await gw.client.get("/customers/42", headers=headers)
    assert_problem(response, 400, detail)
    assert gw.legacy.sent == []


async def test_a_request_header_that_is_not_utf8_is_400_naming_it() -> None:
    gw = gateway()
    response = await gw.client.get("/customers/42", headers=[(b"x-legacy-name", b"Jos\xe9")])
    assert_problem(response, 400, "'x-legacy-name'")


async def test_headers_too_large_are_431() -> None:
    gw = gateway()
    response = await gw.client.get("/customers/42", headers={"x-big": "x" * 4096})
    assert_problem(response, 431, "request headers exceed 2048 bytes")
    assert gw.legacy.sent == []


async def test_a_declared_body_too_large_is_413_before_anything_is_sent() -> None:
    gw = gateway()
    response = await gw.client.put("/customers/42/address", content=b"x" * 65, headers={"x-correlation-id": "c-413"})
    problem = assert_problem(response, 413, "request body exceeds 64 bytes")
    assert problem["correlation_id"] == "c-413"
    assert response.headers["x-correlation-id"] == "c-413"
    assert gw.legacy.sent == []


async def test_a_streamed_body_that_grows_too_large_is_413() -> None:
    gw = gateway()

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 10

    response = await gw.client.put("/customers/42/address", content=chunks())
    assert_problem(response, 413, "request body exceeds 64 bytes")


async def test_a_body_within_the_limit_is_streamed_to_the_upstream() -> None:
    gw = gateway()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"line 1\n"
        yield b"line 2\n"

    sized = await gw.client.put("/customers/42/address", content=b"x" * 64)
    streamed = await gw.client.put("/customers/42/address", content=chunks())
    assert (sized.status_code, streamed.status_code) == (200, 200)
    assert [s.body for s in gw.legacy.sent] == [b"x" * 64, b"line 1\nline 2\n"]
    assert gw.legacy.sent[0].header("content-length") == ["64"]
    assert gw.legacy.sent[1].header("content-length") == []


@pytest.mark.parametrize(
    ("error", "status", "detail"),
    [
        (ConnectFailed("cannot connect to upstream 'legacy': refused"), 502, "cannot connect"),
        (UpstreamUnavailable("upstream 'legacy' failed: reset"), 502, "failed: reset"),
        (UpstreamTimeout("upstream 'legacy' did not answer in time"), 504, "did not answer in time"),
    ],
)
async def test_upstream_failures_are_problems(error: Exception, status: int, detail: str) -> None:
    gw = gateway(legacy=FakeUpstream(outcomes=[error]))
    response = await gw.client.get("/customers/42", headers={"x-correlation-id": "c-1"})
    problem = assert_problem(response, status, detail)
    assert problem["upstream"] == "legacy"
    assert problem["correlation_id"] == "c-1"
    assert response.headers["x-correlation-id"] == "c-1"


async def test_a_failed_connection_is_retried_up_to_the_configured_retries() -> None:
    gw = gateway(legacy=FakeUpstream(outcomes=[ConnectFailed("refused")]))
    response = await gw.client.post("/customers", content=b"{}")
    assert response.status_code == 502
    assert len(gw.legacy.sent) == 3  # the first attempt and retries: 2


async def test_a_retry_that_succeeds_answers_the_client() -> None:
    gw = gateway(legacy=FakeUpstream(outcomes=[UpstreamUnavailable("reset"), Reply(chunks=(b"second",))]))
    response = await gw.client.get("/customers/42")
    assert (response.status_code, response.content) == (200, b"second")
    assert len(gw.legacy.sent) == 2


async def test_a_post_is_never_retried_after_the_upstream_broke() -> None:
    gw = gateway(legacy=FakeUpstream(outcomes=[UpstreamUnavailable("reset"), Reply()]))
    response = await gw.client.post("/customers", content=b"{}")
    assert response.status_code == 502
    assert len(gw.legacy.sent) == 1


async def test_a_timeout_is_not_retried() -> None:
    gw = gateway(legacy=FakeUpstream(outcomes=[UpstreamTimeout("slow"), Reply()]))
    assert (await gw.client.get("/customers/42")).status_code == 504
    assert len(gw.legacy.sent) == 1


async def test_a_valid_correlation_id_is_sent_upstream_and_echoed() -> None:
    gw = gateway()
    response = await gw.client.get("/customers/42", headers={"x-correlation-id": "order-2024.07:abc"})
    assert response.headers["x-correlation-id"] == "order-2024.07:abc"
    assert gw.legacy.sent[0].header("x-correlation-id") == ["order-2024.07:abc"]


@pytest.mark.parametrize("sent", [None, "not valid!", "x" * 129])
async def test_a_missing_or_invalid_correlation_id_is_generated_and_echoed(sent: str | None) -> None:
    gw = gateway()
    headers = {"x-correlation-id": sent} if sent is not None else {}
    response = await gw.client.get("/customers/42", headers=headers)
    cid = response.headers["x-correlation-id"]
    assert uuid.UUID(cid).version == 4
    assert gw.legacy.sent[0].header("x-correlation-id") == [cid]


async def test_the_upstreams_correlation_id_does_not_replace_the_requests() -> None:
    reply = Reply(headers=((b"x-correlation-id", b"upstream-made"),))
    gw = gateway(legacy=FakeUpstream(outcomes=[reply]))
    response = await gw.client.get("/customers/42", headers={"x-correlation-id": "ours"})
    assert response.headers.get_list("x-correlation-id") == ["ours"]


async def test_hop_by_hop_response_headers_are_stripped() -> None:
    reply = Reply(
        headers=(
            (b"Content-Type", b"application/json"),
            (b"Connection", b"keep-alive, X-Internal-Route"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Proxy-Authenticate", b"Basic"),
            (b"Upgrade", b"h2c"),
            (b"Trailer", b"x-checksum"),
            (b"X-Internal-Route", b"node-7"),
            (b"Set-Cookie", b"a=1"),
            (b"Set-Cookie", b"b=2"),
        ),
        chunks=(b"{}",),
    )
    gw = gateway(legacy=FakeUpstream(outcomes=[reply]))
    response = await gw.client.get("/customers/42")
    names = {name.lower() for name in response.headers}
    for hop in ("connection", "keep-alive", "proxy-authenticate", "upgrade", "trailer", "x-internal-route"):
        assert hop not in names
    assert response.headers["content-type"] == "application/json"
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert gw.legacy.responses[0].closed


async def test_hop_by_hop_and_forwarding_request_headers_are_rewritten() -> None:
    gw = gateway()
    await gw.client.get(
        "/customers/42",
        headers={
            "connection": "keep-alive, x-debug",
            "keep-alive": "timeout=5",
            "te": "trailers",
            "x-debug": "1",
            "proxy-authorization": "Basic secret",
            "x-forwarded-for": "10.0.0.1",
            "accept": "application/json",
        },
    )
    sent = gw.legacy.sent[0]
    names = {n.lower() for n, _ in sent.headers}
    for hop in ("connection", "keep-alive", "te", "x-debug", "proxy-authorization", "host"):
        assert hop not in names
    assert sent.header("x-forwarded-for") == ["203.0.113.9"]  # the peer is not a trusted proxy
    assert sent.header("x-forwarded-host") == ["shop.example"]
    assert sent.header("x-forwarded-proto") == ["http"]
    assert sent.header("accept") == ["application/json"]


async def test_preserve_host_sends_the_clients_host() -> None:
    gw = gateway(
        upstreams={"legacy": {"url": "http://legacy.internal:8001", "preserve_host": True},
                   "svc": {"url": "http://svc.internal:8002"}}
    )
    await gw.client.get("/customers/42")
    assert gw.legacy.sent[0].header("host") == ["shop.example"]


async def test_upstream_status_and_body_pass_through() -> None:
    reply = Reply(status=404, headers=((b"content-type", b"application/json"),), chunks=(b'{"error":', b'"nope"}'))
    gw = gateway(legacy=FakeUpstream(outcomes=[reply]))
    response = await gw.client.get("/customers/404")
    assert (response.status_code, response.content) == (404, b'{"error":"nope"}')


async def test_lifespan_shutdown_closes_the_upstream_clients() -> None:
    gw = gateway()
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    await gw.app({"type": "lifespan"}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert gw.legacy.closed and gw.svc.closed


async def test_the_heap_left_after_start_up_is_kept_out_of_garbage_collection() -> None:
    gw = gateway()
    frozen: list[int] = []

    async def receive() -> dict[str, Any]:
        if not frozen:
            frozen.append(-1)
            return {"type": "lifespan.startup"}
        frozen.append(gc.get_freeze_count())  # while the proxy serves
        return {"type": "lifespan.shutdown"}

    async def send(message: dict[str, Any]) -> None:
        return None

    gc.unfreeze()
    await gw.app({"type": "lifespan"}, receive, send)
    assert frozen[1] > 0
    assert gc.get_freeze_count() == 0  # given back at shutdown
