"""The composition root: builds each process's objects from the configuration and wires the ports.

A proxy worker gets the proxy with its flag cache and refresher, the upstream clients shared with the
shadow mirror, and the batched divergence writer. The supervisor gets the admin API: the flag service
gated by shadow evidence, the reports, and the retention pass. Nothing else constructs adapters.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Engine

from strangler.config import StranglerConfig
from strangler.dashboard import CdcStatusSource, DashboardSources, cdc_status_for, dashboard_routes
from strangler.gateway.admin import build_admin_app
from strangler.gateway.breaker import CircuitBreaker
from strangler.gateway.client import Http1UpstreamClient
from strangler.gateway.proxy import ProxyApp
from strangler.gateway.upstream import UpstreamClient
from strangler.lifecycle import BackgroundTask
from strangler.maturity.admin_api import maturity_routes
from strangler.maturity.monitor import MaturityMonitor
from strangler.maturity.store import SqlLedgerStore
from strangler.openapi import openapi_route
from strangler.precedence.rules import PrecedenceRules, Side, response_classifier, serving_side
from strangler.reconcile.admin_api import drift_routes
from strangler.reconcile.report import drift_jobs
from strangler.reconcile.scheduler import ReconcileScheduler
from strangler.reconcile.service import Reconciliation
from strangler.routing.admin_api import flag_routes
from strangler.routing.metrics import FlagMetrics
from strangler.routing.modes import Mode
from strangler.routing.refresh import FlagCache, FlagRefresher
from strangler.routing.router import initial_flags
from strangler.routing.service import FlagService
from strangler.routing.store import SqlFlagStore
from strangler.shadow.admin_api import shadow_routes
from strangler.shadow.compare import PointerSet
from strangler.shadow.evidence import ShadowEvidence
from strangler.shadow.metrics import ShadowMetrics
from strangler.shadow.mirror import Shadow
from strangler.shadow.mirror_client import MirrorClients
from strangler.shadow.outcome_api import outcome_routes
from strangler.shadow.outcome_service import OutcomeService
from strangler.shadow.outcome_store import OutcomeStore
from strangler.shadow.outcomes import OutcomeJoiner
from strangler.shadow.store import SqlDivergenceStore
from strangler.shadow.writer import BatchWriter
from strangler.store import StoreUnavailable, create_store_engine, upgrade_schema

log = logging.getLogger("strangler.app")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def build_flags(
    config: StranglerConfig, engine: Engine, registry: CollectorRegistry
) -> tuple[SqlFlagStore, FlagCache, FlagRefresher]:
    initial = initial_flags(config.capabilities)
    store = SqlFlagStore(engine, initial, utcnow)
    cache = FlagCache(initial)
    refresher = FlagRefresher(
        store, cache, config.flags.refresh_interval, store_url=config.store, metrics=FlagMetrics(registry)
    )
    return store, cache, refresher


def build_proxy(config: StranglerConfig, registry: CollectorRegistry) -> ProxyApp:
    """A proxy worker: routes by the store's flags and mirrors to the side that does not serve."""
    engine = create_store_engine(config.store)
    _, cache, refresher = build_flags(config, engine, registry)
    clients: dict[str, UpstreamClient] = {
        name: Http1UpstreamClient(name, up) for name, up in config.upstreams.items()
    }
    shadow_metrics = ShadowMetrics(registry)
    writer = BatchWriter(SqlDivergenceStore(engine), on_drop=shadow_metrics.records_dropped)
    ledger = BatchWriter(SqlLedgerStore(engine))
    expected = {name: PointerSet(cap.compare.expected) for name, cap in config.capabilities.items()}
    classify = response_classifier(expected, PrecedenceRules(config.precedence))
    mirror_clients = MirrorClients(config.upstreams)  # pools of their own: a slow mirror holds no primary's
    breakers = {name: CircuitBreaker(up.circuit_breaker.failures, up.circuit_breaker.interval)
                for name, up in config.upstreams.items() if up.circuit_breaker.failures > 0}
    shadow = Shadow(config.capabilities, mirror_clients, writer.submit, shadow_metrics, classify=classify,
                    breakers=breakers)
    return ProxyApp(config, flags=cache, registry=registry, clients=clients,
                    lifecycle=[shadow_metrics, refresher, writer, ledger, mirror_clients], shadow=shadow,
                    ledger=ledger.submit)


