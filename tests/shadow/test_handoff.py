"""Handing mirrors from a worker to the shadow process: the frame, the worker's side, and both ends on a real
Unix socket (the shadow process's `Shadow` with fake upstreams, in the same event loop)."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from strangler.gateway.upstream import UpstreamRequest
from strangler.routing.config import CapabilityConfig
from strangler.routing.modes import Mode, RoutingFlag, decide
from strangler.routing.router import Route
from strangler.routing.routes import parse_route
from strangler.shadow.handoff import (
    PREFIX,
    Handoff,
    HandoffChannel,
    HandoffError,
    HandoffJob,
    ShadowHandoff,
    decode,
    encode,
)
from strangler.shadow.metrics import ShadowMetrics
from strangler.shadow.process import HandoffReceiver, ShadowService
from strangler.shadow.records import MASK, ComparisonRecord
from tests.shadow.fakes import FakeUpstream

JSON_HEADERS = [(b"content-type", b"application/json")]


def handoff(**changes: Any) -> Handoff:
    fields: dict[str, Any] = dict(
        capability="items", method="GET", target="/items/1?x=é", headers=[("accept", "*/*"), ("x-a", "1")],
        correlation_id="cid-1", template="* /items/{id}", serving="legacy", primary_upstream="legacy",
        mirror_upstream="new", has_body=False, request_body=None, ok=True, status=200,
        response_headers={"content-type": "application/json"}, latency_ms=1.25, response_body=b'{"a": 1}',
    )
    fields.update(changes)
    return Handoff(**fields)


@pytest.mark.parametrize(
    "changes",
    [{}, {"has_body": True, "request_body": b""}, {"has_body": True, "request_body": b"\x00body" * 100},
     {"response_body": None, "latency_ms": None}, {"ok": False, "status": 0, "response_headers": {}},
     {"template": "", "headers": []}],
)
def test_a_frame_carries_a_handoff_whole(changes: dict[str, Any]) -> None:
    buffer = bytearray(b"".join(encode(handoff(**changes))))
    assert list(decode(buffer)) == [handoff(**changes)]
    assert buffer == b""


def test_frames_split_anywhere_are_read_once_complete() -> None:
    frames = [handoff(correlation_id=f"cid-{i}", response_body=b"x" * i) for i in range(3)]
    stream = b"".join(b"".join(encode(f)) for f in frames)
    for cut in range(len(stream) + 1):
        buffer = bytearray(stream[:cut])
        got = list(decode(buffer))
        buffer += stream[cut:]
        got += decode(buffer)
        assert got == frames and buffer == b"", cut


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (PREFIX.pack(3, 0, 0) + b"[1]", "frame at byte 0: unreadable header"),
        (PREFIX.pack(4, 0, 0) + b"nope", "frame at byte 0: unreadable header"),
        (PREFIX.pack(1 << 24, 0, 0), "frame at byte 0: header of 16777216 bytes (at most 1048576)"),
    ],
)
def test_an_unreadable_frame_says_where_and_why(frame: bytes, message: str) -> None:
    with pytest.raises(HandoffError, match=message.replace("(", r"\(").replace(")", r"\)")):
        list(decode(bytearray(frame)))


class Gateway:
    """A worker's ShadowHandoff and the shadow process's Shadow (fake upstreams), joined by a Unix socket;
    `shadow` options for the capability (offloaded unless it says otherwise)."""

    def __init__(self, path: Path, compare: dict[str, Any] | None = None, **shadow: Any) -> None:
        from strangler.shadow.mirror import Shadow

        self.path = str(path)
        shadow = {"noise_sample": 0.0, "offload": True, **shadow}
        self.cap = CapabilityConfig.model_validate(
            {"legacy": "legacy", "new": "new", "routes": ["* /items/{id}"], "shadow": shadow, "compare": compare or {}})
        self.route = Route("items", parse_route("* /items/{id}"),
                           decide("legacy", "new", RoutingFlag(Mode.SHADOW), None), {"id": "1"})
        self.upstreams = {name: FakeUpstream(name) for name in ("legacy", "new")}
        self.worker_registry, self.process_registry = CollectorRegistry(), CollectorRegistry()
        self.worker_records: list[ComparisonRecord] = []  # what the worker decided (dropped, too large)
        self.process_records: list[ComparisonRecord] = []
        self.local = local = Shadow({"items": self.cap}, self.upstreams, self.worker_records.append,
                                    ShadowMetrics(self.worker_registry), rng=random.Random(1))
        self.channel = HandoffChannel(self.path, retry=0.01)
        self.worker = ShadowHandoff(local, self.channel)
        self.process = Shadow({"items": self.cap}, self.upstreams, self.process_records.append,
                              ShadowMetrics(self.process_registry), rng=random.Random(1), workers=2)
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        service = ShadowService(self.process)
        self.server = await asyncio.get_running_loop().create_unix_server(
            lambda: HandoffReceiver(service.accept), self.path)
        await self.channel.start()
        while not self.channel.connected:
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        await self.channel.stop()
        if self.server is not None:
            self.server.close()

    def metric(self, registry: CollectorRegistry, name: str, **labels: str) -> float:
        self.local.metrics.flush()  # counts are written every 0.1 s
        self.process.metrics.flush()
        return registry.get_sample_value(f"strangler_shadow_{name}_total", {"capability": "items", **labels}) or 0.0

    def request(self, method: str = "GET", body: bytes | None = None, *, ok: bool = True,
                primary: bytes = b'{"ok": true}', cid: str = "cid-1") -> HandoffJob | None:
        headers = [("x-correlation-id", cid), ("x-strangler-shadow", "forged")]
        request = UpstreamRequest(method, "/items/1", headers, None)
        job = self.worker.begin(self.route, method, request, cid, len(body) if body is not None else None,
                                body is not None)
        if job is not None:
            if body is not None and job.request_body is not None:
                job.capture_request(body)
            job.response_started(200, JSON_HEADERS)
            job.capture_response(primary)
            job.finish(ok)
        return job

    async def settled(self, count: int) -> list[ComparisonRecord]:
        for _ in range(500):
            if len(self.process_records) >= count and not self.process._tasks:
                break
            await asyncio.sleep(0.01)
        return self.process_records


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gateway = Gateway(tmp_path / "handoff.sock")
    await gateway.start()
    yield gateway
    await gateway.stop()


async def test_a_handed_request_is_mirrored_compared_and_recorded_in_the_shadow_process(gateway: Gateway) -> None:
    gateway.upstreams["new"].answer = lambda r: (200, {"content-type": "application/json"}, b'{"ok": false}')
    gateway.request(cid="cid-7")
    records = await gateway.settled(1)
    assert [(r.kind, r.outcome, r.correlation_id, r.route, r.serving) for r in records] == [
        ("candidate", "compared", "cid-7", "* /items/{id}", "legacy")]
    assert [(d.path, d.primary, d.other) for d in records[0].differences] == [("/ok", True, False)]
    sent = gateway.upstreams["new"].sent
    assert [(s.method, s.target, s.header("x-strangler-shadow"), s.header("x-correlation-id")) for s in sent] == [
        ("GET", "/items/1", "1", "cid-7")]
    assert gateway.metric(gateway.process_registry, "mirrored") == 1
    assert gateway.metric(gateway.process_registry, "compared") == 1
    assert gateway.worker_records == []


async def test_a_dry_run_write_is_handed_with_its_body(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path / "handoff.sock", writes="dry-run")
    await gateway.start()
    try:
        gateway.request("POST", b'{"name": "ada"}')
        gateway.request("POST", b'{"name": "bob"}', ok=False)  # its primary failed: not mirrored
        records = await gateway.settled(1)
        assert [r.outcome for r in records] == ["compared"]
        [sent] = gateway.upstreams["new"].sent
        assert (sent.method, sent.body, sent.header("x-strangler-shadow")) == ("POST", b'{"name": "ada"}', "dry-run")
    finally:
        await gateway.stop()


async def test_a_request_body_outgrowing_max_body_is_recorded_as_too_large(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path / "handoff.sock", writes="mirror", max_body=100)
    await gateway.start()
    try:
        job = gateway.worker.begin(gateway.route, "POST", UpstreamRequest("POST", "/items/1", [], None), "cid-2",
                                   None, True)  # chunked: the size shows only while it streams
        assert job is not None
        job.capture_request(b"x" * 60)
        job.capture_request(b"x" * 60)
        job.response_started(200, JSON_HEADERS)
        job.finish(True)
        records = await gateway.settled(1)
        assert [(r.outcome, r.correlation_id) for r in records] == [("too_large", "cid-2")]
        assert gateway.upstreams["new"].sent == []
        assert gateway.metric(gateway.worker_registry, "skipped", reason="too_large") == 1
    finally:
        await gateway.stop()


async def test_the_in_flight_cap_is_per_worker_and_applies_in_the_shadow_process(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path / "handoff.sock", max_in_flight=2)  # two workers: four in flight at most
    gateway.upstreams["new"].gate = asyncio.Event()
    await gateway.start()
    try:
        for i in range(6):
            gateway.request(cid=f"cid-{i}")
        for _ in range(500):
            if len(gateway.upstreams["new"].sent) == 4 and len(gateway.process_records) == 2:
                break
            await asyncio.sleep(0.01)
        assert [(r.outcome, r.correlation_id) for r in gateway.process_records] == [
            ("dropped", "cid-4"), ("dropped", "cid-5")]
        assert gateway.metric(gateway.process_registry, "dropped") == 2
        gateway.upstreams["new"].gate.set()
        records = await gateway.settled(6)
        assert sorted(r.outcome for r in records) == ["compared"] * 4 + ["dropped"] * 2
    finally:
        await gateway.stop()


async def test_without_the_shadow_process_mirrors_are_dropped_and_counted_by_the_worker(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path / "handoff.sock")  # nobody listens
    await gateway.channel.start()
    try:
        for i in range(3):
            assert gateway.request(cid=f"cid-{i}") is not None
        assert [(r.outcome, r.correlation_id) for r in gateway.worker_records] == [
            ("dropped", "cid-0"), ("dropped", "cid-1"), ("dropped", "cid-2")]
        assert gateway.metric(gateway.worker_registry, "dropped") == 3
        await gateway.start()  # it comes (back): the worker connects and hands mirrors over again
        gateway.request(cid="cid-3")
        assert [r.correlation_id for r in await gateway.settled(1)] == ["cid-3"]
    finally:
        await gateway.stop()


async def test_a_shadow_process_that_does_not_read_makes_the_worker_drop_not_wait(tmp_path: Path) -> None:
    path = str(tmp_path / "stuck.sock")
    accepted: list[socket.socket] = []
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    gateway = Gateway(Path(path))
    gateway.channel.max_buffer = 64 * 1024
    await gateway.channel.start()
    try:
        while not gateway.channel.connected:
            await asyncio.sleep(0.005)
        accepted.append(listener.accept()[0])  # and never read from
        big = orjson.dumps({"pad": "x" * 20_000})
        for i in range(200):  # 4 MB: more than the socket and the buffer take
            gateway.request(cid=f"cid-{i}", primary=big)
        dropped = gateway.metric(gateway.worker_registry, "dropped")
        assert 0 < dropped < 200
        assert [r.outcome for r in gateway.worker_records] == ["dropped"] * int(dropped)
    finally:
        await gateway.channel.stop()
        for sock in accepted:
            sock.close()
        listener.close()


async def test_a_capability_that_does_not_offload_is_mirrored_by_the_worker_itself(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path / "handoff.sock", offload=False)
    await gateway.start()
    try:
        job = gateway.request(cid="cid-local")
        assert not isinstance(job, HandoffJob)
        await gateway.worker.drain(5.0)
        assert [(r.outcome, r.correlation_id) for r in gateway.worker_records] == [("compared", "cid-local")]
        assert gateway.process_records == []
        assert gateway.metric(gateway.worker_registry, "mirrored") == 1
    finally:
        await gateway.stop()


class FakeTransport:
    closed = False

    def close(self) -> None:
        self.closed = True


def test_a_request_that_cannot_be_mirrored_does_not_cost_the_others() -> None:
    accepted: list[str] = []

    def accept(h: Handoff) -> None:
        if h.correlation_id == "bad":
            raise ValueError("a bug")
        accepted.append(h.correlation_id)

    receiver = HandoffReceiver(accept)
    transport = FakeTransport()
    receiver.connection_made(transport)  # type: ignore[arg-type]
    stream = b"".join(b"".join(encode(handoff(correlation_id=c))) for c in ("bad", "good"))
    receiver.data_received(stream[:10])
    receiver.data_received(stream[10:])
    assert accepted == ["good"] and not transport.closed


def test_an_unreadable_frame_closes_the_connection() -> None:
    accepted: list[Handoff] = []
    receiver = HandoffReceiver(accepted.append)
    transport = FakeTransport()
    receiver.connection_made(transport)  # type: ignore[arg-type]
    receiver.data_received(b"".join(encode(handoff())) + PREFIX.pack(4, 0, 0) + b"nope")
    assert len(accepted) == 1 and transport.closed and receiver.buffer == b""


async def test_noise_and_redaction_apply_in_the_shadow_process(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path / "handoff.sock", compare={"redact": ["/secret"]}, noise_sample=1.0)
    gateway.upstreams["legacy"].answer = lambda r: (200, {"content-type": "application/json"},
                                                    b'{"ok": true, "secret": "s-2"}')
    gateway.upstreams["new"].answer = lambda r: (200, {"content-type": "application/json"},
                                                 b'{"ok": true, "secret": "s-3"}')
    await gateway.start()
    try:
        gateway.request(cid="cid-n", primary=b'{"ok": true, "secret": "s-1"}')
        records = await gateway.settled(2)
        assert sorted(r.kind for r in records) == ["candidate", "noise"]
        assert [s.header("x-strangler-shadow") for s in gateway.upstreams["legacy"].sent] == ["1"]  # noise call
        for r in records:
            assert [(d.path, d.primary, d.other) for d in r.differences] == [("/secret", MASK, MASK)]
    finally:
        await gateway.stop()
