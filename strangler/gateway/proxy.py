"""The proxy: a plain ASGI application that forwards every request to the upstream its route selects.

One request's path: header limits -> path normalisation -> route (capability, flag, decision) ->
upstream headers -> body stream (size-limited) -> upstream call (retried only when safe) -> streamed
response. Anything the gateway answers itself is an RFC 9457 problem.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from prometheus_client import CollectorRegistry

from strangler.gateway.breaker import CircuitBreaker
from strangler.gateway.client import Http1UpstreamClient
from strangler.gateway.errors import BodyTooLarge, CircuitOpen, UpstreamError
from strangler.gateway.framing import FramingRejected, check_framing
from strangler.gateway.headers import (
    CorrelationIds,
    HeaderRejected,
    TrustedProxies,
    client_correlation_id,
    filter_response_headers,
    prepare_request_headers,
)
from strangler.gateway.metrics import ProxyMetrics
from strangler.gateway.paths import PathRejected, normalize_path
from strangler.gateway.problems import problem_body, problem_headers
from strangler.gateway.protocol import abort_response
from strangler.gateway.retry import RetryBudget, call_with_retries
from strangler.gateway.upstream import UpstreamClient, UpstreamRequest, UpstreamResponse
from strangler.gateway.watch import ClientWatch, DisconnectSweeper
from strangler.maturity.ledger import Stage, StageEvent
from strangler.routing.router import FlagSource, Route, Router, StaticFlags
from strangler.routing.sticky import request_key

if TYPE_CHECKING:
    from strangler.config import StranglerConfig
    from strangler.shadow.mirror import Shadow, ShadowJob

Scope = dict[str, Any]
access_log = logging.getLogger("strangler.access")
log = logging.getLogger("strangler.gateway")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Lifecycle(Protocol):
    """Something that runs beside the proxy in its process (e.g. the flag refresher)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class ClientDisconnected(Exception):
    """The client went away while its request body was read or its response was sent."""


class BodyStream:
    """The client's request body as an async iterator, counted against `limit`, read at most once."""

    __slots__ = ("_receive", "_limit", "_seen", "_done", "started", "too_large", "disconnected", "tap")

    def __init__(self, receive: Any, limit: int) -> None:
        self.tap: Any = None  # called with every chunk (the shadow job's capture), when set
        self._receive = receive
        self._limit = limit
        self._seen = 0
        self._done = False
        self.started = False
        self.too_large = False
        self.disconnected = False

    def __aiter__(self) -> BodyStream:
        return self

    async def __anext__(self) -> bytes:
        while not self._done:
            self.started = True
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                raise ClientDisconnected()
            chunk: bytes = message.get("body", b"")
            self._done = not message.get("more_body", False)
            self._seen += len(chunk)
            if self._seen > self._limit:
                self.too_large = True
                raise BodyTooLarge(self._limit)
            if chunk:
                if self.tap is not None:
                    self.tap(chunk)
                return chunk
        raise StopAsyncIteration

    @property
    def complete(self) -> bool:
        return self._done


async def _captured(chunks: AsyncIterator[bytes], job: ShadowJob) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        job.capture_response(chunk)
        yield chunk


