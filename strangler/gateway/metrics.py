"""The gateway's Prometheus metrics, registered on a registry the caller owns (no global state).

Under `strangler serve` every worker writes its samples to the shared multiprocess directory and the
admin listener aggregates them (prometheus-client's multiprocess mode). Each sample written there is an
mmap write under a lock, several microseconds: the per-request ones (requests, upstream latency, in
flight) are summed in the process and written at most every `flush_interval` (0.1 s), so /metrics may lag
by that much. The rare ones (retries, refusals, the breaker's) are written at once.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class BatchedMetrics:
    """Counts summed in the process and written by `_write` at most every `flush_interval` seconds: a
    subclass counts, then calls `_schedule` when no write is pending (`self._flush is None`)."""

    flush_interval: float
    _flush: asyncio.TimerHandle | None

    def flush(self) -> None:
        """Write what was counted since the last flush to the metric values."""
        if self._flush is not None:
            self._flush.cancel()  # a no-op when the timer is what called
            self._flush = None
        self._write()

    def _write(self) -> None:
        raise NotImplementedError

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not in an event loop (a synchronous caller): write at once
            self.flush()
            return
        self._flush = loop.call_later(self.flush_interval, self.flush)


class ProxyMetrics(BatchedMetrics):
    def __init__(self, registry: CollectorRegistry, flush_interval: float = 0.1) -> None:
        self.requests = Counter(
            "strangler_requests",
            "Proxied requests by capability, serving side and status class",
            ["capability", "target", "status_class"],
            registry=registry,
        )
        self.upstream_latency = Histogram(
            "strangler_upstream_latency_seconds",
            "Time from sending a request upstream to its response headers",
            ["upstream"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "strangler_in_flight_requests",
            "Requests being proxied now",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.retries = Counter(
            "strangler_upstream_retries", "Upstream calls tried again", ["upstream"], registry=registry
        )
        self.rejected = Counter(
            "strangler_rejected_requests",
            "Requests answered by the gateway itself (bad path, headers, size, no upstream)",
            ["reason"],
            registry=registry,
        )
        self.circuit_opened = Counter(
            "strangler_upstream_circuit_opened",
            "Times an upstream's circuit breaker opened",
            ["upstream"],
            registry=registry,
        )
        self.circuit_refused = Counter(
            "strangler_upstream_circuit_refused",
            "Requests answered 503 without calling the upstream, its circuit breaker being open",
            ["upstream"],
            registry=registry,
        )
        self.broken_responses = Counter(
            "strangler_upstream_broken_responses",
            "Responses the upstream broke off after its status line; the client's connection was closed",
            ["upstream"],
            registry=registry,
        )
        self.flush_interval = flush_interval
        self._bounds = (*LATENCY_BUCKETS, float("inf"))
        self._in_flight = 0
        self._in_flight_written = 0
        self._requests: dict[tuple[str, str, int], int] = {}  # (capability, target, status // 100) -> count
        self._latency: dict[str, list[float]] = {}  # upstream -> a count per bucket, then the sum
        self._flush: asyncio.TimerHandle | None = None

    def request_started(self) -> None:
        self._in_flight += 1
        if self._flush is None:
            self._schedule()

    def request_finished(self, capability: str, target: str, status: int) -> None:
        """One request done; `status` 0 when nothing was answered (the client went away)."""
        self._in_flight -= 1
        if status:
            key = (capability, target, status // 100)
            self._requests[key] = self._requests.get(key, 0) + 1
        if self._flush is None:
            self._schedule()

    def observe_latency(self, upstream: str, seconds: float) -> None:
        counts = self._latency.get(upstream)
        if counts is None:
            counts = self._latency[upstream] = [0.0] * (len(self._bounds) + 1)
        counts[bisect_left(self._bounds, seconds)] += 1  # the first bucket whose bound is >= seconds
        counts[-1] += seconds
        if self._flush is None:
            self._schedule()

    def _write(self) -> None:
        if self._in_flight != self._in_flight_written:
            self.in_flight.set(self._in_flight)
            self._in_flight_written = self._in_flight
        requests, self._requests = self._requests, {}
        for (capability, target, status_class), count in requests.items():
            self.requests.labels(capability, target, f"{status_class}xx").inc(count)
        latency, self._latency = self._latency, {}
        for upstream, counts in latency.items():
            child = self.upstream_latency.labels(upstream)
            # Histogram.observe adds 1 to the first bucket whose bound is >= the value, and the value to the
            # sum; this adds many at once, to the same values (the buckets are cumulated when collected).
            for value, added in zip(child._buckets, counts, strict=False):
                if added:
                    value.inc(added)
            child._sum.inc(counts[-1])
