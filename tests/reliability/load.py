"""Open-loop load at a steady rate: request i is sent at start + i / rate whether or not earlier ones
have been answered, so that a stalled gateway shows as latency, not as fewer requests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp


@dataclass(slots=True)
class Outcome:
    sent: float  # time.monotonic() when sent
    elapsed: float  # seconds to the complete response, or to the error
    status: int | None  # None: no response (the error says why)
    error: str | None = None
    index: int = -1  # the request's number


async def steady_load(url_of: Callable[[int], str], rate: float, duration: float, timeout: float,
                      stop: asyncio.Event | None = None, headers_of: Callable[[int], dict[str, str]] | None = None,
                      new_connections: bool = False) -> list[Outcome]:
    """`new_connections`: one connection per request (no keep-alive), so that each error belongs to one request."""
    outcomes: list[Outcome] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=new_connections)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:

        async def one(i: int) -> None:
            sent = time.monotonic()
            headers = headers_of(i) if headers_of is not None else None
            try:
                async with session.get(url_of(i), headers=headers) as response:
                    await response.read()
                    outcomes.append(Outcome(sent, time.monotonic() - sent, response.status, index=i))
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcomes.append(Outcome(sent, time.monotonic() - sent, None, repr(exc), index=i))

        tasks = []
        start = time.monotonic()
        for i in range(int(rate * duration)):
            if stop is not None and stop.is_set():
                break
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return sorted(outcomes, key=lambda o: o.sent)
