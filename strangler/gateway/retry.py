"""When a failed upstream call may be tried again, and how many retries the upstream can be asked for.

A retry is safe only if the request cannot have reached the upstream twice in effect: a connection that
could not be made (nothing sent), or an idempotent method whose body was not consumed. A retry budget
(retries as a share of requests, as Envoy and Finagle do) stops retries from multiplying load when an
upstream fails everything.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState

from strangler.gateway.errors import ConnectFailed, UpstreamUnavailable

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
T = TypeVar("T")


class RetryBudget:
    """Token bucket: each request deposits `ratio` tokens, each retry takes one.

    Between two withdrawals the bucket gains the requests' deposits or `floor_per_second` for the time
    that passed, whichever is more (not both): a quiet upstream can still be retried, and under sustained
    failure at more than `floor_per_second / ratio` requests a second retries settle at `ratio` of requests.
    It starts full (`capacity` tokens), so a burst of failures right after start-up can still be retried.
    """

    def __init__(
        self,
        ratio: float,
        floor_per_second: float = 3.0,
        capacity: float = 50.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ratio = ratio
        self._floor = floor_per_second if ratio > 0 else 0.0
        self._capacity = capacity
        self._clock = clock
        self._tokens = capacity if ratio > 0 else 0.0
        self._deposited = 0.0  # since the last withdrawal
        self._last = clock()

    def deposit(self) -> None:
        self._deposited += self._ratio

    def withdraw(self) -> bool:
        now = self._clock()
        gained = max(self._deposited, max(0.0, now - self._last) * self._floor)
        self._tokens = min(self._capacity, self._tokens + gained)
        self._deposited = 0.0
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


def exponential_backoff(retry: int) -> float:
    """Seconds to wait before retry number `retry` (1, 2, ...): 10 ms doubling up to 200 ms, half of it jitter."""
    ceiling = min(0.2, 0.01 * 2.0 ** (retry - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    first_error: BaseException,
    *,
    method: str,
    body_started: Callable[[], bool],
    attempts: int,
    budget: RetryBudget,
    on_retry: Callable[[], None] = lambda: None,
    backoff: Callable[[int], float] = exponential_backoff,
) -> T:
    """Retry `attempt` after `first_error` while it is safe and the budget allows; re-raise the last error.

    `attempts` counts every call, the one that raised `first_error` included: `attempts=3` means at most
    two retries. A budget token is taken and `on_retry` called only for a retry that is then made.
    """

    def allowed(exc: BaseException) -> bool:
        if not is_retryable(exc, method, body_started()) or not budget.withdraw():
            return False
        on_retry()
        return True

    if attempts < 2 or not allowed(first_error):
        raise first_error

    def retry(state: RetryCallState) -> bool:
        # attempt_number counts the calls made here; the one that raised first_error came before them
        if state.outcome is None or not state.outcome.failed or state.attempt_number + 1 >= attempts:
            return False
        error = state.outcome.exception()
        return error is not None and allowed(error)

    await asyncio.sleep(backoff(1))
    retrying = AsyncRetrying(retry=retry, wait=lambda state: backoff(state.attempt_number + 1), reraise=True)
    async for state in retrying:
        with state:
            return await attempt()
    raise first_error  # pragma: no cover - tenacity either returns or re-raises
