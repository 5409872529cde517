"""Handing mirrors from a proxy worker to the gateway's shadow process (`shadow.offload`), so that the worker
serving the primary does no mirror work beyond capturing what it streams anyway and one write.

A worker's `ShadowHandoff` takes `Shadow.begin`'s place in the proxy (same `begin`, `drain` and job
methods). It makes the cheap decisions (sample, writes policy, declared body size), captures the request
body and the primary response as before, and when the primary is done writes one frame to a Unix socket:
a fixed prefix of three lengths, an orjson header, the request body, the response body. The shadow process
(`strangler.shadow.process`) applies the in-flight cap and the breakers, mirrors, compares and stores. The
worker never waits: when the socket is not connected or its buffer is over `max_buffer`, the mirror is
dropped and counted, as at the in-flight cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import orjson

from strangler.gateway.upstream import UpstreamRequest
from strangler.routing.config import CapabilityConfig
from strangler.routing.router import Route
from strangler.shadow.mirror import PrimaryCapture, Shadow, ShadowJob, route_text

log = logging.getLogger("strangler.shadow")
PREFIX = struct.Struct("<III")  # lengths: header, request body, response body (NONE: absent)
NONE = 0xFFFFFFFF
MAX_HEADER = 1 << 20


class HandoffError(ValueError):
    """A frame that cannot be read: says which part and why."""


@dataclass(frozen=True, slots=True)
class Handoff:
    """One served request to mirror, as it travels from a worker to the shadow process."""

    capability: str
    method: str
    target: str
    headers: list[tuple[str, str]]
    correlation_id: str
    template: str
    serving: str  # "legacy" or "new"
    primary_upstream: str
    mirror_upstream: str
    has_body: bool
    request_body: bytes | None
    ok: bool
    status: int
    response_headers: dict[str, str]
    latency_ms: float | None
    response_body: bytes | None


def encode(handoff: Handoff) -> list[bytes]:
    """The frame's parts, for one `writelines`."""
    header = orjson.dumps([
        handoff.capability, handoff.method, handoff.target, handoff.headers, handoff.correlation_id,
        handoff.template, handoff.serving, handoff.primary_upstream, handoff.mirror_upstream, handoff.has_body,
        handoff.ok, handoff.status, handoff.response_headers, handoff.latency_ms,
    ])
    request, response = handoff.request_body, handoff.response_body
    prefix = PREFIX.pack(len(header), NONE if request is None else len(request),
                         NONE if response is None else len(response))
    return [prefix, header, request or b"", response or b""]


def decode(buffer: bytearray) -> Iterator[Handoff]:
    """The complete frames at the start of `buffer`, removed from it; a partial frame stays for later."""
    offset = 0
    size = len(buffer)
    view = memoryview(buffer)
    try:
        while size - offset >= PREFIX.size:
            header_length, request_length, response_length = PREFIX.unpack_from(buffer, offset)
            if header_length > MAX_HEADER:
                raise HandoffError(f"frame at byte {offset}: header of {header_length} bytes (at most {MAX_HEADER})")
            start = offset + PREFIX.size
            request_end = start + header_length + (0 if request_length == NONE else request_length)
            end = request_end + (0 if response_length == NONE else response_length)
            if end > size:
                break
            yield _handoff(bytes(view[start:start + header_length]),
                           None if request_length == NONE else bytes(view[start + header_length:request_end]),
                           None if response_length == NONE else bytes(view[request_end:end]), offset)
            offset = end
    finally:
        view.release()
        del buffer[:offset]


def _handoff(header: bytes, request: bytes | None, response: bytes | None, offset: int) -> Handoff:
    try:
        (capability, method, target, headers, correlation_id, template, serving, primary_upstream, mirror_upstream,
         has_body, ok, status, response_headers, latency_ms) = orjson.loads(header)
        return Handoff(str(capability), str(method), str(target), [(str(k), str(v)) for k, v in headers],
                       str(correlation_id), str(template), str(serving), str(primary_upstream), str(mirror_upstream),
                       bool(has_body), request, bool(ok), int(status),
                       {str(k): str(v) for k, v in response_headers.items()},
                       None if latency_ms is None else float(latency_ms), response)
    except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError) as exc:
        raise HandoffError(f"frame at byte {offset}: unreadable header ({exc})") from exc


