"""The gateway's Prometheus metrics, registered on a registry the caller owns (no global state).

Under `strangler serve` every worker writes its samples to the shared multiprocess directory and the
admin listener aggregates them (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ProxyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
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
        self._request_children: dict[tuple[str, str, str], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}

    def count_request(self, capability: str, target: str, status: int) -> None:
        key = (capability, target, f"{status // 100}xx")
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(*key)
        child.inc()

    def observe_latency(self, upstream: str, seconds: float) -> None:
        child = self._latency_children.get(upstream)
        if child is None:
            child = self._latency_children[upstream] = self.upstream_latency.labels(upstream)
        child.observe(seconds)
