"""The composition root: builds each process's objects from the configuration and wires the ports.

A proxy worker gets the proxy with its flag cache and refresher; the supervisor gets the admin API with
the flag service. Nothing else constructs adapters.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from strangler.config import StranglerConfig
from strangler.gateway.admin import build_admin_app
from strangler.gateway.proxy import ProxyApp
from strangler.routing.admin_api import flag_routes
from strangler.routing.gate import GateEvidence, NoEvidence
from strangler.routing.metrics import FlagMetrics
from strangler.routing.refresh import FlagCache, FlagRefresher
from strangler.routing.router import initial_flags
from strangler.routing.service import FlagService
from strangler.routing.store import SqlFlagStore
from strangler.store import create_store_engine, upgrade_schema

log = logging.getLogger("strangler.app")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def build_flags(config: StranglerConfig, registry: CollectorRegistry) -> tuple[SqlFlagStore, FlagCache, FlagRefresher]:
    initial = initial_flags(config.capabilities)
    store = SqlFlagStore(create_store_engine(config.store), initial, utcnow)
    cache = FlagCache(initial)
    refresher = FlagRefresher(
        store, cache, config.flags.refresh_interval, store_url=config.store, metrics=FlagMetrics(registry)
    )
    return store, cache, refresher


def build_proxy(config: StranglerConfig, registry: CollectorRegistry) -> ProxyApp:
    """A proxy worker: routes by the flag store's flags, refreshed in the background."""
    _, cache, refresher = build_flags(config, registry)
    return ProxyApp(config, flags=cache, registry=registry, lifecycle=[refresher])


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
            self.error = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:300]}"
            log.warning("cannot upgrade the store's schema yet: %s", self.error)
            return False
        self.done = True
        self.error = None
        return True


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
    evidence: GateEvidence | None = None,
) -> AdminParts:
    store, cache, refresher = build_flags(config, registry)
    service = FlagService(config.capabilities, store, evidence or NoEvidence())

    def readiness() -> tuple[bool, dict[str, Any]]:
        ready, detail = workers_ready()
        detail.update(cache.status(time.monotonic()))
        return ready, detail

    app = build_admin_app(
        tokens=config.admin.tokens,
        metrics=metrics,
        readiness=readiness,
        routes=flag_routes(service, cache, refresher),
    )
    return AdminParts(app=app, lifecycle=[refresher])
