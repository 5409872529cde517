"""Mirroring: send a capability's request to the side that is not serving, and compare the outcomes.

The primary response is never delayed or failed by the mirror: the proxy hands a `ShadowJob` the bytes it
streams anyway (request body and response, each captured once up to `shadow.max_body`), and the mirror
and noise calls run as background tasks with their own timeout, bounded in number per capability. They
start once the primary response has gone to the client, so that none of their work comes before it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from strangler.gateway.breaker import CircuitBreaker
from strangler.gateway.errors import UpstreamError, UpstreamTimeout
from strangler.gateway.upstream import UpstreamClient, UpstreamRequest
from strangler.routing.config import CapabilityConfig
from strangler.routing.router import Route
from strangler.shadow.compare import CapturedResponse, Comparator, FieldDifference, PointerSet
from strangler.shadow.deadlines import CoarseDeadlines
from strangler.shadow.metrics import ShadowMetrics
from strangler.shadow.records import ComparisonRecord, Redactor

log = logging.getLogger("strangler.shadow")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SHADOW_HEADER = "x-strangler-shadow"

# (capability, field path, serving side) -> "regression" | "expected" | "unknown-authority"
Classifier = Callable[[str, str, str], str]


class _Side:
    """One side's captured outcome, or why there is none."""

    __slots__ = ("response", "latency_ms", "failure")

    def __init__(self, response: CapturedResponse | None, latency_ms: float | None, failure: str | None) -> None:
        self.response = response
        self.latency_ms = latency_ms
        self.failure = failure


@dataclass(frozen=True, slots=True)
class HandedPrimary:
    """The primary outcome a worker hands over: `ok` (answered in full), status, compared headers, body (None:
    above max_body), latency."""

    ok: bool
    status: int
    headers: Mapping[str, str]
    body: bytes | None
    latency_ms: float | None


