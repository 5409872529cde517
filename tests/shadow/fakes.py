"""Fakes of the shadow package's ports: an in-memory `DivergenceStore` and an `UpstreamClient`."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from strangler.gateway.upstream import UpstreamRequest, UpstreamResponse
from strangler.shadow.records import ComparisonRecord
from strangler.shadow.store import ComparisonRow


class FakeDivergenceStore:
    """Keeps batches in memory; `failures` is a list of exceptions raised by the next `record` calls."""

    def __init__(self, failures: Sequence[Exception] = ()) -> None:
        self.batches: list[list[ComparisonRecord]] = []
        self.calls = 0
        self.failures = list(failures)

    @property
    def records(self) -> list[ComparisonRecord]:
        return [r for batch in self.batches for r in batch]

    def record(self, records: Sequence[ComparisonRecord]) -> None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        self.batches.append(list(records))

    def comparisons(self, capability: str, since: dt.datetime, limit: int = 100_000) -> list[ComparisonRow]:
        rows = [
            ComparisonRow(r.at, r.capability, r.route, r.method, r.kind, r.outcome, r.serving, r.primary_status,
                          r.other_status, r.primary_latency_ms, r.other_latency_ms,
                          tuple(d.path for d in r.differences))
            for r in reversed(self.records)
            if r.capability == capability and r.at >= since
        ]
        return rows[:limit]

    def divergences(self, capability: str | None, limit: int = 100) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for r in reversed(self.records):
            if r.kind != "candidate" or (capability is not None and r.capability != capability):
                continue
            for d, c in zip(r.differences, r.classifications, strict=True):
                out.append({"at": r.at.isoformat(), "capability": r.capability, "route": r.route, "field": d.path,
                            "primary_value": d.primary, "other_value": d.other, "classification": c,
                            "correlation_id": r.correlation_id, "primary_status": r.primary_status,
                            "other_status": r.other_status})
        return out[:limit]

    def prune(self, older_than: dt.datetime, keep: int) -> int:
        before = len(self.records)
        kept = [r for r in self.records if r.at >= older_than][-keep:]
        self.batches = [kept]
        return before - len(kept)


@dataclass
class FakeResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    chunks: list[bytes]
    closed: bool = False

    async def body(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            await asyncio.sleep(0)
            yield chunk

    async def close(self) -> None:
        self.closed = True


@dataclass
class SentRequest:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes | None

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name]
        return values[0] if values else None


@dataclass
class FakeUpstream:
    """An `UpstreamClient` that records what it was sent and answers with `answer(request)`.

    `gate`, when set, holds every answer until it is set; `error` is raised instead of answering.
    """

    name: str
    answer: Callable[[SentRequest], tuple[int, dict[str, str], bytes]] = field(
        default=lambda r: (200, {"content-type": "application/json"}, b'{"ok": true}')
    )
    gate: asyncio.Event | None = None
    error: Exception | None = None
    delay: float = 0.0
    sent: list[SentRequest] = field(default_factory=list)

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        body = request.body
        if body is not None and not isinstance(body, bytes):
            body = b"".join([chunk async for chunk in body])
        sent = SentRequest(request.method, request.target, list(request.headers), body)
        self.sent.append(sent)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        status, headers, payload = self.answer(sent)
        raw = [(k.encode(), v.encode()) for k, v in headers.items()]
        return FakeResponse(status, raw, [payload[i : i + 100] for i in range(0, len(payload), 100)] or [b""])

    async def aclose(self) -> None:
        return None
