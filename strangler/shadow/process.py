"""The gateway's shadow process: mirrors, compares and stores what the proxy workers hand over
(capabilities with `shadow.offload`).

The supervisor forks it next to the workers and restarts it if it dies; it dies with the supervisor
(`PR_SET_PDEATHSIG`). It listens on a Unix socket that each worker connects to (`strangler.shadow.handoff`)
and runs the same `Shadow` a worker used to run itself, with its own mirror clients, breakers, batched
divergence writer and metrics (multiprocess: `/metrics` adds them up with the workers').
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from strangler.config import StranglerConfig
from strangler.gateway.breaker import CircuitBreaker
from strangler.gateway.upstream import UpstreamRequest
from strangler.precedence.rules import PrecedenceRules, response_classifier
from strangler.routing.modes import RoutingDecision
from strangler.routing.router import Route
from strangler.routing.routes import RouteTemplate, parse_route
from strangler.shadow.compare import PointerSet
from strangler.shadow.handoff import Handoff, HandoffError, decode
from strangler.shadow.metrics import ShadowMetrics
from strangler.shadow.mirror import HandedPrimary, Shadow
from strangler.shadow.mirror_client import MirrorClients
from strangler.shadow.records import ComparisonRecord
from strangler.shadow.store import SqlDivergenceStore
from strangler.shadow.writer import BatchWriter
from strangler.store import create_store_engine

log = logging.getLogger("strangler.shadow")
PROCESS_NAME = b"shadow-process"  # /proc/PID/comm: tells it from the workers


def offloads(config: StranglerConfig) -> bool:
    """Whether any capability with two sides offloads its mirrors (a flag may put it in shadow mode any time)."""
    return any(cap.new is not None and cap.shadow.offload for cap in config.capabilities.values())


class HandoffReceiver(asyncio.Protocol):
    """One worker's connection: frames in, `Shadow.accept` for each. An unreadable frame closes it (the
    worker reconnects; what it wrote meanwhile is lost and was not counted)."""

    def __init__(self, accept: Callable[[Handoff], None]) -> None:
        self.accept = accept
        self.buffer = bytearray()
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            for handoff in decode(self.buffer):
                try:
                    self.accept(handoff)
                except Exception:  # a bug with one request must not cost the others
                    log.exception("shadow process: cannot mirror a request of %s", handoff.capability)
        except HandoffError as exc:
            log.error("closing a worker's shadow connection: %s", exc)
            self.buffer.clear()
            if self.transport is not None:
                self.transport.close()


class ShadowService:
    """A `Shadow` fed by handoffs: rebuilds each request's route and primary outcome, then `accept`s it."""

    def __init__(self, shadow: Shadow) -> None:
        self.shadow = shadow
        self._templates: dict[str, RouteTemplate | None] = {"": None}

    def accept(self, handoff: Handoff) -> None:
        template = self._templates.get(handoff.template)
        if template is None and handoff.template not in self._templates:
            template = self._templates[handoff.template] = parse_route(handoff.template)
        route = Route(handoff.capability, template,
                      RoutingDecision(handoff.primary_upstream, handoff.mirror_upstream or None, handoff.serving), {})
        request = UpstreamRequest(handoff.method, handoff.target, handoff.headers, None)
        primary = HandedPrimary(handoff.ok, handoff.status, handoff.response_headers, handoff.response_body,
                                handoff.latency_ms)
        self.shadow.accept(route, handoff.method, request, handoff.correlation_id, handoff.request_body,
                           handoff.has_body, primary)


def build_shadow(config: StranglerConfig, registry: CollectorRegistry
                 ) -> tuple[Shadow, BatchWriter[ComparisonRecord], MirrorClients]:
    metrics = ShadowMetrics(registry)
    writer = BatchWriter(SqlDivergenceStore(create_store_engine(config.store)), on_drop=metrics.records_dropped)
    expected = {name: PointerSet(cap.compare.expected) for name, cap in config.capabilities.items()}
    classify = response_classifier(expected, PrecedenceRules(config.precedence))
    clients = MirrorClients(config.upstreams)
    breakers = {name: CircuitBreaker(up.circuit_breaker.failures, up.circuit_breaker.interval)
                for name, up in config.upstreams.items() if up.circuit_breaker.failures > 0}
    shadow = Shadow(config.capabilities, clients, writer.submit, metrics, classify=classify, breakers=breakers,
                    workers=config.workers)
    return shadow, writer, clients


async def serve(config: StranglerConfig, path: str, stop: asyncio.Event) -> None:
    """Receive handoffs on `path` until `stop`; then let the mirrors in flight finish and store their records."""
    shadow, writer, clients = build_shadow(config, CollectorRegistry())
    service = ShadowService(shadow)
    await writer.start()
    await clients.start()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # left by a shadow process that died
    server = await asyncio.get_running_loop().create_unix_server(lambda: HandoffReceiver(service.accept), path)
    try:
        await stop.wait()
    finally:
        server.close()
        await shadow.drain(timeout=config.limits.drain_timeout)
        await clients.stop()
        await writer.stop()
        shadow.metrics.flush()


def run(config: StranglerConfig, path: str) -> None:
    """The shadow process's main: SIGTERM stops it gracefully; it also gets SIGTERM if the supervisor dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides
    _die_with_parent_and_name_myself()
    import uvloop

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await serve(config, path, stop)

    uvloop.run(main())


def _die_with_parent_and_name_myself() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        libc.prctl(15, ctypes.c_char_p(PROCESS_NAME), 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):  # not Linux: the supervisor still stops it on exit
        log.warning("cannot tie the shadow process to the supervisor's life")
    if os.getppid() == 1:  # the supervisor died before the death signal was set
        os.kill(os.getpid(), signal.SIGTERM)