class PrimaryCapture:
    """The primary exchange of a shadowed request as the proxy streams it: both bodies up to `max_body` (a
    request body beyond it is counted as skipped), the status, the compared headers and the latency."""

    __slots__ = ("_metrics", "_wanted_headers", "capability", "route", "method", "request", "correlation_id",
                 "limit", "request_body", "response_body", "status", "headers", "started", "latency_ms")

    def __init__(self, metrics: ShadowMetrics, wanted: frozenset[bytes], capability: str, cap: CapabilityConfig,
                 route: Route, method: str, request: UpstreamRequest, correlation_id: str,
                 capture_request: bool) -> None:
        self._metrics = metrics
        self._wanted_headers = wanted
        self.capability = capability
        self.route = route
        self.method = method
        self.request = request
        self.correlation_id = correlation_id
        self.limit = int(cap.shadow.max_body)
        self.request_body: bytearray | None = bytearray() if capture_request else None
        self.response_body: bytearray | None = bytearray()
        self.status = 0
        self.headers: dict[str, str] = {}
        self.started = time.perf_counter()
        self.latency_ms: float | None = None

    def capture_request(self, chunk: bytes) -> None:
        body = self.request_body
        if body is not None:
            if len(body) + len(chunk) > self.limit:
                self.request_body = None
                self._metrics.skipped(self.capability, "too_large")
            else:
                body += chunk

    def response_started(self, status: int, raw_headers: Sequence[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.latency_ms = (time.perf_counter() - self.started) * 1000
        self.headers = wanted_headers(raw_headers, self._wanted_headers)

    def capture_response(self, chunk: bytes) -> None:
        body = self.response_body
        if body is not None:
            if len(body) + len(chunk) > self.limit:
                self.response_body = None
            else:
                body += chunk


class ShadowJob(PrimaryCapture):
    """The shadow side of one proxied request; fed by the proxy, finished in the background."""

    __slots__ = ("shadow", "cap", "primary", "noise", "capturing")

    def __init__(self, shadow: Shadow, capability: str, cap: CapabilityConfig, route: Route, method: str,
                 request: UpstreamRequest, correlation_id: str, capture_request: bool) -> None:
        super().__init__(shadow.metrics, shadow.compared_headers[capability], capability, cap, route, method,
                         request, correlation_id, capture_request)
        self.shadow = shadow
        self.cap = cap
        self.primary: _Side | None = None  # set by `finish`, which launches the mirror
        self.noise = method in SAFE_METHODS and shadow.rng.random() < cap.shadow.noise_sample
        self.capturing = capture_request

    def finish(self, ok: bool) -> None:
        """The primary response is complete (`ok`) or failed: the mirror goes out now (a request body that
        outgrew max_body while it streamed is not mirrored)."""
        if self.primary is not None:
            return
        if not ok:
            self.primary = _Side(None, self.latency_ms, "primary_error")
        elif self.response_body is None:
            self.shadow.metrics.skipped(self.capability, "too_large")
            self.primary = _Side(None, self.latency_ms, "too_large")
        else:
            response = CapturedResponse(self.status, self.headers, bytes(self.response_body),
                                        self.headers.get("content-type", ""))
            self.primary = _Side(response, self.latency_ms, None)
        if not self.capturing or (ok and self.request_body is not None):
            self.shadow.spawn(self)
        else:
            if ok:  # the request body outgrew max_body while it streamed
                self.shadow.record_failure(self.route, self.method, self.correlation_id, "too_large")
            self.shadow.release(self.capability)


class Shadow:
    def __init__(
        self,
        capabilities: Mapping[str, CapabilityConfig],
        clients: Mapping[str, UpstreamClient],
        sink: Callable[[ComparisonRecord], None],
        metrics: ShadowMetrics,
        *,
        classify: Classifier | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        breakers: Mapping[str, CircuitBreaker] | None = None,
        workers: int = 1,
    ) -> None:
        self.capabilities = dict(capabilities)
        self.workers = workers  # whose mirrors this instance runs: `max_in_flight` is per capability and worker
        self.clients = clients
        # per mirror upstream: a mirror that keeps failing is not called (nor a job made) while open
        self.breakers = dict(breakers or {})
        self.sink = sink
        self.metrics = metrics
        self.rng = rng or random.Random()
        self.clock = clock
        self.comparators = {name: Comparator(cap.compare) for name, cap in capabilities.items()}
        self.redactors = {name: Redactor(cap.compare.redact) for name, cap in capabilities.items()}
        self.compared_headers = {  # lower-case names, as bytes: matched against the raw headers
            name: frozenset(h.lower().encode("latin-1") for h in (*cap.compare.headers, "content-type"))
            for name, cap in capabilities.items()
        }
        self.classify = classify or serving_side_is_authoritative(capabilities)
        self._in_flight: dict[str, int] = dict.fromkeys(capabilities, 0)
        self._tasks: set[asyncio.Task[None]] = set()
        self.deadlines = CoarseDeadlines()  # a mirror's timeout may fire up to 0.1 s late
        self._loop: asyncio.AbstractEventLoop | None = None

    def begin(self, route: Route, method: str, request: UpstreamRequest, correlation_id: str,
              content_length: int | None, has_body: bool) -> ShadowJob | None:
        """A job when this request is to be mirrored, else None (sampled out, unsafe write, too large, busy,
        the mirror's breaker open)."""
        capability = route.capability
        if capability is None or route.decision.mirror is None:
            return None
        cap = self.capabilities[capability]
        if not self.wanted(cap, route, method, correlation_id, content_length):
            return None
        if not self._admit(route, method, correlation_id):
            return None
        return ShadowJob(self, capability, cap, route, method, request, correlation_id, capture_request=has_body)

    def wanted(self, cap: CapabilityConfig, route: Route, method: str, correlation_id: str,
               content_length: int | None) -> bool:
        """Whether this request of a shadowed capability is to be mirrored: sampled in, not an unsafe write the
        capability skips, not declared larger than max_body (both counted)."""
        if cap.shadow.sample < 1.0 and self.rng.random() >= cap.shadow.sample:
            return False
        capability = route.capability or ""
        if method not in SAFE_METHODS and cap.shadow.writes == "skip":
            self.metrics.skipped(capability, "unsafe_method")
            return False
        if content_length is not None and content_length > cap.shadow.max_body:
            self.metrics.skipped(capability, "too_large")
            self.record_failure(route, method, correlation_id, "too_large")
            return False
        return True

    def accept(self, route: Route, method: str, request: UpstreamRequest, correlation_id: str,
               request_body: bytes | None, has_body: bool, primary: HandedPrimary) -> None:
        """Mirror a request that a worker has served and handed over (`strangler.shadow.handoff`): `begin`'s
        sampling and size checks were made there; the in-flight cap and the mirror's breaker apply here."""
        capability = route.capability
        cap = self.capabilities.get(capability or "")
        if capability is None or cap is None or route.decision.mirror is None:
            return
        if not self._admit(route, method, correlation_id):
            return
        job = ShadowJob(self, capability, cap, route, method, request, correlation_id, capture_request=has_body)
        if has_body:
            job.request_body = bytearray(request_body) if request_body is not None else None
        job.status = primary.status
        job.headers = dict(primary.headers)
        job.latency_ms = primary.latency_ms
        job.response_body = bytearray(primary.body) if primary.body is not None else None
        job.finish(primary.ok)

    def _admit(self, route: Route, method: str, correlation_id: str) -> bool:
        """Below the in-flight cap and with the mirror's breaker not open: count one more in flight."""
        capability = route.capability or ""
        if self._in_flight[capability] >= self.capabilities[capability].shadow.max_in_flight * self.workers:
            self.metrics.dropped(capability)
            self.record_failure(route, method, correlation_id, "dropped")
            return False
        breaker = self.breakers.get(route.decision.mirror or "")
        if breaker is not None and breaker.is_open():
            self.metrics.skipped(capability, "circuit_open")
            self.record_failure(route, method, correlation_id, "circuit_open")
            return False
        self._in_flight[capability] += 1
        return True

    def release(self, capability: str) -> None:
        self._in_flight[capability] -= 1

    def record_failure(self, route: Route, method: str, correlation_id: str, outcome: str) -> None:
        """A request that was to be mirrored and was not (`dropped`, `too_large`, `circuit_open`): the report
        counts these next to the mirror's timeouts and errors."""
        capability = route.capability or ""
        self.sink(ComparisonRecord(self.clock(), capability, route_text(route), method, "candidate", outcome,
                                   correlation_id, route.decision.target, None, None, None, None))

    def spawn(self, job: ShadowJob) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            # Looked up once: on Python 3.11 every lookup of the running loop is a getpid system call.
            loop = self._loop = asyncio.get_running_loop()
        task = loop.create_task(self._run(job, loop))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def _run(self, job: ShadowJob, loop: asyncio.AbstractEventLoop) -> None:
        try:
            noise_task = None
            if job.noise:  # the second call to the serving side runs beside the mirror
                noise_upstream = job.route.decision.primary
                if job.cap.shadow.secondary is not None and job.route.decision.target == "legacy":
                    noise_upstream = job.cap.shadow.secondary  # a second legacy instance
                noise_task = loop.create_task(self._call(job, noise_upstream, "noise", loop))
            self.metrics.mirrored(job.capability)
            other = await self._call(job, job.route.decision.mirror or "", shadow_value(job), loop)
            primary = job.primary or _Side(None, job.latency_ms, "primary_error")  # set: `finish` spawned this
            self._compare(job, primary, other, "candidate")
            if noise_task is not None:
                self._compare(job, primary, await noise_task, "noise")
        except Exception:  # a bug here must never reach the request path
            log.exception("shadow comparison failed for %s", job.capability)
        finally:
            self.release(job.capability)

    async def _call(self, job: ShadowJob, upstream: str, marker: str, loop: asyncio.AbstractEventLoop) -> _Side:
        client = self.clients.get(upstream)
        if client is None:
            return _Side(None, None, "error")
        headers = [(k, v) for k, v in job.request.headers if k != SHADOW_HEADER]
        headers.append((SHADOW_HEADER, "1" if marker == "noise" else marker))
        body = bytes(job.request_body) if job.request_body is not None else None
        request = UpstreamRequest(job.method, job.request.target, headers, body or None, chunked=False)
        breaker = self.breakers.get(upstream) if marker != "noise" else None
        if breaker is not None and not breaker.allow():  # half-open, and another mirror is the probe
            self.metrics.failed(job.capability, "circuit_open")
            return _Side(None, None, "circuit_open")
        started = time.perf_counter()
        try:
            with self.deadlines.within(job.cap.shadow.timeout, loop):
                response = await client.send(request)
                if breaker is not None:
                    breaker.succeeded()
                latency = (time.perf_counter() - started) * 1000
                try:
                    captured = bytearray()
                    too_large = False
                    async for chunk in response.body():
                        if len(captured) + len(chunk) > job.limit:
                            too_large = True
                            break
                        captured += chunk
                finally:
                    await response.close()
        except (TimeoutError, UpstreamTimeout):
            if breaker is not None:
                breaker.failed()
            self.metrics.failed(job.capability, "timeout")
            return _Side(None, None, "timeout")
        except UpstreamError:
            if breaker is not None:
                breaker.failed()
            self.metrics.failed(job.capability, "error")
            return _Side(None, None, "error")
        except BaseException:
            if breaker is not None:
                breaker.abandoned()
            raise
        if too_large:
            self.metrics.skipped(job.capability, "too_large")
            return _Side(None, latency, "too_large")
        wanted = wanted_headers(response.headers, self.compared_headers[job.capability])
        return _Side(CapturedResponse(response.status, wanted, bytes(captured), wanted.get("content-type", "")),
                     latency, None)

    def _compare(self, job: ShadowJob, primary: _Side, other: _Side, kind: str) -> None:
        outcome = primary.failure or other.failure or "compared"
        differences: tuple[FieldDifference, ...] = ()
        classifications: tuple[str, ...] = ()
        bodies = None
        serving = job.route.decision.target
        if primary.response is not None and other.response is not None:
            found = self.comparators[job.capability].compare(primary.response, other.response)
            if found:
                redactor = self.redactors[job.capability]
                differences = tuple(redactor.difference(d) for d in found)
                classifications = tuple(self.classify(job.capability, d.path, serving) for d in found)
                if kind == "candidate" and job.cap.shadow.store_bodies:
                    bodies = (redactor.body(primary.response.body, primary.response.content_type),
                              redactor.body(other.response.body, other.response.content_type))
            if kind == "candidate":  # redacted paths: a metric label must not carry a masked key either
                self.metrics.compared(job.capability, [d.path for d in differences])
        self.sink(ComparisonRecord(
            self.clock(), job.capability, route_text(job.route), job.method, kind, outcome, job.correlation_id,
            serving, primary.response.status if primary.response else None,
            other.response.status if other.response else None, _round(primary.latency_ms),
            _round(other.latency_ms), differences, classifications, bodies,
        ))


def shadow_value(job: ShadowJob) -> str:
    return "dry-run" if job.method not in SAFE_METHODS and job.cap.shadow.writes == "dry-run" else "1"


def serving_side_is_authoritative(capabilities: Mapping[str, CapabilityConfig]) -> Classifier:
    """The default authority rule until precedence rules say otherwise: declared differences are
    `expected`, every other difference is a `regression` of the side that does not serve."""
    expected = {name: PointerSet(cap.compare.expected) for name, cap in capabilities.items()}

    def classify(capability: str, path: str, serving: str) -> str:
        return "expected" if expected[capability].covers(path) else "regression"

    return classify


def wanted_headers(raw: Sequence[tuple[bytes, bytes]], wanted: frozenset[bytes]) -> dict[str, str]:
    """The compared headers (`wanted`: lower-case names); a repeated one (Set-Cookie) keeps all its values,
    in order."""
    out: dict[str, str] = {}
    for name, value in raw:
        lower = name.lower()
        if lower in wanted:
            key = lower.decode("latin-1")
            text = value.decode("latin-1")
            out[key] = f"{out[key]}, {text}" if key in out else text
    return out


def route_text(route: Route) -> str:
    return route.template.text if route.template is not None else ""


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None

