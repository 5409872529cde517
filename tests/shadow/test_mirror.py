"""`Shadow` and `ShadowJob` driven as the proxy drives them, with fake upstream clients (no sockets)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from strangler.gateway.errors import ConnectFailed, UpstreamTimeout
from strangler.gateway.upstream import UpstreamRequest
from strangler.routing.config import CapabilityConfig
from strangler.routing.modes import Mode, RoutingFlag, decide
from strangler.routing.router import Route
from strangler.routing.routes import parse_route
from strangler.shadow.compare import MISSING
from strangler.shadow.metrics import ShadowMetrics
from strangler.shadow.mirror import Shadow, ShadowJob
from strangler.shadow.records import MASK, ComparisonRecord
from tests.shadow.fakes import FakeUpstream

JSON_HEADERS = [(b"content-type", b"application/json")]


def json_answer(doc: Any, status: int = 200, **headers: str) -> Any:
    return lambda request: (status, {"content-type": "application/json", **headers}, orjson.dumps(doc))


class Harness:
    """One capability "items" (legacy + new [+ legacy-2]), its Shadow, and what reached the sink and metrics."""

    def __init__(self, mode: Mode = Mode.SHADOW, seed: int = 1, **options: Any) -> None:
        shadow = {"noise_sample": 0.0, **options.pop("shadow", {})}
        self.cap = CapabilityConfig.model_validate(
            {"legacy": "legacy", "new": "new", "routes": ["* /items/{id}"], "shadow": shadow, **options}
        )
        self.decision = decide(self.cap.legacy, self.cap.new, RoutingFlag(mode), None)
        self.route = Route("items", parse_route("* /items/{id}"), self.decision, {"id": "1"})
        self.upstreams = {name: FakeUpstream(name) for name in ("legacy", "new", "legacy-2")}
        self.registry = CollectorRegistry()
        self.records: list[ComparisonRecord] = []
        self.shadow = Shadow({"items": self.cap}, self.upstreams, self.records.append, ShadowMetrics(self.registry),
                             rng=random.Random(seed))

    @property
    def legacy(self) -> FakeUpstream:
        return self.upstreams["legacy"]

    @property
    def new(self) -> FakeUpstream:
        return self.upstreams["new"]

    def metric(self, name: str, **labels: str) -> float:
        self.shadow.metrics.flush()  # counts are written every 0.1 s
        value = self.registry.get_sample_value(f"strangler_shadow_{name}_total", {"capability": "items", **labels})
        return value or 0.0

    def begin(self, method: str = "GET", body: bytes | None = None, *, cid: str = "cid-1",
              content_length: int | None = -1) -> ShadowJob | None:
        headers = [("accept", "application/json"), ("x-correlation-id", cid)]
        length = (len(body) if body is not None else None) if content_length == -1 else content_length
        if length is not None:
            headers.append(("content-length", str(length)))
        request = UpstreamRequest(method, "/items/1?view=full", headers, None)
        return self.shadow.begin(self.route, method, request, cid, length, body is not None)

    async def request(self, method: str = "GET", body: bytes | None = None, *, primary: Any = None,
                      status: int = 200, headers: list[tuple[bytes, bytes]] = JSON_HEADERS, ok: bool = True,
                      cid: str = "cid-1", content_length: int | None = -1, drain: bool = True) -> ShadowJob | None:
        """One proxied request: the primary answered `primary` (a JSON document or bytes)."""
        job = self.begin(method, body, cid=cid, content_length=content_length)
        if job is not None:
            if body is not None and job.request_body is not None:
                for i in range(0, len(body), 1000):  # as the proxy's body tap sees it
                    job.capture_request(body[i : i + 1000])
            job.response_started(status, headers)
            payload = primary if isinstance(primary, bytes) else orjson.dumps(primary if primary is not None
                                                                             else {"ok": True})
            for i in range(0, len(payload), 1000):
                job.capture_response(payload[i : i + 1000])
            job.finish(ok)
        if drain:
            await self.shadow.drain(5.0)
        return job


def candidates(h: Harness) -> list[ComparisonRecord]:
    return [r for r in h.records if r.kind == "candidate"]


async def test_a_get_is_mirrored_with_the_shadow_header_and_the_same_correlation_id() -> None:
    h = Harness()
    await h.request(cid="abc-123")
    [sent] = h.new.sent
    assert (sent.method, sent.target) == ("GET", "/items/1?view=full")
    assert sent.header("x-strangler-shadow") == "1"
    assert sent.header("x-correlation-id") == "abc-123"
    assert sent.header("accept") == "application/json"
    assert h.legacy.sent == []  # the primary is the proxy's business, not the shadow's
    [record] = h.records
    assert (record.kind, record.outcome, record.correlation_id, record.route) == (
        "candidate", "compared", "abc-123", "* /items/{id}")
    assert (record.serving, record.primary_status, record.other_status, record.differences) == (
        "legacy", 200, 200, ())
    assert record.primary_latency_ms is not None and record.other_latency_ms is not None
    assert (h.metric("mirrored"), h.metric("compared"), h.metric("divergent")) == (1, 1, 0)


async def test_a_shadow_header_sent_by_the_client_is_replaced() -> None:
    h = Harness(shadow={"writes": "dry-run"})
    job = h.begin("POST", b"{}")
    assert job is not None
    job.request.headers = [*job.request.headers, ("x-strangler-shadow", "1")]  # type: ignore[list-item]
    job.capture_request(b"{}")
    job.response_started(200, JSON_HEADERS)
    job.finish(True)
    await h.shadow.drain(5)
    assert [v for k, v in h.new.sent[0].headers if k.lower() == "x-strangler-shadow"] == ["dry-run"]


async def test_differences_are_recorded_classified_and_redacted() -> None:
    h = Harness(compare={"redact": ["/ssn"], "expected": ["/version"]})
    h.new.answer = json_answer({"name": "ADA", "ssn": "987", "version": 2, "extra": 1}, status=201)
    await h.request(primary={"name": "Ada", "ssn": "123", "version": 1})
    [record] = h.records
    assert [(d.path, d.primary, d.other) for d in record.differences] == [
        ("status", 200, 201), ("/name", "Ada", "ADA"), ("/ssn", MASK, MASK), ("/version", 1, 2),
        ("/extra", MISSING, 1),
    ]
    assert record.classifications == ("regression", "regression", "regression", "expected", "regression")
    assert (h.metric("compared"), h.metric("divergent")) == (1, 1)
    assert h.registry.get_sample_value("strangler_shadow_field_divergences_total",
                                       {"capability": "items", "field": "/ssn"}) == 1


@pytest.mark.parametrize(("sample", "low", "high"), [(0.0, 0, 0), (0.25, 30, 70), (1.0, 200, 200)])
async def test_sampling_mirrors_a_fraction(sample: float, low: int, high: int) -> None:
    h = Harness(shadow={"sample": sample, "max_in_flight": 1000})
    for i in range(200):
        await h.request(cid=f"c{i}", drain=False)
    await h.shadow.drain(5)
    assert low <= len(h.new.sent) <= high
    assert len(candidates(h)) == len(h.new.sent) == h.metric("mirrored")


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_unsafe_methods_are_not_mirrored_by_default(method: str) -> None:
    h = Harness()
    assert h.cap.shadow.writes == "skip"
    assert await h.request(method, b'{"x": 1}') is None
    assert h.new.sent == [] and h.records == []
    assert h.metric("skipped", reason="unsafe_method") == 1


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_dry_run_sends_unsafe_methods_with_the_dry_run_header_and_the_body(method: str) -> None:
    h = Harness(shadow={"writes": "dry-run", "noise_sample": 1.0})
    body = b'{"amount": 10}' * 300
    await h.request(method, body)
    [sent] = h.new.sent
    assert sent.header("x-strangler-shadow") == "dry-run"
    assert (sent.method, sent.body) == (method, body)
    assert h.legacy.sent == []  # a write is never sent twice to the serving side to measure noise
    assert [r.kind for r in h.records] == ["candidate"]


async def test_safe_methods_under_dry_run_carry_the_ordinary_header() -> None:
    h = Harness(shadow={"writes": "dry-run"})
    await h.request("GET")
    assert h.new.sent[0].header("x-strangler-shadow") == "1"


async def test_mirror_sends_unsafe_methods_as_they_are() -> None:
    h = Harness(shadow={"writes": "mirror"})
    await h.request("PUT", b"payload")
    [sent] = h.new.sent
    assert (sent.method, sent.body, sent.header("x-strangler-shadow")) == ("PUT", b"payload", "1")


async def test_a_write_whose_primary_failed_is_not_mirrored() -> None:
    h = Harness(shadow={"writes": "mirror", "max_in_flight": 1})
    await h.request("POST", b"x", ok=False)
    assert h.new.sent == [] and h.records == []
    assert await h.request("POST", b"y") is not None  # its in-flight slot was given back


async def test_a_failed_primary_is_recorded_for_a_get() -> None:
    h = Harness()
    await h.request(ok=False)
    assert [r.outcome for r in h.records] == ["primary_error"]


async def test_beyond_the_in_flight_cap_mirrors_are_dropped_and_counted() -> None:
    h = Harness(shadow={"max_in_flight": 2})
    h.new.gate = asyncio.Event()
    jobs = [await h.request(cid=f"c{i}", drain=False) for i in range(5)]
    assert [job is not None for job in jobs] == [True, True, False, False, False]
    assert h.metric("dropped") == 3
    assert [(r.outcome, r.correlation_id) for r in h.records] == [("dropped", "c2"), ("dropped", "c3"),
                                                                   ("dropped", "c4")]
    h.new.gate.set()
    await h.shadow.drain(5)
    assert [r.outcome for r in candidates(h)][-2:] == ["compared", "compared"]
    assert await h.request(cid="later") is not None  # slots are released


async def test_no_mirror_is_dropped_below_the_cap() -> None:
    h = Harness(shadow={"max_in_flight": 10})
    h.new.delay = 0.01
    for round_ in range(5):
        jobs = [await h.request(cid=f"{round_}-{i}", drain=False) for i in range(10)]
        assert all(job is not None for job in jobs)
        await h.shadow.drain(5)
    assert h.metric("dropped") == 0 and len(candidates(h)) == 50


async def test_a_request_body_above_max_body_is_not_mirrored_and_counted() -> None:
    h = Harness(shadow={"writes": "mirror", "max_body": 1000})
    assert await h.request("POST", b"x" * 1001) is None
    assert h.metric("skipped", reason="too_large") == 1
    assert [(r.outcome, r.other_status) for r in h.records] == [("too_large", None)]
    assert h.new.sent == []


async def test_a_chunked_request_body_growing_above_max_body_is_not_mirrored() -> None:
    h = Harness(shadow={"writes": "mirror", "max_body": 1500, "max_in_flight": 1})
    job = await h.request("POST", b"x" * 2500, content_length=None)  # no length known in advance
    assert job is not None and job.request_body is None
    assert h.new.sent == [] and [r.outcome for r in h.records] == ["too_large"]
    assert h.metric("skipped", reason="too_large") == 1
    assert await h.request("POST", b"small", content_length=None) is not None  # the slot was released
    assert len(h.new.sent) == 1


async def test_a_primary_response_above_max_body_is_not_compared() -> None:
    h = Harness(shadow={"max_body": 1000})
    await h.request(primary=b"x" * 1001)
    assert [r.outcome for r in h.records] == ["too_large"]
    assert h.metric("compared") == 0 and h.metric("skipped", reason="too_large") == 1


async def test_a_mirror_response_above_max_body_is_not_compared() -> None:
    h = Harness(shadow={"max_body": 1000})
    h.new.answer = lambda r: (200, {"content-type": "application/json"}, b'"' + b"x" * 2000 + b'"')
    await h.request()
    assert [r.outcome for r in h.records] == ["too_large"]
    assert h.metric("compared") == 0 and h.metric("skipped", reason="too_large") == 1


async def test_a_slow_mirror_times_out_and_is_counted() -> None:
    h = Harness(shadow={"timeout": 0.05})
    h.new.delay = 5
    loop = asyncio.get_running_loop()
    started = loop.time()
    await h.request()
    assert loop.time() - started < 1
    [record] = h.records
    assert (record.outcome, record.primary_status, record.other_status) == ("timeout", 200, None)
    assert h.metric("failed", reason="timeout") == 1


@pytest.mark.parametrize(("error", "reason"), [(ConnectFailed("refused"), "error"),
                                               (UpstreamTimeout("slow"), "timeout")])
async def test_a_failing_mirror_is_counted(error: Exception, reason: str) -> None:
    h = Harness()
    h.new.error = error
    await h.request()
    assert [r.outcome for r in h.records] == [reason]
    assert h.metric("failed", reason=reason) == 1 and h.metric("compared") == 0


async def test_noise_calls_go_to_the_serving_side() -> None:
    h = Harness(shadow={"noise_sample": 1.0})
    h.legacy.answer = json_answer({"ok": True, "at": 2})
    await h.request(primary={"ok": True, "at": 1})
    [noise_call] = h.legacy.sent
    assert noise_call.header("x-strangler-shadow") == "1"
    assert noise_call.header("x-correlation-id") == "cid-1"
    assert [(r.kind, [d.path for d in r.differences]) for r in h.records] == [("candidate", ["/at"]),
                                                                              ("noise", ["/at"])]
    assert h.metric("compared") == 1  # noise samples are not comparisons


async def test_noise_calls_go_to_the_secondary_when_one_is_configured() -> None:
    h = Harness(shadow={"noise_sample": 1.0, "secondary": "legacy-2"})
    await h.request()
    assert len(h.upstreams["legacy-2"].sent) == 1 and h.legacy.sent == []
    assert [r.kind for r in h.records] == ["candidate", "noise"]


async def test_in_reverse_shadow_noise_is_measured_on_new_not_on_the_legacy_secondary() -> None:
    h = Harness(mode=Mode.NEW, shadow={"noise_sample": 1.0, "secondary": "legacy-2"})
    await h.request()
    assert h.upstreams["legacy-2"].sent == []
    assert len(h.legacy.sent) == 1 and h.legacy.sent[0].header("x-strangler-shadow") == "1"  # the mirror
    assert len(h.new.sent) == 1  # the noise call: new serves
    assert {r.serving for r in h.records} == {"new"}


async def test_noise_is_sampled() -> None:
    h = Harness(shadow={"noise_sample": 0.3, "max_in_flight": 1000})
    for i in range(200):
        await h.request(cid=f"c{i}", drain=False)
    await h.shadow.drain(5)
    noise = [r for r in h.records if r.kind == "noise"]
    assert 35 <= len(noise) <= 85 and len(h.legacy.sent) == len(noise)


async def test_every_value_of_a_repeated_compared_header_counts() -> None:
    h = Harness(compare={"headers": ["content-type", "set-cookie"]})
    h.new.answer = lambda r: (200, {"content-type": "application/json", "set-cookie": "a=1"}, b'{"ok": true}')
    primary_headers = [*JSON_HEADERS, (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]
    await h.request(headers=primary_headers)
    [record] = h.records
    assert [(d.path, d.primary, d.other) for d in record.differences] == [("header:set-cookie", MASK, MASK)]


async def test_bodies_are_kept_redacted_only_with_store_bodies() -> None:
    for store_bodies in (False, True):
        h = Harness(shadow={"store_bodies": store_bodies}, compare={"redact": ["/ssn"]})
        h.new.answer = json_answer({"name": "Ada", "ssn": "987"})
        await h.request(primary={"name": "Ada", "ssn": "123", "x": 1})
        [record] = h.records
        expected = ({"name": "Ada", "ssn": MASK, "x": 1}, {"name": "Ada", "ssn": MASK}) if store_bodies else None
        assert record.bodies == expected


async def test_equal_answers_keep_no_bodies() -> None:
    h = Harness(shadow={"store_bodies": True})
    await h.request()
    assert h.records[0].bodies is None


async def test_the_mirror_goes_out_once_the_primary_response_is_complete() -> None:
    h = Harness()
    job = h.begin()
    assert job is not None
    job.response_started(200, JSON_HEADERS)
    job.capture_response(orjson.dumps({"ok": True}))
    for _ in range(10):  # every chance to run, had anything been started
        await asyncio.sleep(0)
    assert h.new.sent == []
    job.finish(True)
    await h.shadow.drain(5)
    assert len(h.new.sent) == 1
    assert [r.outcome for r in h.records] == ["compared"]
