"""What each dashboard page shows, read from the same services the admin API uses (blocking: called off the
event loop). The pages never compute evidence of their own: the gate, the report, the ledger figures and the
drift are the ones `PUT /flags`, `GET /report`, `GET /maturity` and `GET /drift` give.

While the store is unreachable the pages show the flags this process routes by (its refresher's cache, as
`GET /flags` does then) marked `stale`, and leave out what only the store holds: evidence, the ledger,
drift and the audit history."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from strangler.dashboard.cdc_status import CdcStatusSource, NoCdcStatus
from strangler.maturity.config import MaturityConfig
from strangler.maturity.ledger import Journey, Stage, is_stuck, stage_lags
from strangler.maturity.store import LedgerStore
from strangler.routing.admin_api import cache_as_of, cached_flags, stored_flags
from strangler.routing.modes import Mode
from strangler.routing.refresh import FlagRefresher
from strangler.routing.service import FlagService
from strangler.shadow.evidence import ShadowEvidence
from strangler.shadow.report import build_report
from strangler.store import StoreUnavailable

MODES = tuple(Mode)
STUCK_LISTED = 20
DRIFT_LISTED = 10  # drifted entities listed per reconciliation job on the overview


@dataclass
class DashboardSources:
    """The services behind the dashboard (the admin process's own)."""

    flags: FlagService
    evidence: ShadowEvidence
    ledger: LedgerStore
    maturity: MaturityConfig
    clock: Callable[[], dt.datetime]
    cdc: CdcStatusSource = field(default_factory=NoCdcStatus)
    refresher: FlagRefresher | None = None
    # open state drift per reconciliation job, as `GET /drift` gives it (None: reconciliation not wired in)
    drift: Callable[[], list[dict[str, Any]]] | None = None


def current_flags(sources: DashboardSources) -> dict[str, dict[str, Any]]:
    """Every capability's flag as `GET /flags` shows it (the configured mode until one is stored)."""
    return {item["capability"]: item for item in stored_flags(sources.flags, sources.flags.store.load())}


def flags_or_cached(sources: DashboardSources) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """The flags from the store, or, while it is unreachable, this process's own with what `stale` says:
    `as_of` (their last reading from the store; None: never read, the configured modes) and the error.
    Raises StoreUnavailable when there is no cache to fall back on."""
    try:
        return current_flags(sources), None
    except StoreUnavailable as exc:
        if sources.refresher is None:
            raise
        cache = sources.refresher.cache
        as_of = cache_as_of(cache, sources.clock())
        flags = {item["capability"]: item for item in cached_flags(sources.flags, cache)}
        return flags, {"as_of": as_of, "error": str(exc).splitlines()[0][:300]}


def _capability(
    sources: DashboardSources, name: str, flag: dict[str, Any], report: dict[str, Any] | None
) -> dict[str, Any]:
    cap = sources.flags.capabilities[name]
    rank = Mode(flag["mode"]).rank
    return {
        "name": name,
        "legacy": cap.legacy,
        "new": cap.new,
        "routes": list(cap.routes),
        "sticky": cap.sticky,
        "gate": cap.gate,
        "flag": flag,
        "rank": rank,
        "modes": [m.value for m in MODES] if cap.new is not None else [Mode.LEGACY.value],
        "report": report,
        "divergent_fields": [f for f in report["fields"] if f["classification"] != "noise"] if report else [],
        "noise_fields": [f for f in report["fields"] if f["classification"] == "noise"] if report else [],
    }


def overview(sources: DashboardSources) -> dict[str, Any]:
    flags, stale = flags_or_cached(sources)
    if stale is not None:  # the evidence, the ledger and the drift live in the unreachable store
        return {
            "capabilities": [_capability(sources, name, flags[name], None) for name in flags],
            "cdc": sources.cdc.overview(), "maturity": None, "drift": None, "drift_listed": DRIFT_LISTED,
            "generated_at": sources.clock().isoformat(), "stale": stale,
        }
    report = build_report(sources.evidence)
    by_name = {item["capability"]: item for item in report["capabilities"]}
    return {
        "capabilities": [_capability(sources, name, flags[name], by_name[name]) for name in flags],
        "cdc": sources.cdc.overview(),
        "maturity": maturity(sources),
        "drift": sources.drift() if sources.drift is not None else [],
        "drift_listed": DRIFT_LISTED,
        "generated_at": report["generated_at"],
        "stale": None,
    }


def capability_page(sources: DashboardSources, name: str, history_limit: int = 50) -> dict[str, Any]:
    flags, stale = flags_or_cached(sources)
    if stale is not None:
        return {"capability": _capability(sources, name, flags[name], None), "history": None, "stale": stale}
    report = build_report(sources.evidence, [name])["capabilities"][0]
    history = [entry.as_dict() for entry in sources.flags.store.history(name, history_limit)]
    return {"capability": _capability(sources, name, flags[name], report), "history": history, "stale": None}


def _journey(journey: Journey, now: dt.datetime) -> dict[str, Any]:
    since = journey.stages.get(journey.stage)
    return {"correlation_id": journey.correlation_id, "entity_key": journey.entity_key or "(not yet known)",
            "capability": journey.capability, "stage": journey.stage.value,
            "since": since.isoformat() if since else None,
            "age_seconds": (now - since).total_seconds() if since else None, "reason": journey.exception_reason}


def maturity(sources: DashboardSources) -> dict[str, Any]:
    """Stage lags and stuck counts as `GET /maturity` gives them, plus the stuck and failed changes themselves."""
    now = sources.clock()
    journeys = sources.ledger.recent(now - dt.timedelta(seconds=sources.maturity.window))
    stuck_after = dt.timedelta(seconds=sources.maturity.stuck_after)
    figures = stage_lags(journeys, now, stuck_after)
    stuck, failed = [], []
    for journey in journeys:
        if journey.stage is Stage.EXCEPTION:
            failed.append(_journey(journey, now))
        elif is_stuck(journey, now, stuck_after):
            stuck.append(_journey(journey, now))
    stuck.sort(key=lambda j: -(j["age_seconds"] or 0))
    return {**figures, "window_seconds": sources.maturity.window, "stuck_changes": stuck[:STUCK_LISTED],
            "exception_changes": failed[:STUCK_LISTED]}
