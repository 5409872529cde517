"""Publishes the ledger's stage lags and stuck counts as gauges, recomputed every `interval` seconds."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge

from strangler.lifecycle import BackgroundTask
from strangler.maturity.config import MaturityConfig
from strangler.maturity.ledger import stage_lags
from strangler.maturity.store import LedgerStore
from strangler.store import StoreUnavailable

log = logging.getLogger("strangler.maturity")


class MaturityMonitor(BackgroundTask):
    def __init__(self, store: LedgerStore, config: MaturityConfig, clock: Callable[[], dt.datetime],
                 registry: CollectorRegistry, interval: float = 15.0) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.interval = interval
        self._lag = Gauge("strangler_maturity_stage_lag_seconds", "Seconds from accepted to each stage",
                          ["stage", "quantile"], registry=registry, multiprocess_mode="livemax")
        self._stuck = Gauge("strangler_maturity_stuck_changes", "Changes in a stage longer than stuck_after",
                            ["stage"], registry=registry, multiprocess_mode="livemax")

    async def update(self) -> None:
        now = self.clock()
        journeys = await asyncio.to_thread(self.store.recent, now - dt.timedelta(seconds=self.config.window))
        lags = stage_lags(journeys, now, dt.timedelta(seconds=self.config.stuck_after))
        for stage, figures in lags["lag_seconds"].items():
            for q in ("p50", "p99"):
                if figures[q] is not None:
                    self._lag.labels(stage, q).set(figures[q])
        for stage, count in lags["stuck"].items():
            self._stuck.labels(stage).set(count)

    async def _run(self) -> None:
        while True:
            try:
                await self.update()
            except StoreUnavailable as exc:
                log.warning("maturity figures not updated: %s", exc)
            await asyncio.sleep(self.interval)
