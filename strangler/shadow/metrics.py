"""Shadow metrics: mirrored, dropped, skipped, failed, compared and divergent counts per capability, and
divergence by field with bounded cardinality (the first `max_fields` distinct fields, then "other")."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter


class ShadowMetrics:
    def __init__(self, registry: CollectorRegistry, max_fields: int = 50) -> None:
        self._mirrored = Counter("strangler_shadow_mirrored", "Requests mirrored", ["capability"], registry=registry)
        self._dropped = Counter("strangler_shadow_dropped", "Mirrors dropped at the in-flight cap",
                                ["capability"], registry=registry)
        self._skipped = Counter("strangler_shadow_skipped", "Mirrors not sent or not compared (unsafe method, "
                                "body above max_body)", ["capability", "reason"], registry=registry)
        self._failed = Counter("strangler_shadow_failed", "Mirror calls that timed out or failed",
                               ["capability", "reason"], registry=registry)
        self._compared = Counter("strangler_shadow_compared", "Comparisons made", ["capability"], registry=registry)
        self._divergent = Counter("strangler_shadow_divergent", "Comparisons with at least one difference "
                                  "(before noise removal)", ["capability"], registry=registry)
        self._fields = Counter("strangler_shadow_field_divergences", "Differences by field",
                               ["capability", "field"], registry=registry)
        self._unstored = Counter("strangler_shadow_records_dropped", "Comparison records not stored (writer "
                                 "queue full, or the store failing past the retries)", registry=registry)
        self._max_fields = max_fields
        self._seen_fields: dict[str, set[str]] = {}
        self._children: dict[tuple[Any, ...], Any] = {}  # labelled once: `labels()` takes a lock each time

    def _child(self, counter: Counter, *labels: str) -> Any:
        child = self._children.get((counter, *labels))
        if child is None:
            child = self._children[(counter, *labels)] = counter.labels(*labels)
        return child

    def mirrored(self, capability: str) -> None:
        self._child(self._mirrored, capability).inc()

    def dropped(self, capability: str) -> None:
        self._child(self._dropped, capability).inc()

    def skipped(self, capability: str, reason: str) -> None:
        self._child(self._skipped, capability, reason).inc()

    def failed(self, capability: str, reason: str) -> None:
        self._child(self._failed, capability, reason).inc()

    def records_dropped(self, count: int) -> None:
        self._unstored.inc(count)

    def compared(self, capability: str, fields: Iterable[str]) -> None:
        self._child(self._compared, capability).inc()
        fields = list(fields)
        if fields:
            self._child(self._divergent, capability).inc()
        seen = self._seen_fields.setdefault(capability, set())
        for name in fields:
            if name not in seen and len(seen) < self._max_fields:
                seen.add(name)
            self._child(self._fields, capability, name if name in seen else "other").inc()
