"""When a failed upstream call may be tried again, and how many retries the upstream can be asked for.

A retry is safe only if the request cannot have reached the upstream twice in effect: a connection that
could not be made (nothing sent), or an idempotent method whose body was not consumed. A retry budget
(retries as a share of requests, as Envoy and Finagle do) stops retries from multiplying load when an
upstream fails everything.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from strangler.gateway.errors import ConnectFailed, UpstreamUnavailable

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
T = TypeVar("T")


class RetryBudget:
    """Token bucket: each request deposits `ratio` tokens, each retry takes one; `floor` per second extra."""

    def __init__(self, ratio: float, floor_per_second: float = 3.0, capacity: float = 50.0) -> None:
        self._ratio = ratio
        self._floor = floor_per_second
        self._capacity = capacity
        self._tokens = capacity if ratio > 0 else 0.0
        self._last = time.monotonic()

    def deposit(self) -> None:
        self._tokens = min(self._capacity, self._tokens + self._ratio)

    def withdraw(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._floor * (self._ratio > 0))
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def is_retryable(exc: BaseException, method: str, body_started: bool) -> bool:
    if body_started:
        return False
    if isinstance(exc, ConnectFailed):
        return True
    return isinstance(exc, UpstreamUnavailable) and method in IDEMPOTENT


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    first_error: BaseException,
    *,
    method: str,
    body_started: Callable[[], bool],
    attempts: int,
    budget: RetryBudget,
    on_retry: Callable[[], None] = lambda: None,
) -> T:
    """Retry `attempt` after `first_error` while it is safe and the budget allows; re-raise otherwise."""

    def allowed(exc: BaseException) -> bool:
        if not is_retryable(exc, method, body_started()) or not budget.withdraw():
            return False
        on_retry()
        return True

    if attempts < 1 or not allowed(first_error):
        raise first_error
    retrying = AsyncRetrying(
        retry=retry_if_exception(allowed),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(initial=0.01, max=0.2),
        reraise=True,
    )
    async for state in retrying:
        with state:
            return await attempt()
    raise first_error  # pragma: no cover - tenacity either returns or re-raises
