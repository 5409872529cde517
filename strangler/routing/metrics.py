"""Gauges that tell whether a process's flags are fresh."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge


class FlagMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.store_up = Gauge(
            "strangler_flag_store_up",
            "1 when the flag store answered the last refresh (0 in any process that could not reach it)",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.flags_age = Gauge(
            "strangler_flags_age_seconds",
            "Seconds since the flags were last confirmed against the store (-1: never)",
            registry=registry,
            multiprocess_mode="livemax",
        )