class HandoffChannel:
    """The worker's end of the socket: connects (and reconnects) in the background, writes without waiting."""

    def __init__(self, path: str, *, max_buffer: int = 16 * 1024 * 1024, retry: float = 0.2) -> None:
        self.path = path
        self.max_buffer = max_buffer
        self.retry = retry
        self._transport: asyncio.WriteTransport | None = None
        self._paused = False
        self._lost: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._transport is not None

    def send(self, parts: Sequence[bytes]) -> bool:
        """Write one frame; False (nothing written) when not connected or the buffer is over `max_buffer`."""
        transport = self._transport
        if transport is None or self._paused or transport.is_closing():
            return False
        transport.writelines(parts)
        return True

    async def start(self) -> None:
        self._task = asyncio.create_task(self._keep_connected())

    async def _keep_connected(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            lost = self._lost = asyncio.Event()
            try:
                transport, _ = await loop.create_unix_connection(lambda: _ChannelProtocol(self), self.path)
            except OSError:  # the shadow process is starting, or restarting
                await asyncio.sleep(self.retry)
                continue
            transport.set_write_buffer_limits(high=self.max_buffer)
            self._transport = transport
            await lost.wait()

    def _connection_lost(self) -> None:
        if self._transport is not None:
            log.warning("the shadow process closed its socket; mirrors are dropped until it is back")
        self._transport = None
        self._paused = False
        if self._lost is not None:
            self._lost.set()

    async def drain(self, timeout: float) -> None:
        """Wait (up to `timeout`) until what was written has reached the socket."""
        deadline = time.monotonic() + timeout
        while (transport := self._transport) is not None and transport.get_write_buffer_size() > 0:
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._transport is not None:
            self._transport.close()
            self._transport = None


class _ChannelProtocol(asyncio.Protocol):
    def __init__(self, channel: HandoffChannel) -> None:
        self.channel = channel

    def pause_writing(self) -> None:
        self.channel._paused = True

    def resume_writing(self) -> None:
        self.channel._paused = False

    def data_received(self, data: bytes) -> None:
        pass  # the shadow process does not answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.channel._connection_lost()


class ShadowHandoff:
    """In a worker, in `Shadow`'s place: the same `begin` and `drain`; offloaded capabilities' jobs are handed
    to the shadow process.

    `local` is the worker's `Shadow`: it runs the other capabilities' mirrors as before, and its
    configuration, metrics and record sink serve the decisions made here (sampled out, unsafe write, too
    large, dropped)."""

    def __init__(self, local: Shadow, channel: HandoffChannel) -> None:
        self.local = local
        self.channel = channel
        self.metrics = local.metrics
        self.compared_headers = local.compared_headers

    def begin(self, route: Route, method: str, request: UpstreamRequest, correlation_id: str,
              content_length: int | None, has_body: bool) -> HandoffJob | ShadowJob | None:
        capability = route.capability
        if capability is None or route.decision.mirror is None:
            return None
        cap = self.local.capabilities[capability]
        if not cap.shadow.offload:
            return self.local.begin(route, method, request, correlation_id, content_length, has_body)
        if not self.local.wanted(cap, route, method, correlation_id, content_length):
            return None
        return HandoffJob(self, capability, cap, route, method, request, correlation_id, has_body)

    def hand(self, job: HandoffJob, ok: bool) -> None:
        decision = job.route.decision
        body = job.response_body
        handoff = Handoff(job.capability, job.method, job.request.target, list(job.request.headers),
                          job.correlation_id, route_text(job.route), decision.target, decision.primary,
                          decision.mirror or "", job.has_body,
                          bytes(job.request_body) if job.request_body is not None else None, ok, job.status,
                          job.headers, job.latency_ms, bytes(body) if body is not None else None)
        if not self.channel.send(encode(handoff)):
            self.metrics.dropped(job.capability)
            self.local.record_failure(job.route, job.method, job.correlation_id, "dropped")

    async def drain(self, timeout: float) -> None:
        await self.local.drain(timeout)
        await self.channel.drain(timeout)


class HandoffJob(PrimaryCapture):
    """The worker's part of one mirrored request: what `ShadowJob` captures, handed over when complete."""

    __slots__ = ("handoff", "has_body", "done")

    def __init__(self, handoff: ShadowHandoff, capability: str, cap: CapabilityConfig, route: Route, method: str,
                 request: UpstreamRequest, correlation_id: str, has_body: bool) -> None:
        super().__init__(handoff.metrics, handoff.compared_headers[capability], capability, cap, route, method,
                         request, correlation_id, has_body)
        self.handoff = handoff
        self.has_body = has_body
        self.done = False

    def finish(self, ok: bool) -> None:
        """The primary response is complete (`ok`) or failed: hand the request over (a write whose primary
        failed is not mirrored, as in `ShadowJob`)."""
        if self.done:
            return
        self.done = True
        if ok or not self.has_body:
            self.handoff.hand(self, ok)

