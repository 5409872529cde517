"""A circuit breaker per upstream: stop sending to an upstream that keeps failing, and try it again later.

Closed, it counts consecutive failed calls (nothing to connect to, a broken connection, no answer in time;
an HTTP answer of any status is a success). At `failures` in a row it opens: for `interval` seconds every
request for that upstream is refused at once (503) without touching it. Then it half-opens: one request
goes through as a probe, the others are still refused; the probe's success closes the breaker, its failure
opens it for another interval. Each proxy worker has its own breakers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    def __init__(self, failures: int, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.interval = interval
        self._clock = clock
        self.state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._probing = False

    def allow(self) -> bool:
        """May a call be made now? In the half-open state only the first caller (the probe) may."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if self._clock() - self._opened_at < self.interval:
                return False
            self.state = BreakerState.HALF_OPEN
            self._probing = False
        if self._probing:
            return False
        self._probing = True
        return True

    def is_open(self) -> bool:
        """Open and within its interval: calls are refused. Unlike `allow`, never starts a probe."""
        return self.state is BreakerState.OPEN and self._clock() - self._opened_at < self.interval

    def succeeded(self) -> None:
        self._consecutive = 0
        self._probing = False
        self.state = BreakerState.CLOSED

    def failed(self) -> bool:
        """Count a failed call; True when this failure opened the breaker."""
        self._consecutive += 1
        if self.state is BreakerState.HALF_OPEN or self._consecutive >= self.failures:
            opened = self.state is not BreakerState.OPEN
            self.state = BreakerState.OPEN
            self._opened_at = self._clock()
            self._probing = False
            return opened
        return False

    def abandoned(self) -> None:
        """A call ended without telling anything about the upstream (the client went away): if it was the
        probe, the next request probes instead."""
        self._probing = False

    def retry_after(self) -> float:
        """Seconds until the breaker half-opens (0 unless open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self.interval - (self._clock() - self._opened_at))
