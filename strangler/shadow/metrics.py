"""Shadow metrics: mirrored, dropped, skipped, failed, compared and divergent counts per capability, and
divergence by field with bounded cardinality (the first `max_fields` distinct fields, then "other").

As the proxy's (`strangler/gateway/metrics.py`), the counts are summed in the process and written to the
metric values at most every `flush_interval` (0.1 s): under `strangler serve` each written sample is an mmap
write under a lock, and a mirrored request counted three of them. /metrics may lag by that much; `stop`
(the process's lifecycle) writes what is left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from strangler.gateway.metrics import BatchedMetrics


class ShadowMetrics(BatchedMetrics):
    def __init__(self, registry: CollectorRegistry, max_fields: int = 50, flush_interval: float = 0.1) -> None:
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
        self.flush_interval = flush_interval
        self._max_fields = max_fields
        self._seen_fields: dict[str, set[str]] = {}
        self._children: dict[tuple[Any, ...], Any] = {}  # labelled once: `labels()` takes a lock each time
        self._pending: dict[tuple[Any, ...], int] = {}  # (counter, *labels) -> count not written yet
        self._flush: asyncio.TimerHandle | None = None

    def mirrored(self, capability: str) -> None:
        self._count((self._mirrored, capability))

    def dropped(self, capability: str) -> None:
        self._count((self._dropped, capability))

    def skipped(self, capability: str, reason: str) -> None:
        self._count((self._skipped, capability, reason))

    def failed(self, capability: str, reason: str) -> None:
        self._count((self._failed, capability, reason))

    def records_dropped(self, count: int) -> None:
        self._unstored.inc(count)  # rare: written at once

    def compared(self, capability: str, fields: Iterable[str]) -> None:
        pending = self._pending
        key: tuple[Any, ...] = (self._compared, capability)
        pending[key] = pending.get(key, 0) + 1
        fields = list(fields)
        if fields:
            key = (self._divergent, capability)
            pending[key] = pending.get(key, 0) + 1
            seen = self._seen_fields.setdefault(capability, set())
            for name in fields:
                if name not in seen and len(seen) < self._max_fields:
                    seen.add(name)
                key = (self._fields, capability, name if name in seen else "other")
                pending[key] = pending.get(key, 0) + 1
        if self._flush is None:
            self._schedule()

    def _write(self) -> None:
        pending, self._pending = self._pending, {}
        children = self._children
        for key, count in pending.items():
            child = children.get(key)
            if child is None:
                child = children[key] = key[0].labels(*key[1:])
            child.inc(count)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.flush()

    def _count(self, key: tuple[Any, ...]) -> None:
        pending = self._pending
        pending[key] = pending.get(key, 0) + 1
        if self._flush is None:
            self._schedule()
