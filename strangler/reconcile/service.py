"""Running configured jobs with their collaborators: the stores, the current flag modes, the repair sink.

Shared by the command line (`strangler reconcile`) and the admin process's schedule (`every:`).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping

from sqlalchemy.engine import Engine

from strangler.config import StranglerConfig
from strangler.maturity.store import SqlLedgerStore
from strangler.precedence.rules import PrecedenceRules
from strangler.reconcile.drift import field_authorities
from strangler.reconcile.plan import build_plan
from strangler.reconcile.repair import RepairPublisher
from strangler.reconcile.runner import JobReport, JobRunner, Progress
from strangler.reconcile.store import SqlDriftStore
from strangler.routing.modes import Mode
from strangler.routing.router import initial_flags
from strangler.routing.store import SqlFlagStore
from strangler.store import StoreUnavailable

log = logging.getLogger("strangler.reconcile")


def stored_modes(config: StranglerConfig, engine: Engine, clock: Callable[[], dt.datetime]) -> dict[str, Mode]:
    """Each capability's mode from the flag store (its configured mode when the store has none or is down)."""
    initial = initial_flags(config.capabilities)
    modes = {name: flag.mode for name, flag in initial.items()}
    try:
        modes.update({name: flag.mode for name, flag in SqlFlagStore(engine, initial, clock).load().items()
                      if name in modes})
    except StoreUnavailable as exc:
        log.warning("flag store unreadable, using the configured modes: %s", exc)
    return modes


class Reconciliation:
    """Runs the configured jobs against one store."""

    def __init__(self, config: StranglerConfig, engine: Engine, clock: Callable[[], dt.datetime]) -> None:
        self.config = config
        self.engine = engine
        self.clock = clock
        self.store = SqlDriftStore(engine)
        self.ledger = SqlLedgerStore(engine)
        self.rules = PrecedenceRules(config.precedence)

    def run_job(
        self,
        name: str,
        modes: Mapping[str, Mode],
        *,
        publisher: RepairPublisher | None = None,
        progress: Progress | None = None,
        stop: threading.Event | None = None,
    ) -> JobReport:
        """Compare the two sides of job `name` (SideUnavailable, UnsupportedSide, StoreUnavailable)."""
        job = self.config.reconcile.jobs[name]
        rule = self.config.precedence.entities.get(job.entity)
        plan = build_plan(name, job)
        try:
            authorities = field_authorities(self.rules, job.entity, plan.names, modes)
            runner = JobRunner(plan, authorities, self.store, self.clock, ledger=self.ledger,
                               capability=rule.capability if rule is not None else None, publisher=publisher,
                               progress=progress, stop=stop)
            return runner.run()
        finally:
            plan.close()
