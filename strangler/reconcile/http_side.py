"""An HTTP read API as a side of a reconciliation job: one GET per key, bounded and rate-limited.

The SQL side enumerates the keys; for each, the URL template is filled in, the JSON body read and each
field taken by its JSON Pointer, then normalised in Python (normalise.canonical) the way the SQL side
normalises inside its database. 404 and 410 mean the service lacks the entity. An HTTP side cannot list
its own keys, so entities only it holds are not found.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from strangler.reconcile.config import HttpSide
from strangler.reconcile.drift import Key
from strangler.reconcile.normalise import FieldKind, NotComparable, canonical, zone_named
from strangler.shadow.compare import split_pointer

_ABSENT = (404, 410)
_MISSING = object()


@dataclass(frozen=True, slots=True)
class HttpRead:
    key: Key
    values: tuple[str | None, ...] | None  # None: the service does not hold the entity
    error: str | None = None


class RateLimiter:
    """At most `rate` acquisitions per second, spaced evenly (no bursts that could hurt the service)."""

    def __init__(self, rate: float, clock: Any = time.monotonic) -> None:
        self.interval = 1.0 / rate
        self.clock = clock
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            now = self.clock()
            wait = self._next - now
            self._next = max(now, self._next) + self.interval
        if wait > 0:
            await asyncio.sleep(wait)


def pointer_value(document: Any, pointer: str) -> Any:
    """The value at a JSON Pointer; `_MISSING` when the path does not exist."""
    current = document
    for token in split_pointer(pointer):
        if isinstance(current, dict) and token in current:
            current = current[token]
        elif isinstance(current, list) and token.isdigit() and int(token) < len(current):
            current = current[int(token)]
        else:
            return _MISSING
    return current


class HttpStateSide:
    def __init__(self, config: HttpSide, pointers: Sequence[str], kinds: Sequence[FieldKind],
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.pointers = list(pointers)
        self.kinds = list(kinds)
        self.zone = zone_named(config.timezone)
        self.transport = transport
        self.requests = 0
        self._semaphore = asyncio.Semaphore(config.concurrency)
        self._limiter = RateLimiter(config.rate)

    def url_for(self, key: Key) -> str:
        values = {name: urllib.parse.quote(str(part), safe="") for name, part in zip(self.config.key, key, strict=True)}
        return self.config.http.format_map(values)

    def client(self) -> httpx.AsyncClient:
        """The client for one job's chunk (use as `async with`; it is bound to the running event loop)."""
        limits = httpx.Limits(max_connections=self.config.concurrency)
        self._semaphore = asyncio.Semaphore(self.config.concurrency)
        self._limiter = RateLimiter(self.config.rate)
        return httpx.AsyncClient(timeout=self.config.timeout, limits=limits, headers=self.config.headers,
                                 transport=self.transport)

    async def read_many(self, client: httpx.AsyncClient, keys: Sequence[Key]) -> list[HttpRead]:
        """Reads every key, at most `concurrency` at once and `rate` per second; order is kept."""

        async def one(key: Key) -> HttpRead:
            async with self._semaphore:
                return await self._read(client, self._limiter, key)

        return list(await asyncio.gather(*(one(k) for k in keys)))

    async def _read(self, client: httpx.AsyncClient, limiter: RateLimiter, key: Key) -> HttpRead:
        url = self.url_for(key)
        problem = ""
        for attempt in range(self.config.retries + 1):
            if attempt:
                await asyncio.sleep(min(2.0, 0.2 * 2 ** (attempt - 1)))
            await limiter.acquire()
            self.requests += 1
            try:
                response = await client.get(url)
            except httpx.HTTPError as exc:
                problem = f"{exc.__class__.__name__}: {exc}"
                continue
            if response.status_code in _ABSENT:
                return HttpRead(key, None)
            if response.status_code >= 500:
                problem = f"HTTP {response.status_code}"
                continue
            if response.status_code != 200:
                return HttpRead(key, None, f"HTTP {response.status_code} from {url}")
            try:
                document = orjson.loads(response.content)
            except orjson.JSONDecodeError:
                return HttpRead(key, None, f"the body from {url} is not JSON")
            return HttpRead(key, self.values_of(document))
        return HttpRead(key, None, f"{problem} from {url} after {self.config.retries + 1} attempts")

    def values_of(self, document: Any) -> tuple[str | None, ...]:
        out: list[str | None] = []
        for pointer, kind in zip(self.pointers, self.kinds, strict=True):
            value = pointer_value(document, pointer)
            if value is _MISSING:
                out.append(None)
                continue
            try:
                out.append(canonical(kind, value, self.zone))
            except NotComparable:
                out.append(f"<not a {kind.type}: {orjson.dumps(value).decode()}>")
        return tuple(out)
