"""Requests that end badly on either side: the client goes away while the upstream works, or the upstream
breaks its answer off after the status line. ProxyApp in-process, driven with raw ASGI messages."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from strangler.gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from strangler.gateway.protocol import abort_response
from strangler.gateway.proxy import ProxyApp
from strangler.gateway.upstream import UpstreamRequest, UpstreamResponse
from tests.gateway.test_proxy_app import make_config


class SlowUpstream:
    """Answers nothing until released; records whether the call was abandoned (cancelled)."""

    def __init__(self) -> None:
        self.called = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        self.called.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        raise AssertionError("not reached")

    async def aclose(self) -> None:
        return None


class BreakingResponse:
    status = 200
    headers = ((b"content-type", b"text/plain"),)

    def __init__(self, error: UpstreamError) -> None:
        self.error = error
        self.closed = False

    async def body(self) -> AsyncIterator[bytes]:
        yield b"the first part"
        raise self.error

    async def close(self) -> None:
        self.closed = True


class BreakingUpstream:
    def __init__(self, error: UpstreamError) -> None:
        self.response = BreakingResponse(error)

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        return self.response

    async def aclose(self) -> None:
        return None


REGISTRIES: dict[ProxyApp, CollectorRegistry] = {}


def proxy(legacy: Any) -> ProxyApp:
    registry = CollectorRegistry()
    app = ProxyApp(make_config(), registry=registry, clients={"legacy": legacy, "svc": legacy})
    app._sweeper.period = 0.01
    REGISTRIES[app] = registry
    return app


def scope(path: str = "/customers/42") -> dict[str, Any]:
    return {
        "type": "http", "http_version": "1.1", "method": "GET", "scheme": "http", "path": path,
        "raw_path": path.encode(), "query_string": b"", "headers": [(b"host", b"shop.example")],
        "client": ("203.0.113.9", 50000), "server": ("shop.example", 80),
    }


class Client:
    """The ASGI side of one connection: a request without a body, a disconnect when `leave()` is called."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self._left = asyncio.Event()
        self._asked = False

    def leave(self) -> None:
        self._left.set()

    async def receive(self) -> dict[str, Any]:
        if not self._asked:
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


def requests_counted(app: ProxyApp) -> float:
    app.metrics.flush()
    return sum(
        sample.value for metric in REGISTRIES[app].collect() if metric.name == "strangler_requests"
        for sample in metric.samples if sample.name == "strangler_requests_total"
    )


async def test_a_client_that_leaves_while_the_upstream_works_abandons_the_upstream_call() -> None:
    upstream = SlowUpstream()
    app = proxy(upstream)
    client = Client()
    request = asyncio.create_task(app(scope(), client.receive, client.send))
    await asyncio.wait_for(upstream.called.wait(), 10)
    client.leave()
    await asyncio.wait_for(upstream.cancelled.wait(), 10)  # not left to run on to the upstream's 30 s
    await asyncio.wait_for(request, 10)  # and the request ends quietly: no exception, nothing sent
    assert client.sent == []
    assert requests_counted(app) == 0
    assert app.metrics._in_flight == 0


async def test_a_fast_answer_is_never_watched() -> None:
    app = proxy(BreakingUpstream(UpstreamUnavailable("unused")))
    app.clients["legacy"] = FastUpstream()
    client = Client()
    await app(scope(), client.receive, client.send)
    assert [m.get("status") for m in client.sent][:1] == [200]
    assert not app._sweeper._young and not app._sweeper._old  # finished before any sweep: no watch task


class FastUpstream:
    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        return Answer()

    async def aclose(self) -> None:
        return None


class Answer:
    status = 200
    headers = ((b"content-length", b"2"),)

    async def body(self) -> AsyncIterator[bytes]:
        yield b"ok"

    async def close(self) -> None:
        return None


async def test_a_cancellation_from_elsewhere_is_not_swallowed() -> None:
    upstream = SlowUpstream()
    app = proxy(upstream)
    client = Client()
    request = asyncio.create_task(app(scope(), client.receive, client.send))
    await asyncio.wait_for(upstream.called.wait(), 10)
    request.cancel()  # the server shutting down, say
    with pytest.raises(asyncio.CancelledError):
        await request


@pytest.mark.parametrize("error", [UpstreamUnavailable("upstream 'legacy' closed the connection"),
                                   UpstreamTimeout("upstream 'legacy' sent nothing more for 30 s")])
async def test_an_answer_broken_off_ends_the_response_unfinished_with_one_log_line(
    error: UpstreamError, caplog: pytest.LogCaptureFixture
) -> None:
    upstream = BreakingUpstream(error)
    app = proxy(upstream)
    client = Client()
    with caplog.at_level(logging.WARNING):
        await app(scope(), client.receive, client.send)  # returns: raising would make uvicorn log a traceback
    assert [(m["type"], m.get("more_body")) for m in client.sent] == [
        ("http.response.start", None), ("http.response.body", True)]  # never a final, "complete" body
    assert upstream.response.closed
    [record] = [r for r in caplog.records if r.name == "strangler.gateway"]
    assert "broke off its response" in record.getMessage() and str(error) in record.getMessage()
    assert record.exc_info is None
    app.metrics.flush()
    assert app.metrics.broken_responses.labels("legacy")._value.get() == 1


def test_abort_response_needs_uvicorns_cycle() -> None:
    async def send(message: dict[str, Any]) -> None:
        return None

    assert abort_response(send) is False