def _without_shadow_marker(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Only the gateway marks a request as mirrored: upstreams act on `X-Strangler-Shadow` (a dry run
    applies nothing), so a client's own value must not reach them."""
    for name, _ in headers:
        if name == "x-strangler-shadow":
            return [(n, v) for n, v in headers if n != "x-strangler-shadow"]
    return headers


class ProxyApp:
    def __init__(
        self,
        config: StranglerConfig,
        *,
        flags: FlagSource | None = None,
        registry: CollectorRegistry | None = None,
        clients: Mapping[str, UpstreamClient] | None = None,
        lifecycle: Sequence[Lifecycle] = (),
        shadow: Shadow | None = None,
        ledger: Callable[[StageEvent], None] | None = None,
    ) -> None:
        self.shadow = shadow
        self.ledger = ledger
        self._tracked = frozenset(config.maturity.track_methods)
        self.config = config
        self.lifecycle = list(lifecycle)
        self.router = Router(config.capabilities, flags or StaticFlags(config.capabilities), config.default_upstream)
        self.clients: dict[str, UpstreamClient] = dict(clients) if clients is not None else {
            name: Http1UpstreamClient(name, up) for name, up in config.upstreams.items()
        }
        self.metrics = ProxyMetrics(registry if registry is not None else CollectorRegistry())
        self._sweeper = DisconnectSweeper()
        self._new_correlation_id = CorrelationIds()
        self._trusted = TrustedProxies.parse(config.trusted_proxies)
        self._budgets = {name: RetryBudget(config.limits.retry_budget) for name in config.upstreams}
        self._breakers = {
            name: CircuitBreaker(up.circuit_breaker.failures, up.circuit_breaker.interval)
            for name, up in config.upstreams.items()
            if up.circuit_breaker.failures > 0
        }
        self._max_header = int(config.limits.max_header_bytes)
        self._body_limits = {
            name: int(cap.max_request_body or config.limits.max_request_body)
            for name, cap in config.capabilities.items()
        }
        self._default_body_limit = int(config.limits.max_request_body)
        self._reject_semicolons = config.path_semicolons == "reject"
        self._access_log = config.access_log.enabled

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:  # websockets are not proxied (yet): refuse the handshake
            await receive()
            await send({"type": "websocket.close", "code": 1003})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                for part in self.lifecycle:
                    await part.start()
                # What the worker holds once started (modules, configuration, pools) lives as long as the
                # process: left to the collector, every full collection walks all of it again, tens of
                # milliseconds every few thousand requests (they made most of the p99 at 50 connections).
                gc.collect()
                gc.freeze()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.shadow is not None:
                    await self.shadow.drain(timeout=5.0)
                for part in reversed(self.lifecycle):
                    await part.stop()
                await self.aclose()
                gc.unfreeze()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()
        self.metrics.flush()

    async def _http(self, scope: Scope, receive: Any, send: Any) -> None:
        headers = scope["headers"]
        size = 0
        for name, value in headers:
            size += len(name) + len(value) + 4
        if size > self._max_header:
            return await self._reject(
                send, 431, f"request headers exceed {self._max_header} bytes", "header_size", request_headers=headers
            )
        try:
            check_framing(scope["http_version"], headers)
        except FramingRejected as exc:
            return await self._reject(send, exc.status, str(exc), "framing", request_headers=headers)
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
        try:
            path = normalize_path(raw_path)
        except PathRejected as exc:
            return await self._reject(send, 400, str(exc), "path", request_headers=headers)
        if self._reject_semicolons and ";" in path:
            return await self._reject(send, 400, "';' is not allowed in paths here", "path", request_headers=headers)
        method = scope["method"]
        route = self.router.route(
            method, path, lambda spec, params: request_key(spec, params, headers, scope.get("query_string") or b"")
        )
        if route is None:
            return await self._reject(
                send, 503, "no upstream is configured for this route", "no_upstream", request_headers=headers
            )
        upstream = route.decision.primary
        client = self.clients.get(upstream)
        if client is None:
            return await self._reject(
                send, 503, f"upstream {upstream!r} is not configured", "no_upstream", request_headers=headers
            )
        peer = scope.get("client")
        peer_host = peer[0] if peer else None
        try:
            prepared = prepare_request_headers(
                headers,
                peer=peer_host,
                scheme=scope.get("scheme", "http"),
                trusted=self._trusted.trusts(peer_host),
                preserve_host=self.config.upstreams[upstream].preserve_host,
                new_id=self._new_correlation_id,
            )
        except HeaderRejected as exc:
            return await self._reject(send, 400, str(exc), "header", request_headers=headers)
        cid = prepared.correlation_id
        limit = self._body_limits.get(route.capability, self._default_body_limit) if route.capability else (
            self._default_body_limit
        )
        if prepared.content_length is not None and prepared.content_length > limit:
            return await self._reject(send, 413, f"request body exceeds {limit} bytes", "body_size", cid)
        has_body = prepared.chunked or (prepared.content_length or 0) > 0
        body = BodyStream(receive, limit) if has_body else None
        query = scope.get("query_string") or b""
        target = path + "?" + query.decode("latin-1") if query else path
        request = UpstreamRequest(method, target, _without_shadow_marker(prepared.upstream), body,
                                  chunked=prepared.chunked)
        capability = route.capability or "-"
        entity = None
        if self.ledger is not None and route.capability is not None and method in self._tracked:
            entity = self._entity_key(route, headers, query)
            self.ledger(StageEvent(cid, entity, Stage.ACCEPTED, _utcnow(), route.capability))
        job = None
        if route.decision.mirror is not None and self.shadow is not None:
            job = self.shadow.begin(route, method, request, cid, prepared.content_length, has_body)
            if job is not None and body is not None and job.request_body is not None:
                body.tap = job.capture_request
        metrics = self.metrics
        metrics.request_started()
        watch = self._sweeper.watch(receive, body)
        started = time.perf_counter()
        status = 0
        try:
            try:
                response = await self._send(client, upstream, request, body)
            except UpstreamError as exc:
                if body is not None and body.disconnected:
                    return
                watch.finishing()  # the answer is the gateway's own now
                if body is not None and body.too_large:
                    status = 413
                    return await self._reject(send, 413, f"request body exceeds {limit} bytes", "body_size", cid)
                status = exc.status
                return await self._reject(send, exc.status, str(exc), "upstream", cid, upstream=upstream)
            except BodyTooLarge:
                status = 413
                watch.finishing()
                return await self._reject(send, 413, f"request body exceeds {limit} bytes", "body_size", cid)
            except ClientDisconnected:
                return
            status = response.status
            metrics.observe_latency(upstream, time.perf_counter() - started)
            if entity is not None and self.ledger is not None and 200 <= status < 300:
                self.ledger(StageEvent(cid, entity, Stage.APPLIED, _utcnow(), route.capability))
            chunks = response.body()
            if job is not None:  # the shadow job gets a copy of what passes; it never waits for the mirror
                job.response_started(response.status, response.headers)
                chunks = _captured(chunks, job)
            if await self._stream(response, chunks, send, cid, watch, upstream) and job is not None:
                job.finish(True)
        except asyncio.CancelledError:
            # The watch cancelled this task because the client went away: the upstream call is abandoned
            # and there is nobody to answer. Any other cancellation goes on.
            task = asyncio.current_task()
            if not watch.gone or task is None or task.uncancel() > 0:
                raise
        finally:
            watch.stop()
            if job is not None:
                job.finish(False)  # no-op when the response completed
            metrics.request_finished(capability, route.decision.target, status)
            if self._access_log:
                self._log_access(scope, path, capability, upstream, status, started, cid)

    def _entity_key(self, route: Route, headers: Any, query: bytes) -> str:
        """The changed entity's key: the capability's `entity_key` spec, else the first path parameter."""
        cap = self.config.capabilities[route.capability] if route.capability else None
        if cap is not None and cap.entity_key:
            return request_key(cap.entity_key, route.params, headers, query) or ""
        return next(iter(route.params.values()), "")

    async def _send(
        self, client: UpstreamClient, upstream: str, request: UpstreamRequest, body: BodyStream | None
    ) -> UpstreamResponse:
        budget = self._budgets[upstream]
        budget.deposit()
        breaker = self._breakers.get(upstream)
        call: Callable[[], Awaitable[UpstreamResponse]] = (lambda: client.send(request)) if breaker is None else (
            lambda: self._guarded(client, upstream, request, body, breaker)
        )
        try:
            return await call()
        except UpstreamError as first:
            return await call_with_retries(
                call,
                first,
                method=request.method,
                body_started=lambda: body is not None and body.started,
                attempts=self.config.upstreams[upstream].retries + 1,
                budget=budget,
                on_retry=lambda: self.metrics.retries.labels(upstream).inc(),
            )

    async def _guarded(
        self,
        client: UpstreamClient,
        upstream: str,
        request: UpstreamRequest,
        body: BodyStream | None,
        breaker: CircuitBreaker,
    ) -> UpstreamResponse:
        """One call through the upstream's circuit breaker: refused at once (CircuitOpen) while it is open."""
        if not breaker.allow():
            self.metrics.circuit_refused.labels(upstream).inc()
            raise CircuitOpen(
                f"upstream {upstream!r} failed {breaker.failures} times in a row; not called for "
                f"{breaker.retry_after():.1f} s more (circuit breaker open)"
            )
        try:
            response = await client.send(request)
        except UpstreamError:
            if body is not None and (body.disconnected or body.too_large):
                breaker.abandoned()  # the client's side failed, not the upstream
            elif breaker.failed():
                self.metrics.circuit_opened.labels(upstream).inc()
                log.warning("upstream %r failed %d times in a row: circuit breaker open for %g s",
                            upstream, breaker.failures, breaker.interval)
            raise
        except BaseException:
            breaker.abandoned()
            raise
        breaker.succeeded()
        return response

    async def _stream(
        self, response: UpstreamResponse, chunks: AsyncIterator[bytes], send: Any, cid: str, watch: ClientWatch,
        upstream: str,
    ) -> bool:
        """Send the response on; True when it was sent whole."""
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": filter_response_headers(response.headers, cid.encode()),
                }
            )
            try:
                async for chunk in chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except UpstreamError as exc:
                # The status line is gone: the client must see the response cut short, never a shorter
                # "whole" one. Closing its connection (rather than raising) keeps this to one log line.
                self.metrics.broken_responses.labels(upstream).inc()
                log.warning("upstream %r broke off its response (correlation id %s): %s; closing the client's "
                            "connection", upstream, cid, exc)
                watch.finishing()
                abort_response(send)
                return False
            watch.finishing()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return True
        except ClientDisconnected:
            return False  # nobody to answer; closing the unfinished response drops the upstream connection
        finally:
            await response.close()

    async def _reject(
        self,
        send: Any,
        status: int,
        detail: str,
        reason: str,
        correlation_id: str | None = None,
        upstream: str | None = None,
        request_headers: Sequence[tuple[bytes, bytes]] | None = None,
    ) -> None:
        if correlation_id is None and request_headers is not None:  # refused before the headers were prepared
            correlation_id = client_correlation_id(request_headers)
        if reason != "upstream":
            self.metrics.rejected.labels(reason).inc()
        body = problem_body(status, detail, correlation_id=correlation_id, upstream=upstream)
        await send({"type": "http.response.start", "status": status, "headers": problem_headers(body, correlation_id)})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def _log_access(
        self, scope: Scope, path: str, capability: str, upstream: str, status: int, started: float, cid: str
    ) -> None:
        peer = scope.get("client")
        access_log.info(
            orjson.dumps(
                {
                    "ts": time.time(),
                    "method": scope["method"],
                    "path": path,
                    "capability": capability,
                    "upstream": upstream,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "correlation_id": cid,
                    "client": peer[0] if peer else None,
                }
            ).decode()
        )
