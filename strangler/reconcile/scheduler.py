"""Reconciliation inside `strangler serve`: jobs with `every:` run on schedule in the admin process,
and the drift gauges are kept current (the oldest drift's age grows between runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Gauge

from strangler.reconcile.errors import ReconcileError
from strangler.reconcile.service import Reconciliation
from strangler.routing.modes import Mode
from strangler.store import StoreUnavailable

log = logging.getLogger("strangler.reconcile")


class DriftGauges:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.entities = Gauge("strangler_reconcile_drifted_entities", "Entities with open drift, per job",
                              ["job"], registry=registry, multiprocess_mode="livemax")
        self.oldest = Gauge("strangler_reconcile_oldest_drift_seconds", "Age of the oldest open drift, per job",
                            ["job"], registry=registry, multiprocess_mode="livemax")

    def update(self, jobs: list[str], summary: Mapping[str, Mapping[str, float]]) -> None:
        for job in jobs:
            figures = summary.get(job, {})
            self.entities.labels(job).set(figures.get("drifted_entities", 0))
            self.oldest.labels(job).set(figures.get("oldest_drift_seconds", 0.0))


class ReconcileScheduler:
    """A lifecycle part: `start()` launches one loop per scheduled job and the gauge refresher."""

    def __init__(self, service: Reconciliation, modes: Callable[[], Mapping[str, Mode]],
                 registry: CollectorRegistry, gauge_interval: float = 30.0) -> None:
        self.service = service
        self.modes = modes
        self.gauges = DriftGauges(registry)
        self.gauge_interval = gauge_interval
        self.stop_event = threading.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.stop_event.clear()
        for name, job in self.service.config.reconcile.jobs.items():
            if job.every is not None:
                self._tasks.append(asyncio.create_task(self._every(name, job.every)))
        self._tasks.append(asyncio.create_task(self._gauges()))

    async def stop(self) -> None:
        self.stop_event.set()  # a running job stops after its chunk and keeps its checkpoint
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def refresh_gauges(self) -> None:
        now = self.service.clock()
        summary = await asyncio.to_thread(self.service.store.summary, now)
        self.gauges.update(list(self.service.config.reconcile.jobs), summary)

    async def run_once(self, name: str) -> None:
        try:
            report = await asyncio.to_thread(self.service.run_job, name, self.modes(), stop=self.stop_event)
            log.info("reconciliation %s: %d compared, %d drifted, %d resolved", name, report.compared,
                     len(report.drifted), report.resolved)
            await self.refresh_gauges()
        except (ReconcileError, StoreUnavailable) as exc:
            log.warning("reconciliation %s failed: %s", name, exc)
        except Exception:  # a bug must not end the schedule of every later run
            log.exception("reconciliation %s failed", name)

    async def _every(self, name: str, seconds: float) -> None:
        while not self.stop_event.is_set():
            await self.run_once(name)
            await asyncio.sleep(seconds)

    async def _gauges(self) -> None:
        while True:
            try:
                await self.refresh_gauges()
            except StoreUnavailable as exc:
                log.warning("drift gauges not updated: %s", exc)
            await asyncio.sleep(self.gauge_interval)