class SchemaUpgrader:
    """Runs the store's migrations at start-up, and again later if the store was unreachable then."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.done = False
        self.error: str | None = None

    def try_upgrade(self) -> bool:
        if self.done:
            return True
        try:
            upgrade_schema(self.url)
        except Exception as exc:  # the store may be down: keep serving, retry later
            error = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:300]}"
            if error != self.error:  # retried every half second while the store is away: say it once
                log.warning("cannot upgrade the store's schema yet: %s", error)
            self.error = error
            return False
        if self.error is not None:
            log.warning("the store's schema is up to date now")
        self.done = True
        self.error = None
        return True


class RetentionPass(BackgroundTask):
    """Deletes comparisons and divergences past their retention, every `prune_interval` seconds."""

    def __init__(self, store: SqlDivergenceStore, config: StranglerConfig) -> None:
        self.store = store
        self.settings = config.divergence_store

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.prune_interval)
            cutoff = utcnow() - dt.timedelta(days=self.settings.retention_days)
            try:
                deleted = await asyncio.to_thread(self.store.prune, cutoff, self.settings.max_rows)
            except StoreUnavailable as exc:
                log.warning("retention pass skipped: %s", exc)
                continue
            if deleted:
                log.info("retention pass deleted %d rows", deleted)


def build_outcomes(config: StranglerConfig, engine: Engine, flags: FlagCache) -> OutcomeService:
    """The outcome comparison: joiner under the precedence rules; results, their stage events in the
    ledger and the joiner's state to the store."""
    settings = config.outcomes
    rules = PrecedenceRules(config.precedence)

    def capability_of(aggregate_type: str) -> str:
        cap = settings.capabilities.get(aggregate_type)
        if cap is None:
            rule = config.precedence.entities.get(aggregate_type)
            cap = rule.capability if rule is not None else None
        return cap or f"entity:{aggregate_type}"

    def modes() -> dict[str, Mode]:
        return {name: flags.flag(name).mode for name in config.capabilities}

    def serving_of(aggregate_type: str) -> Side:
        cap = capability_of(aggregate_type)
        return serving_side(flags.flag(cap).mode) if cap in config.capabilities else "legacy"

    def compared(aggregate_type: str) -> bool:  # legacy and new-only modes compare nothing
        cap = capability_of(aggregate_type)
        return cap not in config.capabilities or flags.flag(cap).mode not in (Mode.LEGACY, Mode.NEW_ONLY)

    joiner = OutcomeJoiner(rules, window=dt.timedelta(seconds=settings.window), modes=modes,
                           families=settings.families, compare=settings.compare)
    store = OutcomeStore(engine, capability_of, serving_of=serving_of, redact=settings.compare.redact)
    return OutcomeService(joiner, store, utcnow, kafka=settings.kafka, serving=serving_of, compared=compared)


@dataclass
class AdminParts:
    app: Any
    lifecycle: list[Any] = field(default_factory=list)


def build_admin(
    config: StranglerConfig,
    *,
    metrics: Callable[[], bytes],
    workers_ready: Callable[[], tuple[bool, dict[str, Any]]],
    registry: CollectorRegistry,
    cdc_status: CdcStatusSource | None = None,
) -> AdminParts:
    """The admin process: its API, the dashboard (`cdc_status`: where it reads the connectors' state,
    by default what the configuration allows) and the background parts to start and stop."""
    engine = create_store_engine(config.store)
    store, cache, refresher = build_flags(config, engine, registry)
    divergences = SqlDivergenceStore(engine)
    evidence = ShadowEvidence(divergences, config.capabilities, utcnow)
    ledger = SqlLedgerStore(engine)
    outcomes = build_outcomes(config, engine, cache)
    service = FlagService(config.capabilities, store, evidence)
    reconciliation = Reconciliation(config, engine, utcnow)
    scheduler = ReconcileScheduler(reconciliation, lambda: {n: cache.flag(n).mode for n in config.capabilities},
                                   registry)

    def readiness() -> tuple[bool, dict[str, Any]]:
        ready, detail = workers_ready()
        detail.update(cache.status(time.monotonic()))
        return ready, detail

    app = build_admin_app(
        tokens=config.admin.tokens,
        metrics=metrics,
        readiness=readiness,
        routes=[
            *flag_routes(service, cache, refresher),
            *shadow_routes(evidence),
            *maturity_routes(ledger, config.maturity, utcnow),
            *outcome_routes(outcomes),
            *drift_routes(reconciliation),
            openapi_route(),
            *dashboard_routes(
                DashboardSources(service, evidence, ledger, config.maturity, utcnow,
                                 cdc=cdc_status or cdc_status_for(config.cdc), refresher=refresher,
                                 drift=lambda: drift_jobs(reconciliation.store, config.reconcile.jobs,
                                                          list(config.reconcile.jobs), utcnow(), 200)),
                config.admin.tokens,
            ),
        ],
    )
    monitor = MaturityMonitor(ledger, config.maturity, utcnow, registry)
    return AdminParts(
        app=app, lifecycle=[refresher, RetentionPass(divergences, config), monitor, outcomes,
                            scheduler]
    )
