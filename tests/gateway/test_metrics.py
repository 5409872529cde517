"""The per-request metrics are summed in the process and written in batches: what they show after a flush
is what writing every sample at once would have shown."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Histogram

from strangler.gateway.metrics import LATENCY_BUCKETS, ProxyMetrics

LATENCIES = [0.0001, 0.0005, 0.0007, 0.003, 0.003, 0.2, 7.0, 45.0, 0.0005000001]


def samples(registry: CollectorRegistry, prefix: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in registry.collect() for s in metric.samples
        if s.name.startswith(prefix) and not s.name.endswith("_created")
    }


def test_a_flush_writes_what_one_sample_at_a_time_would_have() -> None:
    registry = CollectorRegistry()
    metrics = ProxyMetrics(registry)
    reference = CollectorRegistry()
    histogram = Histogram("strangler_upstream_latency_seconds", "", ["upstream"], buckets=LATENCY_BUCKETS,
                          registry=reference)
    requests = Counter("strangler_requests", "", ["capability", "target", "status_class"], registry=reference)
    for i, seconds in enumerate(LATENCIES):
        metrics.request_started()
        metrics.observe_latency("legacy" if i % 3 else "svc", seconds)
        histogram.labels("legacy" if i % 3 else "svc").observe(seconds)
        status = (200, 404, 502)[i % 3]
        metrics.request_finished("orders", "legacy", status)
        requests.labels("orders", "legacy", f"{status // 100}xx").inc()
    metrics.request_started()
    metrics.request_finished("orders", "legacy", 0)  # the client went away: nothing answered, nothing counted
    metrics.request_started()  # one still in flight
    metrics.flush()
    for prefix in ("strangler_upstream_latency_seconds", "strangler_requests"):
        assert samples(registry, prefix) == samples(reference, prefix), prefix
    assert registry.get_sample_value("strangler_in_flight_requests") == 1
    metrics.request_finished("orders", "legacy", 200)
    metrics.flush()
    assert registry.get_sample_value("strangler_in_flight_requests") == 0
    assert registry.get_sample_value(
        "strangler_requests_total", {"capability": "orders", "target": "legacy", "status_class": "2xx"}) == 4


async def test_counts_are_written_within_the_flush_interval() -> None:
    registry = CollectorRegistry()
    metrics = ProxyMetrics(registry, flush_interval=0.05)
    metrics.request_started()
    metrics.observe_latency("legacy", 0.01)
    metrics.request_finished("-", "legacy", 200)
    labels = {"capability": "-", "target": "legacy", "status_class": "2xx"}
    assert registry.get_sample_value("strangler_requests_total", labels) is None  # not yet written
    for _ in range(200):  # written by a timer, without another request or an explicit flush
        if registry.get_sample_value("strangler_requests_total", labels) is not None:
            break
        await asyncio.sleep(0.025)
    assert registry.get_sample_value("strangler_requests_total", labels) == 1
    assert registry.get_sample_value("strangler_upstream_latency_seconds_count", {"upstream": "legacy"}) == 1
