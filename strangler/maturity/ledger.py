"""The maturity ledger's core: the stages a change passes through, and what they let a caller conclude.

    accepted    the gateway received the command
    applied     the authoritative side answered 2xx
    propagated  its domain event was published
    reconciled  the outcome comparison (or a clean reconciliation) matched
    exception   a divergence or a dead letter: a person must look

Pure functions over `Journey` values: no clock (times are passed in), no store.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


class Stage(enum.StrEnum):
    ACCEPTED = "accepted"
    APPLIED = "applied"
    PROPAGATED = "propagated"
    RECONCILED = "reconciled"
    EXCEPTION = "exception"


ORDER = (Stage.ACCEPTED, Stage.APPLIED, Stage.PROPAGATED, Stage.RECONCILED)


@dataclass(frozen=True, slots=True)
class StageEvent:
    """`stage` was reached for (correlation id, entity key) at `at`; recorded once, first time wins."""

    correlation_id: str
    entity_key: str
    stage: Stage
    at: dt.datetime
    capability: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Journey:
    correlation_id: str
    entity_key: str
    capability: str | None
    stages: Mapping[Stage, dt.datetime] = field(default_factory=dict)
    exception_reason: str | None = None

    @property
    def stage(self) -> Stage:
        """The furthest stage reached (an exception outranks everything)."""
        if Stage.EXCEPTION in self.stages:
            return Stage.EXCEPTION
        reached = [s for s in ORDER if s in self.stages]
        return reached[-1] if reached else Stage.ACCEPTED

    @property
    def trusted(self) -> bool:
        """May a program rely on this change everywhere? Only once it is reconciled without exception."""
        return self.stage is Stage.RECONCILED

    def as_dict(self) -> dict[str, Any]:
        return {
            "correlation_id": self.correlation_id,
            "entity_key": self.entity_key,
            "capability": self.capability,
            "stage": self.stage.value,
            "trusted": self.trusted,
            "stages": {s.value: self.stages[s].isoformat() for s in (*ORDER, Stage.EXCEPTION) if s in self.stages},
            "exception": self.exception_reason,
        }


def overall_stage(journeys: Iterable[Journey]) -> Stage:
    """Where a request's changes stand together: an exception in any, else the least advanced stage."""
    stages = [j.stage for j in journeys]
    if Stage.EXCEPTION in stages:
        return Stage.EXCEPTION
    return min(stages, key=ORDER.index, default=Stage.ACCEPTED)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))], 3)


def is_stuck(journey: Journey, now: dt.datetime, stuck_after: dt.timedelta) -> bool:
    """The change has been in its current stage longer than `stuck_after`, and that stage is not the last one
    (reconciled) or an exception."""
    current = journey.stage
    if current is Stage.EXCEPTION or current is Stage.RECONCILED:
        return False
    since = journey.stages.get(current)
    return since is not None and now - since > stuck_after


def stage_lags(journeys: Iterable[Journey], now: dt.datetime, stuck_after: dt.timedelta) -> dict[str, Any]:
    """Lag from accepted to each stage (p50/p99 seconds) and how many changes are stuck in each stage
    (`is_stuck`)."""
    lags: dict[Stage, list[float]] = {s: [] for s in ORDER[1:]}
    stuck: dict[Stage, int] = {s: 0 for s in ORDER[:-1]}
    exceptions = 0
    total = 0
    for journey in journeys:
        total += 1
        start = journey.stages.get(Stage.ACCEPTED)
        for stage in ORDER[1:]:
            at = journey.stages.get(stage)
            if start is not None and at is not None:
                lags[stage].append(max(0.0, (at - start).total_seconds()))
        if journey.stage is Stage.EXCEPTION:
            exceptions += 1
        elif is_stuck(journey, now, stuck_after):
            stuck[journey.stage] += 1
    return {
        "changes": total,
        "exceptions": exceptions,
        "lag_seconds": {s.value: {"p50": percentile(v, 0.5), "p99": percentile(v, 0.99), "count": len(v)}
                        for s, v in lags.items()},
        "stuck": {s.value: n for s, n in stuck.items()},
        "stuck_after_seconds": stuck_after.total_seconds(),
    }
